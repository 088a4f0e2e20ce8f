"""The policy settings, the answers' fields and the release's bundle file, without an engine."""

from pathlib import Path

import pytest

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


def with_policy(tmp_path: Path, policy: str) -> Path:
    path = tmp_path / "env.toml"
    path.write_text(SANDBOX + "\n" + policy)
    return path


def test_policy_without_an_expected_version_is_refused(tmp_path):
    path = with_policy(tmp_path, '[policy]\nurl = "{url}/summit"\n')
    with pytest.raises(ConfigError, match=r"policy: say which policy version the release expects"):
        load_environment(str(path), ROOT)


def test_a_decision_case_named_twice_is_refused(tmp_path):
    case = '[[policy.decisions]]\nname = "reads"\naction = "entity.read"\nexpect = "ALLOW"\n'
    path = with_policy(tmp_path, '[policy]\nexpected_version = "v{release}"\n' + case + case)
    with pytest.raises(ConfigError, match=r"decision 'reads' appears twice"):
        load_environment(str(path), ROOT)


def test_the_policy_token_must_be_a_reference(tmp_path):
    path = with_policy(tmp_path, '[policy]\nexpected_version = "v1"\ntoken = "s3cr3t-admin"\n')
    with pytest.raises(ConfigError) as error:
        load_environment(str(path), ROOT)
    assert "policy.token: a secret must be an ${ENV_VAR} reference" in str(error.value)
    assert "s3cr3t-admin" not in str(error.value)


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
