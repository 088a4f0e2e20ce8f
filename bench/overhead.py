"""releasegate's own cost: collecting the gates, and running trivial checks through it.

    python bench/overhead.py [--runs 5]

Side by side in one run, alternating: `pytest gates/ --collect-only` with the plugin, the
same without it (`-p no:releasegate`), and 50 trivial checks as releasegate gates (each one
recorded to the ledger, JUnit, HTML and Allure) against 50 plain asserts. Prints the medians,
the ratio, and the cost per check.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import PYTHON, ROOT, alternate, median, sandbox, timed

TRIVIAL = '''
import pytest

pytestmark = pytest.mark.phase("preflight")


@pytest.mark.parametrize("n", range(50))
def test_trivial(n, check):
    """A check that measures nothing slow: what releasegate itself costs per check."""
    check.at_most("n", n, 100)
'''

PLAIN = """
import pytest


@pytest.mark.parametrize("n", range(50))
def test_trivial(n):
    assert n <= 100
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with sandbox(**{"sandbox.autostart": False}) as env, tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "trivial"
        suite.mkdir()
        (suite / "test_trivial.py").write_text(TRIVIAL)
        plain = Path(tmp) / "plain"
        plain.mkdir()
        (plain / "test_plain.py").write_text(PLAIN)
        reports = Path(tmp) / "reports"

        def collect(plugin: bool) -> float:
            extra = [] if plugin else ["-p", "no:releasegate"]
            seconds, code, out = timed(
                [
                    PYTHON,
                    "-m",
                    "pytest",
                    "gates/",
                    "--collect-only",
                    "-q",
                    f"--env={env}",
                    "--release=2.0.0",
                    *extra,
                ]
                if plugin
                else [PYTHON, "-m", "pytest", "gates/", "--collect-only", "-q", *extra]
            )
            assert code == 0, out
            return seconds

        def checks(plugin: bool) -> float:
            command = (
                [
                    PYTHON,
                    "-m",
                    "pytest",
                    str(suite),
                    f"--env={env}",
                    "--release=bench",
                    f"--reports={reports}",
                    "-q",
                    f"--rootdir={ROOT}",
                ]
                if plugin
                else [PYTHON, "-m", "pytest", str(plain), "-q", "-p", "no:releasegate", f"--rootdir={ROOT}"]
            )
            seconds, code, out = timed(command)
            assert code == 0, out
            return seconds

        samples = alternate(
            args.runs,
            collect_releasegate=lambda: collect(True),
            collect_plain=lambda: collect(False),
            checks_releasegate=lambda: checks(True),
            checks_plain=lambda: checks(False),
        )
    c_rg, c_plain = median(samples["collect_releasegate"]), median(samples["collect_plain"])
    k_rg, k_plain = median(samples["checks_releasegate"]), median(samples["checks_plain"])
    print(
        f"collect-only gates/: releasegate {c_rg:.2f} s, plain pytest {c_plain:.2f} s, ratio {c_rg / c_plain:.2f}"
    )
    print(
        f"50 trivial checks: releasegate {k_rg:.2f} s, plain pytest {k_plain:.2f} s, ratio {k_rg / k_plain:.2f}"
    )
    print(
        f"releasegate per check: {(k_rg - k_plain) / 50 * 1000:.1f} ms above plain pytest "
        f"({k_rg / 50 * 1000:.1f} ms in all)"
    )


if __name__ == "__main__":
    main()
