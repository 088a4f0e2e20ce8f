"""A Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat take the same JSON).

A notification that cannot be sent is a warning for the run's output and report, never a
change of the decision: the deployment is what matters, the message is about it. The webhook
URL is a secret (its path is the credential) and never appears in what this returns.
"""

from __future__ import annotations

import time

import httpx

from releasegate.redaction import redact, register_secret

MAX_RETRY_AFTER_S = 5.0
"""A 429's Retry-After is obeyed up to this: a deployment does not wait long for a chat."""


def post(
    webhook: str,
    text: str,
    *,
    channel: str | None = None,
    username: str | None = None,
    timeout_s: float = 5.0,
    retries: int = 2,
) -> str | None:
    """Send ``text``; None when the webhook took it, else one line saying why not."""
    register_secret(webhook)
    payload: dict[str, object] = {"text": text}
    if channel:
        payload["channel"] = channel
    if username:
        payload["username"] = username
    problem = ""
    for attempt in range(retries + 1):
        try:
            response = httpx.post(webhook, json=payload, timeout=timeout_s)
        except httpx.TimeoutException:
            problem = f"no answer within {timeout_s:g} s"
        except httpx.HTTPError as exc:
            problem = (
                "connection refused"
                if "refused" in str(exc).lower()
                else redact(str(exc) or type(exc).__name__)
            )
        else:
            if response.status_code < 300:
                return None
            problem = f"HTTP {response.status_code}: {redact(response.text[:200])}"
            if response.status_code < 500 and response.status_code != 429:
                break  # the webhook refuses this message: sending it again will not help
            wait = _retry_after(response) if response.status_code == 429 else 0.5 * (attempt + 1)
            if attempt < retries:
                time.sleep(wait)
            continue
        if attempt < retries:
            time.sleep(0.5 * (attempt + 1))
    return f"Slack webhook: {problem} (after {retries + 1} attempt(s))"


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(response.headers.get("Retry-After", "1"))))
    except ValueError:
        return 1.0
