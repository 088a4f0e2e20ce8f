"""The CI job templates: they run the gates for an environment, keep the reports whatever
happens, fail the job with releasegate's exit code, and page only for 12."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_github_actions_job_runs_the_gates_keeps_the_reports_and_pages_only_for_12():
    workflow = yaml.safe_load((ROOT / "ci" / "github-actions.yml").read_text())
    steps = workflow["jobs"]["gates"]["steps"]
    gates = next(s for s in steps if s.get("id") == "gates")
    assert "pytest gates/ --env=${{ inputs.environment }} --release=${{ inputs.release }}" in gates["run"]
    assert "exit $code" in gates["run"], "the job fails with releasegate's own exit code"
    assert all(f"{code})" in gates["run"] for code in (0, 10, 11, 12))
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["if"] == "always()" and upload["with"]["path"] == "reports/"
    page = next(s for s in steps if "page" in s.get("name", ""))
    assert page["if"] == "failure() && steps.gates.outputs.code == '12'"
    assert workflow["concurrency"]["cancel-in-progress"] is False
    assert "RELEASEGATE_DB_PASSWORD" in gates["env"] and "secrets." in gates["env"]["RELEASEGATE_DB_PASSWORD"]


def test_gitlab_job_runs_the_gates_keeps_the_reports_and_pages_only_for_12():
    pipeline = yaml.safe_load((ROOT / "ci" / "gitlab-ci.yml").read_text())
    deploy = pipeline["deploy"]
    script = "\n".join(deploy["script"])
    assert "pytest gates/ --env=$ENVIRONMENT --release=$RELEASE" in script
    assert "exit $code" in script and "echo $code > reports/exit-code" in script
    assert deploy["artifacts"]["when"] == "always" and deploy["artifacts"]["paths"] == ["reports/"]
    assert deploy["resource_group"] == "deploy-$ENVIRONMENT"
    page = "\n".join(pipeline["page-on-call"]["script"])
    assert '[ "$code" = "12" ]' in page and pipeline["page-on-call"]["rules"][0]["when"] == "on_failure"
