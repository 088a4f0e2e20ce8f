"""Environment files: what loads, what is refused, and how the refusal reads."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from releasegate.config import SecretRef, load_environment
from releasegate.errors import ConfigError
from releasegate.redaction import redact

ROOT = Path(__file__).resolve().parents[1]
SANDBOX = (ROOT / "environments" / "sandbox.toml").read_text()


def write(tmp_path: Path, text: str, name: str = "env.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["sandbox", "staging.example", "production.example"])
def test_shipped_environments_load(name):
    env = load_environment(name, ROOT)
    assert env.name in ("sandbox", "staging", "production")
    assert env.planned_minutes, "every shipped environment shows the runbook's planned durations"


def test_placeholders_are_expanded_at_load(tmp_path):
    env = load_environment("sandbox", ROOT)
    local = env.platform.local
    assert local.command[0] == sys.executable
    assert local.workdir == str(ROOT)
    assert local.state_dir.startswith(env.sandbox.dir)
    assert "{release}" in env.migrate.directory, "runtime placeholders stay for later"


def test_sandbox_placeholder_without_a_sandbox_section_is_refused(tmp_path):
    """Taken literally, ``{sandbox}/backups`` would be a folder named ``{sandbox}`` in the workspace."""
    section = SANDBOX[SANDBOX.index("[sandbox]\n") : SANDBOX.index("[platform]\n")]
    without = SANDBOX.replace(section, "")
    assert without != SANDBOX
    path = write(tmp_path, without)
    with pytest.raises(ConfigError) as error:
        load_environment(str(path), ROOT)
    assert (
        str(error.value)
        == f"{path}: platform.local.state_dir: uses {{sandbox}}, but the file has no [sandbox] section with a dir"
    )


def test_unknown_key_is_refused_naming_file_and_key(tmp_path):
    path = write(tmp_path, SANDBOX.replace("instances = 3", "instances = 3\ninstancez = 4"))
    with pytest.raises(ConfigError) as error:
        load_environment(str(path), ROOT)
    assert str(error.value) == f"{path}: platform.local.instancez: unknown key"


def test_wrong_type_says_what_was_expected(tmp_path):
    path = write(tmp_path, SANDBOX.replace("health_probes = 5", 'health_probes = "five"'))
    with pytest.raises(ConfigError, match=r"verify.health_probes: .*integer.*'five'"):
        load_environment(str(path), ROOT)


def test_missing_key_is_named(tmp_path):
    path = write(tmp_path, SANDBOX.replace('dsn = "postgresql://postgres@127.0.0.1:25432/demo"\n', ""))
    with pytest.raises(ConfigError, match=r"database.dsn: required key is missing"):
        load_environment(str(path), ROOT)


def test_broken_toml_names_the_line(tmp_path):
    path = write(tmp_path, SANDBOX.replace("[database]", "[database"))
    with pytest.raises(ConfigError, match=r"not valid TOML: .*line \d+"):
        load_environment(str(path), ROOT)


def test_unknown_environment_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"environment 'prod' not found.*known: .*sandbox"):
        load_environment("prod", ROOT)


def test_a_password_in_a_url_is_refused(tmp_path):
    path = write(
        tmp_path,
        SANDBOX.replace(
            'postgresql://postgres@127.0.0.1:25432/demo"\nconnect',
            'postgresql://postgres:hunter2@127.0.0.1:25432/demo"\nconnect',
        ),
    )
    with pytest.raises(ConfigError) as error:
        load_environment(str(path), ROOT)
    assert "database.dsn" in str(error.value) and "password" in str(error.value)
    assert "hunter2" not in str(error.value), "the refusal never repeats the password"


def test_a_secret_must_be_a_reference(tmp_path):
    path = write(
        tmp_path, SANDBOX.replace("connect_timeout_s = 3", 'connect_timeout_s = 3\npassword = "hunter2"')
    )
    with pytest.raises(
        ConfigError, match=r"database.password: a secret must be an \$\{ENV_VAR\} reference"
    ) as error:
        load_environment(str(path), ROOT)
    assert "hunter2" not in str(error.value), "the refusal never repeats the secret"


def test_a_secret_reference_resolves_late_and_is_redacted_after(tmp_path, monkeypatch):
    path = write(
        tmp_path,
        SANDBOX.replace("connect_timeout_s = 3", 'connect_timeout_s = 3\npassword = "${RG_TEST_DB_PW}"'),
    )
    env = load_environment(str(path), ROOT)
    assert env.database.password == "${RG_TEST_DB_PW}"
    with pytest.raises(ConfigError, match="export RG_TEST_DB_PW"):
        env.database.password.resolve()
    monkeypatch.setenv("RG_TEST_DB_PW", "s3cret-value-42")
    assert isinstance(env.database.password, SecretRef)
    assert env.database.password.resolve() == "s3cret-value-42"
    assert redact("connecting with s3cret-value-42") == "connecting with ***"


def test_broken_environment_file_exits_4_with_one_line(tmp_path):
    """What an SRE sees: one line naming the file, the key and what was expected; no traceback."""
    path = write(tmp_path, SANDBOX.replace("instances = 3", "instances = 0"), "broken.toml")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "gates/",
            f"--env={path}",
            "--release=2.0.0",
            "-p",
            "no:cacheprovider",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert proc.returncode == 4, proc.stdout + proc.stderr
    output = (proc.stdout + proc.stderr).strip()
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "broken.toml: platform.local.instances:" in lines[0]
    assert "greater than or equal to 1" in lines[0]


def test_gates_without_a_release_is_a_usage_error():
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "gates/", "--env=sandbox", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 4
    assert "--release is required" in proc.stdout + proc.stderr
