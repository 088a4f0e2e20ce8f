"""The ledger: written ahead of each mutation, readable after a run is killed at any instant."""

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from releasegate.analysis.thresholds import Verdict
from releasegate.config import load_environment
from releasegate.evidence import Evidence
from releasegate.ledger import Ledger
from releasegate.report.markdown import render

ROOT = Path(__file__).resolve().parents[1]


def test_a_run_reads_back_in_order(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    run_id = ledger.start_run("sandbox", "2.0.0", {"argv": ["gates/"]})
    ledger.set_previous_release(run_id, "1.0.0")
    ledger.phase_started(run_id, "preflight")
    ledger.evidence(run_id, Evidence("pg_is_in_recovery()", False, Verdict.PASS, comparator="==", threshold=False,
                                     gate="g::a", phase="preflight"))
    ledger.gate(run_id, "g::a", "preflight", "Database primary accepts writes", "passed", 0.01)
    ledger.phase_finished(run_id, "preflight", "passed")
    seq = ledger.intent(run_id, "deploy", "roll out 2.0.0", {"previous_release": "1.0.0"})
    ledger.intent_done(seq, "done")
    ledger.finish_run(run_id, "SUCCESS", 0)

    record = ledger.run(run_id)
    assert (record.release, record.previous_release, record.decision, record.exit_code) == ("2.0.0", "1.0.0", "SUCCESS", 0)
    assert record.evidence[0].check == "pg_is_in_recovery()" and record.evidence[0].verdict is Verdict.PASS
    assert record.intents[0].undo == {"previous_release": "1.0.0"} and record.intents[0].outcome == "done"
    assert ledger.runs("sandbox") == [run_id]


def test_a_killed_run_leaves_a_readable_ledger_that_says_where_it_stopped(tmp_path):
    path = tmp_path / "ledger.sqlite"
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from releasegate.ledger import Ledger
        ledger = Ledger(Path({str(path)!r}))
        run_id = ledger.start_run("sandbox", "2.0.0")
        ledger.phase_started(run_id, "deploy")
        ledger.intent(run_id, "deploy", "roll out 2.0.0 replacing 1.0.0", {{"previous_release": "1.0.0"}})
        print(run_id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    run_id = proc.stdout.strip()

    record = Ledger(path).run(run_id)
    assert record.status == "running" and record.ended_at is None
    assert record.phases[0]["phase"] == "deploy" and record.phases[0]["ended_at"] is None
    assert record.intents[0].undo == {"previous_release": "1.0.0"} and record.intents[0].done_at is None
    report = render(record, load_environment("sandbox", ROOT))
    assert "UNFINISHED" in report and "did not end" in report and "did not finish" in report
