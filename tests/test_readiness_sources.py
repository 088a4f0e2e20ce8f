"""The readiness gates that ask outside sources, in runs of ``pytest gates/`` as a subprocess:
the CI workflow and the code review (a GitHub double on 127.0.0.1) and TLS certificates (real
TLS servers on 127.0.0.1 with certificates made here). Exit codes, the report's lines, the plan,
and the token nowhere in what a run leaves behind.

These checks read nothing of the sandbox and change nothing in it, so none is started: the
environment is the sandbox's (free ports, its own reports directory) with autostart off and
only the checks under test in [readiness].
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from gate_runs import GateRun, everything_written, run_suite
from sandbox_env import free_port_block, write_sandbox_env
from tls_servers import Authority, TlsServer, self_signed

from sandbox.github_double import PULL, REPO, SHA, WORKFLOW, GitHubDouble, review, workflow_run

READINESS = "gates/test_01_readiness.py"
TOKEN = "ghp_gateT0kenThatMustNeverShow"
VARIABLE = "RG_TEST_GITHUB_TOKEN"


@dataclass
class Certificates:
    ca_file: Path
    valid: TlsServer
    expiring: TlsServer
    expired: TlsServer
    untrusted: TlsServer


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Iterator[Certificates]:
    """Four hosts: valid 90 days, expiring in 5, expired yesterday, self-signed (all else fine)."""
    ca = Authority()
    servers = Certificates(
        ca.write(tmp_path_factory.mktemp("ca")),
        TlsServer(ca.issue(valid_for=timedelta(days=90))),
        TlsServer(ca.issue(valid_for=timedelta(days=5))),
        TlsServer(ca.issue(valid_for=timedelta(days=-1))),
        TlsServer(self_signed(valid_for=timedelta(days=90))),
    )
    yield servers
    for server in (servers.valid, servers.expiring, servers.expired, servers.untrusted):
        server.close()


@pytest.fixture
def github() -> Iterator[GitHubDouble]:
    double = GitHubDouble(token=TOKEN)
    yield double
    double.close()


def environment(directory: Path, github: GitHubDouble, **readiness: object) -> Path:
    """The sandbox's environment with only the given [readiness] sections (GitHub's connection added)."""
    sections = {f"readiness.{name}": value for name, value in readiness.items()}
    return write_sandbox_env(
        directory,
        metrics=None,
        compliance=None,
        readiness=None,
        **{
            "sandbox.autostart": False,
            "readiness.github": {"repo": REPO, "api_url": github.url, "token": f"${{{VARIABLE}}}"},
            **sections,
        },
    )


def readiness(env_file: Path, *extra: str, token: str = TOKEN) -> GateRun:
    return run_suite(READINESS, env_file, "--release=2.0.0", *extra, **{VARIABLE: token})


CI = {"workflow": WORKFLOW}
APPROVALS = {"min_approvals": 2}


def tls(certificates: Certificates, *servers: TlsServer, extra: tuple[str, ...] = ()) -> dict[str, object]:
    hosts = [f"localhost:{s.port}" for s in servers] + list(extra)
    return {"hosts": hosts, "min_days": 30, "ca_file": str(certificates.ca_file), "timeout_s": 3}


def test_green_ci_two_approvals_and_valid_certificates_pass(tmp_path, github, certificates):
    github.release(
        "v2.0.0",
        runs=[
            workflow_run("completed", "failure", number=40, created_at="2026-11-22T09:00:00Z"),
            workflow_run("completed", "success"),
        ],
        reviews=[
            review("alice", "APPROVED"),
            review("bob", "COMMENTED"),
            review("bob", "APPROVED", "2026-11-22T11:00:00Z"),
            review("release-bot", "APPROVED"),  # the author: does not count
        ],
    )
    env = environment(tmp_path, github, ci=CI, approvals=APPROVALS, tls=tls(certificates, certificates.valid))

    run = readiness(env)

    assert run.code == 0, run.output
    report = run.report
    for line in (
        f"| commit of v2.0.0 | {SHA} |  | info | GET {github.url}/repos/{REPO}/commits/v2.0.0 |",
        "| mvp4-gate.yml for v2.0.0 (3f7c2a9) | success (run #41 concluded success at 2026-11-23T09:00:00Z",
        f"| pull request of v2.0.0 | #{PULL} Release v2.0.0 (merged) |",
        f"| distinct approving reviewers of #{PULL} | 2 (alice, bob) | >= 2 | pass |",
        f"| reviewers requesting changes on #{PULL} | 0 (none) | <= 0 | pass |",
        f"| certificate of localhost:{certificates.valid.port} | 90 days (expires ",
    ):
        assert line in report, line
    assert {r["authorization"] for r in github.requests} == {f"Bearer {TOKEN}"}
    assert TOKEN not in run.output + everything_written(run.reports)


def test_red_ci_one_approval_and_bad_certificates_each_abort_with_their_own_line(
    tmp_path, github, certificates
):
    github.release(
        "v2.0.0",
        runs=[workflow_run("completed", "failure")],
        reviews=[
            review("alice", "APPROVED"),
            review("bob", "APPROVED"),
            review("bob", "CHANGES_REQUESTED", "2026-11-22T12:00:00Z"),  # takes the approval back
            review("carol", "APPROVED", commit="d" * 40),  # before the last push: stale
        ],
    )
    closed = free_port_block(1)
    servers = (certificates.valid, certificates.expiring, certificates.expired, certificates.untrusted)
    env = environment(
        tmp_path,
        github,
        ci=CI,
        approvals=APPROVALS,
        tls=tls(certificates, *servers, extra=(f"127.0.0.1:{closed}",)),
    )

    run = readiness(env)

    assert run.code == 10, run.output
    assert "releasegate: ABORTED (exit 10)" in run.output
    report = run.report
    expiring, expired, untrusted = (f"localhost:{s.port}" for s in servers[1:])
    for line in (
        "| mvp4-gate.yml for v2.0.0 (3f7c2a9) | failure (run #41 concluded failure at 2026-11-23T09:00:00Z: "
        f"fix the release, run {WORKFLOW} again (https://github.com/{REPO}/actions/runs/9041)) | == success | fail |",
        f"| distinct approving reviewers of #{PULL} | 1 (alice; stale, of a commit before 8b1d4e7: carol "
        "(approved ddddddd); changes requested by bob (2026-11-22T12:00:00Z)) | >= 2 | fail |",
        f"| certificate of localhost:{certificates.valid.port} | 90 days (expires ",
        f"| certificate of {expiring} | 5 days (expires ",
        f"| certificate of {expired} | no data (certificate does not verify: certificate has expired on "
        f"{certificates.expired.issued.not_after:%Y-%m-%d %H:%M} UTC (renew it, "
        "or trust its issuer with [readiness.tls] ca_file)) | > 30 days | fail |",
        f"| certificate of {untrusted} | no data (certificate does not verify: self-signed certificate",
        f"| certificate of 127.0.0.1:{closed} | no data (connection refused (is the host right, and does it listen "
        "there?)) | > 30 days | fail |",
    ):
        assert line in report, line
    assert (
        ", within 30 days: renew it; CN=localhost, issued by CN=releasegate test CA) | > 30 days | fail |"
        in report
    )
    # The gate's own line, as the terminal shows it: each failing host named.
    tls_line = next(
        line
        for line in run.output.splitlines()
        if line.startswith("every certificate valid for more than 30 days: no: fail - ")
    )
    for host in (expiring, expired, untrusted, f"127.0.0.1:{closed}"):
        assert f"{host}: " in tls_line
    assert f"localhost:{certificates.valid.port}:" not in tls_line


def test_a_run_still_in_progress_or_a_request_for_changes_never_pass(tmp_path, github):
    github.release(
        "v2.0.0",
        runs=[
            workflow_run("completed", "success", number=40, created_at="2026-11-22T09:00:00Z"),
            workflow_run("in_progress", None, number=41),  # a re-run after a new push: the newest decides
        ],
        reviews=[
            review("alice", "APPROVED"),
            review("bob", "APPROVED"),
            review("carol", "CHANGES_REQUESTED", "2026-11-22T13:00:00Z"),
        ],
    )
    env = environment(tmp_path, github, ci=CI, approvals=APPROVALS)

    run = readiness(env)

    assert run.code == 10, run.output
    report = run.report
    assert (
        "| mvp4-gate.yml for v2.0.0 (3f7c2a9) | in_progress (run #41 is in progress since 2026-11-23T09:00:00Z: "
        "wait for it to finish, then run the gates again" in report
    )
    assert f"| distinct approving reviewers of #{PULL} | 2 (alice, bob; changes requested by carol" in report
    assert (
        f"| reviewers requesting changes on #{PULL} | 1 (changes requested by carol (2026-11-22T13:00:00Z): "
        "address them and ask again) | <= 0 | fail |" in report
    )


def test_a_wrong_token_aborts_in_one_line_and_shows_nowhere(tmp_path, github):
    github.release(
        "v2.0.0", runs=[workflow_run("completed", "success")], reviews=[review("alice", "APPROVED")]
    )
    env = environment(tmp_path, github, ci=CI, approvals=APPROVALS)
    wrong = "ghp_wrongT0kenEchoedByTheProxy"

    run = readiness(env, token=wrong)

    assert run.code == 10, run.output
    assert (
        f"GitHub API at {github.url}: 401 Unauthorized: Bad credentials (Bearer ***) "
        f"(the token in ${VARIABLE} is wrong or expired: export a valid one)" in run.output
    )
    assert "Traceback" not in run.output
    assert wrong in {r["authorization"].removeprefix("Bearer ") for r in github.requests}, "it was sent"
    assert wrong not in run.output + everything_written(run.reports), "and echoed back, yet never shown"


def test_the_plan_shows_each_check_with_its_threshold_and_source_never_the_token(
    tmp_path, github, certificates
):
    env = environment(
        tmp_path,
        github,
        ci=CI,
        approvals=APPROVALS,
        tls=tls(certificates, certificates.valid),
        staging={"environment": "staging", "within_days": 7, "drill": True},
    )

    plan = readiness(env, "--dry-run")

    assert plan.code == 0, plan.output
    source = f"GitHub API at {github.url}, repo {REPO}, commit of v2.0.0, token from ${VARIABLE}"
    for line in (
        '  check   CI workflow passed (GA 1.1 "MVP-4 gate workflow passed"): its latest run for the release\'s commit succeeded.',
        f"          threshold readiness.ci.workflow = {WORKFLOW}",
        f"          source    {source}: runs of {WORKFLOW}",
        "          threshold readiness.approvals.min_approvals = 2",
        f"          source    {source}: its pull request's reviews",
        "          threshold readiness.staging.within_days = 7.0",
        f"          source    ledger {tmp_path / 'reports'}/ledger.sqlite, runs of environment staging",
        "          threshold readiness.tls.min_days = 30.0",
        f"          source    TLS handshakes with localhost:{certificates.valid.port}, trusting {certificates.ca_file}",
    ):
        assert line in plan.output, line
    assert "Rollback tested in staging (GA 1.1)" in plan.output
    assert TOKEN not in plan.output
    assert github.requests == [], "a plan asks nobody"


def test_a_release_without_its_git_tag_aborts_at_the_tag_gate(tmp_path, github):
    """Release Manager's "Git tags created for the release version": with [readiness.github]
    alone, a release whose tag v2.0.0 was never pushed aborts in preflight, naming the tag."""
    env = environment(tmp_path, github)

    run = readiness(env)

    assert run.code == 10, run.output
    assert "failed gate: gates/test_01_readiness.py::test_release_is_tagged (preflight)" in run.output
    assert "v2.0.0" in run.output and "422" in run.output, run.output

    github.tag("v2.0.0", SHA)
    run = readiness(env)

    assert run.code == 0, run.output
    assert f"| git ref v2.0.0 | {SHA[:7]} |" in run.report
