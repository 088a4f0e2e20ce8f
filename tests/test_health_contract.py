"""Health contracts ([verify.health]) and release names: a service's own shape is configuration,
and a release name that cannot be put into a path or an argv is refused before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli_w
from gate_runs import run_gates
from notes_service.stack import write_notes_env
from sandbox_env import ROOT

from releasegate.config import HealthContract, check_release, load_environment
from releasegate.errors import ConfigError
from releasegate.probes.health import latency_ms, parse_health
from releasegate.probes.http import Exchange


def answer(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Exchange:
    return Exchange("GET", "http://127.0.0.1:1/health", status, 1.0, body, "", headers or {})


SPRING = HealthContract(status_field="status", healthy=["UP"], version_field="", checks_field="components")
NOTES = HealthContract(
    status_field="ok", healthy=[True], version_field="build.version", checks_field="dependencies",
    check_ok=["reachable"],
)  # fmt: skip


def test_the_runbooks_shape_is_the_default() -> None:
    health = parse_health(
        answer({"status": "healthy", "version": "v4.0.0-ga", "checks": {"db": "ok"}}), HealthContract()
    )
    assert (health.healthy, health.status, health.version) == (True, "healthy", "v4.0.0-ga")
    assert HealthContract(version="v{release}-ga").expected_version("4.0.0") == "v4.0.0-ga"


def test_spring_boot_actuator_up_with_nested_components() -> None:
    up = {"status": "UP", "components": {"db": {"status": "UP"}, "diskSpace": {"status": "UP"}}}
    assert parse_health(answer(up), SPRING).healthy
    down = {"status": "UP", "components": {"db": {"status": "DOWN"}}}
    health = parse_health(answer(down), SPRING)
    assert not health.healthy and health.failing_checks == {"db": {"status": "DOWN"}}
    assert parse_health(answer({"status": "DOWN"}, 503), SPRING).status == "DOWN"
    assert not SPRING.reports_version, "no version field: the platform's release is the truth"


def test_a_boolean_status_and_the_version_under_another_key() -> None:
    healthy = {"ok": True, "build": {"version": "1.5.0"}, "dependencies": {"postgres": "reachable"}}
    health = parse_health(answer(healthy), NOTES)
    assert (health.healthy, health.status, health.version) == (True, "true", "1.5.0")
    assert not parse_health(answer({**healthy, "ok": 1}), NOTES).healthy, "1 is not true"
    assert not parse_health(answer({"build": {"version": "1.5.0"}}), NOTES).healthy, "no status is no data"
    failing = parse_health(answer({**healthy, "dependencies": {"postgres": "timeout"}}), NOTES)
    assert not failing.healthy and failing.failing_checks == {"postgres": "timeout"}


def test_http_2xx_alone_and_a_version_header() -> None:
    contract = HealthContract(
        status_field="", version_field="", version_header="X-App-Version", checks_field=""
    )
    health = parse_health(answer(None, 204, {"x-app-version": "2.0.0"}), contract)
    assert (health.healthy, health.status, health.version) == (True, "HTTP 204", "2.0.0")
    assert not parse_health(answer(None, 503), contract).healthy
    assert parse_health(answer({"status": "healthy"}, 500), HealthContract()).healthy is False


@pytest.mark.parametrize(
    ("written", "ms"),
    [(4.2, 4.2), (3, 3.0), ("<5ms", 5.0), ("4 ms", 4.0), ("0.004s", 4.0), ("250us", 0.25), ("fast", None),
     (None, None), (True, None)],
)  # fmt: skip
def test_latency_in_the_units_the_endpoint_uses(written: object, ms: float | None) -> None:
    assert latency_ms(written) == ms


def test_a_contract_that_cannot_work_is_refused_at_load(tmp_path: Path) -> None:
    for health, expected in (
        ({"version_field": "version", "version_header": "X-Version"}, "not both"),
        ({"version": "2024.01.15"}, "needs {release}"),
        ({"healthy": []}, "verify.health.healthy"),
    ):
        raw = {
            "environment": {"name": "x", "service": "x"},
            "platform": {"kind": "kubernetes", "url": "http://127.0.0.1:9",
                         "kubernetes": {"namespace": "x", "deployments": [{"name": "x", "container": "x",
                                                                           "image": "x:{release}"}]}},
            "database": {"dsn": "postgresql://u@127.0.0.1:9/x"},
            "backup": {"databases": ["x"], "dir": str(tmp_path)},
            "verify": {"health": health},
        }  # fmt: skip
        path = tmp_path / "x.toml"
        path.write_text(tomli_w.dumps(raw))
        with pytest.raises(ConfigError) as error:
            load_environment(str(path), ROOT)
        assert "verify.health" in str(error.value) and expected in str(error.value)


@pytest.mark.parametrize("bad", ["../../etc/passwd", "2.0.0;rm -rf x", "", "-2.0.0", "2.0.0 beta", "a" * 129])
def test_a_release_name_that_could_reach_a_path_or_a_shell_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="is not a release name"):
        check_release(bad)


def test_a_release_that_is_no_version_here_is_a_usage_error(tmp_path: Path) -> None:
    """Exit 4 with one line before anything is read or changed, whatever the environment."""
    for release in ("../../etc/passwd", "2.0.0;rm -rf x"):
        run = run_gates(write_notes_env(tmp_path), release)  # nothing of it is running: nothing is asked
        assert run.code == 4, run.output
        assert "is not a release name" in run.output
    assert check_release("2.0.0") == "2.0.0" and check_release("v4.0.0-ga") == "v4.0.0-ga"


def test_the_readmes_own_service_example_is_a_valid_environment(tmp_path: Path) -> None:
    """The README's "Gate your own service" file loads as written: the walk-through cannot rot."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Gate your own service") :]
    example = section[section.index("```toml\n") + len("```toml\n") : section.index("```\n", 10)]
    path = tmp_path / "notes.toml"
    path.write_text(example)
    env = load_environment(str(path), ROOT)
    assert env.migrate.version_query == "SELECT version_num FROM alembic_version"
    assert env.verify.health.healthy == [True] and env.verify.health.expected_version("1.5.0") == "1.5.0"
    assert check_release("1.5.0", env) == "1.5.0"
    with pytest.raises(ConfigError, match="release_pattern"):
        check_release("nightly", env)
