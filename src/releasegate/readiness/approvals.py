"""Code review of a release: which pull request it is, and who approves it now.

Summit "Code review approved by at least 2 reviewers", Release Manager "Code review completed
and approved". What counts is each reviewer's latest deciding review, as GitHub itself reads
them: an approval later followed by a request for changes, or dismissed, no longer counts; a
comment changes nothing; the author's own reviews never count. An approval given on an earlier
commit than the pull request's last is stale (GitHub's "dismiss stale approvals"): the reviewer
approved other code than what ships, so it does not count unless the environment says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from releasegate.errors import ConfigError
from releasegate.release_names import fill

APPROVED = "APPROVED"
CHANGES_REQUESTED = "CHANGES_REQUESTED"
DISMISSED = "DISMISSED"
_DECIDING = frozenset({APPROVED, CHANGES_REQUESTED, DISMISSED})


@dataclass(frozen=True)
class ReviewTally:
    approved: list[str] = field(default_factory=list)
    changes_requested: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    """Reviewers whose standing approval is of an earlier commit, with that commit."""


def tally_reviews(
    reviews: list[dict[str, Any]], author: str | None = None, head_sha: str | None = None
) -> ReviewTally:
    """Distinct reviewers by their latest APPROVED, CHANGES_REQUESTED or DISMISSED review; with
    ``head_sha`` (the pull request's last commit) an approval of another commit is stale."""
    latest: dict[str, dict[str, Any]] = {}
    ordered = sorted(enumerate(reviews), key=lambda ir: (str(ir[1].get("submitted_at") or ""), ir[0]))
    for _index, review in ordered:
        login = str((review.get("user") or {}).get("login") or "")
        state = str(review.get("state") or "").upper()
        if not login or state not in _DECIDING or login.lower() == (author or "").lower():
            continue
        latest[login.lower()] = {**review, "login": login, "state": state}

    def of_another_commit(review: dict[str, Any]) -> bool:
        commit = review.get("commit_id")
        return bool(head_sha and commit and commit != head_sha)

    approvals = [r for r in latest.values() if r["state"] == APPROVED]
    approved = sorted(r["login"] for r in approvals if not of_another_commit(r))
    stale = sorted(f"{r['login']} (approved {r['commit_id'][:7]})" for r in approvals if of_another_commit(r))
    changes = sorted(
        f"{r['login']} ({r['submitted_at']})" if r.get("submitted_at") else r["login"]
        for r in latest.values()
        if r["state"] == CHANGES_REQUESTED
    )
    return ReviewTally(approved, changes, stale)


def pick_pull_request(pulls: list[dict[str, Any]], sha: str) -> dict[str, Any] | None:
    """Of the pull requests containing ``sha``: the one merged as it, else a merged one, else the first."""
    exact = [p for p in pulls if p.get("merge_commit_sha") == sha]
    merged = [p for p in pulls if p.get("merged_at")]
    found = exact or merged or pulls
    return found[0] if found else None


def pull_request_number(template: str | int | None, release: str) -> int | None:
    """[readiness.approvals] pull_request: a number, or a template with {release}; None: find it."""
    if template is None:
        return None
    text = fill(str(template), release).strip().lstrip("#")
    if not text.isdigit():
        raise ConfigError(
            f"readiness.approvals.pull_request: {template!r} gives {text!r} for release {release}, not a number"
        )
    return int(text)
