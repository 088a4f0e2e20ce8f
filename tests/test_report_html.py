"""The reports say what was done and undone, and report.html shows the decision, the failed gate
and the charts first, as a reader opening it in a browser (headless Chromium) sees them. Against
the notes service (tests/notes_service): a release whose instances report the old version."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from gate_runs import run_gates
from notes_service.stack import REVISIONS, running_notes, write_notes_env
from test_plan import scratch_databases

CHROMIUM = shutil.which("chromium")


def chromium(page: Path, *args: str) -> str:
    """Open ``page`` in headless Chromium, as a reader would; its output (--dump-dom: the DOM)."""
    assert CHROMIUM, "chromium is missing: .ci/system-packages.sh installs it"
    profile = tempfile.mkdtemp(prefix="releasegate-chromium-")
    try:
        proc = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                *args,
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_a_rollback_is_reported_as_done_and_report_html_shows_the_decision_first(sandbox_dir: Path) -> None:
    env_file = write_notes_env(sandbox_dir)
    with running_notes(env_file):
        run = run_gates(env_file, "1.5.0-stale-version")
        scratch_left = scratch_databases(env_file)

    assert run.code == 11, run.output
    report = run.report
    changes = report[report.index("## Changes made") : report.index("## Gates")]
    migrate = next(line for line in changes.splitlines() if line.startswith("| 1 | migrate |"))
    # The revision applied, not the command's template; the undo that was actually done.
    assert f"applied {REVISIONS['1.5.0']} (schema {REVISIONS['1.4.0']} -> {REVISIONS['1.5.0']}" in migrate
    assert "{release}" not in migrate and "upgrade head" not in migrate.split("|")[4]
    assert "kept as migrated (rollback.database = never)" in migrate
    assert "policy: restore" not in report
    assert re.search(r"\| deploy \|.*\| application rolled back to 1\.4\.0: yes \|", changes), changes
    # Gates skipped after the failure: one line per phase and reason, with a count.
    skipped = [line for line in report.splitlines() if line.startswith("- **SKIP**")]
    assert any(re.match(r"- \*\*SKIP\*\* \d+ gates: ", line) for line in skipped), skipped
    assert len(skipped) == len(set(skipped)) and len(skipped) <= 4, skipped
    assert scratch_left == []

    html = run.reports / "report.html"
    dom = chromium(html, "--dump-dom")
    results = dom.index('id="results-table"')
    first = [
        dom.index("Decision: ROLLED_BACK (exit 11)"),
        dom.index("Failed gate:"),
        dom.index("test_every_instance_is_healthy_on_the_release"),
        dom.index("data:image/png;base64,"),
    ]
    assert all(at < results for at in first), "the decision, the failed gate and the charts come first"
    assert all(at < dom.index('id="environment"') for at in first), "even before pytest-html's environment"
    charts = re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}" alt="([^"]+)"', dom)
    assert charts == ["error ratio", "latency"], charts
    # and on screen: laid out in a 1280x1000 window, each is inside the first screen.
    assert on_first_screen(html) == {"decision": True, "failed gate": True, "chart": True}
    shot = run.reports / "report-first-screen.png"  # for a person to look at
    chromium(html, "--window-size=1280,1000", f"--screenshot={shot}")
    assert shot.stat().st_size > 10_000


SEEN = """<script>
addEventListener("load", () => {
  const own = (e) => [...e.childNodes].filter((n) => n.nodeType === 3).map((n) => n.data).join("");
  const text = (t) => [...document.querySelectorAll("body *")].filter(
    (e) => !["SCRIPT", "STYLE", "TEMPLATE"].includes(e.tagName) && own(e).includes(t))[0];
  const found = {"decision": text("Decision: ROLLED_BACK"), "failed gate": text("Failed gate:"),
                 "chart": document.querySelector('img[src^="data:image/png"]')};
  const seen = Object.fromEntries(Object.entries(found).map(([k, e]) => {
    if (!e) return [k, false];
    const box = e.getBoundingClientRect();
    return [k, box.height > 0 && box.top >= 0 && box.top < innerHeight];
  }));
  document.body.setAttribute("data-first-screen", JSON.stringify(seen));
});
</script>"""


def on_first_screen(html: Path) -> dict[str, bool]:
    """Which of the decision, the failed gate and the first chart start inside the first
    1280x1000 pixels, as Chromium lays the page out (a copy of it, with a script that asks)."""
    probe = html.with_name("report-first-screen.html")
    probe.write_text(html.read_text(encoding="utf-8").replace("</body>", SEEN + "</body>"), encoding="utf-8")
    dom = chromium(probe, "--window-size=1280,1000", "--virtual-time-budget=3000", "--dump-dom")
    found = re.search(r"data-first-screen=\"([^\"]*)\"", dom)
    assert found, "the page's script did not run"
    return json.loads(found.group(1).replace("&quot;", '"'))
