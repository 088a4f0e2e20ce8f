"""User journeys: what a person does with a system, step by step, with evidence for each step.

A journey module reads like the runbook's smoke list::

    from releasegate.journeys import Journeyer, journey

    @journey("granter")
    def granter(j: Journeyer) -> None:
        j.clean_up_by_prefix()                  # whatever happens, its test data goes at the end
        email = j.unique("user") + "@example.test"
        with j.step("auth flow: register"):
            j.expect(j.http.post("/auth/register", json={"email": email, ...}), 201, "register")
        with j.step("auth flow: log in"):
            body = j.expect(j.http.post("/auth/login", json={...}), 200, "log in")
            j.http.bearer(body["token"])        # sent from now on, masked in every report

``j`` (a :class:`Journeyer`) has:

- ``j.http``: a session to the journey's base URL (``[smoke.journeys.NAME] base_url``, default
  ``platform.url``): cookies and a bearer token kept, a timeout on every request; a refused
  connection or a timeout is a ProbeError naming the URL;
- ``j.check``: the gates' Checker (``that``, ``equals``, ``holds``, ...): every check is evidence;
  ``j.expect(answer, 201, "register")`` checks an HTTP status with the exchange as evidence;
- ``j.step(title)``: times a step, records it (``granter step 2: log in: 41 ms: pass``) and
  makes it an Allure step;
- ``j.prefix``: this run's test-data prefix, ``rg-smoke-<8 hex>``; ``j.unique(kind)`` names
  things with it, so parallel runs never share data;
- ``j.cleanup(what, fn)``: undo registered as data is made, run last-in first-out at the end
  whatever happened; ``j.clean_up_by_prefix()`` registers the sweep of ``cleanup_path``;
- ``j.settings``: the journey's section (credentials as Secrets, expected health and metrics
  names, ``params``).

After the cleanups, the leak check asks ``leak_check_path`` (``/test-data?prefix={prefix}``)
what still carries the prefix: anything listed fails the journey, naming what leaked. A journey
that creates data and has no leak check configured fails: no data is never a pass.

``@journey(name, creates_data=False)`` is a journey that makes nothing (it needs no leak check);
``after_rollback=False`` one that needs something only the new release has (the rollback's
verification, which runs the others on the previous release, leaves it out).

``run_journey(name, env, check)`` runs one; ``smoke/`` and the verify phase's gate call it.
New journeys are modules of this package named like the journey (``release-manager`` ->
``release_manager.py``), found by name when an environment configures them.
"""

from __future__ import annotations

import importlib
import pkgutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from releasegate.analysis.thresholds import Verdict
from releasegate.config import Environment, JourneyParam, JourneySettings
from releasegate.errors import ConfigError, ReleasegateError
from releasegate.evidence import Checker, GateFailure
from releasegate.journeys.leaks import leaked_items
from releasegate.journeys.session import Session
from releasegate.probes.http import Exchange
from releasegate.redaction import redact
from releasegate.report import allure as allure_report

PREFIX = "rg-smoke-"
Progress = Callable[[str], None]
JourneyFunction = Callable[["Journeyer"], None]


@dataclass(frozen=True)
class Journey:
    name: str
    run: JourneyFunction
    creates_data: bool = True
    """It makes test data, so it needs a leak check."""
    after_rollback: bool = True
    """It needs nothing of the new release: the rollback's verification runs it too."""


REGISTRY: dict[str, Journey] = {}


def journey(
    name: str, *, creates_data: bool = True, after_rollback: bool = True
) -> Callable[[JourneyFunction], JourneyFunction]:
    """Register a journey under the name environments use in ``[smoke.journeys.NAME]``."""

    def register(run: JourneyFunction) -> JourneyFunction:
        REGISTRY[name] = Journey(name, run, creates_data, after_rollback)
        return run

    return register


def get_journey(name: str) -> Journey:
    """The journey called ``name``: registered, or in this package's module of that name."""
    if name not in REGISTRY:
        module = f"{__package__}.{name.replace('-', '_')}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    if name not in REGISTRY:
        raise ConfigError(
            f"smoke.journeys.{name}: no journey named {name!r} (known: {', '.join(known_journeys())})"
        )
    return REGISTRY[name]


_NOT_JOURNEYS = {"base", "session", "leaks", "exposition"}
"""This package's modules that hold no journey."""


def known_journeys() -> list[str]:
    package = importlib.import_module(__package__ or "releasegate.journeys")
    modules = {m.name.replace("_", "-") for m in pkgutil.iter_modules(package.__path__)}
    return sorted((modules - _NOT_JOURNEYS) | set(REGISTRY))


@dataclass
class StepRecord:
    title: str
    elapsed_ms: float
    ok: bool
    detail: str = ""


@dataclass
class JourneyResult:
    name: str
    prefix: str
    steps: list[StepRecord] = field(default_factory=list)
    leaked: list[str] = field(default_factory=list)
    elapsed_ms: float = 0.0


class Journeyer:
    """What a journey function is given: the session, the checker, steps, test data, cleanup."""

    def __init__(
        self,
        name: str,
        settings: JourneySettings,
        platform_url: str,
        check: Checker,
        progress: Progress | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.base_url = settings.base(platform_url)
        self.platform_url = platform_url.rstrip("/")
        self.check = check
        self.prefix = f"{PREFIX}{uuid.uuid4().hex[:8]}"
        self.http = Session(self.base_url, timeout_s=settings.timeout_s, component=f"{name} journey")
        self.steps: list[StepRecord] = []
        self._cleanups: list[tuple[str, Callable[[], Any]]] = []
        self._progress = progress

    # Test data --------------------------------------------------------------------------------

    def unique(self, kind: str) -> str:
        """A name for test data of this run: ``rg-smoke-ab12cd34-user``."""
        return f"{self.prefix}-{kind}"

    def cleanup(self, what: str, undo: Callable[[], Any]) -> None:
        """Register how to remove something just made; cleanups run last-in first-out at the end."""
        self._cleanups.append((what, undo))

    def clean_up_by_prefix(self) -> None:
        """Register the sweep of everything carrying the prefix (``cleanup_path``, DELETE)."""
        path = self.settings.cleanup_path
        if path is None:
            raise ConfigError(
                f"smoke.journeys.{self.name}.cleanup_path: needed to remove this journey's test data"
            )

        def sweep() -> None:
            answer = self.http.delete(path.replace("{prefix}", self.prefix), token=self.admin_token())
            self.expect(answer, 200, f"delete test data {self.prefix}")

        self.cleanup(f"test data {self.prefix}", sweep)

    def admin_token(self) -> str | None:
        """The configured token (``token = "${VAR}"``) for the journey's own calls, read now."""
        return self.settings.token.resolve() if self.settings.token else None

    def param(self, name: str, default: JourneyParam) -> Any:
        """``[smoke.journeys.NAME.params]``: a journey's own setting, or its default."""
        return self.settings.params.get(name, default)

    def url(self, path_or_url: str) -> str:
        """A configured path or URL as the session asks it (``{url}`` filled in)."""
        return self.http.url(path_or_url.replace("{url}", self.platform_url))

    # Steps and checks -------------------------------------------------------------------------

    @contextmanager
    def step(self, title: str) -> Iterator[StepRecord]:
        """Time a step and record it: ``granter step 2: log in: 41 ms: pass``; an Allure step."""
        number = len(self.steps) + 1
        record = StepRecord(title, 0.0, True)
        self.steps.append(record)
        started = time.perf_counter()
        try:
            with allure_report.journey_step(f"{self.name}: {title}"):
                yield record
        except BaseException as exc:
            record.ok = False  # a failed check is recorded already; anything else is said here
            record.detail = "" if isinstance(exc, GateFailure) else _one_line(exc)
            raise
        finally:
            record.elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
            self.check.sample(
                f"{self.name} step {number}: {title}",
                record.elapsed_ms,
                Verdict.PASS if record.ok else Verdict.FAIL,
                unit="ms",
                source=self.base_url,
                detail=record.detail,
            )
            if self._progress is not None:
                self._progress(
                    f"{self.name}: {title} {'ok' if record.ok else 'FAILED'} in {record.elapsed_ms:.0f} ms"
                )

    def expect(self, answer: Exchange, status: int, what: str) -> Any:
        """The answer's HTTP status must be ``status``; returns its JSON body (recorded with it)."""
        self.check.equals(
            f"{self.name}: {what}: HTTP status",
            answer.status,
            status,
            source=answer.source,
            detail="" if answer.status == status else _shown_body(answer),
            data={"http": exchange_data(answer)},
        )
        return answer.body

    # The end ----------------------------------------------------------------------------------

    def run_cleanups(self) -> list[str]:
        """Every registered cleanup, last first, each whatever the one before did: the problems."""
        problems = []
        for what, undo in reversed(self._cleanups):
            try:
                undo()
            except Exception as exc:
                problems.append(f"clean up {what}: {_one_line(exc)}")
                self.check.sample(f"{self.name}: clean up {what}", None, Verdict.FAIL, detail=_one_line(exc))
        self._cleanups.clear()
        return problems

    def leak_check(self, creates_data: bool) -> list[str]:
        """What still carries the prefix, as the leak-check endpoint lists it (recorded)."""
        check_name = f"{self.name}: test data left after cleanup ({self.prefix})"
        path = self.settings.leak_check_path
        if path is None:
            if creates_data:
                self.check.fail(
                    check_name,
                    f"no leak check: set smoke.journeys.{self.name}.leak_check_path "
                    "(e.g. /test-data?prefix={prefix})",
                )
            return []
        answer = self.http.get(path.replace("{prefix}", self.prefix), token=self.admin_token())
        leaked = leaked_items(answer.body) if answer.status == 200 else None
        if leaked is None:
            self.check.fail(
                check_name,
                f"the leak check answered HTTP {answer.status}, not a list of what is left: {_shown_body(answer)}",
                source=answer.source,
            )
            return []
        self.check.sample(
            check_name,
            len(leaked),
            Verdict.PASS if not leaked else Verdict.FAIL,
            comparator="==",
            threshold=0,
            source=answer.source,
            detail=("leaked: " + ", ".join(leaked)) if leaked else "",
        )
        return leaked


def run_journey(
    name: str, env: Environment, check: Checker, *, progress: Progress | None = None
) -> JourneyResult:
    """Run the journey ``name`` as ``env`` configures it: its steps, then its cleanups and leak
    check whatever happened. Raises the journey's failure, or a GateFailure naming what leaked."""
    settings = env.smoke.journeys.get(name) if env.smoke is not None else None
    if settings is None:
        raise ConfigError(f"{env.name} configures no journey {name!r}: add [smoke.journeys.{name}]")
    found = get_journey(name)
    j = Journeyer(name, settings, env.platform.url, check, progress)
    result = JourneyResult(name, j.prefix, j.steps)
    started = time.perf_counter()
    failure: BaseException | None = None
    try:
        found.run(j)
    except (GateFailure, ReleasegateError) as exc:
        failure = exc
    finally:
        problems = j.run_cleanups()
        try:
            result.leaked = j.leak_check(found.creates_data)
        except (GateFailure, ReleasegateError) as exc:
            problems.append(f"leak check: {_one_line(exc)}")
        j.http.close()
    result.elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    check.record(
        f"{name} journey",
        result.elapsed_ms,
        unit="ms",
        source=j.base_url,
        detail=f"{len(j.steps)} steps" + (f", test data {j.prefix}" if found.creates_data else ""),
    )
    after = ([f"leaked test data: {', '.join(result.leaked)}"] if result.leaked else []) + problems
    if failure is not None:
        if after:
            raise GateFailure(f"{_one_line(failure)} | {' | '.join(after)}") from failure
        raise failure
    if after:
        raise GateFailure(f"{name} journey ({j.prefix}): {' | '.join(after)}")
    return result


def exchange_data(answer: Exchange) -> dict[str, Any]:
    """An HTTP exchange as evidence keeps it: request, status, time, a bounded body."""
    body: Any = answer.body if answer.body is not None else answer.text[:500]
    if len(str(body)) > 2000:
        body = str(body)[:2000] + "…"
    return {
        "request": answer.source,
        "status": answer.status,
        "elapsed_ms": round(answer.elapsed_ms, 1),
        "body": body,
    }


def _shown_body(answer: Exchange) -> str:
    return redact((answer.text or "")[:300].replace("\n", " "))


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
