"""What each system calls a release, derived from it by the environment's templates, and back.

``{release}`` is the release itself (``v{release}-ga`` gives ``v4.0.0-ga``). ``{sha}`` is the
commit the release's git tag names, as ``git rev-parse --short`` prints it: Release Manager
tags its images ``prod-$(git rev-parse --short HEAD)`` on the commit of tag ``v{release}``. Such
a name says nothing of its release by itself, so both directions go through ``Commits`` (the
repository's tags, asked of GitHub): the commit of a release when an image is set, the release
at a commit when a running image is read.
"""

from __future__ import annotations

import functools
import re
from typing import Protocol

from releasegate.errors import ConfigError

PLACEHOLDERS = ("{release}", "{sha}")
SHORT_SHA = 7
"""``git rev-parse --short``'s length in a repository of ordinary size."""


class Commits(Protocol):
    """A repository's tags: the commit of a release, and the releases tagged on a commit."""

    def sha_of(self, release: str) -> str: ...

    def releases_at(self, sha_prefix: str) -> list[str]: ...


def check_template(template: str) -> str:
    """A template that names a release: {release} or {sha}, each at most once."""
    counts = {p: template.count(p) for p in PLACEHOLDERS}
    if not any(counts.values()) or any(n > 1 for n in counts.values()):
        raise ValueError(
            "a template must contain {release} or {sha} (the release's commit), each at most once"
        )
    return template


def needs_commits(template: str) -> bool:
    return "{sha}" in template


def fill(template: str, release: str, commits: Commits | None = None) -> str:
    """The name ``template`` gives ``release``."""
    value = template.replace("{release}", release)
    if needs_commits(value):
        if commits is None:
            raise ConfigError(
                f"{template!r} names the release's commit ({{sha}}): it needs [readiness.github]"
            )
        value = value.replace("{sha}", commits.sha_of(release)[:SHORT_SHA])
    return value


def parse(value: str | None, template: str, commits: Commits | None = None) -> str | None:
    """The release ``value`` names through ``template``; None when it does not fit the template.
    A commit tagged for several releases gives the first ``commits`` lists, in GitHub's order."""
    if not value:
        return None
    match = _pattern(template).fullmatch(value)
    if match is None:
        return None
    named = match.groupdict()
    release = named.get("release")
    if "sha" not in named:
        return release
    if commits is None:
        return None
    candidates = [r for r in commits.releases_at(named["sha"]) if release is None or r == release]
    return candidates[0] if candidates else None


@functools.lru_cache(maxsize=64)
def _pattern(template: str) -> re.Pattern[str]:
    """The template as a regular expression (cached: every pod's image is read at every poll)."""
    parts = re.split(r"(\{release\}|\{sha\})", template)
    groups = {"{release}": "(?P<release>.+?)", "{sha}": "(?P<sha>[0-9a-f]{4,40})"}
    return re.compile("".join(groups.get(part, re.escape(part)) for part in parts))
