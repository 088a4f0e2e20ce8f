"""Small stand-ins for the three runbooks' systems, each answering as its runbook documents, so
that the example environments (environments/*-production.example.toml) can be run end to end
here with an override file (sandbox/replicas/<system>.toml, ``--env-override``):

- ``sandbox.replicas.summit``: Summit's API and policy engine (sandbox.summit) at the root, its
  GA guide 6.2 health (``"version": "v4.0.0-ga"``, ``/health/db`` with ``"latency": "<5ms"``,
  ``/health/policy``), ``http_requests_total`` and ``http_request_duration_seconds``, and
  migrations as SQL files recorded in ``schema_migrations`` (``pnpm db:migrate``'s stand-in);
- ``sandbox.replicas.granter``: Granter's three services (backend-core, data-service,
  web-frontend) in one process, health without a version (``{"status":"healthy","services":
  {"database":"up","api":"up"}}``), migrations as SQL files recorded in TypeORM's
  ``migrations`` table (``npm run migration:run``'s stand-in);
- ``sandbox.replicas.release_manager``: the guide's ``/health`` (``"version": "v2024.01.15"``,
  ``timestamp``, ``checks``), ``/metrics`` with ``release_manager_*`` names, alembic migrations.

Each is a command, ``python -m sandbox.replicas.<system> --release R --port P``, run by
releasegate's local platform; its releases (a stable one, a good one, a bad one, one with a bad
migration) are in its module's ``RELEASES``.
"""
