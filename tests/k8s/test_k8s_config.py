"""The [platform.kubernetes] section: what loads, what is refused, and how the refusal reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from releasegate.config import load_environment
from releasegate.errors import ConfigError
from releasegate.platforms import make_platform
from releasegate.platforms.helm import HelmPlatform
from releasegate.platforms.kubernetes import KubernetesPlatform

ROOT = Path(__file__).resolve().parents[2]
GRANTER = (ROOT / "environments" / "granter-production.example.toml").read_text()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "env.toml"
    path.write_text(text)
    return path


def refusal(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as error:
        load_environment(str(write(tmp_path, text)), ROOT)
    assert "\n" not in str(error.value)
    return str(error.value)


def test_make_platform_builds_the_kubernetes_platform_without_connecting():
    platform = make_platform(load_environment("granter-production.example", ROOT))
    assert isinstance(platform, KubernetesPlatform) and platform._kube is None
    summit = make_platform(load_environment("summit-production.example", ROOT))
    assert isinstance(summit, HelmPlatform) and summit.kubernetes.settings.strategy == "argo-rollout"


def test_an_unknown_key_is_refused(tmp_path):
    text = GRANTER.replace("poll_interval_s = 2", "poll_interval_s = 2\npoll_intervall_s = 3")
    assert refusal(tmp_path, text).endswith("platform.kubernetes.poll_intervall_s: unknown key")


def test_kubernetes_without_its_section_is_refused(tmp_path):
    text = GRANTER.split("[platform.kubernetes]")[0] + "[database]" + GRANTER.split("[database]")[1]
    assert "platform: platform.kind = 'kubernetes' needs a [platform.kubernetes] section" in refusal(
        tmp_path, text
    )


def test_an_image_template_must_carry_the_release(tmp_path):
    text = GRANTER.replace(
        'image = "granter/data-service:v{release}"', 'image = "granter/data-service:latest"'
    )
    assert (
        "platform.kubernetes.deployments.1.image: a template must contain {release} or {sha} "
        "(the release's commit), each at most once" in refusal(tmp_path, text)
    )


def test_an_image_named_by_the_release_s_commit_needs_the_repository(tmp_path):
    """prod-{sha} is the short sha of the release's git tag: without [readiness.github] nothing
    can say which commit that is, so the environment does not load (exit 4), before any change."""
    text = GRANTER.replace(
        'image = "granter/data-service:v{release}"', 'image = "granter/data-service:prod-{sha}"'
    )
    no_github = re.sub(r"\[readiness\.(github|ci)\]\n(.+\n)+?\n", "", text)
    assert "[readiness.github]" not in no_github
    assert "it is the commit of [readiness.github] ref, which this environment does not have" in refusal(
        tmp_path, no_github
    )
    load_environment(str(write(tmp_path, text)), ROOT)  # with it: loads
    manager = load_environment("release-manager-production.example", ROOT)
    assert manager.image_templates_need_commits and manager.readiness.github.ref == "v{release}"


def test_a_strategy_needs_its_section_and_no_other(tmp_path):
    assert "strategy = 'canary' needs a [platform.kubernetes.canary] section" in refusal(
        tmp_path, GRANTER.replace('strategy = "rolling"', 'strategy = "canary"')
    )
    text = (
        GRANTER
        + '\n[platform.kubernetes.blue_green]\nservice = "s"\nblue = "backend-core"\ngreen = "data-service"\n'
    )
    assert "[platform.kubernetes.blue_green] is set but strategy = 'rolling'" in refusal(tmp_path, text)


def test_maintenance_names_only_configured_deployments(tmp_path):
    text = GRANTER.replace('deployments = ["backend-core"]', 'deployments = ["backend"]')
    assert "backend: not in [[platform.kubernetes.deployments]]" in refusal(tmp_path, text)


def test_the_token_is_a_secret_reference_never_a_value(tmp_path):
    text = GRANTER.replace('namespace = "granter"', 'namespace = "granter"\ntoken = "eyJhbGciOi-real-token"')
    message = refusal(tmp_path, text)
    assert "platform.kubernetes.token: a secret must be an ${ENV_VAR} reference" in message
    ok = GRANTER.replace('namespace = "granter"', 'namespace = "granter"\ntoken = "${GRANTER_KUBE_TOKEN}"')
    assert (
        load_environment(str(write(tmp_path, ok)), ROOT).platform.kubernetes.token == "${GRANTER_KUBE_TOKEN}"
    )


def test_surge_takes_a_count_or_a_percentage(tmp_path):
    text = GRANTER.replace(
        'max_surge = 1\nmax_unavailable = 0\n\n[[platform.kubernetes.deployments]]\nname = "data-service"',
        'max_surge = "25%"\nmax_unavailable = "a lot"\n\n[[platform.kubernetes.deployments]]\nname = "data-service"',
    )
    assert "platform.kubernetes.deployments.0.max_unavailable" in refusal(tmp_path, text)
