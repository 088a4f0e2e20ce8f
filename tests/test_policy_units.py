"""The policy settings, the answers' fields and the release's bundle file, without an engine."""

import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from releasegate.actions.policy import read_bundle, without_runtime_fields
from releasegate.config import PolicyBundleSettings, load_environment
from releasegate.errors import ActionError, ConfigError
from releasegate.probes.policy import field

ROOT = Path(__file__).resolve().parents[1]
SANDBOX = (ROOT / "environments" / "sandbox.toml").read_text()


def test_a_dotted_field_reads_into_objects_and_lists():
    answer = {"result": {"allow": True, "reasons": ["clearance"]}, "decision": "ALLOW"}
    assert field(answer, "decision") == "ALLOW"
    assert field(answer, "result.allow") is True
    assert field(answer, "result.reasons.0") == "clearance"
    assert field(answer, "result.deny") is None, "absent is no data, never a default"
    assert field(None, "decision") is None


def with_policy(tmp_path: Path, policy: dict[str, Any]) -> Path:
    """The sandbox's environment with ``policy`` as its [policy] section."""
    raw = tomllib.loads(SANDBOX)
    raw["policy"] = policy
    path = tmp_path / "env.toml"
    path.write_text(tomli_w.dumps(raw))
    return path


def test_policy_without_an_expected_version_is_refused(tmp_path):
    path = with_policy(tmp_path, {"url": "{url}/summit"})
    with pytest.raises(ConfigError, match=r"policy: say which policy version the release expects"):
        load_environment(str(path), ROOT)


def test_a_decision_case_named_twice_is_refused(tmp_path):
    case = {"name": "reads", "action": "entity.read", "expect": "ALLOW"}
    path = with_policy(tmp_path, {"expected_version": "v{release}", "decisions": [case, case]})
    with pytest.raises(ConfigError, match=r"decision 'reads' appears twice"):
        load_environment(str(path), ROOT)


def test_the_policy_token_must_be_a_reference(tmp_path):
    path = with_policy(tmp_path, {"expected_version": "v1", "token": "s3cr3t-admin"})
    with pytest.raises(ConfigError) as error:
        load_environment(str(path), ROOT)
    assert "policy.token: a secret must be an ${ENV_VAR} reference" in str(error.value)
    assert "s3cr3t-admin" not in str(error.value)


@pytest.mark.parametrize(
    ("bundle", "problem"),
    [
        ({"kind": "http"}, 'kind "http" activates the file the release ships: set file'),
        ({"kind": "kubernetes-env", "deployment": "opa"}, "set deployment and container"),
    ],
)
def test_a_bundle_kind_needs_its_keys(tmp_path, bundle, problem):
    path = with_policy(tmp_path, {"bundle": bundle})
    with pytest.raises(ConfigError, match=f"policy.bundle: .*{problem}"):
        load_environment(str(path), ROOT)


def test_a_kubernetes_bundle_needs_the_kubernetes_platform(tmp_path):
    bundle = {"kind": "kubernetes-env", "deployment": "opa", "container": "opa"}
    path = with_policy(tmp_path, {"bundle": bundle})
    with pytest.raises(ConfigError, match='kind "kubernetes-env" needs the kubernetes platform'):
        load_environment(str(path), ROOT)


def bundle_settings(tmp_path: Path) -> PolicyBundleSettings:
    return PolicyBundleSettings(file=str(tmp_path / "{release}" / "bundle.json"))


def test_the_release_bundle_is_read_with_its_version_and_checksum(tmp_path):
    (tmp_path / "2.0.0").mkdir()
    (tmp_path / "2.0.0" / "bundle.json").write_text('{"name": "main", "version": "v2.0.0", "rules": {}}')
    bundle = read_bundle(bundle_settings(tmp_path), "2.0.0")
    assert (bundle.version, len(bundle.sha256)) == ("v2.0.0", 64)
    assert bundle.document["name"] == "main"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "file not found (does the release ship it?)"),
        ("{not json", "not JSON"),
        ('{"name": "main"}', "no version at 'version'"),
    ],
)
def test_a_bundle_that_cannot_be_read_says_why(tmp_path, content, problem):
    if content is not None:
        (tmp_path / "2.0.0").mkdir()
        (tmp_path / "2.0.0" / "bundle.json").write_text(content)
    with pytest.raises(ActionError) as error:
        read_bundle(bundle_settings(tmp_path), "2.0.0")
    assert str(error.value).startswith(f"policy bundle {tmp_path / '2.0.0' / 'bundle.json'}: {problem}")


def test_what_the_engine_adds_on_activation_is_not_uploaded_again():
    active = {"name": "main", "version": "v1.0.0", "rules": {}, "activated_at": "2026-12-01T10:00:00Z"}
    assert without_runtime_fields(active) == {"name": "main", "version": "v1.0.0", "rules": {}}
