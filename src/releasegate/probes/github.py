"""GitHub's REST API, read-only: the release's commit, its workflow runs, its pull request and
the reviews on it.

Only a 200 is an answer. Everything else is one ProbeError line naming the API and what to do:
a wrong or expired token (401), a rate limit (403 or 429, with when it lifts), no access (403),
a repository, workflow or pull request that does not exist (404: also what GitHub says to a
token that may not see a private repository), a ref that names no commit (422). A 5xx, a
timeout or a refused connection is tried again ``retries`` times. The token only ever goes into the Authorization header; it is registered for redaction
when resolved, and every line built from an answer is redacted as well.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from releasegate.config import GitHubReadiness
from releasegate.errors import ProbeError
from releasegate.probes.http import Exchange, Http
from releasegate.redaction import redact, register_secret
from releasegate.release_names import fill, parse

API_VERSION = "2022-11-28"
PER_PAGE = 100
MAX_PAGES = 10
_SHA = re.compile(r"^[0-9a-f]{40}$")
_RETRY_STATUSES = frozenset({500, 502, 503, 504})


@dataclass(frozen=True)
class Commit:
    ref: str
    sha: str
    source: str

    @property
    def short(self) -> str:
        return self.sha[:7]


@dataclass(frozen=True)
class Answer:
    """What GitHub answered, and the request it answered (the evidence's source)."""

    data: Any
    source: str


class GitHub:
    """One repository, through one HTTP client."""

    def __init__(
        self,
        api_url: str,
        repo: str,
        *,
        token: str | None = None,
        token_name: str = "",
        timeout_s: float = 10.0,
        retries: int = 2,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.repo = repo
        self.retries = retries
        self._token = token
        self._token_name = token_name
        if token:
            register_secret(token)  # also when built without from_settings: it must never show
        self._http = Http(self.api_url, timeout_s=timeout_s, component="GitHub API")

    @classmethod
    def from_settings(cls, settings: GitHubReadiness) -> GitHub:
        """The token is read from its variable now, and from now on masked wherever it would show."""
        token = settings.token.resolve() if settings.token else None
        return cls(
            settings.api_url,
            settings.repo,
            token=token,
            token_name=settings.token.variable if settings.token else "",
            timeout_s=settings.timeout_s,
            retries=settings.retries,
        )

    # The questions -----------------------------------------------------------------------

    def commit(self, ref: str) -> Commit:
        """The commit a tag, branch or sha names (an annotated tag is followed to its commit)."""
        if _SHA.match(ref):
            return Commit(ref, ref, f"{ref} is a commit sha")
        answer = self._get(f"/repos/{self.repo}/commits/{ref}", what=f"ref {ref} in {self.repo}")
        sha = answer.data.get("sha") if isinstance(answer.data, dict) else None
        if not isinstance(sha, str):
            raise ProbeError(self._component, f"{answer.source}: the answer names no commit sha")
        return Commit(ref, sha, answer.source)

    def tags(self) -> Answer:
        """Every tag of the repository with the commit it names (in GitHub's order)."""
        return self._pages(f"/repos/{self.repo}/tags", what=f"the tags of {self.repo}")

    def workflow_runs(self, workflow: str, sha: str) -> Answer:
        """Every run of ``workflow`` (file name or id) for commit ``sha``, as GitHub lists them."""
        answer = self._get(
            f"/repos/{self.repo}/actions/workflows/{workflow}/runs",
            params={"head_sha": sha, "per_page": PER_PAGE, "exclude_pull_requests": "true"},
            what=f"workflow {workflow} in {self.repo}",
        )
        runs = answer.data.get("workflow_runs") if isinstance(answer.data, dict) else None
        if not isinstance(runs, list):
            raise ProbeError(self._component, f"{answer.source}: the answer has no workflow_runs")
        return Answer(runs, f"{answer.source}?head_sha={sha}")

    def pulls_of_commit(self, sha: str) -> Answer:
        """The pull requests that contain ``sha`` (merged with it, or open with it on their head)."""
        return self._pages(f"/repos/{self.repo}/commits/{sha}/pulls", what=f"commit {sha[:7]} in {self.repo}")

    def pull(self, number: int) -> Answer:
        answer = self._get(
            f"/repos/{self.repo}/pulls/{number}", what=f"pull request #{number} in {self.repo}"
        )
        if not isinstance(answer.data, dict) or "number" not in answer.data:
            raise ProbeError(self._component, f"{answer.source}: the answer is not a pull request")
        return answer

    def reviews(self, number: int) -> Answer:
        """Every review of pull request ``number``, oldest first."""
        return self._pages(
            f"/repos/{self.repo}/pulls/{number}/reviews", what=f"pull request #{number} in {self.repo}"
        )

    # The exchange ------------------------------------------------------------------------

    @property
    def _component(self) -> str:
        return f"GitHub API at {self.api_url}"

    def _pages(self, path: str, *, what: str) -> Answer:
        found: list[Any] = []
        for page in range(1, MAX_PAGES + 1):
            answer = self._get(path, params={"per_page": PER_PAGE, "page": page}, what=what)
            if not isinstance(answer.data, list):
                raise ProbeError(self._component, f"{answer.source}: expected a list")
            found.extend(answer.data)
            if len(answer.data) < PER_PAGE:
                break
        return Answer(found, self._source(path))

    def _source(self, path: str) -> str:
        return redact(f"GET {self.api_url}{path}")

    def _get(self, path: str, *, what: str, params: dict[str, Any] | None = None) -> Answer:
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                answer = self._http.request(
                    "GET", path, params=params, headers=headers, hint="is [readiness.github] api_url right?"
                )
            except ProbeError:
                if last:
                    raise
            else:
                if answer.status == 200:
                    return Answer(answer.body, self._source(path))
                if answer.status not in _RETRY_STATUSES or last:
                    raise self._refusal(answer, what, attempts=attempt + 1)
            time.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def _refusal(self, answer: Exchange, what: str, *, attempts: int) -> ProbeError:
        """One line for an answer that is not a 200: what GitHub said, and what to do about it."""
        message = _message(answer)
        token = f"the token in ${self._token_name}" if self._token_name else "the token"
        if answer.status == 401:
            return ProbeError(
                self._component,
                f"401 Unauthorized: {message}",
                f"{token} is wrong or expired: export a valid one"
                if self._token
                else 'it wants a token: set [readiness.github] token = "${GITHUB_TOKEN}"',
            )
        if answer.status == 429 or (answer.status == 403 and _rate_limited(answer)):
            return ProbeError(
                self._component,
                f"{answer.status} rate limited: {message}; {_lifts(answer)}",
                "wait, then run the gates again"
                + ("" if self._token else "; a token raises the limit: set [readiness.github] token"),
            )
        if answer.status == 403:
            return ProbeError(
                self._component,
                f"403 Forbidden: {message}",
                f"{token if self._token else 'without a token, GitHub'} may not read {what}: "
                "it needs read access to contents, actions and pull requests",
            )
        if answer.status == 422:  # GitHub's answer to a ref that names no commit
            return ProbeError(
                self._component,
                f"422 {message}",
                f"does {what} exist? push it, or fix [readiness.github] ref",
            )
        if answer.status == 404:
            return ProbeError(
                self._component,
                f"404 Not Found: {what}",
                "check the name; a private repository also answers 404 to a token that may not read it",
            )
        tried = f" (after {attempts} attempts)" if attempts > 1 else ""
        return ProbeError(self._component, f"HTTP {answer.status}{tried}: {message}")


def _message(answer: Exchange) -> str:
    """GitHub's own words (``{"message": "Bad credentials"}``), else the start of the text."""
    body = answer.body
    text = body.get("message") if isinstance(body, dict) else None
    return redact(str(text or answer.text[:200] or "no message").replace("\n", " "))


def _rate_limited(answer: Exchange) -> bool:
    """A 403 that is a rate limit: no requests left, a Retry-After, or a "secondary rate limit"."""
    return (
        answer.headers.get("x-ratelimit-remaining") == "0"
        or "retry-after" in answer.headers
        or "rate limit" in _message(answer).lower()
    )


def _lifts(answer: Exchange) -> str:
    """When the limit lifts: Retry-After seconds, else x-ratelimit-reset (epoch seconds)."""
    if "retry-after" in answer.headers:
        return f"retry after {answer.headers['retry-after']} s"
    reset = answer.headers.get("x-ratelimit-reset", "")
    if reset.isdigit():
        at = datetime.fromtimestamp(int(reset), UTC)
        limit = answer.headers.get("x-ratelimit-limit")
        used = f"all {limit} requests of the hour used; " if limit else ""
        return f"{used}the limit lifts at {at:%H:%M:%S} UTC"
    return "GitHub did not say when the limit lifts"


class TagCommits:
    """The release's git tags (``ref``, e.g. ``v{release}``) and their commits, asked of GitHub
    once each per run: what an image tag of the release's commit (``prod-{sha}``) resolves by."""

    def __init__(self, github: GitHub | Callable[[], GitHub], ref: str) -> None:
        self._github = github
        self.ref = ref
        self._shas: dict[str, str] = {}
        self._tags: list[tuple[str, str]] | None = None

    @property
    def github(self) -> GitHub:
        """Made on first use: a run whose images are never set or read needs no token."""
        if not isinstance(self._github, GitHub):
            self._github = self._github()
        return self._github

    def sha_of(self, release: str) -> str:
        if release not in self._shas:
            self._shas[release] = self.github.commit(fill(self.ref, release)).sha
        return self._shas[release]

    def releases_at(self, sha_prefix: str) -> list[str]:
        if self._tags is None:
            tags = self.github.tags().data
            self._tags = [
                (str(t.get("name")), str((t.get("commit") or {}).get("sha") or ""))
                for t in tags
                if isinstance(t, dict)
            ]
        found = [parse(name, self.ref) for name, sha in self._tags if sha.startswith(sha_prefix)]
        return [release for release in found if release is not None]
