"""The images the sandbox's nodes can run, like a registry: an image's repository names a
service, its tag a release of it (``sandbox/images.toml``).

An entry gives the tag's shape (``v{release}-ga``, or ``prod-{sha}``: the short sha of the
release's git tag, from ``commits``, the service's ``module:MAPPING`` of release to commit), the
command that runs a release (``{python}``,
``{root}``, ``{image}``, ``{release}``, ``{host}`` and ``{port}`` are filled in) and its releases:
``module:MAPPING`` (the service's own catalog), a list of names, or ``"*"`` (any tag). An image whose repository is not listed,
or whose tag names no release, cannot be pulled: the node agent says ``ErrImagePull`` and
``ImagePullBackOff``, as a kubelet does for a tag missing from the registry.
"""

from __future__ import annotations

import importlib
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from releasegate.release_names import parse

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = Path(__file__).resolve().parent / "images.toml"


@dataclass(frozen=True)
class Resolved:
    """A release of a service, ready to run."""

    image: str
    release: str
    command: tuple[str, ...]
    workdir: str

    def argv(self, *, host: str, port: int) -> list[str]:
        values = {"python": sys.executable, "root": str(ROOT), "image": self.image, "release": self.release,
                  "host": host, "port": str(port)}  # fmt: skip
        return [part.format(**values) for part in self.command]


@dataclass(frozen=True)
class Image:
    repository: str
    tag: str
    command: tuple[str, ...]
    releases: str | tuple[str, ...]
    workdir: str = "{root}"
    missing: tuple[str, ...] = ()
    """Tags the registry does not have (a test's image that cannot be pulled)."""
    commits: str | None = None
    """``module:MAPPING`` of each release to the commit its git tag names, for ``{sha}`` tags."""

    def release_of(self, tag: str) -> str | None:
        return parse(tag, self.tag, self.tagged_commits())

    def tagged_commits(self) -> TaggedCommits | None:
        """The service's release tags and their commits, for a tag named by the commit."""
        return TaggedCommits(_imported(self.commits)) if self.commits else None

    def knows(self, release: str) -> bool:
        if self.releases == "*":
            return True
        if isinstance(self.releases, tuple):
            return release in self.releases
        return release in _imported(self.releases)


@dataclass(frozen=True)
class TaggedCommits:
    """A service's git tags as a mapping of release to commit (releasegate.release_names.Commits)."""

    shas: dict[str, str]

    def sha_of(self, release: str) -> str:
        return self.shas[release]

    def releases_at(self, sha_prefix: str) -> list[str]:
        return [release for release, sha in self.shas.items() if sha.startswith(sha_prefix)]


def _imported(reference: str) -> Any:
    """``module:NAME``'s object."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def split_image(image: str) -> tuple[str, str]:
    """``host:5000/team/app:v1`` -> (``host:5000/team/app``, ``v1``); no tag is ``latest``."""
    name, _, last = image.rpartition("/")
    repository, sep, tag = last.partition(":")
    return (f"{name}/{repository}" if name else repository), (tag if sep else "latest")


@dataclass(frozen=True)
class Catalog:
    images: dict[str, Image]

    @classmethod
    def load(cls, path: Path = DEFAULT) -> Catalog:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return cls(
            {
                repo: Image(
                    repo,
                    e.get("tag", "{release}"),
                    tuple(e["command"]),
                    tuple(e["releases"]) if isinstance(e["releases"], list) else e["releases"],
                    e.get("workdir", "{root}"),
                    tuple(e.get("missing", ())),
                    e.get("commits"),
                )
                for repo, e in data.get("images", {}).items()
            }
        )

    def resolve(self, image: str) -> Resolved | str:
        """The release to run, or why the image cannot be pulled (the message a kubelet gives)."""
        if "@" in image:
            return f"{image}: digests are not served by the sandbox's registry"
        repository, tag = split_image(image)
        entry = self.images.get(repository)
        if entry is None:
            return f"{repository}:{tag}: not found: no repository {repository} in the sandbox's registry"
        release = entry.release_of(tag)
        if release is None or not entry.knows(release) or tag in entry.missing:
            return f"{repository}:{tag}: not found: {repository} has no release {tag}"
        return Resolved(image, release, entry.command, entry.workdir.format(root=ROOT))
