"""The GitHub probe against a GitHub double over real HTTP: what it asks, with which credentials,
and the one line it gives for every answer that is not one (bad token, rate limits, no such
workflow or tag, a GitHub that fails or does not answer)."""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Iterator

import pytest

from releasegate.config import GitHubReadiness
from releasegate.errors import ProbeError
from releasegate.probes.github import GitHub, TagCommits
from releasegate.redaction import redact
from releasegate.release_names import fill, parse
from sandbox.github_double import (
    PULL,
    REPO,
    SHA,
    WORKFLOW,
    Answer,
    GitHubDouble,
    rate_limited,
    review,
    workflow_run,
)

TOKEN = "ghp_probeT0kenNeverShown"


@pytest.fixture
def github() -> Iterator[GitHubDouble]:
    double = GitHubDouble(token=TOKEN)
    double.release(
        "v2.0.0", runs=[workflow_run("completed", "success")], reviews=[review("alice", "APPROVED")]
    )
    yield double
    double.close()


def probe(double: GitHubDouble, token: str | None = TOKEN, **kw: object) -> GitHub:
    return GitHub(double.url, REPO, token=token, token_name="GITHUB_TOKEN", **kw)  # type: ignore[arg-type]


def refusal(call) -> str:
    with pytest.raises(ProbeError) as error:
        call()
    return str(error.value)


def test_the_tag_its_runs_its_pull_request_and_reviews_are_read_with_the_token(github):
    gh = probe(github)

    commit = gh.commit("v2.0.0")
    runs = gh.workflow_runs(WORKFLOW, commit.sha)
    pulls = gh.pulls_of_commit(commit.sha)
    reviews = gh.reviews(PULL)

    assert commit.sha == SHA and commit.source.endswith(f"/repos/{REPO}/commits/v2.0.0")
    assert [r["conclusion"] for r in runs.data] == ["success"]
    assert runs.source == f"GET {github.url}/repos/{REPO}/actions/workflows/{WORKFLOW}/runs?head_sha={SHA}"
    assert [p["number"] for p in pulls.data] == [PULL]
    assert [r["user"]["login"] for r in reviews.data] == ["alice"]
    assert {r["authorization"] for r in github.requests} == {f"Bearer {TOKEN}"}
    assert gh.commit(SHA).sha == SHA, "a sha is its own commit: no request"
    assert len(github.requests) == 4
    assert gh.workflow_runs(WORKFLOW, "0" * 40).data == [], "another commit: no run (the gate fails on it)"
    assert gh.pull(PULL).data["title"] == "Release v2.0.0"  # [readiness.approvals] pull_request = 812
    assert f"404 Not Found: pull request #999 in {REPO}" in refusal(lambda: gh.pull(999))


def test_reviews_are_read_page_by_page(github):
    github.reviews[PULL] = [review(f"r{i}", "APPROVED") for i in range(130)]

    reviews = probe(github).reviews(PULL)

    assert len(reviews.data) == 130
    assert [r["query"] for r in github.requests] == ["per_page=100&page=1", "per_page=100&page=2"]


def test_the_token_comes_from_its_variable_and_is_masked_from_then_on(github, monkeypatch):
    monkeypatch.setenv("RG_TEST_PROBE_TOKEN", TOKEN)
    settings = GitHubReadiness(repo=REPO, api_url=github.url, token="${RG_TEST_PROBE_TOKEN}")

    gh = GitHub.from_settings(settings)

    assert gh.commit("v2.0.0").sha == SHA
    assert redact(f"Authorization: Bearer {TOKEN} sent") == "Authorization: *** sent"
    assert redact(f"echoed {TOKEN}") == "echoed ***"


def test_a_wrong_token_is_one_line_that_never_shows_it(github):
    wrong = "ghp_wrongT0kenAlsoNeverShown"

    line = refusal(lambda: probe(github, token=wrong).commit("v2.0.0"))

    # The double echoes the refused credential, as a chatty proxy would.
    assert line == (
        f"GitHub API at {github.url}: 401 Unauthorized: Bad credentials (Bearer ***) "
        "(the token in $GITHUB_TOKEN is wrong or expired: export a valid one)"
    )


def test_no_token_where_one_is_needed_says_how_to_give_one(github):
    line = refusal(lambda: probe(github, token=None).commit("v2.0.0"))
    assert line.endswith('(it wants a token: set [readiness.github] token = "${GITHUB_TOKEN}")')


def test_a_rate_limit_says_when_it_lifts(github):
    reset = int(time.time()) + 600
    github.refuse = [rate_limited(reset)]

    line = refusal(lambda: probe(github).commit("v2.0.0"))

    lifts = time.strftime("%H:%M:%S", time.gmtime(reset))
    assert line == (
        f"GitHub API at {github.url}: 403 rate limited: API rate limit exceeded for 203.0.113.7.; "
        f"all 60 requests of the hour used; the limit lifts at {lifts} UTC (wait, then run the gates again)"
    )


def test_a_secondary_rate_limit_or_429_says_retry_after(github):
    github.refuse = [
        Answer(403, {"message": "You have exceeded a secondary rate limit."}, {"retry-after": "60"}),
        Answer(429, {"message": "Too many requests"}, {"retry-after": "30"}),
    ]
    assert "403 rate limited: You have exceeded a secondary rate limit.; retry after 60 s" in refusal(
        lambda: probe(github).commit("v2.0.0")
    )
    assert "429 rate limited: Too many requests; retry after 30 s" in refusal(
        lambda: probe(github).commit("v2.0.0")
    )


def test_a_token_without_access_is_told_what_it_needs(github):
    github.refuse = [Answer(403, {"message": "Resource not accessible by personal access token"})]
    line = refusal(lambda: probe(github).workflow_runs(WORKFLOW, SHA))
    assert line.endswith(
        "403 Forbidden: Resource not accessible by personal access token (the token in $GITHUB_TOKEN may "
        f"not read workflow {WORKFLOW} in {REPO}: it needs read access to contents, actions and pull requests)"
    )


def test_an_unknown_workflow_or_tag_names_what_was_looked_for(github):
    assert f"404 Not Found: workflow nightly.yml in {REPO} (check the name;" in refusal(
        lambda: probe(github).workflow_runs("nightly.yml", SHA)
    )
    assert f"422 No commit found for SHA: v9.9.9 (does ref v9.9.9 in {REPO} exist?" in refusal(
        lambda: probe(github).commit("v9.9.9")
    )


def test_a_failing_github_is_asked_again_then_named(github):
    github.refuse = [Answer(503, {"message": "Service unavailable"})]
    assert probe(github, retries=1).commit("v2.0.0").sha == SHA, "one 503, then an answer"

    github.refuse = [Answer(502, {"message": "Bad gateway"})] * 2
    assert refusal(lambda: probe(github, retries=1).commit("v2.0.0")) == (
        f"GitHub API at {github.url}: HTTP 502 (after 2 attempts): Bad gateway"
    )


def test_no_answer_in_time_and_nothing_listening_are_one_line_each():
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        line = refusal(lambda: GitHub(url, REPO, timeout_s=0.3, retries=0).commit("v2.0.0"))
    assert line == f"GitHub API at {url}/repos/{REPO}/commits/v2.0.0: no answer within 0.3 s"
    line = refusal(lambda: GitHub(url, REPO, timeout_s=0.3, retries=0).commit("v2.0.0"))
    assert line.startswith(f"GitHub API at {url}/repos/{REPO}/commits/v2.0.0: connection refused")


def test_a_release_s_commit_and_the_releases_at_a_commit_come_from_the_tags(github):
    """Release Manager's images are prod-<short sha of tag v{release}>: setting one asks the
    tag's commit, reading one back asks which release's tag is on that commit (across pages)."""
    tags = {f"v1.{n}.0": hashlib.sha1(str(n).encode()).hexdigest() for n in range(150)}  # > 1 page
    tags["v1.149.0-rc1"] = tags["v1.149.0"]  # two tags on one commit
    for name, sha in tags.items():
        github.tag(name, sha)
    commits = TagCommits(probe(github), "v{release}")

    assert commits.sha_of("1.7.0") == tags["v1.7.0"]
    assert commits.releases_at(tags["v1.3.0"][:7]) == ["1.3.0"]
    assert sorted(commits.releases_at(tags["v1.149.0"][:7])) == ["1.149.0", "1.149.0-rc1"]
    assert commits.releases_at("0000000") == []
    assert len([r for r in github.requests if r["path"].endswith("/tags")]) == 2, (
        "the tags are listed once a run, page by page"
    )

    image = fill("release-manager:prod-{sha}", "1.7.0", commits)
    assert image == f"release-manager:prod-{tags['v1.7.0'][:7]}"
    assert parse(image, "release-manager:prod-{sha}", commits) == "1.7.0"
    both = f"release-manager:prod-{tags['v1.149.0'][:7]}"
    assert parse(both, "release-manager:prod-{sha}", commits) == "1.149.0-rc1", "the first GitHub lists"
    assert parse("release-manager:latest", "release-manager:prod-{sha}", commits) is None


def test_a_release_without_its_tag_is_one_line_naming_the_tag(github):
    commits = TagCommits(probe(github), "v{release}")
    assert "v9.9.9" in refusal(lambda: commits.sha_of("9.9.9"))
