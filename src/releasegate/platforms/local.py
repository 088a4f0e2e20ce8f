"""The local platform: N processes of a release behind nginx, replaced one at a time.

A rollout here is what a Kubernetes Deployment does with ``maxSurge 1, maxUnavailable 0``:
start a new instance, wait until it is ready and has stayed ready for ``min_ready_s``, put it
behind nginx, take one old instance out of nginx, let its in-flight requests drain, stop it;
repeat. Deploy and rollback are the same routine with a different target, so a rollback is as
safe (and as tested) as a deploy.

Instances are plain processes started in their own session, so they outlive the process that
deployed them, like pods outlive ``kubectl``. What runs where is recorded in
``state_dir/state.json`` (written atomically, each instance recorded *before* it is started,
so a crash never leaves a process nobody knows about); ``state_dir/lock`` lets one rollout run
at a time. nginx sends traffic to the ``server`` lines of ``nginx_upstream_file``, which this
module rewrites and then applies with SIGHUP to the nginx master. With ``targets_file`` set,
every running instance is also listed there for Prometheus's file-based service discovery,
labelled with its release and instance name, rewritten whenever the set changes.

``strategy`` canary and blue-green are driven step by step by the gates, which judge between
the steps: ``start_canary``, ``set_canary_weight`` (nginx ``weight=``), ``promote``, ``abort``
(local_canary.py); ``start_green``, ``green_instances``, ``switch_traffic``, ``retire``
(local_bluegreen.py). Their state is in state.json too, so ``rollback()`` from any process
undoes them: it aborts a canary left running, and switches back to a color still warm.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from releasegate.config import LocalPlatformSettings
from releasegate.errors import ActionError, ConfigError
from releasegate.platforms.base import Instance, PlatformStatus, Progress, RolloutResult, no_progress
from releasegate.release_names import fill

HISTORY_LENGTH = 20
_POLL_S = 0.1
_RELOAD_TIMEOUT_S = 5.0
_SERVER_LINE = re.compile(r"^\s*server\s+127\.0\.0\.1:(\d+)([^;#]*);")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


# -- the upstream file, shared with the sandbox that starts nginx ----------------------------


def write_upstream_file(
    path: Path,
    servers: Iterable[tuple[int, str]],
    placeholder_port: int,
    weights: Mapping[int, int] | None = None,
) -> None:
    """Write the ``server`` lines nginx routes to; with none, a ``down`` placeholder.

    nginx refuses an upstream block without servers, so "no instance in service" is one
    server marked ``down``: nginx starts and answers 502 instead of failing its reload.
    ``weights`` (port -> nginx ``weight=``, for a canary's share) are written only when given.
    """
    lines = ["# Written by releasegate's local platform: the instances nginx sends traffic to."]
    servers = list(servers)
    weights = weights or {}
    lines += [
        f"server 127.0.0.1:{port}{f' weight={weights[port]}' if port in weights else ''};  # {label}"
        for port, label in servers
    ]
    if not servers:
        lines.append(f"server 127.0.0.1:{placeholder_port} down;  # no instance in service")
    _atomic_write(path, "\n".join(lines) + "\n")


def read_upstream_ports(path: Path) -> list[int]:
    """The ports nginx routes to (``down`` placeholders excluded); none when the file is missing."""
    return list(read_upstream_weights(path))


def read_upstream_weights(path: Path) -> dict[int, int]:
    """Port -> nginx weight (1 when the line sets none) of each server nginx routes to."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    weights = {}
    for match in map(_SERVER_LINE.match, text.splitlines()):
        if match is None:
            continue
        params = match.group(2).split()
        if "down" not in params:
            given = [int(p.removeprefix("weight=")) for p in params if p.startswith("weight=")]
            weights[int(match.group(1))] = given[0] if given else 1
    return weights


def write_targets_file(path: Path, targets: Iterable[tuple[int, str, str]]) -> bool:
    """Write Prometheus file_sd JSON for ``(port, release, instance name)``; False if unchanged.

    One group per instance, so each series carries its ``release`` and ``instance`` labels.
    Prometheus watches the file: an instance is scraped from its start, before nginx routes to it.
    """
    groups = [
        {"targets": [f"127.0.0.1:{port}"], "labels": {"release": release, "instance": name}}
        for port, release, name in targets
    ]
    text = json.dumps(groups, indent=2) + "\n"
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except FileNotFoundError:
        pass
    _atomic_write(path, text)
    return True


# -- state ------------------------------------------------------------------------------------


@dataclass
class _Entry:
    name: str
    release: str
    port: int
    pid: int | None = None
    started_at: str = ""


@dataclass
class _State:
    release: str | None = None
    """The last release that completed a rollout."""
    previous_release: str | None = None
    pending: str | None = None
    """The target of a rollout that started and did not complete (failed, killed or aborted)."""
    instances: list[_Entry] = field(default_factory=list)
    canary: str | None = None
    """The canary's release, from start_canary until promote or abort (see local_canary)."""
    canary_weight: float = 0.0
    """The share of requests nginx sends to the canary instances, in percent."""
    blue: str | None = None
    """Blue-green, from start_green until retire: the release that served before (see local_bluegreen)."""
    green: str | None = None
    """Blue-green: the release started beside it."""
    switched_at: str | None = None
    """Blue-green: when nginx last switched colors."""
    warm_until: str | None = None
    """Blue-green: the set that does not serve stays running at least until then (keep_warm_s)."""
    history: list[dict[str, object]] = field(default_factory=list)


class LocalPlatform:
    """Instances of a release as local processes behind nginx (see the module docstring)."""

    def __init__(self, settings: LocalPlatformSettings, url: str) -> None:
        if not any("{port}" in arg for arg in settings.command):
            raise ConfigError("platform.local.command must pass {port} to the instance (e.g. --port {port})")
        self.settings = settings
        self.url = url
        self.state_dir = Path(settings.state_dir)
        self.state_file = self.state_dir / "state.json"
        self.upstream_file = Path(settings.nginx_upstream_file)
        self.nginx_pid_file = Path(settings.nginx_pid_file)
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._log_offsets: dict[str, int] = {}
        from releasegate.platforms.local_bluegreen import LocalBlueGreen  # they import this module
        from releasegate.platforms.local_canary import LocalCanary

        self._canary = LocalCanary(self)
        self._blue_green = LocalBlueGreen(self)

    # -- the Platform protocol --------------------------------------------------------------

    def current_release(self) -> str | None:
        """The release of the last completed rollout; None when nothing was ever deployed."""
        return self._load().release

    def status(self) -> PlatformStatus:
        """Each instance's release and readiness (a 1 s GET), and which ones nginx routes to.

        An instance's ``detail`` starts with its part in a strategy when it has one ("canary,
        nginx weight 1", "blue, warm until ...", "green, not routed").
        """
        state = self._load()
        weights = read_upstream_weights(self.upstream_file)
        with _client(timeout=1.0) as client:
            instances = tuple(
                self._observe(client, entry, _role(state, entry, weights)) for entry in state.instances
            )
        return PlatformStatus(
            release=state.release,
            previous_release=state.previous_release,
            desired=self.settings.instances,
            instances=instances,
            in_service=tuple(e.name for e in state.instances if weights.get(e.port, 0) > 0),
        )

    def deploy(self, release: str, progress: Progress = no_progress) -> RolloutResult:
        """Replace every instance with ``release``, one at a time; a no-op when it already serves.

        With ``strategy`` canary or blue-green this is only the first deployment (nothing serves
        yet: nothing to compare with) and the no-op (which, like any rollout, stops instances
        that take no traffic, a warm color too); any other change, or any call while a canary
        runs, raises ActionError, because those strategies exist for the checks between their
        steps, which the gates make: they call start_canary, set_canary_weight, promote or abort;
        start_green, switch_traffic, retire. A deploy() that skipped the analysis would pass for
        a canary.
        """
        strategy = self.settings.strategy
        if strategy != "rolling":
            state = self._load()
            if state.canary is not None:
                raise ActionError(
                    f"a canary of {state.canary} is running: promote, abort or roll back, not deploy()"
                )
            if state.release is not None and state.release != release:
                steps = (
                    "start_canary, set_canary_weight for each step, then promote or abort"
                    if strategy == "canary"
                    else "start_green, switch_traffic('green'), then retire"
                )
                raise ActionError(
                    f"platform.local.strategy is {strategy!r}: deploy() does not replace "
                    f"{state.release} with {release}; the gates call the strategy's steps: {steps}"
                )
        return self._roll_out("deploy", lambda _state: release, progress, self.settings.max_surge)

    def rollback(self, to_release: str | None = None, progress: Progress = no_progress) -> RolloutResult:
        """Undo the last rollout with the same routine as a deploy.

        Without ``to_release``: after a completed rollout, return to ``previous_release``; after
        one that failed, was aborted or was killed half way, return every instance to
        ``release`` (the last one that completed), which is what still serves.

        A canary still running (its process was killed, nobody aborted it) is aborted first:
        only the stable instances stay routed. Blue-green: while the release to go back to
        still runs warm on every instance, the rollback is a switch of nginx, no process starts.
        """

        def target(state: _State) -> str:
            chosen = to_release or (state.release if state.pending else state.previous_release)
            if chosen is None:
                raise ActionError(f"nothing to roll back to: {self.state_file} records no previous release")
            return chosen

        def undo_strategy(state: _State, chosen: str, say: Progress) -> bool:
            if state.canary is not None:
                failure = self._canary.abort(state, say)
                if failure:
                    raise ActionError(f"aborting the canary of {state.canary}: {failure}")
            return self._blue_green.switch_back(state, chosen, say)

        surge = self.settings.rollback_max_surge or self.settings.instances
        return self._roll_out("rollback", target, progress, surge, undo_strategy)

    # -- canary (strategy "canary"; see local_canary) -------------------------------------------

    def start_canary(self, release: str, progress: Progress = no_progress) -> RolloutResult:
        """Start ``canary_instances`` processes of ``release`` beside the stable ones, ready (and
        held ready for min_ready_s) but not routed: weight 0 until set_canary_weight."""
        self._require_strategy("canary", "start_canary")
        return self._step(
            "start_canary", progress, lambda state, say: self._canary.start(state, release, say)
        )

    def set_canary_weight(self, percent: float, progress: Progress = no_progress) -> float:
        """nginx sends ``percent`` % of requests to the canary instances together, the rest to the
        stable ones (0: the canary is not in the upstream; 100: only the canary is); returns the
        share really configured (nginx weights are integers: 0.1 % resolution)."""
        with self._lock():
            state = self._load()
            self._forget_dead(state, progress)
            return self._canary.set_weight(state, percent, progress)

    def promote(self, progress: Progress = no_progress) -> RolloutResult:
        """The canary's release replaces the stable one on every instance (the rolling routine, the
        canary instances kept); then ``release`` is the canary's, ``previous_release`` the stable."""
        return self._step("promote", progress, self._canary.promote)

    def abort(self, progress: Progress = no_progress) -> RolloutResult:
        """Canary weight 0 and the canary's processes stopped: only the stable release serves.

        The state keeps the canary as a rollout that did not complete, so a rollback() after it
        is a no-op that succeeds.
        """

        def abort(state: _State, say: Progress) -> tuple[str, str | None]:
            if state.canary is None:
                raise ActionError("no canary is running: nothing to abort")
            if state.release is None:
                raise ActionError("no stable release is recorded: nothing to return to")
            return state.release, self._canary.abort(state, say)

        return self._step("abort", progress, abort)

    def canary_instances(self) -> list[Instance]:
        """The instances of the running canary (none when no canary runs), with their URLs."""
        return self._instances_of(lambda state: state.canary)

    # -- blue-green (strategy "blue-green"; see local_bluegreen) ---------------------------------

    def start_green(self, release: str, progress: Progress = no_progress) -> RolloutResult:
        """Start ``instances`` processes of ``release`` beside the serving (blue) ones, not routed;
        green_instances() gives their URLs for smoke tests before any traffic."""
        self._require_strategy("blue-green", "start_green")
        return self._step(
            "start_green", progress, lambda state, say: self._blue_green.start(state, release, say)
        )

    def green_instances(self) -> list[Instance]:
        """The instances of the green release (none outside a blue-green), each with its URL."""
        return self._instances_of(lambda state: state.green)

    def switch_traffic(self, to: str, progress: Progress = no_progress) -> RolloutResult:
        """nginx routes only to color ``to`` ("green": the release start_green started; "blue":
        the one that served before); the other color keeps running, warm, for keep_warm_s."""
        if to not in ("blue", "green"):
            raise ActionError(f"no color {to!r}: blue-green knows blue and green")

        def switch(state: _State, say: Progress) -> tuple[str, str | None]:
            release = state.green if to == "green" else state.blue
            if release is None:
                raise ActionError(f"no {to} release is recorded: start_green first")
            return release, self._blue_green.switch(state, release, say)

        return self._step(f"switch to {to}", progress, switch)

    def switch_to(self, release: str, progress: Progress = no_progress) -> RolloutResult:
        """switch_traffic by release: nginx routes only to the instances running ``release``."""
        return self._step(
            f"switch to {release}",
            progress,
            lambda state, say: (release, self._blue_green.switch(state, release, say)),
        )

    def warm_remaining_s(self) -> float:
        """Seconds until the warm set may be retired (keep_warm_s after the switch); 0 when none."""
        until = self._load().warm_until
        if until is None:
            return 0.0
        return max(0.0, (datetime.fromisoformat(until) - datetime.now(UTC)).total_seconds())

    def retire(self, progress: Progress = no_progress, *, wait: bool = False) -> RolloutResult:
        """Stop the instances nginx does not route to (the warm color); blue-green is then over.

        The gates decide when: at once by default, or with ``wait`` after sleeping out the rest
        of keep_warm_s. The wait holds no lock, so a rollback from elsewhere can still switch back
        meanwhile (then the release rolled back from is what is retired).
        """
        remaining = self.warm_remaining_s() if wait else 0.0
        if remaining:
            progress(f"the warm set stays for {remaining:.1f} s more (keep_warm_s)")
            time.sleep(remaining)
        return self._step("retire", progress, self._blue_green.retire)

    # -- beyond the protocol ----------------------------------------------------------------

    def stop_all(self, progress: Progress = no_progress) -> None:
        """Take every instance out of nginx and stop it (the sandbox's ``down``)."""
        with self._lock():
            state = self._load()
            if state.instances:
                self._write_upstream(state, set())
                with contextlib.suppress(ActionError):  # nginx already stopped: nothing routes anyway
                    self._reload_nginx()
                self._stop(state, list(state.instances), progress)
            if state.release is not None:
                state.previous_release = state.release
            state.release, state.pending = None, None
            _end_strategies(state)
            self._record(state, "stop_all", state.previous_release, None, ok=True, reason="", duration_s=0.0)

    def logs(self, instance_name: str, lines: int = 50) -> list[str]:
        """The last ``lines`` lines an instance wrote (stdout and stderr)."""
        return _tail(self._log_path(instance_name), lines)

    # -- the rollout --------------------------------------------------------------------------

    def _roll_out(
        self,
        action: str,
        choose: Callable[[_State], str],
        progress: Progress,
        surge: int,
        undo_strategy: Callable[[_State, str, Progress], bool] | None = None,
    ) -> RolloutResult:
        """The rolling routine. ``undo_strategy`` (rollback) first undoes a canary or a blue-green
        switch; when it returns True the target already serves and nothing is replaced."""
        started = time.monotonic()
        events: list[str] = []

        def say(line: str) -> None:
            events.append(line)
            progress(line)

        with self._lock():
            state = self._load()
            target = choose(state)
            before = state.release
            self._forget_dead(state, say)
            switched = False
            if undo_strategy is not None:
                try:
                    switched = undo_strategy(state, target, say)
                except ActionError as exc:
                    self._record(
                        state,
                        action,
                        before,
                        target,
                        ok=False,
                        reason=str(exc),
                        duration_s=time.monotonic() - started,
                    )
                    raise
            if not switched and self._complete(state, target):
                state.pending = None
                _end_strategies(state)
                self._save(state)
                say(f"{target} already serves on all {self.settings.instances} instances: nothing to do")
                return RolloutResult(
                    True, target, state.previous_release, time.monotonic() - started, events=events
                )
            failure = None
            s = self.settings
            if not switched:
                self._ensure_upstream_file()
                self._nginx_master()  # refuse before starting anything, not half way
                say(
                    f"{action} {before or '(nothing)'} -> {target}: {s.instances} instance(s), "
                    f"max surge {surge}, max unavailable {s.max_unavailable}"
                )
                state.pending = target
                self._save(state)
                try:
                    failure = self._replace(state, target, say, surge)
                except ActionError as exc:
                    self._record(
                        state,
                        action,
                        before,
                        target,
                        ok=False,
                        reason=str(exc),
                        duration_s=time.monotonic() - started,
                    )
                    raise
            duration = time.monotonic() - started
            if failure is None:
                if before != target:
                    state.previous_release = before
                state.release, state.pending = target, None
                if not switched:  # only the target runs now: no canary, no second color
                    _end_strategies(state)
                say(f"{target} serves on all {s.instances} instance(s) after {duration:.1f} s")
            else:
                say(f"{action} to {target} failed: {failure}")
            self._record(
                state, action, before, target, ok=failure is None, reason=failure or "", duration_s=duration
            )
            return RolloutResult(
                ok=failure is None,
                release=target,
                previous_release=before,
                duration_s=duration,
                reason=failure or "",
                events=events,
            )

    def _step(
        self, action: str, progress: Progress, work: Callable[[_State, Progress], tuple[str, str | None]]
    ) -> RolloutResult:
        """One step of a strategy under the rollout lock, timed and kept in the history.

        ``work`` returns the release the step concerns and its failure line (None: it worked);
        an ActionError (refused, or nginx gone) is recorded and raised.
        """
        started = time.monotonic()
        events: list[str] = []

        def say(line: str) -> None:
            events.append(line)
            progress(line)

        with self._lock():
            state = self._load()
            before = state.release
            self._forget_dead(state, say)
            try:
                release, failure = work(state, say)
            except ActionError as exc:
                self._record(
                    state,
                    action,
                    before,
                    None,
                    ok=False,
                    reason=str(exc),
                    duration_s=time.monotonic() - started,
                )
                raise
            duration = time.monotonic() - started
            if failure:
                say(f"{action} ({release}) failed after {duration:.1f} s: {failure}")
            self._record(
                state, action, before, release, ok=failure is None, reason=failure or "", duration_s=duration
            )
            return RolloutResult(
                ok=failure is None,
                release=release,
                previous_release=before,
                duration_s=duration,
                reason=failure or "",
                events=events,
            )

    def _require_strategy(self, strategy: str, step: str) -> None:
        if self.settings.strategy != strategy:
            raise ActionError(
                f"platform.local.strategy is {self.settings.strategy!r}: {step} needs {strategy!r}"
            )

    def _instances_of(self, release_of: Callable[[_State], str | None]) -> list[Instance]:
        state = self._load()
        release = release_of(state)
        if release is None:
            return []
        weights = read_upstream_weights(self.upstream_file)
        with _client(timeout=1.0) as client:
            return [
                self._observe(client, e, _role(state, e, weights))
                for e in state.instances
                if e.release == release
            ]

    def _replace(self, state: _State, target: str, say: Progress, surge: int) -> str | None:
        """Surge new instances, route to them, retire old ones; the failure line or None."""
        s = self.settings
        routed = set(read_upstream_ports(self.upstream_file)) & {e.port for e in state.instances}
        strays = [e for e in state.instances if e.port not in routed]
        if strays:  # started by a rollout that was killed before they were verified and routed
            say(f"stopping {len(strays)} instance(s) that never went into service")
            self._stop(state, strays, say)
        while True:
            new = [e for e in state.instances if e.release == target]
            old = [e for e in state.instances if e.release != target]
            missing = s.instances - len(new)
            if missing <= 0:
                break
            serving = [e for e in state.instances if e.port in routed]
            early: list[_Entry] = []
            if serving and s.max_unavailable:
                early = old[: min(s.max_unavailable, len(old), len(serving) - 1)]
                self._retire(state, routed, early, say)
            batch = min(surge + len(early), missing) if serving else missing
            launched = [self._launch(state, target, say) for _ in range(batch)]
            failure = self._await_ready(launched, len(new), say)
            if failure:
                self._stop(state, launched, say)  # never routed: the old instances kept serving
                return failure
            routed |= {e.port for e in launched}
            self._route(state, routed, say)
            old = [e for e in state.instances if e.release != target]
            excess = len(state.instances) - s.instances
            self._retire(state, routed, old[: max(excess, 0)], say)
        new = [e for e in state.instances if e.release == target]
        leftovers = [e for e in state.instances if e.release != target] + new[s.instances :]
        self._retire(state, routed, leftovers, say)
        return None

    def _launch(self, state: _State, release: str, say: Progress) -> _Entry:
        """Start one instance; it is in the state file before its process exists."""
        port = self._free_port(state)
        entry = _Entry(_UNSAFE_NAME.sub("_", f"{release}-{port}"), release, port, None, _now())
        state.instances.append(entry)
        self._save(state)
        argv = self._argv(release, port)
        log_path = self._log_path(entry.name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self._log_offsets[entry.name] = log.tell()
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=self.settings.workdir,
                    env=self._environment(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                state.instances.remove(entry)
                self._save(state)
                raise ActionError(f"cannot start {release} on :{port}: {argv[0]}: {exc.strerror}") from None
        entry.pid = proc.pid
        self._procs[proc.pid] = proc
        self._save(state)
        say(f"started {release} on :{port} (pid {proc.pid})")
        return entry

    def _await_ready(
        self, entries: list[_Entry], ready_before: int, say: Progress, total: int | None = None
    ) -> str | None:
        """Wait until each instance answers readiness and stays ready for min_ready_s.

        An exit ends the wait at once with its code and last log line: a build that starts,
        answers, then crashes is caught here rather than after it took traffic.
        """
        s = self.settings
        total = total or s.instances
        t0 = time.monotonic()
        first_ready: dict[str, float | None] = {e.name: None for e in entries}
        was_ready: dict[str, float] = {}
        waiting = list(entries)
        done = ready_before
        with _client(timeout=1.0) as client:
            while waiting:
                for entry in list(waiting):
                    age = time.monotonic() - t0
                    code = self._exit_code(entry)
                    if code is not None:
                        crashed = (
                            f" (ready at {was_ready[entry.name]:.1f} s, then crashed)"
                            if entry.name in was_ready
                            else ""
                        )
                        return (
                            f"{entry.release} on :{entry.port} exited with {_describe_exit(code)} "
                            f"{age:.1f} s after start{crashed}{self._last_log_line(entry)}"
                        )
                    ok, detail = _probe(client, entry.port, s.readiness_path)
                    if ok:
                        first = first_ready[entry.name]
                        if first is None:
                            first_ready[entry.name] = first = age
                            was_ready.setdefault(entry.name, age)
                        if age - first >= s.min_ready_s:
                            waiting.remove(entry)
                            done += 1
                            held = f", held {s.min_ready_s:g} s" if s.min_ready_s else ""
                            say(
                                f"{entry.release} on :{entry.port} ready after {first:.1f} s{held} "
                                f"({done}/{total})"
                            )
                        continue
                    first_ready[entry.name] = None
                    limit = s.readiness_timeout_s + (s.min_ready_s if entry.name in was_ready else 0)
                    if age > limit:
                        lost = (
                            f" (was ready at {was_ready[entry.name]:.1f} s)"
                            if entry.name in was_ready
                            else ""
                        )
                        return (
                            f"{entry.release} on :{entry.port} not ready within {limit:g} s{lost}: "
                            f"GET {s.readiness_path} -> {detail}{self._last_log_line(entry)}"
                        )
                if waiting:
                    time.sleep(_POLL_S)
        return None

    def _retire(self, state: _State, routed: set[int], entries: list[_Entry], say: Progress) -> None:
        """Take instances out of nginx, let in-flight requests finish, then stop them."""
        if not entries:
            return
        routed.difference_update(e.port for e in entries)
        self._route(state, routed, say)
        time.sleep(self.settings.drain_s)
        self._stop(state, entries, say)

    def _route(
        self,
        state: _State,
        routed: set[int],
        say: Progress,
        weights: Mapping[int, int] | None = None,
        line: str | None = None,
    ) -> None:
        """nginx routes to ``routed`` (with ``weights``, else evenly) once this returns."""
        self._write_upstream(state, routed, weights)
        self._reload_nginx()
        if line is None:
            counts: dict[str, int] = {}
            for entry in state.instances:
                if entry.port in routed:
                    counts[entry.release] = counts.get(entry.release, 0) + 1
            line = "nginx -> " + (" ".join(f"{r}×{n}" for r, n in counts.items()) or "(nothing)")
        say(line)

    def _stop(self, state: _State, entries: list[_Entry], say: Progress) -> None:
        """SIGTERM (graceful), SIGKILL after stop_timeout_s; forget them in the state file."""
        for entry in entries:
            self._signal(entry, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.stop_timeout_s
        while any(self._running(e) for e in entries) and time.monotonic() < deadline:
            time.sleep(0.05)
        for entry in entries:
            killed = self._running(entry)
            if killed:
                self._signal(entry, signal.SIGKILL)
                end = time.monotonic() + 2.0
                while self._running(entry) and time.monotonic() < end:
                    time.sleep(0.05)
            if entry.pid is not None:
                self._procs.pop(entry.pid, None)
            if entry in state.instances:
                state.instances.remove(entry)
            note = f" (SIGKILL after {self.settings.stop_timeout_s:g} s)" if killed else ""
            say(f"stopped {entry.release} on :{entry.port}{note}")
        self._save(state)

    def _forget_dead(self, state: _State, say: Progress) -> None:
        """Drop instances that died; stop one whose start was interrupted before its pid was saved."""
        for entry in list(state.instances):
            if entry.pid is None:
                entry.pid = _find_process(self._argv(entry.release, entry.port)[1:])
                if entry.pid is not None:
                    say(f"{entry.release} on :{entry.port} (pid {entry.pid}) was started but never recorded")
                    self._stop(state, [entry], say)
                    continue
            if not self._running(entry):
                state.instances.remove(entry)
                say(f"{entry.release} on :{entry.port} (pid {entry.pid}) is not running: forgotten")
        self._save(state)

    def _complete(self, state: _State, target: str) -> bool:
        routed = set(read_upstream_ports(self.upstream_file))
        return len(state.instances) == self.settings.instances and all(
            e.release == target and e.port in routed for e in state.instances
        )

    # -- nginx --------------------------------------------------------------------------------

    def _write_upstream(
        self, state: _State, routed: set[int], weights: Mapping[int, int] | None = None
    ) -> None:
        servers = [(e.port, e.name) for e in state.instances if e.port in routed]
        write_upstream_file(self.upstream_file, servers, self.settings.ports[0], weights)

    def _nginx_master(self) -> int:
        shown = f"nginx (pid file {self.nginx_pid_file}) is not running"
        try:
            pid = int(self.nginx_pid_file.read_text().strip())
        except FileNotFoundError:
            self._ensure_upstream_file()
            raise ActionError(
                f"{shown}: no pid file; start nginx, its conf including {self.upstream_file} "
                "(releasegate writes it: a placeholder until a release is in service)"
            ) from None
        except ValueError:
            raise ActionError(f"{shown}: the pid file is unreadable") from None
        if not _cmdline_has(pid, "nginx"):
            raise ActionError(f"{shown}: process {pid} is gone")
        return pid

    def _ensure_upstream_file(self) -> None:
        """On first use the upstream file nginx includes may not exist yet, and nginx will not
        start without it: write the placeholder (one server marked down) for it to include."""
        if not self.upstream_file.exists():
            self.upstream_file.parent.mkdir(parents=True, exist_ok=True)
            write_upstream_file(self.upstream_file, [], self.settings.ports[0])

    def _reload_nginx(self) -> None:
        """SIGHUP the master; done when a new worker runs and every old one is shutting down.

        Until an old worker has taken its QUIT it still accepts connections and routes them
        with the old upstream (an instance about to stop, or the ``down`` placeholder).
        """
        pid = self._nginx_master()
        before = _children(pid)
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + _RELOAD_TIMEOUT_S
        while time.monotonic() < deadline:
            now = _children(pid)
            if now - before and all(w not in now or _cmdline_has(w, "shutting down") for w in before):
                return
            time.sleep(0.02)
        raise ActionError(
            f"nginx (pid {pid}) did not apply {self.upstream_file} within {_RELOAD_TIMEOUT_S:g} s: "
            "see its error log"
        )

    # -- processes ----------------------------------------------------------------------------

    def _running(self, entry: _Entry) -> bool:
        """Alive and still this instance: a reused pid does not carry the instance's port."""
        if entry.pid is None:
            return False
        proc = self._procs.get(entry.pid)
        if proc is not None and proc.poll() is not None:
            return False
        return _cmdline_has(entry.pid, str(entry.port))

    def _exit_code(self, entry: _Entry) -> int | None:
        proc = self._procs.get(entry.pid) if entry.pid is not None else None
        if proc is not None:
            return proc.poll()
        return None if self._running(entry) else -1

    def _signal(self, entry: _Entry, sig: signal.Signals) -> None:
        if self._running(entry):
            assert entry.pid is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(entry.pid, sig)

    def _free_port(self, state: _State) -> int:
        low, high = self.settings.ports
        used = {e.port for e in state.instances}
        for port in range(low, high + 1):
            if port not in used and _bindable(port):
                return port
        raise ActionError(f"no free port in {low}-{high} on 127.0.0.1 for a new instance")

    def _argv(self, release: str, port: int) -> list[str]:
        return [fill(arg, release).replace("{port}", str(port)) for arg in self.settings.command]

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.settings.env)
        env.update({key: ref.resolve() for key, ref in self.settings.secret_env.items()})
        return env

    def _observe(self, client: httpx.Client, entry: _Entry, role: str = "") -> Instance:
        url = f"http://127.0.0.1:{entry.port}"
        role = f"{role}; " if role else ""
        if not self._running(entry):
            return Instance(
                entry.name, entry.release, url, ready=False, detail=f"{role}pid {entry.pid} is not running"
            )
        ok, detail = _probe(client, entry.port, self.settings.readiness_path)
        return Instance(
            entry.name,
            entry.release,
            url,
            ready=ok,
            detail=f"{role}pid {entry.pid}, GET {self.settings.readiness_path} -> {detail}",
        )

    def _not_ready(self, entries: list[_Entry]) -> str | None:
        """One readiness GET each, now: the first that fails, or None when all answer."""
        with _client(timeout=1.0) as client:
            for entry in entries:
                if not self._running(entry):
                    return f"{entry.release} on :{entry.port} (pid {entry.pid}) is not running"
                ok, detail = _probe(client, entry.port, self.settings.readiness_path)
                if not ok:
                    return f"{entry.release} on :{entry.port}: GET {self.settings.readiness_path} -> {detail}"
        return None

    def _log_path(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    def _last_log_line(self, entry: _Entry) -> str:
        lines = _tail(self._log_path(entry.name), 20, offset=self._log_offsets.get(entry.name, 0))
        return f"; last log line: {lines[-1]}" if lines else "; its log is empty"

    # -- state file and lock ------------------------------------------------------------------

    def _load(self) -> _State:
        try:
            raw = json.loads(self.state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return _State()
        except (OSError, ValueError) as exc:
            raise ActionError(f"{self.state_file} is unreadable: {exc}") from None
        raw["instances"] = [_Entry(**item) for item in raw.get("instances", [])]
        return _State(**raw)

    def _save(self, state: _State) -> None:
        _atomic_write(self.state_file, json.dumps(asdict(state), indent=2) + "\n")
        if self.settings.targets_file:
            running = [(e.port, e.release, e.name) for e in state.instances if e.pid is not None]
            write_targets_file(Path(self.settings.targets_file), running)

    def _record(
        self,
        state: _State,
        action: str,
        before: str | None,
        target: str | None,
        *,
        ok: bool,
        reason: str,
        duration_s: float,
    ) -> None:
        state.history.append(
            {
                "at": _now(),
                "action": action,
                "from": before,
                "to": target,
                "ok": ok,
                "reason": reason,
                "duration_s": round(duration_s, 2),
            }
        )
        state.history = state.history[-HISTORY_LENGTH:]
        self._save(state)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One rollout at a time; a second one fails at once, naming the holder."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / "lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                raise ActionError(
                    f"another rollout is in progress: pid {holder} holds {path}; wait for it to finish"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


# -- small helpers ----------------------------------------------------------------------------


def _end_strategies(state: _State) -> None:
    """Only one release runs, on the N instances: no canary, no second color."""
    state.canary, state.canary_weight = None, 0.0
    state.blue = state.green = state.switched_at = state.warm_until = None


def _role(state: _State, entry: _Entry, weights: Mapping[int, int]) -> str:
    """An instance's part in a canary or a blue-green, for status(): "" in a plain rollout."""
    parts = []
    if entry.release == state.canary:
        parts.append("canary")
    elif state.canary is not None and entry.release == state.release:
        parts.append("stable")
    elif entry.release in (state.blue, state.green):
        parts.append("green" if entry.release == state.green else "blue")
    if entry.port in weights:
        if len(set(weights.values())) > 1:
            parts.append(f"nginx weight {weights[entry.port]}")
    elif parts:
        warm = state.warm_until and entry.release != state.release
        parts.append(f"warm until {state.warm_until}" if warm else "not routed")
    return ", ".join(parts)


def _client(timeout: float) -> httpx.Client:
    return httpx.Client(timeout=httpx.Timeout(timeout, connect=min(timeout, 0.5)), trust_env=False)


def _probe(client: httpx.Client, port: int, path: str) -> tuple[bool, str]:
    try:
        response = client.get(f"http://127.0.0.1:{port}{path}")
    except httpx.HTTPError as exc:
        return False, str(exc) or type(exc).__name__
    return response.status_code == 200, str(response.status_code)


def _cmdline_has(pid: int, needle: str) -> bool:
    """Whether process ``pid`` exists and an argument contains ``needle`` (zombies have none)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(needle.encode() in arg for arg in args)


def _find_process(args: list[str]) -> int | None:
    """The pid of a live process whose arguments (after argv[0]) are ``args``."""
    wanted = b"\0".join(arg.encode() for arg in args) + b"\0"
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cmdline = Path(entry.path, "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.partition(b"\0")[2] == wanted:
                return int(entry.name)
    return None


def _children(pid: int) -> set[int]:
    found = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _describe_exit(code: int) -> str:
    if code == -1:
        return "an unknown code"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
        return f"signal {-code}"
    return f"code {code}"


def _tail(path: Path, lines: int, offset: int = 0) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()[-64_000:]
    except FileNotFoundError:
        return []
    return [line for line in data.decode(errors="replace").splitlines() if line.strip()][-lines:]


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
