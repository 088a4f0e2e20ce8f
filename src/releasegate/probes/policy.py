"""The policy engine (OPA, or a service's own policy API), asked over HTTP.

Summit GA 5.1 ``POST /v1/policy/evaluate`` -> ``{"decision": "ALLOW", "policyVersion": ...}``;
GA 6.2 ``GET /health/policy`` -> ``{"status": "healthy", "bundleVersion": "v4.0.0"}``. OPA's
data API fits the same settings (``input_key = "input"``, ``decision_field = "result.allow"``,
``version_path = "/v1/data/system/bundles/main/manifest/revision"``, ``version_field =
"result"``). A refused connection or a timeout is a ProbeError naming the engine's URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from releasegate.config import PolicyDecision, PolicySettings
from releasegate.probes.http import Exchange, Http


def field(body: Any, dotted: str) -> Any:
    """``field({"result": {"allow": true}}, "result.allow")`` -> True; None when absent."""
    node = body
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


@dataclass(frozen=True)
class Evaluation:
    decision: Any
    """What the policy answered (None: the answer had no decision: no data)."""
    version: str | None
    exchange: Exchange


@dataclass(frozen=True)
class EngineVersion:
    version: str | None
    status: str | None
    exchange: Exchange


class PolicyEngine:
    def __init__(self, settings: PolicySettings, platform_url: str) -> None:
        self.settings = settings
        self.base_url = settings.base(platform_url)
        self.http = Http(self.base_url, timeout_s=settings.timeout_s, component="policy engine")

    def _headers(self) -> dict[str, str]:
        token = self.settings.token.resolve() if self.settings.token else None  # read now, redacted after
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _request(self, method: str, path: str, **kw: Any) -> Exchange:
        return self.http.request(
            method, path, headers=self._headers(), hint="is the policy engine up and policy.url right?", **kw
        )

    def evaluate(self, case: PolicyDecision) -> Evaluation:
        """One case of the decision table, as the engine decides it."""
        body: dict[str, Any] = {"action": case.action, "user": case.user, "resource": case.resource}
        if self.settings.input_key:
            body = {self.settings.input_key: body}
        answer = self._request("POST", self.settings.evaluate_path, json=body)
        decision = field(answer.body, self.settings.decision_field) if answer.status == 200 else None
        version_field = self.settings.answer_version_field
        version = field(answer.body, version_field) if version_field and answer.status == 200 else None
        return Evaluation(decision, None if version is None else str(version), answer)

    def active_version(self) -> EngineVersion:
        """The version of the bundle the engine enforces now, and its health status."""
        answer = self._request("GET", self.settings.version_path)
        version = field(answer.body, self.settings.version_field)
        status_field = self.settings.status_field
        status = field(answer.body, status_field) if status_field else None
        return EngineVersion(
            None if version is None else str(version), None if status is None else str(status), answer
        )

    def active_bundle(self, path: str) -> tuple[dict[str, Any] | None, Exchange]:
        """The bundle document the engine enforces now (None when it has none: 404)."""
        answer = self._request("GET", path, max_text=None)
        if answer.status == 200 and isinstance(answer.body, dict):
            return answer.body, answer
        return None, answer

    def activate(self, path: str, document: dict[str, Any]) -> Exchange:
        """Make ``document`` the enforced bundle."""
        return self._request("PUT", path, json=document)

    def close(self) -> None:
        self.http.close()
