"""``make demo-kubernetes``: Summit's production example on the sandbox's Kubernetes.

``python -m sandbox.replicas.demo [--keep]`` brings up Summit's replica on a real control plane
(sandbox/replicas/summit-kubernetes.toml: helm and the Argo Rollout canary of the example, each
step judged by releasegate), serving 3.0.0, then runs the gates twice, as an SRE would:

1. ``--release=4.0.0``: every gate passes, the canary walks 5/10/25/50/75/100 (exit 0);
2. ``--release=4.0.0-crashloop``: its pods crash as they start; the canary fails on the pod's
   CrashLoopBackOff, ``helm rollback`` puts 4.0.0 back (exit 11).

It exits 0 when both ended as expected. The stack is torn down at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from releasegate.config import load_environment
from sandbox.common import SandboxError
from sandbox.replicas.stack import SECRETS, SYSTEMS, kubernetes

ROOT = Path(__file__).resolve().parents[2]
OVERRIDE = ROOT / "sandbox" / "replicas" / "summit-kubernetes.toml"
RUNS = (("4.0.0", 0, "the good release goes through every gate"),
        ("4.0.0-crashloop", 11, "a crash-looping image is rolled back"))  # fmt: skip


def gates(release: str) -> int:
    """``pytest gates/`` against the example with the override, its output shown as it runs."""
    argv = [sys.executable, "-m", "pytest", "gates/", "--env=summit-production.example",
            f"--env-override={OVERRIDE.relative_to(ROOT)}", f"--release={release}"]  # fmt: skip
    print(f"\n== {' '.join(['pytest', *argv[3:]])}", flush=True)
    return subprocess.run(argv, cwd=ROOT, env={**os.environ, **SECRETS}, check=False).returncode


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.replicas.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--keep", action="store_true", help="leave the stack running at the end")
    args = parser.parse_args()
    system = SYSTEMS["summit"]
    env = load_environment(system.example, ROOT, [OVERRIDE])
    started = time.monotonic()
    print(f"== Summit's replica on the sandbox's Kubernetes, serving {system.stable}", flush=True)
    outcomes = []
    try:
        with kubernetes(system, env) as cluster:
            print(
                f"== up in {time.monotonic() - started:.0f} s: {env.platform.url}, kubeconfig {cluster.kubeconfig}"
            )
            for release, expected, what in RUNS:
                outcomes.append((release, gates(release), expected, what))
            if args.keep:
                print(f"\nThe stack stays up (--keep): KUBECONFIG={cluster.kubeconfig}; Ctrl-C stops it.")
                while True:
                    time.sleep(3600)
    except SandboxError as exc:
        print(f"demo-kubernetes: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopped")
    print(f"\n== releasegate on Kubernetes ({time.monotonic() - started:.0f} s); reports in {env.report.dir}")
    for release, code, expected, what in outcomes:
        mark = "as expected" if code == expected else f"UNEXPECTED (expected {expected})"
        print(f"   --release={release:<16} exit {code:<3} {what}: {mark}")
    return 0 if outcomes and all(code == expected for _r, code, expected, _w in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
