"""A canary on the local platform: a few instances of the new release beside the stable ones,
their share of requests set with nginx weights.

How many canary instances run follows the weight, as Argo Rollouts scales canary replicas by
default: at p % the canary has k = ceil(p·N/100) of them (at least 1, N at 100 %), so each
carries at most what one of the N stable instances carries serving alone. ``start`` runs the
first one beside the N stable ones, checked like any new instance (ready, and still ready after
``min_ready_s``) but not routed. ``set_weight`` first starts the instances the weight needs, with
the same checks, and only then gives the canary instances together p % of the requests: every
server keeps one integer ``weight=``, canary and stable ones chosen so that the canary's total
over the sum is p % (0.1 % resolution); at 0 % the canary is not in the upstream at all, at
100 % only the canary is (on as many instances as stable had: the stable ones stay running, so
going back is a reload). Weights only go up during a canary, so it is never scaled down.

Where ``canary_instances`` pins the count, a step at which each canary instance would carry
``OVERLOAD`` times what a stable one carries alone, or the 100 % step on fewer instances than
the stable release had, is refused before nginx changes. The lead's gates judge each step by
the ``release`` label of the Prometheus targets, which lists the canary instances under their
own release.

``promote`` puts every running instance behind nginx evenly and rolls the stable ones over to
the canary's release with the rolling routine (max surge, min_ready_s, drain), the canary
instances counting among the N. ``abort`` routes to the stable instances only, lets the
canary's in-flight requests drain, and stops them; an abort is a rollout that did not
complete, so a rollback() after it finds the stable release serving and does nothing.

Everything runs under the platform's lock, on the state it loaded; ``state.canary`` is written
before the first canary process starts, so a rollback from another process (the first one
killed) knows there is a canary to take out.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from releasegate.errors import ActionError
from releasegate.platforms.base import Progress
from releasegate.platforms.local import read_upstream_weights

if TYPE_CHECKING:
    from releasegate.platforms.local import LocalPlatform, _Entry, _State

RESOLUTION = 1000
"""nginx weights are integers: the canary's share is set in steps of 100 / RESOLUTION %."""


OVERLOAD = 1.5
"""A pinned count of canary instances that would each carry this many times the requests of a
stable instance serving alone is refused: the canary's latency and resources would be judged
under more load than the release it is compared with ever had."""


def canary_count(percent: float, instances: int) -> int:
    """The canary instances that carry ``percent`` % as one of the ``instances`` stable ones
    carries its share: ceil(percent × instances / 100), at least 1, at most ``instances``."""
    needed = math.ceil(round(percent * instances / 100, 9))  # 0.1 % steps: no float dust
    return min(instances, max(1, needed))


def load_ratio(percent: float, canaries: int, instances: int) -> float:
    """Requests per canary instance over those of one of the ``instances`` stable ones serving
    alone (100 / instances %): 1 when the canary has the capacity its share needs."""
    return percent * instances / (100 * canaries) if canaries else math.inf


def overload(percent: float, pinned: int, instances: int) -> str | None:
    """Why ``pinned`` canary instances cannot take ``percent`` % (None: they can)."""
    ratio = round(load_ratio(percent, pinned, instances), 9)
    if percent >= 100 and pinned < instances:
        what = (
            f"puts every request on fewer instances than the {instances} stable ones had "
            f"(each carrying {ratio:.2f} times the requests of a stable one serving alone)"
        )
    elif ratio >= OVERLOAD:
        what = (
            f"makes each canary instance carry {ratio:.2f} times the requests of one of the "
            f"{instances} stable instances serving alone (refused from {OVERLOAD:g})"
        )
    else:
        return None
    least = instances if percent >= 100 else math.floor(round(percent * instances / (100 * OVERLOAD), 9)) + 1
    return (
        f"canary step {_pct(percent)} %: platform.local.canary_instances = {pinned} {what}: "
        "unset platform.local.canary_instances to let the canary follow the weight, "
        f"or pin at least {least}"
    )


def nginx_weights(percent: float, canaries: int, stables: int) -> tuple[int, int]:
    """The ``weight=`` of each canary and of each stable server (0: not in the upstream) that
    give the ``canaries`` instances together ``percent`` % of requests, as small as possible.

    With c = percent·RESOLUTION/100: each canary gets c·stables and each stable
    (RESOLUTION - c)·canaries, so the canary's total share is exactly c / RESOLUTION.
    """
    if not 0 <= percent <= 100:
        raise ActionError(f"canary weight {percent:g} %: expected 0 to 100")
    share = round(percent * RESOLUTION / 100)
    if share == 0 or canaries == 0:
        return 0, 1
    if share == RESOLUTION or stables == 0:
        return 1, 0
    canary, stable = share * stables, (RESOLUTION - share) * canaries
    common = math.gcd(canary, stable)
    return canary // common, stable // common


def effective_percent(canary_weight: int, canaries: int, stable_weight: int, stables: int) -> float:
    total = canary_weight * canaries + stable_weight * stables
    return 100 * canary_weight * canaries / total if total else 0.0


class LocalCanary:
    """See the module docstring."""

    def __init__(self, platform: LocalPlatform) -> None:
        self.platform = platform

    def start(self, state: _State, release: str, say: Progress) -> tuple[str, str | None]:
        """The canary processes, ready and unrouted; the failure line or None."""
        p, s = self.platform, self.platform.settings
        running = len(self._canaries(state))
        if state.canary == release and running and s.canary_instances in (None, running):
            say(f"canary {release}×{running} already runs at {state.canary_weight:g} %")
            return release, None
        if state.canary is not None:
            raise ActionError(f"a canary of {state.canary} is running: promote or abort it first")
        if state.release is None:
            raise ActionError(f"nothing serves yet: deploy() a first release before a canary of {release}")
        if release == state.release:
            say(f"{release} already serves on all {s.instances} instances: no canary to start")
            return release, None
        routed = set(read_upstream_weights(p.upstream_file))
        idle = [e for e in state.instances if e.port not in routed]
        if idle:  # a warm color, or instances a killed rollout never routed
            say(f"stopping {len(idle)} instance(s) that take no traffic")
            p._stop(state, idle, say)
        if not p._complete(state, state.release):
            serving = ", ".join(f"{e.release} on :{e.port}" for e in state.instances) or "nothing"
            raise ActionError(
                f"the stable release {state.release} does not serve alone on all {s.instances} "
                f"instances ({serving}): deploy or roll back before a canary"
            )
        p._nginx_master()
        count = s.canary_instances or 1
        more = "" if s.canary_instances else "; more follow the weight"
        say(
            f"canary {release}: starting {count} instance(s) beside "
            f"{state.release}×{s.instances}, weight 0 (not routed{more})"
        )
        state.canary, state.canary_weight, state.pending = release, 0.0, release
        p._save(state)
        launched = [p._launch(state, release, say) for _ in range(count)]
        failure = p._await_ready(launched, 0, say, total=count)
        if failure:
            p._stop(state, launched, say)  # never routed: the stable instances kept serving
            state.canary = None
            p._save(state)
            return release, failure
        say(f"canary {release}×{len(launched)} ready beside {state.release}×{s.instances}, weight 0")
        return release, None

    def set_weight(self, state: _State, percent: float, say: Progress) -> float:
        """Start the canary instances ``percent`` needs (ready, held ready), then rewrite the
        upstream with the weights for ``percent``; the share really configured."""
        p, s = self.platform, self.platform.settings
        if state.canary is None:
            raise ActionError("no canary is running: start_canary first")
        canaries, stables = self._canaries(state), self._stables(state)
        if not canaries:
            raise ActionError(
                f"no instance of the canary {state.canary} is running: see its log in {p.state_dir / 'logs'}"
            )
        if not stables and percent < 100:
            raise ActionError(f"no instance of the stable {state.release} is running")
        nginx_weights(percent, 1, 1)  # the percentage checked before anything starts
        if s.canary_instances is None:
            needed = canary_count(percent, s.instances) if percent else 0
            wanted = max(len(canaries), needed)
            sizing = f"following the weight: ceil({_pct(percent)} × {s.instances} / 100) = {needed}"
            if wanted > needed:
                sizing += f", {wanted - needed} more kept from a higher weight"
        else:
            refused = overload(percent, s.canary_instances, s.instances)
            if refused:
                raise ActionError(refused)
            wanted = s.canary_instances
            sizing = "pinned by platform.local.canary_instances"
        p._nginx_master()  # refuse before any instance starts or the upstream file changes
        if wanted > len(canaries):
            canaries += self._scale_up(state, wanted - len(canaries), len(canaries), percent, say)
        canary_w, stable_w = nginx_weights(percent, len(canaries), len(stables))
        share = effective_percent(canary_w, len(canaries), stable_w, len(stables))
        weights = {e.port: canary_w for e in canaries if canary_w} | {
            e.port: stable_w for e in stables if stable_w
        }
        head = f"canary {state.canary} at {_pct(share)} % (weight {_pct(share)}/{_pct(100 - share)}: "
        if canary_w and stable_w:
            how = (
                f"nginx weight={canary_w} on {state.canary}×{len(canaries)}, "
                f"weight={stable_w} on {state.release}×{len(stables)})"
            )
        elif canary_w:
            how = f"nginx -> {state.canary}×{len(canaries)} only; {state.release}×{len(stables)} not routed)"
        else:
            how = f"nginx -> {state.release}×{len(stables)} only; the canary not routed)"
        line = head + how
        if canary_w:
            line += (
                f"; {len(canaries)} canary instance(s) ({sizing}), each carrying "
                f"{load_ratio(share, len(canaries), s.instances):.2f} times what a stable one carries alone"
            )
        p._route(state, set(weights), say, weights if canary_w and stable_w else None, line)
        state.canary_weight = round(share, 3)
        p._save(state)
        return state.canary_weight

    def promote(self, state: _State, say: Progress) -> tuple[str, str | None]:
        """Every instance to the canary's release; the failure line or None."""
        p, s = self.platform, self.platform.settings
        if state.canary is None:
            raise ActionError("no canary is running: nothing to promote")
        release, stable = state.canary, state.release
        p._nginx_master()
        running = self._canaries(state) + self._stables(state)
        p._route(state, {e.port for e in running}, say)  # evenly: from here it is a rolling update
        say(f"promote {release}: replacing {stable} on {s.instances} instance(s), max surge {s.max_surge}")
        failure = p._replace(state, release, say, s.max_surge)
        if failure:  # state.canary stays: a rollback() aborts and returns every instance to stable
            return release, failure
        state.previous_release, state.release, state.pending = stable, release, None
        state.canary, state.canary_weight = None, 0.0
        p._save(state)
        say(f"{release} promoted: serves on all {s.instances} instance(s), {stable} stopped")
        return release, None

    def abort(self, state: _State, say: Progress) -> str | None:
        """Only the stable release serves, the canary stopped; the failure line or None.

        When all N stable instances run (the canary's life until promote) this is a reload and a
        stop. After a promote that stopped half way, the stable release is rolled back onto the
        N instances instead, with the rollback's surge.
        """
        p, s = self.platform, self.platform.settings
        release, stable = state.canary, state.release
        assert release is not None and stable is not None
        stables = self._stables(state)
        others = [e for e in state.instances if e.release != stable]
        if len(stables) >= s.instances:
            routed_before = set(read_upstream_weights(p.upstream_file))
            p._route(
                state,
                {e.port for e in stables},
                say,
                line=f"canary {release} at 0 %: nginx -> {stable}×{len(stables)}",
            )
            if others:
                if any(e.port in routed_before for e in others):
                    time.sleep(s.drain_s)  # the canary's in-flight requests finish
                p._stop(state, others, say)
            failure = None
        else:
            say(f"{stable} runs on {len(stables)} of {s.instances} instances: rolling it back onto all")
            failure = p._replace(state, stable, say, s.rollback_max_surge or s.instances)
        if failure is None:
            state.canary, state.canary_weight = None, 0.0
            state.pending = state.pending or release  # a rollout that did not complete
            say(f"canary {release} aborted: {stable}×{s.instances} serves alone")
        p._save(state)
        return failure

    def _scale_up(
        self, state: _State, count: int, running: int, percent: float, say: Progress
    ) -> list[_Entry]:
        """``count`` more canary instances, ready and held ready, not routed yet."""
        p = self.platform
        wanted = running + count
        say(f"canary {state.canary} at {_pct(percent)} % needs {wanted} instance(s): starting {count} more")
        launched: list[_Entry] = []
        try:
            for _ in range(count):
                launched.append(p._launch(state, state.canary or "", say))
        except ActionError:
            p._stop(state, launched, say)
            raise
        failure = p._await_ready(launched, running, say, total=wanted)
        if failure:
            p._stop(state, launched, say)  # never routed: the weights stay as they were
            raise ActionError(
                f"canary at {_pct(percent)} %: {failure}; the weight stays at {_pct(state.canary_weight)} %"
            )
        return launched

    def _canaries(self, state: _State) -> list[_Entry]:
        return [e for e in state.instances if e.release == state.canary and e.pid is not None]

    def _stables(self, state: _State) -> list[_Entry]:
        return [e for e in state.instances if e.release == state.release and e.pid is not None]


def _pct(value: float) -> str:
    return f"{round(value, 1):g}"
