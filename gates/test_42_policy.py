"""Verify: the policy engine decides as the release expects (Summit GA 5.1 and 6.2).

GA 5.1 "Verify Policy Evaluation": the evaluation endpoint responds, the correct policy version
is loaded, and the test cases pass: the environment's decision table ([[policy.decisions]]),
each case its own gate. GA 6.2 "Policy engine health": healthy, with the expected bundle
version. A failure ROLLS BACK (exit 11), the policy bundle too when this run changed it.
"""

import pytest

from releasegate.actions.policy import expected_version
from releasegate.state import ENV_KEY

pytestmark = [pytest.mark.phase("verify"), pytest.mark.configured("policy")]


def pytest_generate_tests(metafunc):
    """One gate per case of the decision table: each is its own line in the reports."""
    if "policy_case" in metafunc.fixturenames:
        env = metafunc.config.stash.get(ENV_KEY, None)
        cases = env.policy.decisions if env is not None and env.policy is not None else []
        metafunc.parametrize("policy_case", cases, ids=[case.name for case in cases])


@pytest.fixture(scope="session")
def expected_policy_version(env, release):
    """The version the release expects: ``expected_version``, else its bundle's."""
    return expected_version(env.policy, release)


def test_policy_engine_is_healthy_with_the_expected_version(
    rollout, policy_engine, expected_policy_version, env, check
):
    """Policy engine health: healthy, and the correct policy version loaded."""
    answer = policy_engine.active_version()
    source = answer.exchange.source
    check.equals(f"{env.policy.version_path} HTTP status", answer.exchange.status, 200, source=source)
    if env.policy.status_field:
        check.equals("policy engine status", answer.status, "healthy", source=source)
    check.equals("policy version loaded", answer.version, expected_policy_version, source=source)


def test_policy_decides_the_case_as_expected(
    rollout, policy_case, policy_engine, expected_policy_version, env, check
):
    """Test cases passing: the engine's decision for this action, user and resource."""
    evaluation = policy_engine.evaluate(policy_case)
    source = evaluation.exchange.source
    check.equals(
        f"{policy_case.action} HTTP status",
        evaluation.exchange.status,
        200,
        source=source,
        detail="" if evaluation.exchange.status == 200 else evaluation.exchange.text[:200],
    )
    if env.policy.answer_version_field:
        check.equals(
            "policy version that decided", evaluation.version, expected_policy_version, source=source
        )
    check.equals(
        f"decision for {policy_case.name}",
        evaluation.decision,
        policy_case.expect,
        source=source,
        detail=f"user {policy_case.user}, resource {policy_case.resource}",
    )
