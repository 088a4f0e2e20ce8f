"""End-to-end journeys run alone: ``pytest e2e/ --env=production`` (Summit GA 6.4 "Run critical
user journey").

Like smoke/: each journey is one test calling the plugin's ``journey`` fixture, skipped with
the reason when the environment configures no ``[smoke.journeys.NAME]``; outside a deployment a
failure is pytest's plain exit 1. They are ``[smoke.journeys]`` entries, so with
``smoke.on_verify`` the verify phase runs them as gates too (gates/test_46_smoke.py).
"""
