"""Notifications: a Slack-compatible webhook told at the start and the end of a deployment.

Slack itself cannot run here: a local HTTP server on 127.0.0.1 stands in for the webhook and
keeps what it was sent. The webhook URL's path is the secret, as with Slack's own URLs.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from gate_runs import everything_written, run_gates, serving
from sandbox_env import running_sandbox, write_sandbox_env

from releasegate.notify import messages, slack

SECRET_PATH = "/services/T0RG/B0RG/xoxb-s3cr3t-path-42"


class Webhook:
    """Records every JSON body it gets; answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.received: list[dict] = []
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                double.received.append({"path": self.path, **json.loads(body)})
                self.send_response(double.status)
                self.end_headers()
                self.wfile.write(b"ok" if double.status < 300 else b"internal_error")

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{SECRET_PATH}"

    @property
    def texts(self) -> list[str]:
        return [r["text"] for r in self.received]

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    double = Webhook()
    yield double
    double.close()


def notifying_sandbox(sandbox_dir: Path) -> Iterator[Path]:
    env = write_sandbox_env(
        sandbox_dir, metrics=None, **{"notify.slack_webhook": "${RG_TEST_SLACK_WEBHOOK}", "notify.retries": 0}
    )
    with running_sandbox(env) as env_file:
        yield env_file


@pytest.fixture
def env_file(sandbox_dir: Path) -> Iterator[Path]:
    yield from notifying_sandbox(sandbox_dir)


def test_a_deployment_tells_its_start_and_its_success(env_file, webhook):
    run = run_gates(env_file, "2.0.0", RG_TEST_SLACK_WEBHOOK=webhook.url)

    assert run.code == 0, run.output
    start, end = webhook.texts
    assert start.startswith(":rocket: Deploying demo 2.0.0 to sandbox (sandbox), replacing 1.0.0. Run ")
    assert end.startswith(":white_check_mark: demo 2.0.0 serves sandbox: every gate passed in ")
    assert all(r["path"] == SECRET_PATH and r["username"] == "releasegate" for r in webhook.received)
    assert "## Notifications\n\n- start message sent\n- success message sent" in run.report
    assert "xoxb-s3cr3t" not in run.output + everything_written(run.reports), "the webhook URL is a secret"


def test_a_rollback_is_told_with_the_failed_gate_and_a_refused_message_changes_nothing(env_file):
    webhook = Webhook(status=500)
    try:
        run = run_gates(env_file, "2.0.0-bad-health", RG_TEST_SLACK_WEBHOOK=webhook.url)
    finally:
        webhook.close()

    assert run.code == 11, run.output  # the decision, whatever the chat says
    assert serving(env_file) == [("1.0.0", "healthy", "1.0.0")] * 3
    in_progress, rolled_back = webhook.texts[-2:]  # Granter: "Rollback IN PROGRESS", before it starts
    assert in_progress.startswith(
        ":warning: Rollback IN PROGRESS for demo 2.0.0-bad-health in sandbox: gates/"
    )
    assert "Going back to 1.0.0" in in_progress
    assert rolled_back.startswith(":rewind: demo 2.0.0-bad-health was ROLLED BACK in sandbox: gates/")
    assert "1.0.0 serves again, verified" in rolled_back
    assert (
        "rolled_back message NOT sent: Slack webhook: HTTP 500: internal_error (after 1 attempt(s))"
        in run.output
    )
    assert "- rolled_back message NOT sent: Slack webhook: HTTP 500" in run.report
    assert "Traceback" not in run.output
    assert "xoxb-s3cr3t" not in run.output + everything_written(run.reports)


def test_no_webhook_listening_is_one_line_and_templates_fill_in():
    problem = slack.post("http://127.0.0.1:9" + SECRET_PATH, "hello", timeout_s=1, retries=1)
    assert problem == "Slack webhook: connection refused (after 2 attempt(s))"
    text = messages.render(
        "aborted",
        {"service": "demo", "release": "2.0.0", "failure": None},
        {"aborted": "{service} {release}: {failure} {nope}"},
    )
    assert text == "demo 2.0.0: unknown ?"
