"""The compliance record: one JSON line per deployment run in an append-only log, and what the
release's supply-chain files (SBOM, provenance) are, read and fingerprinted.

An auditor reads the log to answer "what went where, when, by whom, decided how, on which
evidence": the deployment report's and the supply-chain files' SHA-256 tie each line to them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from releasegate.actions.backup import sha256
from releasegate.config import Environment
from releasegate.errors import ProbeError
from releasegate.ledger import RunRecord
from releasegate.release_names import fill


def release_file(template: str, release: str) -> Path:
    return Path(fill(template, release))


def read_sbom(path: Path) -> str:
    """The SBOM's format and size ("CycloneDX 1.5, 12 components"); an error when it is none."""
    data = _json(path, "SBOM")
    if data.get("bomFormat") == "CycloneDX":
        return f"CycloneDX {data.get('specVersion', '?')}, {len(data.get('components') or [])} components"
    if str(data.get("spdxVersion", "")).startswith("SPDX-"):
        return f"{data['spdxVersion']}, {len(data.get('packages') or [])} packages"
    raise ProbeError(f"SBOM {path}", "neither CycloneDX (bomFormat) nor SPDX (spdxVersion) JSON")


def read_provenance(path: Path, release: str) -> str:
    """An in-toto statement with a SLSA predicate whose subjects name the release."""
    data = _json(path, "provenance")
    predicate = str(data.get("predicateType", ""))
    if not str(data.get("_type", "")).startswith("https://in-toto.io/Statement") or "slsa" not in predicate:
        raise ProbeError(f"provenance {path}", "not an in-toto statement with a SLSA predicate")
    subjects = [s.get("name", "") for s in data.get("subject") or []]
    if not any(release in name for name in subjects):
        raise ProbeError(
            f"provenance {path}", f"no subject names {release} (subjects: {', '.join(subjects) or 'none'})"
        )
    return f"{predicate} for {', '.join(subjects)}"


def log_run(env: Environment, record: RunRecord, report: Path | None, reports: Path) -> Path | None:
    """Append the run's line to ``[compliance] log`` (a relative path is under the reports
    directory); None when the environment keeps none."""
    settings = env.compliance
    if settings is None:
        return None
    line: dict[str, Any] = {
        "run": record.id,
        "kind": record.kind,
        "environment": env.name,
        "tier": str(env.environment.tier),
        "service": env.environment.service,
        "release": record.release,
        "previous_release": record.previous_release,
        "decision": record.decision,
        "exit_code": record.exit_code,
        "failed_gate": record.failed_gate,
        "operator": record.operator,
        "started_at": record.started_at,
        "ended_at": record.ended_at,
        "report": _fingerprint(report),
        "sbom": _fingerprint(release_file(settings.sbom, record.release)) if settings.sbom else None,
        "provenance": _fingerprint(release_file(settings.provenance, record.release))
        if settings.provenance
        else None,
    }
    path = reports / settings.log  # an absolute log path stays as it is
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as log:
        log.write(json.dumps(line, sort_keys=True) + "\n")
    return path


def _fingerprint(path: Path | None) -> dict[str, str] | None:
    if path is None:
        return None
    if not path.is_file():
        return {"path": str(path), "sha256": "missing"}
    return {"path": str(path), "sha256": sha256(path)}


def _json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProbeError(
            f"{what} {path}", "file not found", "does the build publish it with the release?"
        ) from None
    except (OSError, ValueError) as exc:
        raise ProbeError(f"{what} {path}", f"not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProbeError(f"{what} {path}", "not a JSON object")
    return data
