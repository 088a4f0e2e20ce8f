"""What each system calls a release, and back: the templates' arithmetic, without I/O."""

from __future__ import annotations

import pytest

from releasegate.errors import ConfigError
from releasegate.release_names import check_template, fill, parse
from sandbox.images import TaggedCommits

COMMITS = TaggedCommits(
    {
        "2024.01.08": "4f1c8e6d3b0a923f7c2a9d4b1e8f6a0c5d2e9b7a",
        "2024.01.15": "9b7a4f1c8e6d3b0a923f7c2a9d4b1e8f6a0c5d2e",
    }
)


@pytest.mark.parametrize(
    ("template", "release", "name"),
    [
        ("v{release}-ga", "4.0.0", "v4.0.0-ga"),
        ("granter/backend-core:v{release}", "2.0.0", "granter/backend-core:v2.0.0"),
        ("registry:5000/team/app:{release}", "1.2.3+build.7", "registry:5000/team/app:1.2.3+build.7"),
        ("release-manager:prod-{sha}", "2024.01.15", "release-manager:prod-9b7a4f1"),
    ],
)
def test_a_name_is_filled_and_read_back(template, release, name):
    assert fill(template, release, COMMITS) == name
    assert parse(name, template, COMMITS) == release


def test_a_name_that_does_not_fit_its_template_names_no_release():
    assert parse("granter/backend-core:latest", "granter/backend-core:v{release}") is None
    assert parse("release-manager:prod-0000000", "release-manager:prod-{sha}", COMMITS) is None
    assert parse("release-manager:prod-9b7a4f1", "release-manager:prod-{sha}") is None, "no tags: unknown"
    assert parse(None, "v{release}") is None


def test_a_commit_name_without_a_repository_is_a_configuration_error():
    with pytest.raises(ConfigError, match=r"\[readiness.github\]"):
        fill("release-manager:prod-{sha}", "2024.01.15")


@pytest.mark.parametrize("template", ["app:latest", "app:{release}-{release}", "app:{sha}{sha}"])
def test_a_template_must_name_the_release_once(template):
    with pytest.raises(ValueError, match="must contain"):
        check_template(template)
