"""Policy gates through whole gate runs against a real sandbox whose Summit is the policy engine
(Summit GA 4.1 "Deploy OPA policies first", 5.1 the decision table, 7.2 the policy rollback).

One sandbox for the module, in order: a release whose bundle denies a TS user an S entity is
caught by the decision table and rolled back, its bundle too; the good release goes out with
its bundle; a drill takes both back and forward again. The engine wants an admin token here,
which must never show in any output, report or record.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gate_runs import GateRun, environment, run_gates, run_suite, runs, serving
from sandbox_env import running_sandbox, write_sandbox_env

from releasegate.errors import ProbeError
from releasegate.probes.policy import PolicyEngine

pytestmark = pytest.mark.integration

TOKEN_VAR = "RG_TEST_POLICY_TOKEN"
TOKEN = "p0licy-admin-t0ken-never-shown"
ONE_ZERO = [("1.0.0", "healthy", "1.0.0")] * 3
TWO_ZERO = [("2.0.0", "healthy", "2.0.0")] * 3
CASES = [
    "TS user reads an S entity",
    "S user reads an S entity",
    "S user is denied a TS entity",
    "deleting an entity needs an approval",
]


@pytest.fixture(scope="module")
def policy_sandbox(module_sandbox_dir: Path) -> Iterator[Path]:
    path = write_sandbox_env(
        module_sandbox_dir,
        metrics=None,
        smoke=None,  # the journeys have their own tests; here the decision table decides
        **{
            "platform.local.secret_env": {"SUMMIT_ADMIN_TOKEN": "${" + TOKEN_VAR + "}"},
            "policy.token": "${" + TOKEN_VAR + "}",
        },
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(TOKEN_VAR, TOKEN)  # before the sandbox starts: its instances read it
        with running_sandbox(path) as env_file:
            yield env_file


def active_version(env_file: Path) -> str:
    """What the engine enforces, asked as an operator would (curl /health/policy)."""
    url = environment(env_file).platform.url
    return httpx.get(f"{url}/summit/health/policy", timeout=5).json()["bundleVersion"]


def assert_token_never_shown(run: GateRun) -> None:
    assert TOKEN not in run.output
    for path in run.reports.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), f"the token is in {path}"


def test_a_bundle_that_decides_wrongly_is_caught_and_the_previous_bundle_put_back(policy_sandbox):
    assert active_version(policy_sandbox) == "v1.0.0"

    run = run_gates(policy_sandbox, "2.0.0-bad-policy")

    assert run.code == 11, run.output
    record = runs(policy_sandbox)[0]
    assert record.failed_gate == (
        "gates/test_42_policy.py::test_policy_decides_the_case_as_expected[TS user reads an S entity]"
    )
    assert "decision for TS user reads an S entity: DENY == ALLOW: fail" in record.failure
    assert [i.action for i in record.intents] == ["migrate", "policy", "deploy"], "the policy first"
    assert record.intent("policy").undo["previous_version"] == "v1.0.0"
    assert active_version(policy_sandbox) == "v1.0.0", "GA 7.2: the previous bundle is back"
    assert serving(policy_sandbox) == ONE_ZERO
    assert "| policy bundle active after the rollback | v1.0.0" in run.report
    assert "previous_bundle: kept in the ledger" in run.report
    assert_token_never_shown(run)


def test_the_release_goes_out_with_its_bundle_and_every_case_decided_as_expected(policy_sandbox):
    run = run_gates(policy_sandbox, "2.0.0")

    assert run.code == 0, run.output
    assert active_version(policy_sandbox) == "v2.0.0"
    assert serving(policy_sandbox) == TWO_ZERO
    outcomes = {g["gate"]: g["outcome"] for g in runs(policy_sandbox)[0].gates}
    for case in CASES:
        assert (
            outcomes[f"gates/test_42_policy.py::test_policy_decides_the_case_as_expected[{case}]"] == "passed"
        )
    assert (
        outcomes["gates/test_28_policy_bundle.py::test_policy_bundle_is_active_before_the_application"]
        == "passed"
    )
    assert "| policy version loaded | v2.0.0 | == v2.0.0 | pass |" in run.report
    assert_token_never_shown(run)


def test_a_drill_takes_the_bundle_back_with_the_release_and_forward_again(policy_sandbox):
    drill = run_suite("rollback/", policy_sandbox, "--drill")

    assert drill.code == 0, drill.output
    assert "| policy bundle active after the rollback | v1.0.0" in drill.report
    assert "| policy bundle rolled forward | v2.0.0" in drill.report
    assert active_version(policy_sandbox) == "v2.0.0"
    assert serving(policy_sandbox) == TWO_ZERO
    assert_token_never_shown(drill)


def test_the_plan_shows_the_policy_bundle_first_and_its_rollback(policy_sandbox):
    plan = run_gates(policy_sandbox, "2.0.0", "--dry-run")

    assert plan.code == 0, plan.output
    lines = plan.output.splitlines()
    bundle = next(i for i, line in enumerate(lines) if "activate policy bundle" in line)
    rollout = next(i for i, line in enumerate(lines) if "action  rolling update: replace" in line)
    assert bundle < rollout
    assert "2.0.0/policy/bundle.json" in lines[bundle]
    assert "check   Test cases passing" in plan.output
    assert "the policy bundle active before is put back" in plan.output
    assert active_version(policy_sandbox) == "v2.0.0", "a plan changes nothing"


def test_an_engine_that_does_not_answer_is_one_line_naming_it(policy_sandbox):
    settings = environment(policy_sandbox).policy.model_copy(update={"url": "http://127.0.0.1:9/summit"})
    engine = PolicyEngine(settings, "http://127.0.0.1:9")
    with pytest.raises(ProbeError) as error:
        engine.active_version()
    assert str(error.value) == (
        "policy engine at http://127.0.0.1:9/summit/health/policy: connection refused "
        "(is the policy engine up and policy.url right?)"
    )
