"""Summit MVP-4 GA deployment guide, 6.4 "End-to-End Test": the critical user journey
(``./scripts/e2e/critical-path-test.sh``), as ``pytest e2e/`` runs it and the verify phase too.

A requester logs in, creates an entity, asks for a high-risk operation (its deletion); the
requester cannot approve it, a second user with the ``approver`` role does; the requester reads
the result; the audit trail shows each step, by whom, decided how. Test data as in the Summit
smoke journey (``summit.py``): made through the test-data endpoints, swept by prefix.
"""

from __future__ import annotations

from releasegate.journeys.base import Journeyer, journey
from releasegate.journeys.summit import expect_audit, json_object, log_in, make_user


@journey("summit-critical-path")
def critical_path(j: Journeyer) -> None:
    """Summit's critical path: create, ask for a high-risk operation, a second person approves,
    read the result, audit."""
    j.clean_up_by_prefix()
    with j.step("test data: a requester cleared S and an approver cleared TS"):
        requester = make_user(j, "requester", clearances=["S"], roles=["analyst"])
        approver = make_user(j, "approver", clearances=["TS"], roles=["approver"])
    with j.step("requester logs in"):
        mine = log_in(j, requester)
    entity = j.unique("entity")
    with j.step("requester creates an entity"):
        created = j.expect(
            j.http.post(
                "/entities", json={"id": entity, "name": "critical path", "classification": "C"}, token=mine
            ),
            201,
            f"create {entity} (C)",
        )
        j.check.equals("the entity's creator", json_object(created).get("created_by"), requester.id)
    with j.step("requester asks for a high-risk operation: delete it"):
        asked = json_object(
            j.expect(j.http.delete(f"/entities/{entity}", token=mine), 202, f"delete {entity}")
        )
        approval = json_object(asked.get("approval"))
        approval_id = approval.get("id")
        j.check.equals("the approval's status", approval.get("status"), "pending")
        j.expect(
            j.http.post(f"/approvals/{approval_id}/approve", token=mine),
            403,
            "the requester approves their own request",
        )
    with j.step("approver logs in and approves"):
        theirs = log_in(j, approver)
        approved = json_object(
            json_object(
                j.expect(j.http.post(f"/approvals/{approval_id}/approve", token=theirs), 200, "approve").get(
                    "approval"
                )
            )
        )
        j.check.equals("the approval's status", approved.get("status"), "approved")
        j.check.equals("approved by", approved.get("approved_by"), approver.id)
    with j.step("requester reads the result"):
        result = json_object(
            json_object(
                j.expect(j.http.get(f"/approvals/{approval_id}", token=mine), 200, "the approval")
            ).get("approval")
        )
        j.check.equals("the approval's status, as the requester reads it", result.get("status"), "approved")
        j.check.equals("what was carried out", json_object(result.get("result")).get("deleted"), entity)
        j.expect(j.http.get(f"/entities/{entity}", token=mine), 404, f"{entity}, deleted")
    with j.step("audit shows each step"):
        expect_audit(
            j,
            {"resource": entity},
            [
                ("entity.create", requester.id, "ALLOW"),
                ("entity.delete", requester.id, "REQUIRE_APPROVAL"),
                ("approval.approve", requester.id, "REFUSED"),
                ("approval.approve", approver.id, "APPROVED"),
                ("entity.delete", requester.id, "EXECUTED"),
                ("entity.read", requester.id, "NOT_FOUND"),
            ],
            policy_version=approval.get("policyVersion"),
        )
        expect_audit(
            j,
            {"actor": approver.id},
            [
                ("auth.login", approver.id, "FAILURE"),
                ("auth.login", approver.id, "SUCCESS"),
                ("approval.approve", entity, "APPROVED"),
            ],
        )
