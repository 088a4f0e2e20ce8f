"""The sandbox as a whole: up, down, status, and ensure_up for the test suites.

Everything comes from the environment file: PostgreSQL's port and database from
``database.dsn``, Redis's port from ``redis.url``, nginx's from ``platform.url``, the instances
from ``platform.local``, the directory from ``sandbox.dir``. Several sandboxes (other files,
other ports, other directories) can run side by side.

``up`` starts what is not running, in order: PostgreSQL, schema and seed data, Redis, nginx,
then three instances of 1.0.0, then (with a ``[metrics]`` section) Prometheus, which scrapes
the instances listed in ``platform.local.targets_file``. ``up(background_error_rate=R)`` (the
CLI's ``--background-error-rate``) first stores the demo's background error rate in the database
(table ``demo_settings``), which each instance of the demo service reads as it starts. ``down``
stops everything and removes the directory.
The sandbox's PostgreSQL trusts local connections, so a ``database.password`` in the file (to
exercise secret handling in the gates) is never needed, nor resolved, here.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.types.json import Json

from releasegate.actions.load import LoadGenerator
from releasegate.actions.migrate import apply_sql_migrations
from releasegate.config import Environment, LocalPlatformSettings, load_environment
from releasegate.errors import ReleasegateError
from releasegate.lease import holder_line, live_lease
from releasegate.platforms.local import LocalPlatform
from releasegate.release_names import fill
from sandbox.cluster import Cluster
from sandbox.common import SETTINGS_TABLE, ComponentStatus, SandboxError
from sandbox.history import backfill
from sandbox.nginx import Nginx
from sandbox.policy import BundleError, read_bundle
from sandbox.postgres import Postgres
from sandbox.prometheus import Prometheus
from sandbox.redis import Redis
from sandbox.releases import BASELINE, migrations_dir, policy_bundle

ROOT = Path(__file__).resolve().parent.parent
"""The repository root: where environments/ is, and what ``{root}`` means."""
SEED_SQL = Path(__file__).resolve().parent / "seed.sql"
"""The demo's data, loaded once into a fresh database. Every other ``seed*.sql`` beside it (a
system the sandbox also serves: ``seed_granter.sql``, ``seed_summit.sql``) creates only what is
missing and is applied at every ``up``, in name order. Summit's first policy bundle is the one
the baseline release ships, activated when none is."""

EXIT_UP, EXIT_DOWN, EXIT_PARTLY_UP = 0, 3, 4

Progress = Callable[[str], None]


@dataclass(frozen=True)
class SandboxStatus:
    components: tuple[ComponentStatus, ...]
    release: str | None
    url: str

    @property
    def up(self) -> bool:
        return all(c.up for c in self.components)

    @property
    def down(self) -> bool:
        return not any(c.up for c in self.components)

    @property
    def not_up(self) -> list[str]:
        """The names of the components that are down, e.g. ["postgresql"]."""
        return [c.name for c in self.components if not c.up]

    @property
    def exit_code(self) -> int:
        return EXIT_UP if self.up else EXIT_DOWN if self.down else EXIT_PARTLY_UP

    def summary(self) -> str:
        if self.up:
            return f"sandbox is up: {self.url} serves {self.release}"
        if self.down:
            return "sandbox is down"
        return f"sandbox is partly up: {', '.join(self.not_up)} down"


class Sandbox:
    """The components of one sandbox, as its environment file describes them."""

    def __init__(self, env: Environment) -> None:
        if env.sandbox is None:
            raise SandboxError(
                f"{env.source}: no [sandbox] section: python -m sandbox only runs the embedded sandbox"
            )
        if env.redis is None or env.platform.local is None:
            raise SandboxError(f"{env.source}: the sandbox needs [redis] and [platform.local]")
        self.env = env
        self.dir = Path(env.sandbox.dir)
        self.local: LocalPlatformSettings = env.platform.local
        self.postgres = Postgres(self.dir, env.database.dsn, env.backup.pg_bin_dir)
        self.redis = Redis(self.dir, env.redis.url)
        self.nginx = Nginx(self.dir, env.platform.url, self.local, env.sandbox.tls_port)
        self.platform = LocalPlatform(self.local, env.platform.url)
        self.kubernetes = Cluster(self.dir / "kubernetes")
        self.prometheus: Prometheus | None = None
        if env.metrics is not None:
            if not self.local.targets_file:
                raise SandboxError(
                    f"{env.source}: [metrics] needs platform.local.targets_file for Prometheus"
                )
            self.prometheus = Prometheus(
                self.dir, env.metrics, self.local.targets_file, env.environment.service
            )

    def up(
        self,
        progress: Progress = print,
        *,
        background_error_rate: float | None = None,
        kubernetes: bool = False,
    ) -> None:
        """Start whatever is not running; a no-op, saying so, when everything is up.

        ``kubernetes`` also starts the control plane and its nodes (sandbox.cluster).

        ``background_error_rate`` (a fraction) is stored as the sandbox's setting first: every
        instance started from then on answers that share of API requests with a 500; None leaves
        the setting as it is."""
        started = time.monotonic()
        steps = [
            ("postgresql", self._start_postgres),
            ("schema", self._migrate),
            ("seed", self._seed),
        ]
        if background_error_rate is not None:
            rate = background_error_rate
            steps.append(("error rate", lambda: self._set_background_error_rate(rate)))
        steps += [
            ("redis", lambda: "already up" if self.redis.status().up else self.redis.start()),
            ("nginx", lambda: "already up" if self.nginx.status().up else self.nginx.start()),
            ("instances", lambda: self._start_instances(progress)),
        ]
        if self.prometheus is not None:
            prometheus = self.prometheus
            steps.append(
                ("prometheus", lambda: "already up" if prometheus.status().up else prometheus.start())
            )
        if kubernetes:
            steps.append(("kubernetes", lambda: self.kubernetes.start(progress)))
        changed = False
        for name, step in steps:
            t0 = time.monotonic()
            message = step()
            changed |= not message.startswith("already")
            progress(f"{name:<11} {message} ({time.monotonic() - t0:.1f} s)")
        where = f"{self.env.platform.url} serves {self.platform.current_release()}"
        if changed:
            progress(
                f"sandbox up in {time.monotonic() - started:.1f} s: {where} (python -m sandbox down removes it)"
            )
        else:
            progress(f"sandbox is already up: {where}")

    def history(
        self, offset_s: float, *, record_s: float = 60.0, cover_s: float = 900.0, progress: Progress = print
    ) -> str:
        """The serving release's last ``record_s`` seconds laid out ``offset_s`` ago in Prometheus
        (``sandbox.history``): the previous days a baseline from history reads."""
        if self.prometheus is None:
            raise SandboxError(f"{self.env.source}: no [metrics]: there is no Prometheus to give a history")
        release = self.platform.current_release()
        if release is None:
            raise SandboxError("nothing serves: python -m sandbox up first")
        load = self.env.metrics.load if self.env.metrics is not None else None
        if load is not None:  # an idle sandbox serves no users: record it under the runs' own load
            progress(f"history: {load.rps:g} requests/s to {release} for {record_s:g} s to record")
            settings = load.model_copy(update={"duration_s": record_s + 2 * self.prometheus.interval_s})
            LoadGenerator.from_settings(self.env.platform.url, settings).start().wait()
        return backfill(
            self.prometheus, release, offset_s=offset_s, record_s=record_s, after_s=cover_s, progress=progress
        )

    def down(self, progress: Progress = print, *, force: bool = False) -> None:
        """Stop the instances, nginx, Redis and PostgreSQL, then remove the sandbox directory;
        refused while a run holds the environment's lease (``force`` tears it down anyway)."""
        if not force and self.postgres.status().up:
            try:
                held = live_lease(self.env)
            except ReleasegateError:
                held = None  # no lease can be read, so none can be checked: a down database holds none
            if held is not None:
                raise SandboxError(
                    f"not tearing down: {holder_line(self.env.name, held)} "
                    "(or python -m sandbox down --force)"
                )
        problems = []
        if self.kubernetes.dir.exists():
            try:
                progress(f"{'kubernetes':<11} {self.kubernetes.stop(progress)}")
            except ReleasegateError as exc:
                problems.append(f"kubernetes: {exc}")
        if self.prometheus is not None:
            try:
                progress(f"{self.prometheus.name:<11} {self.prometheus.stop()}")
            except ReleasegateError as exc:
                problems.append(f"prometheus: {exc}")
        if self.platform.state_dir.exists():
            try:
                self.platform.stop_all(lambda line: progress(f"{'instances':<11} {line}"))
            except ReleasegateError as exc:
                problems.append(f"instances: {exc}")
        for component in (self.nginx, self.redis, self.postgres):
            try:
                progress(f"{component.name:<11} {component.stop()}")
            except ReleasegateError as exc:
                problems.append(f"{component.name}: {exc}")
        if problems:
            raise SandboxError(f"sandbox not fully stopped, {self.dir} kept: {'; '.join(problems)}")
        if self.dir.exists():
            shutil.rmtree(self.dir)
            progress(f"removed {self.dir}")
        progress("sandbox is down")

    def status(self) -> SandboxStatus:
        components = (
            self.postgres.status(),
            self.redis.status(),
            self.nginx.status(),
            self._instances_status(),
        )
        if self.prometheus is not None:
            components += (self.prometheus.status(),)
        if self.kubernetes.dir.exists():
            components += tuple(self.kubernetes.status())
        return SandboxStatus(components, self.platform.current_release(), self.env.platform.url)

    def ensure_up(self, progress: Progress = print) -> list[str]:
        """Start a sandbox that is completely down; leave a partly up one alone.

        Returns what is down: empty when the sandbox is (now) up. A partly up sandbox is not
        repaired on purpose: a component stopped before a run is what preflight must report.
        """
        state = self.status()
        if state.up:
            return []
        if state.down:
            progress(f"sandbox at {self.dir} is down: starting it")
            self.up(progress)
            return self.status().not_up
        return state.not_up

    # -- steps --------------------------------------------------------------------------------

    def _start_postgres(self) -> str:
        message = "already up" if self.postgres.status().up else self.postgres.start()
        if self.postgres.ensure_database():
            message += f", database {self.postgres.dbname} created"
        return message

    def _migrate(self) -> str:
        directory = self._migrations_dir(BASELINE)
        result = apply_sql_migrations(self.env.database.dsn, directory)
        if not result.ok:
            raise SandboxError(f"{BASELINE}'s migrations failed: {result.error}")
        if result.applied:
            return f"applied {', '.join(result.applied)} from {BASELINE}: at {result.version_after}"
        return f"already at {result.version_after}"

    def _seed(self) -> str:
        others = sorted(p for p in SEED_SQL.parent.glob("seed*.sql") if p != SEED_SQL)
        with psycopg.connect(self.env.database.dsn, connect_timeout=5) as conn:  # one transaction
            for path in others:
                conn.execute(path.read_text(encoding="utf-8"))
            policy = _activate_first_bundle(conn)
            if conn.execute("SELECT count(*) FROM customers").fetchone()[0]:  # type: ignore[index]
                return "already seeded" + policy
            conn.execute(SEED_SQL.read_text(encoding="utf-8"))
            customers, orders = conn.execute(
                "SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM orders)"
            ).fetchone()  # type: ignore[misc]
        return (
            f"loaded {customers} customers and {orders} orders"
            + "".join(f", {p.name}" for p in others)
            + policy
        )

    def _set_background_error_rate(self, rate: float) -> str:
        if not 0.0 <= rate <= 1.0:
            raise SandboxError(f"background error rate {rate:g} is not a fraction between 0 and 1")
        with psycopg.connect(self.env.database.dsn, connect_timeout=5) as conn:
            before = background_error_rate_setting(conn)
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {SETTINGS_TABLE} (name text PRIMARY KEY, value text NOT NULL)"
            )
            conn.execute(
                f"INSERT INTO {SETTINGS_TABLE} (name, value) VALUES ('background_error_rate', %s) "
                "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                [repr(rate)],
            )
        message = f"background error rate {rate:g} of API requests in every release"
        if before != rate:
            if self._instances_status().up:
                return (
                    f"{message} (was {before:g}: the running instances keep theirs until replaced; "
                    "python -m sandbox down, then up, for all of them now)"
                )
            return message
        return f"already {message}"

    def _start_instances(self, progress: Progress) -> str:
        state = self._instances_status()
        if state.up:
            return f"already up: {state.detail}"
        release = self.platform.current_release() or BASELINE
        result = self.platform.deploy(release, progress=lambda line: progress(f"{'':<11} {line}"))
        if not result.ok:
            raise SandboxError(f"the demo service did not start: {result.reason}")
        return f"{release} on {self.local.instances} instance(s) behind {self.env.platform.url}"

    def _instances_status(self) -> ComponentStatus:
        status = self.platform.status()
        serving = [i for i in status.instances if i.ready and i.name in status.in_service]
        ports = " ".join(":" + i.url.rsplit(":", 1)[1] for i in serving)
        up = status.release is not None and len(serving) >= status.desired
        detail = f"{status.release or 'nothing'} ×{len(serving)}/{status.desired} ready {ports}".rstrip()
        return ComponentStatus("instances", up, self.env.platform.url.removeprefix("http://"), None, detail)

    def _migrations_dir(self, release: str) -> Path:
        migrate = self.env.migrate
        if migrate is not None and migrate.runner == "sql" and migrate.directory:
            return Path(fill(migrate.directory, release))
        return migrations_dir(release)


def background_error_rate_setting(conn: psycopg.Connection) -> float:
    """The stored background error rate (0 when none was ever set)."""
    exists = conn.execute("SELECT to_regclass(%s)", [SETTINGS_TABLE]).fetchone()
    if not exists or exists[0] is None:
        return 0.0
    row = conn.execute(f"SELECT value FROM {SETTINGS_TABLE} WHERE name = 'background_error_rate'").fetchone()
    return float(row[0]) if row else 0.0


def _activate_first_bundle(conn: psycopg.Connection) -> str:
    """Summit's policy at first: the bundle the baseline release ships, unless one is active
    (a policy deployment since then is kept). ", policy main v1.0.0 from 1.0.0" or ""."""
    if conn.execute("SELECT 1 FROM summit_policy_bundles WHERE name = 'main' AND active").fetchone():
        return ""
    try:
        bundle = read_bundle(policy_bundle(BASELINE))
    except BundleError as exc:
        raise SandboxError(f"Summit's first policy bundle: {exc}") from None
    conn.execute(
        "INSERT INTO summit_policy_bundles (name, version, document, active) VALUES ('main', %s, %s, true)",
        [bundle["version"], Json(bundle)],
    )
    return f", policy main {bundle['version']} from {BASELINE}"


# -- the functions the CLI and the test suites call -----------------------------------------


def load(env: Environment | str | Path = "sandbox") -> Sandbox:
    """A Sandbox from an Environment, an environment name or a path to its file."""
    if not isinstance(env, Environment):
        env = load_environment(str(env), root=ROOT)
    return Sandbox(env)


def up(env: Environment | str | Path = "sandbox", progress: Progress = print) -> None:
    load(env).up(progress)


def down(
    env: Environment | str | Path = "sandbox", progress: Progress = print, *, force: bool = False
) -> None:
    load(env).down(progress, force=force)


def status(env: Environment | str | Path = "sandbox") -> SandboxStatus:
    return load(env).status()


def ensure_up(env: Environment | str | Path = "sandbox", progress: Progress = print) -> list[str]:
    """For the gates' conftest: start the sandbox when it is completely down; [] when up.

    A non-empty list names what is down in a partly up sandbox (left as it is).
    """
    return load(env).ensure_up(progress)
