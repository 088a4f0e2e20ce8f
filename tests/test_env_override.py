"""--env-override: an override file merged key by key onto an environment before validation,
``[override] remove`` taking sections out; errors name the file the key came from."""

import subprocess
import sys
from pathlib import Path

import pytest

from releasegate.config import load_environment, merge_override
from releasegate.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SANDBOX = ROOT / "environments" / "sandbox.toml"


def write(tmp_path: Path, text: str, name: str = "override.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_tables_merge_key_by_key_and_other_values_replace():
    base = {"verify": {"health_path": "/health", "health_probes": 10}, "backup": {"databases": ["a", "b"]}}
    override = {"verify": {"health_probes": 2}, "backup": {"databases": ["c"]}}
    merged = merge_override(base, override)
    assert merged == {
        "verify": {"health_path": "/health", "health_probes": 2},
        "backup": {"databases": ["c"]},
    }
    assert base["verify"]["health_probes"] == 10, "the environment's own dict is left as it was"


def test_arrays_of_tables_are_replaced_whole():
    base = {"policy": {"decisions": [{"name": "a"}, {"name": "b"}]}}
    merged = merge_override(base, {"policy": {"decisions": [{"name": "c"}]}})
    assert merged["policy"]["decisions"] == [{"name": "c"}]


def test_remove_takes_a_section_out_and_a_removed_section_set_again_is_replaced():
    base = {
        "notify": {"channel": "#x"},
        "policy": {"url": "u", "bundle": {"kind": "k8s", "deployment": "opa"}},
    }
    override = {"override": {"remove": ["notify", "policy.bundle"]}, "policy": {"bundle": {"kind": "http"}}}
    merged = merge_override(base, override)
    assert "notify" not in merged
    assert merged["policy"] == {"url": "u", "bundle": {"kind": "http"}}, "no key of the old bundle stays"


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({"remove": ["nofity"]}, "override.remove: 'nofity' is not in the environment"),
        ({"remove": ["verify.nothing"]}, "override.remove: 'verify.nothing' is not in the environment"),
        ({"remove": "notify"}, "override.remove: expected a list of dotted keys"),
        ({"replace": ["notify"]}, "override.replace: unknown key"),
    ],
)
def test_override_table_mistakes_are_refused(meta, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(".", r"\.")):
        merge_override({"notify": {}, "verify": {}}, {"override": meta})


def test_an_override_file_points_an_environment_elsewhere(tmp_path):
    override = write(
        tmp_path,
        '[override]\nremove = ["readiness"]\n\n[verify]\nhealth_probes = 2\n\n'
        '[database]\ndsn = "postgresql://postgres@127.0.0.1:1/elsewhere"\n',
    )
    env = load_environment("sandbox", ROOT, [override])
    plain = load_environment("sandbox", ROOT)
    assert env.verify.health_probes == 2
    assert env.database.dsn.endswith("/elsewhere")
    assert env.readiness is None and plain.readiness is not None
    assert env.verify.health_path == plain.verify.health_path, "what the override does not name stays"
    assert env.source == SANDBOX


def test_overrides_apply_in_order(tmp_path):
    first = write(tmp_path, "[verify]\nhealth_probes = 2\nhealth_interval_s = 0.5\n", "first.toml")
    second = write(tmp_path, "[verify]\nhealth_probes = 3\n", "second.toml")
    env = load_environment("sandbox", ROOT, [first, second])
    assert (env.verify.health_probes, env.verify.health_interval_s) == (3, 0.5)


def test_placeholders_in_an_override_are_expanded(tmp_path):
    override = write(tmp_path, '[report]\ndir = "{tmp}/replica-reports"\n')
    env = load_environment("sandbox", ROOT, [override])
    assert "{tmp}" not in env.report.dir and env.report.dir.endswith("/replica-reports")


def test_a_bad_key_in_the_override_names_the_override_file(tmp_path):
    override = write(tmp_path, "[verify]\nhealth_probes = 0\n")
    with pytest.raises(ConfigError) as caught:
        load_environment("sandbox", ROOT, [override])
    assert str(caught.value).startswith(f"{override}: verify.health_probes: ")


def test_a_bad_key_left_by_the_override_names_both_files(tmp_path):
    # readiness.ci needs readiness.github: removing only github leaves the example invalid
    override = write(tmp_path, '[override]\nremove = ["readiness.github"]\n')
    with pytest.raises(ConfigError) as caught:
        load_environment("summit-production.example", ROOT, [override])
    assert str(caught.value).startswith(
        f"environments/summit-production.example.toml with {override}: readiness"
    )


def test_an_override_that_is_not_there_or_not_toml_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.toml: file not found"):
        load_environment("sandbox", ROOT, [tmp_path / "missing.toml"])
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
        load_environment("sandbox", ROOT, [write(tmp_path, "[verify\n", "broken.toml")])
    with pytest.raises(
        ConfigError, match=r"typo\.toml: override\.remove: 'nofity' is not in the environment"
    ):
        load_environment("sandbox", ROOT, [write(tmp_path, '[override]\nremove = ["nofity"]\n', "typo.toml")])


def test_the_option_reaches_the_gates_and_a_bad_override_is_a_usage_error(tmp_path):
    override = write(tmp_path, "[verify]\nhealth_probes = 0\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *("-p", "no:asyncio", "-p", "no:anyio"),
            "gates/",
            "--env=sandbox",
            f"--env-override={override}",
            "--release=2.0.0",
            "--dry-run",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert f"{override}: verify.health_probes" in proc.stderr


REPLICA_OVERRIDES = [
    ("summit-production.example", "summit.toml"),
    ("granter-production.example", "granter.toml"),
    ("release-manager-production.example", "release-manager.toml"),
]


@pytest.mark.parametrize(("example", "override"), REPLICA_OVERRIDES)
def test_a_replica_override_keeps_every_threshold_and_contract_of_its_example(example, override):
    """sandbox/replicas/*.toml replace where the example runs (platform, hosts, windows), never
    what "good" means there: thresholds, the health contract, the migrations' checks, policies."""
    plain = load_environment(example, ROOT)
    replica = load_environment(example, ROOT, [ROOT / "sandbox" / "replicas" / override])
    assert replica.platform.kind == "local" and replica.platform.kubernetes is None
    limits = ("max", "min", "max_increase_ratio", "max_increase_points", "max_decrease_ratio", "count")
    assert {n: [getattr(c, k) for k in limits] for n, c in replica.metrics.slo.items()} == {
        n: [getattr(c, k) for k in limits] for n, c in plain.metrics.slo.items()
    }
    assert {n: c.failure_limit for n, c in replica.metrics.slo.items()} == {
        n: c.failure_limit for n, c in plain.metrics.slo.items()
    }
    assert replica.metrics.observe.consecutive_failures == plain.metrics.observe.consecutive_failures
    assert replica.metrics.burn_rate == plain.metrics.burn_rate
    keep = {"health_probes", "health_interval_s", "health_db_path", "health_db_latency_field"}
    assert replica.verify.health == plain.verify.health
    assert replica.verify.max_db_latency_ms == plain.verify.max_db_latency_ms
    assert all(getattr(replica.verify, k) == getattr(plain.verify, k) for k in keep)
    migrate = ("version_query", "rehearse", "on_failure", "statement_timeout", "lock_timeout", "max_lock_s")
    assert all(getattr(replica.migrate, k) == getattr(plain.migrate, k) for k in migrate)
    assert replica.rollback.database == plain.rollback.database
    assert replica.backup.verify_tables == plain.backup.verify_tables
    assert set(replica.smoke.journeys) == set(plain.smoke.journeys)
    if plain.policy is not None:
        assert replica.policy.decisions == plain.policy.decisions
        assert replica.policy.expected_version == plain.policy.expected_version
