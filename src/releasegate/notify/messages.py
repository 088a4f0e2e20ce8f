"""The texts of the notifications, from a run's facts: pure, so that they can be read in tests
and overridden per environment ([notify.templates], ``{placeholders}`` below).

The words follow the runbooks' announcements (Summit GA 1.3 "We will be deploying ... Expected
Duration ... Rollback Window") and the optimisation summary's automated-rollback Slack alerts.
"""

from __future__ import annotations

from collections.abc import Mapping

EVENTS = ("start", "rollback_started", "success", "aborted", "rolled_back", "rollback_failed")

DEFAULTS: dict[str, str] = {
    "start": (
        ":rocket: Deploying {service} {release} to {environment} ({tier}), replacing {previous_release}. "
        "Run {run_id} by {operator}. Planned: {planned_minutes} min. Please avoid manual changes "
        "until it ends."
    ),
    "rollback_started": (
        ":warning: Rollback IN PROGRESS for {service} {release} in {environment}: {failed_gate} failed "
        "({failure}). Going back to {previous_release}; please make no changes until it is verified."
    ),
    "success": (
        ":white_check_mark: {service} {release} serves {environment}: every gate passed in {duration}. "
        "Report: {report}"
    ),
    "aborted": (
        ":no_entry: Deployment of {service} {release} to {environment} ABORTED in {failed_phase}: "
        "{failure}. Nothing changed{restored}; {previous_release} still serves. Report: {report}"
    ),
    "rolled_back": (
        ":rewind: {service} {release} was ROLLED BACK in {environment}: {failed_gate} failed "
        "({failure}). {previous_release} serves again, verified. Report: {report}"
    ),
    "rollback_failed": (
        ":rotating_light: ROLLBACK FAILED for {service} {release} in {environment} after {failed_gate} "
        "failed ({failure}). Finish it by hand: the report says what is left. Report: {report}"
    ),
}

EVENT_OF_DECISION = {
    "SUCCESS": "success",
    "ABORTED": "aborted",
    "ROLLED_BACK": "rolled_back",
    "ROLLBACK_FAILED": "rollback_failed",
}


class _Facts(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> str:
        return "?"


def render(event: str, facts: Mapping[str, object], templates: Mapping[str, str] | None = None) -> str:
    """The message of ``event``; a placeholder the run does not know shows as ``?``."""
    template = (templates or {}).get(event) or DEFAULTS[event]
    shown = _Facts({k: ("unknown" if v is None else v) for k, v in facts.items()})
    return template.format_map(shown)
