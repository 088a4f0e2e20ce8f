"""Blue-green on the local platform: the new release on N instances beside the N serving ones,
then nginx switches from one set to the other in a single reload.

The colors are relative to one deployment: blue is the release that served when ``start``
was called, green the release it starts. Green is checked like any new instance (ready, still
ready after ``min_ready_s``) and is not routed, so the gates can smoke-test each green instance
at its own URL before it takes a request. ``switch`` routes only to one color; the other keeps
running ("warm") and ``state.warm_until`` says until when it should (``keep_warm_s``), so that
going back is one more switch. A rollback while the release to go back to runs warm is that
switch, after one readiness GET per instance: no process starts. ``retire`` stops whatever
nginx does not route to, when the gates decide; the next ``start`` retires a leftover warm set
first.

What runs and which color is which is in the state file, so a rollback from another process
(``pytest rollback/``) switches back the same way.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from releasegate.errors import ActionError
from releasegate.platforms.base import Progress
from releasegate.platforms.local import _end_strategies, read_upstream_weights

if TYPE_CHECKING:
    from releasegate.platforms.local import LocalPlatform, _Entry, _State


class LocalBlueGreen:
    """See the module docstring."""

    def __init__(self, platform: LocalPlatform) -> None:
        self.platform = platform

    def start(self, state: _State, release: str, say: Progress) -> tuple[str, str | None]:
        """Green: N ready instances of ``release``, not routed; the failure line or None."""
        p, n = self.platform, self.platform.settings.instances
        if state.canary is not None:
            raise ActionError(f"a canary of {state.canary} is running: promote or abort it first")
        if state.release is None:
            raise ActionError(f"nothing serves yet: deploy() a first release before a green {release}")
        if release == state.release:
            say(f"{release} already serves: no green to start")
            return release, None
        if state.green == release and len(self._running(state, release)) == n:
            say(f"green {release}×{n} already runs, not routed")
            return release, None
        routed = set(read_upstream_weights(p.upstream_file))
        idle = [e for e in state.instances if e.port not in routed]
        if idle:  # the warm color of the previous blue-green, or a killed rollout's strays
            say(f"retiring {_sets(state, idle)} first: it takes no traffic")
            p._stop(state, idle, say)
        if not p._complete(state, state.release):
            serving = ", ".join(f"{e.release} on :{e.port}" for e in state.instances) or "nothing"
            raise ActionError(
                f"blue {state.release} does not serve alone on all {n} instances ({serving}): "
                "deploy or roll back before a blue-green"
            )
        p._nginx_master()
        state.blue, state.green, state.pending = state.release, release, release
        state.switched_at = state.warm_until = None
        p._save(state)
        say(f"green {release}: starting {n} instance(s) beside blue {state.release}×{n}, not routed")
        launched = [p._launch(state, release, say) for _ in range(n)]
        failure = p._await_ready(launched, 0, say)
        if failure:
            p._stop(state, launched, say)  # never routed: blue kept serving
            state.blue = state.green = None
            p._save(state)
            return release, failure
        say(f"green {release}×{n} ready, not routed: smoke-test each instance at its own URL")
        return release, None

    def switch(self, state: _State, release: str, say: Progress) -> str | None:
        """nginx routes only to the instances of ``release``; the failure line or None."""
        p, n = self.platform, self.platform.settings.instances
        if state.canary is not None:
            raise ActionError(f"a canary of {state.canary} is running: promote or abort it, not switch")
        targets = self._running(state, release)
        if not targets:
            raise ActionError(f"no instance runs {release}: nothing to switch to")
        if len(targets) < n:
            return f"{release} runs on {len(targets)} of {n} instances: not switching"
        failure = p._not_ready(targets)
        if failure:
            return f"not switching to {release}: {failure}"
        if set(read_upstream_weights(p.upstream_file)) == {e.port for e in targets}:
            say(f"nginx already routes only to {self._named(state, release, len(targets))}")
        else:
            p._nginx_master()
            self._route(state, targets, say)
        if state.release != release:
            state.previous_release = state.release
        state.release, state.pending = release, None
        p._save(state)
        return None

    def switch_back(self, state: _State, target: str, say: Progress) -> bool:
        """Rollback: when ``target`` still runs warm on every instance, switch to it and say True;
        False when the rolling routine must do it (not blue-green, not warm, or not ready)."""
        p, n = self.platform, self.platform.settings.instances
        if target not in (state.blue, state.green):
            return False
        targets = self._running(state, target)
        routed = set(read_upstream_weights(p.upstream_file))
        if len(targets) != n or any(e.port in routed for e in targets):
            return False
        failure = p._not_ready(targets)
        if failure:
            say(f"the warm {target} cannot take traffic ({failure}): starting it anew")
            return False
        say(f"{target} still runs warm on {n} instance(s): switching back, no process starts")
        p._nginx_master()
        self._route(state, targets, say)
        return True

    def retire(self, state: _State, say: Progress) -> tuple[str, str | None]:
        """Stop the instances nginx does not route to; blue-green is over."""
        p = self.platform
        if state.canary is not None:
            raise ActionError(f"a canary of {state.canary} is running: promote or abort it, not retire")
        routed = set(read_upstream_weights(p.upstream_file))
        idle = [e for e in state.instances if e.port not in routed]
        if not idle:
            say("nothing warm to retire: every instance takes traffic")
        else:
            since = _since(state.switched_at)
            if since is not None and since < p.settings.drain_s:
                time.sleep(p.settings.drain_s - since)  # requests sent just before the switch finish
                since = p.settings.drain_s
            warm = f" (warm for {since:.1f} s after the switch)" if since is not None else ""
            say(f"retiring {_sets(state, idle)}{warm}")
            p._stop(state, idle, say)
        if state.pending is None:  # else a green that never served: the rollout stays incomplete
            _end_strategies(state)
        else:
            state.blue = state.green = state.switched_at = state.warm_until = None
        p._save(state)
        return state.release or "", None

    # -- helpers ------------------------------------------------------------------------------

    def _route(self, state: _State, targets: list[_Entry], say: Progress) -> None:
        """Route to ``targets`` only; the others stay warm until keep_warm_s has passed."""
        p = self.platform
        release = targets[0].release
        others = [e for e in state.instances if e not in targets]
        line = f"nginx -> {self._named(state, release, len(targets))}"
        if others:
            line += f" ({_sets(state, others)} warm)"
        p._route(state, {e.port for e in targets}, say, line=line)
        now = datetime.now(UTC)
        state.switched_at = now.isoformat(timespec="milliseconds")
        warm = now + timedelta(seconds=p.settings.keep_warm_s)
        state.warm_until = warm.isoformat(timespec="milliseconds") if others else None
        p._save(state)

    def _running(self, state: _State, release: str) -> list[_Entry]:
        return [e for e in state.instances if e.release == release and e.pid is not None]

    def _named(self, state: _State, release: str, count: int) -> str:
        return f"{_color(state, release)}{release}×{count}"


def _color(state: _State, release: str) -> str:
    return "green " if release == state.green else "blue " if release == state.blue else ""


def _sets(state: _State, entries: list[_Entry]) -> str:
    counts = Counter(e.release for e in entries)
    return ", ".join(f"{_color(state, r)}{r}×{n}" for r, n in counts.items())


def _since(iso: str | None) -> float | None:
    if iso is None:
        return None
    return (datetime.now(UTC) - datetime.fromisoformat(iso)).total_seconds()
