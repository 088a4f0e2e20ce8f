"""When and what to tell: the start of a deployment run, and its decision at the end."""

from __future__ import annotations

from releasegate.config import Environment, NotifySettings
from releasegate.errors import ReleasegateError
from releasegate.ledger import RunRecord
from releasegate.notify import messages, slack


def facts(
    env: Environment, record: RunRecord, report: str = "", previous: str | None = None
) -> dict[str, object]:
    restored = (
        " (the database was restored from this run's backup)" if record.failed_phase == "migrate" else ""
    )
    return {
        "service": env.environment.service,
        "environment": env.name,
        "tier": env.environment.tier,
        "release": record.release,
        "previous_release": record.previous_release or previous,
        "run_id": record.id,
        "operator": record.operator,
        "decision": record.decision,
        "failed_gate": record.failed_gate,
        "failed_phase": record.failed_phase,
        "failure": record.failure,
        "restored": restored,
        "duration": _duration(record),
        "planned_minutes": f"{sum(env.planned_minutes.values()):g}" if env.planned_minutes else "?",
        "report": report or "(written when the run ends)",
    }


def tell(
    env: Environment, event: str, record: RunRecord, report: str = "", previous: str | None = None
) -> str | None:
    """Send ``event``'s message when the environment asks for it: a line for the output and the
    report ("start sent", or why it was not), or None when this event is not wanted. ``previous``:
    the release serving, when the run has not recorded it yet (at its start)."""
    settings: NotifySettings | None = env.notify
    if settings is None or event not in settings.events:
        return None
    try:
        webhook = settings.slack_webhook.resolve()  # type: ignore[attr-defined]
    except ReleasegateError as exc:
        return f"{event} message not sent: {exc}"
    text = messages.render(event, facts(env, record, report, previous), settings.templates)
    problem = slack.post(
        webhook,
        text,
        channel=settings.channel,
        username=settings.username,
        timeout_s=settings.timeout_s,
        retries=settings.retries,
    )
    return f"{event} message sent" if problem is None else f"{event} message NOT sent: {problem}"


def _duration(record: RunRecord) -> str:
    from datetime import datetime

    if not record.ended_at:
        return "?"
    seconds = (
        datetime.fromisoformat(record.ended_at) - datetime.fromisoformat(record.started_at)
    ).total_seconds()
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"
