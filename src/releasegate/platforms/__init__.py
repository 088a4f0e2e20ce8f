"""Where a release runs. ``make_platform`` picks the implementation the environment names."""

from __future__ import annotations

from releasegate.config import Environment
from releasegate.platforms.base import Platform


def make_platform(env: Environment) -> Platform:
    if env.platform.kind == "local":
        from releasegate.platforms.local import LocalPlatform

        assert env.platform.local is not None
        return LocalPlatform(env.platform.local, env.platform.url)
    raise NotImplementedError(f"platform.kind = {env.platform.kind!r}")
