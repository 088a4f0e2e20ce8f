"""GitHub's REST API for one repository, as far as releasegate asks it, on 127.0.0.1.

GitHub cannot be reached from here: this real HTTP server stands in for it (the gates run as a
subprocess, so it must be a server, not a patched client). It answers the six questions
releasegate asks, with the shapes GitHub documents: a commit by ref, the tags, a workflow's runs
for a commit, the pull requests of a commit, a pull request, its reviews (paged by ``per_page``
and ``page``). The tests use it, and so does the sandbox's Release Manager stack on Kubernetes,
whose images are named by the commit of the release's tag.
With ``token`` set it answers 401 to any other credential, the way GitHub says "Bad credentials";
``refuse`` makes every request get one answer (a rate limit, a 503). Every request is kept.

    github = GitHubDouble(token="ghp_...")
    github.release("v2.0.0", runs=[workflow_run("completed", "success")], reviews=[review("alice", APPROVED)])
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

REPO = "summit/summit"
WORKFLOW = "mvp4-gate.yml"
SHA = "3f7c2a9d4b1e8f6a0c5d2e9b7a4f1c8e6d3b0a92"
HEAD = "8b1d4e7a2c5f9036e1a4d7b0c3f6e9a2d5b8c1e4"
"""The pull request's last commit, which its reviews approve; SHA is the merge commit."""
PULL = 812
AUTHOR = "release-bot"


def workflow_run(
    status: str, conclusion: str | None, *, number: int = 41, created_at: str = "2026-11-23T09:00:00Z"
) -> dict[str, Any]:
    """A run of WORKFLOW for SHA, as GitHub lists it."""
    return {
        "id": 9000 + number,
        "run_number": number,
        "run_attempt": 1,
        "name": "MVP-4 gate",
        "path": f".github/workflows/{WORKFLOW}",
        "head_sha": SHA,
        "status": status,
        "conclusion": conclusion,
        "created_at": created_at,
        "updated_at": created_at,
        "html_url": f"https://github.com/{REPO}/actions/runs/{9000 + number}",
    }


def review(login: str, state: str, at: str = "2026-11-22T10:00:00Z", commit: str = HEAD) -> dict[str, Any]:
    return {"user": {"login": login}, "state": state, "submitted_at": at, "commit_id": commit}


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class GitHubDouble:
    def __init__(self, token: str | None = None, *, repo: str = REPO, port: int = 0) -> None:
        self.token = token
        self.repo = repo
        self.refs: dict[str, str] = {}
        """Tag (or branch) -> the commit it names, in the order they were made."""
        self.runs: dict[str, list[dict[str, Any]]] = {}
        """Per workflow file name: the runs for SHA."""
        self.pulls_of_commit: dict[str, list[dict[str, Any]]] = {}
        self.pulls: dict[int, dict[str, Any]] = {}
        self.reviews: dict[int, list[dict[str, Any]]] = {}
        self.refuse: list[Answer] = []
        """Answered, one each, to the next requests, before anything else."""
        self.requests: list[dict[str, str]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def tag(self, name: str, sha: str) -> None:
        """A tag on commit ``sha`` (``git tag v2024.01.15 <sha>; git push origin --tags``)."""
        self.refs[name] = sha

    def release(
        self,
        ref: str,
        *,
        runs: list[dict[str, Any]],
        reviews: list[dict[str, Any]],
        workflow: str = WORKFLOW,
    ) -> None:
        """A release as GitHub knows it: its tag on SHA, its workflow's runs, pull request PULL merged as SHA."""
        self.refs[ref] = SHA
        self.runs[workflow] = runs
        pull = {
            "number": PULL,
            "title": f"Release {ref}",
            "state": "closed",
            "merged_at": "2026-11-22T12:00:00Z",
            "merge_commit_sha": SHA,
            "head": {"sha": HEAD},
            "user": {"login": AUTHOR},
        }
        self.pulls_of_commit[SHA] = [pull]
        self.pulls[PULL] = pull
        self.reviews[PULL] = reviews

    # Serving ------------------------------------------------------------------------------

    def answer(self, path: str, query: dict[str, list[str]], authorization: str) -> Answer:
        if self.refuse:
            return self.refuse.pop(0)
        if self.token is not None and authorization != f"Bearer {self.token}":
            # A proxy in front of an API may well echo what it refused: it must not leak from us.
            return Answer(401, {"message": f"Bad credentials ({authorization or 'none'})"})
        prefix = f"/repos/{self.repo}"
        if not path.startswith(prefix + "/"):
            return _not_found()
        rest = path[len(prefix) :]
        if match := re.fullmatch(r"/commits/([0-9a-f]{40})/pulls", rest):
            return _page(self.pulls_of_commit.get(match[1], []), query)
        if match := re.fullmatch(r"/commits/(.+)", rest):
            sha = self.refs.get(match[1]) or (match[1] if match[1] in self.refs.values() else None)
            return (
                Answer(200, {"sha": sha})
                if sha
                else Answer(422, {"message": f"No commit found for SHA: {match[1]}"})
            )
        if rest == "/tags":  # the last made first
            tags = [{"name": name, "commit": {"sha": sha}} for name, sha in reversed(self.refs.items())]
            return _page(tags, query)
        if match := re.fullmatch(r"/actions/workflows/([^/]+)/runs", rest):
            if match[1] not in self.runs:
                return _not_found()
            sha = query.get("head_sha", [""])[0]
            runs = [r for r in self.runs[match[1]] if r["head_sha"] == sha]
            return Answer(200, {"total_count": len(runs), "workflow_runs": runs})
        if match := re.fullmatch(r"/pulls/(\d+)/reviews", rest):
            return _page(self.reviews.get(int(match[1]), []), query)
        if match := re.fullmatch(r"/pulls/(\d+)", rest):
            pull = self.pulls.get(int(match[1]))
            return Answer(200, pull) if pull else _not_found()
        return _not_found()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                authorization = self.headers.get("Authorization", "")
                double.requests.append(
                    {"path": parts.path, "query": parts.query, "authorization": authorization}
                )
                answer = double.answer(parts.path, parse_qs(parts.query), authorization)
                payload = json.dumps(answer.body).encode()
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_args: object) -> None:
                pass

        return Handler


def _page(items: list[dict[str, Any]], query: dict[str, list[str]]) -> Answer:
    per_page = int(query.get("per_page", ["30"])[0])
    page = int(query.get("page", ["1"])[0])
    return Answer(200, items[(page - 1) * per_page : page * per_page])


def _not_found() -> Answer:
    return Answer(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})


def rate_limited(reset_epoch: int) -> Answer:
    """What GitHub answers when the hour's requests are used up."""
    return Answer(
        403,
        {"message": "API rate limit exceeded for 203.0.113.7."},
        {"x-ratelimit-limit": "60", "x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset_epoch)},
    )
