"""The environment's lease in a pytest session: checked first, taken before the first change,
renewed while the run lives, released at its end; what the plugin's hooks call.

Every entry point that changes the environment goes through here: ``pytest gates/`` (and
``--resume``) and ``pytest rollback/`` (and ``--drill``). A run that finds the environment held
refuses at once (exit 4) with one line saying who holds it and what to do, and the refusal is
recorded in its ledger; ``--wait SECONDS`` waits for the lease instead; ``pytest rollback/
--force`` takes it from a live run, says what that breaks and records who forced it. Under
pytest-xdist the controller holds the lease for the whole session; the workers only check, before
each change they make, that the lease is still the run's.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, NoReturn

import pytest

from releasegate import plan
from releasegate.config import Environment
from releasegate.errors import ProbeError, ReleasegateError
from releasegate.lease import (
    Holder,
    Lease,
    LeaseState,
    free_text,
    holder_for,
    holder_gone,
    holder_line,
    holder_text,
    read_lease,
    wait_for_lease,
)
from releasegate.ledger import Ledger, open_ledger
from releasegate.platforms.base import Progress
from releasegate.run import Run
from releasegate.state import RUN_KEY

LEASE_KEY = pytest.StashKey[Lease]()
STATE_KEY = pytest.StashKey[LeaseState | None]()
WORKER_LEASE = "releasegate_lease"
"""The key under which the xdist controller hands its lease's holder to every worker."""
REFUSED = "REFUSED"


def add_options(group: Any) -> None:
    group.addoption(
        "--wait",
        dest="rg_wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="when another run holds the environment's lease, wait up to SECONDS for it instead of refusing",
    )
    group.addoption(
        "--force",
        dest="rg_force",
        action="store_true",
        default=False,
        help="rollback/: take the environment's lease from a live run (it breaks that run; recorded)",
    )


def check_first(
    config: pytest.Config,
    env: Environment,
    ledger: Ledger,
    progress: Progress,
    kind: str,
    release: str | None,
) -> LeaseState | None:
    """Before anything is started: who holds the environment. Refuses (exit 4) while a live run
    holds it, unless ``--wait`` gets it in time or ``--force`` (rollback/) takes it over. None
    when the lease cannot be read now (the database is down): it is taken before the first change."""
    try:
        state = read_lease(env)
    except ReleasegateError as exc:
        progress(f"lease on {env.name} not read yet ({exc}): it is taken before the first change")
        config.stash[STATE_KEY] = None
        return None
    wait_s = config.getoption("rg_wait") or 0.0
    if state.live(holder_gone(state.holder)) and wait_s > 0:
        state = wait_for_lease(env, wait_s, progress)
    if state.live(holder_gone(state.holder)):
        if kind != "deploy" and config.getoption("rg_force"):
            assert state.holder is not None
            progress(
                f"--force: {env.name} is held by {holder_text(state)}; taking its lease breaks that run: its next "
                f"change is refused, it will not undo its own work, and what it changed is undone here instead; "
                "recorded in the ledger and the lease as forced"
            )
        else:
            refuse(config, env, ledger, kind, release, holder_line(env.name, state))
    config.stash[STATE_KEY] = state
    return state


def unfinished_text(config: pytest.Config) -> str:
    """How the environment's unfinished run ended, as far as its lease tells."""
    state = config.stash.get(STATE_KEY, None)
    if state is None:
        return "its lease could not be read: it may still be in progress"
    return free_text(state, holder_gone(state.holder))


def take(config: pytest.Config, run: Run, progress: Progress) -> None:
    """Take the lease for ``run`` now (a database that cannot be reached yet: at session start, or
    before the first change); refuse when another run got it first."""
    lease = Lease(run.env, holder_for(run.id, run.kind, run.release), progress)
    config.stash[LEASE_KEY] = lease
    run.guard = lambda: lease.ensure(_phase(run))
    _try(config, run, lease, progress)


def take_pending(config: pytest.Config, run: Run, progress: Progress) -> None:
    """Session start, after the environment was prepared (a sandbox started): a lease that could
    not be taken at configure time is taken now, or before the first change."""
    lease = config.stash.get(LEASE_KEY, None)
    if lease is not None and lease.taken is None:
        _try(config, run, lease, progress)


def _try(config: pytest.Config, run: Run, lease: Lease, progress: Progress) -> None:
    force = run.kind != "deploy" and config.getoption("rg_force")
    try:
        decided, state = lease.take(force=force)
    except ProbeError as exc:
        progress(f"lease on {run.env.name} not taken yet ({exc}): no change is made without it")
        return
    if decided == "held":
        refuse(config, run.env, run.ledger, run.kind, run.release, holder_line(run.env.name, state), run)
    forced = f"; forced from {holder_text(lease.forced_from)}" if lease.forced_from else ""
    progress(
        f"lease on {run.env.name} taken by run {run.id} (pid {lease.holder.pid} on {lease.holder.host}) in "
        f"{lease.store.where()}: {lease.duration_s:g} s, renewed every {lease.duration_s / 3:g} s{forced}"
    )
    run.ledger.save_result(run.id, "lease", lease.record())
    lease.start_heartbeat(lambda: _phase(run))


def _phase(run: Run) -> str | None:
    if run.kind != "deploy":
        return run.kind
    if run.current_phase is not None:
        return str(run.current_phase)
    try:
        return plan.last_phase(run.record())
    except Exception:
        return None


def refuse_while_held(config: pytest.Config, env: Environment, reports: Path, kind: str) -> None:
    """Exit 4 at once, naming the holder, when a live run holds the environment and this one
    neither waits nor forces; the refusal goes into the ledger when the ledger can be written
    (a holder that hangs in a write keeps it locked: the refusal is then only said)."""
    if config.getoption("rg_wait") or config.getoption("rg_force") or config.getoption("rg_dry_run"):
        return
    try:
        state = read_lease(env)
    except ReleasegateError:
        return  # not readable yet: check_first says so, and the lease is taken before any change
    if not state.live(holder_gone(state.holder)):
        return
    line = holder_line(env.name, state)
    try:
        ledger = open_ledger(env.ledger, reports / "ledger.sqlite")
        refuse(config, env, ledger, kind, config.getoption("rg_release"), line)
    except ReleasegateError as exc:
        raise pytest.UsageError(f"{line} (refusal not recorded: {exc})") from None


def refuse(
    config: pytest.Config,
    env: Environment,
    ledger: Ledger,
    kind: str,
    release: str | None,
    line: str,
    run: Run | None = None,
) -> NoReturn:
    """Exit 4 with ``line``, the refusal recorded in the ledger as a run of its own."""
    run_id = (
        run.id
        if run is not None
        else ledger.start_run(
            env.name, release or "unknown", {"argv": list(config.invocation_params.args)}, kind=kind
        )
    )
    ledger.event(run_id, "main", line)
    ledger.finish_run(run_id, REFUSED, 4, failure=line)
    if run is not None:
        del config.stash[RUN_KEY]  # nothing ran: no decision, no report over the last run's
    raise pytest.UsageError(line)


def worker_input(config: pytest.Config) -> str | None:
    """xdist: what a worker needs to check that the lease is still the run's."""
    lease = config.stash.get(LEASE_KEY, None)
    if lease is None:
        return None
    return json.dumps({"holder": lease.holder.to_dict()})


def attach_worker(config: pytest.Config, run: Run, progress: Progress) -> None:
    """xdist worker: never takes the lease for itself; before each change it renews the
    controller's, and refuses the change when it is no longer the run's."""
    data = getattr(config, "workerinput", {}).get(WORKER_LEASE)
    if not data:
        return
    lease = Lease(run.env, Holder(**json.loads(data)["holder"]), progress)
    run.guard = lambda: lease.ensure(_phase(run))


def release(config: pytest.Config, run: Run) -> None:
    """At the run's end, after any rollback: free the lease and keep its record."""
    lease = config.stash.get(LEASE_KEY, None)
    if lease is None or lease.taken is None:
        return
    try:
        released = lease.release()
    except ReleasegateError as exc:
        run.progress(
            f"lease on {run.env.name} not released ({exc}): it expires {lease.duration_s:g} s after its last renewal"
        )
        released = None
    if released is not None:
        run.progress(f"lease on {run.env.name} released after {lease.renewals} renewals")
    run.ledger.save_result(run.id, "lease", lease.record())


def release_quietly(config: pytest.Config) -> None:
    """The fallback when the session ended before its finish (an error in configure, say)."""
    lease = config.stash.get(LEASE_KEY, None)
    if lease is not None and lease.released is None:
        with contextlib.suppress(ReleasegateError):
            lease.release()


def say_dry_run(env: Environment, progress: Progress) -> None:
    """``--dry-run`` takes no lease: it says who holds one."""
    try:
        state = read_lease(env)
    except ReleasegateError as exc:
        progress(
            f"lease on {env.name}: could not be read ({exc}); a real run takes it before the first change"
        )
        return
    if state.live(holder_gone(state.holder)):
        progress(f"lease on {env.name}: {holder_line(env.name, state)}")
    else:
        progress(
            f"lease on {env.name}: free ({free_text(state, holder_gone(state.holder))}); a real run takes it"
        )
