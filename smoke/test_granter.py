"""Granter sprint 4 runbook, Phase 4 "Post-Deployment Validation", step 4.1 "Run Smoke Tests"
(`npm run test:smoke`), and the rollback procedure's step 6: the same five flows."""


def test_granter_smoke_flows(journey):
    """Must pass all 5 flows: auth (register, login), search (query + filters), scraper
    (multi-page), IA (extraction + fallback), health (all probes)."""
    journey("granter")
