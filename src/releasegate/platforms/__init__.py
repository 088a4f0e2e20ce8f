"""Where a release runs. ``make_platform`` picks the implementation the environment names."""

from __future__ import annotations

from releasegate.config import Environment
from releasegate.platforms.base import Platform
from releasegate.release_names import Commits


def make_platform(env: Environment) -> Platform:
    if env.platform.kind == "local":
        from releasegate.platforms.local import LocalPlatform

        assert env.platform.local is not None
        return LocalPlatform(env.platform.local, env.platform.url)
    if env.platform.kind == "kubernetes":
        from releasegate.platforms.kubernetes import KubernetesPlatform

        assert env.platform.kubernetes is not None
        platform = KubernetesPlatform(env.platform.kubernetes, env.platform.url, commits=commits_of(env))
        if env.platform.kubernetes.helm is not None:
            from releasegate.platforms.helm import HelmPlatform

            return HelmPlatform(platform)
        return platform
    raise NotImplementedError(f"platform.kind = {env.platform.kind!r}")


def commits_of(env: Environment) -> Commits | None:
    """The release's git tags on GitHub, when an image is named by the release's commit
    (``prod-{sha}``); None otherwise (nothing asks GitHub, no token is needed)."""
    github = env.readiness.github if env.readiness else None
    if not env.image_templates_need_commits or github is None:
        return None
    from releasegate.probes.github import GitHub, TagCommits

    return TagCommits(lambda: GitHub.from_settings(github), github.ref)


def instances_reachable(env: Environment) -> bool:
    """Whether each instance's own address answers from where releasegate runs: local processes
    do; pods do only from inside the cluster (otherwise they are checked through the service)."""
    if env.platform.kind == "kubernetes":
        return bool(env.platform.kubernetes and env.platform.kubernetes.in_cluster)
    return True


def strategy_of(env: Environment) -> str:
    """How this environment moves traffic to a new release: rolling, canary, blue-green (or
    argo-rollout on Kubernetes: a canary the gates drive when releasegate judges its steps)."""
    kubernetes = env.platform.kubernetes
    if env.platform.kind == "kubernetes" and kubernetes is not None:
        if kubernetes.argo_rollout is not None and kubernetes.argo_rollout.analysis == "releasegate":
            return "canary"  # the gates walk the Rollout's steps, judging each (platforms.argo)
        return kubernetes.strategy
    if env.platform.local is not None:
        return env.platform.local.strategy
    return "rolling"
