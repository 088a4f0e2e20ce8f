"""User journeys run alone: ``pytest smoke/ --env=staging -n auto``.

Each system's journey is one test (``test_granter.py``: ``journey("granter")``, the plugin's
fixture), skipped with the reason when the environment configures no ``[smoke.journeys.NAME]``.
Outside a deployment a failure is pytest's plain exit 1; the verify phase runs the same
journeys as gates (gates/test_46_smoke.py), where a failure rolls back.
"""
