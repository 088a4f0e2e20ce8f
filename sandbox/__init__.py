"""The embedded sandbox: real PostgreSQL, Redis and nginx on 127.0.0.1, and the demo service.

``python -m sandbox up|down|status [--env NAME|PATH]``; everything (ports, paths) comes from
the environment file. ``sandbox.stack`` is the API the test suites call (``ensure_up``).
"""
