"""``python -m sandbox up|down|status|history [--env NAME|PATH] [--quiet]`` (run from the repository root).

``up --background-error-rate R`` (a fraction: 0.0005 is 0.05 %) makes every release of the demo
service answer that share of its API requests with a 500, at random, from then on: the setting is
kept in the sandbox's database and read by each instance when it starts, whoever starts it (a
deployment, a canary, a rollback). ``--background-error-rate 0`` turns it off; without the option
the setting is left as it is (0 in a fresh sandbox).

``up --kubernetes`` also starts a real Kubernetes control plane beside it (sandbox.cluster: etcd,
kube-apiserver, kube-controller-manager, kube-scheduler, the node agent that runs pods as local
processes, Argo Rollouts), built by ``make k8s-tools``; its kubeconfig is
``<sandbox dir>/kubernetes/kubeconfig``. ``down`` stops it with the rest.

``history --offset 1d`` gives the release serving now a history in the sandbox's Prometheus, as
if it had served at this time a day before (``sandbox.history``): what ``[metrics.baseline]
source = "history"`` compares a new release with. It records the last ``--record-s`` seconds, and
lays them out so that runs in the next ``--cover-s`` seconds find them.

Exit codes: 0 done (status: fully up), 1 a component failed (one line says which and why),
3 status: down, 4 status: partly up.
"""

from __future__ import annotations

import argparse
import sys

from releasegate.config import duration_seconds
from releasegate.errors import ReleasegateError
from sandbox import stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description="the embedded sandbox")
    parser.add_argument("command", choices=["up", "down", "status", "history"])
    parser.add_argument(
        "--env", default="sandbox", help="environment name or path to its TOML (default: sandbox)"
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    parser.add_argument(
        "--force", action="store_true", help="down: even while a run holds the environment's lease"
    )
    parser.add_argument(
        "--background-error-rate",
        type=float,
        metavar="R",
        help="up: every release answers this share of API requests with a 500, at random "
        "(e.g. 0.0005; default: leave the sandbox's setting, 0 when fresh)",
    )
    parser.add_argument(
        "--kubernetes",
        action="store_true",
        help="up: also a Kubernetes control plane with nodes that run pods as local processes",
    )
    parser.add_argument(
        "--offset", default="1d", help="history: how long ago, a Prometheus duration (default: 1d)"
    )
    parser.add_argument(
        "--record-s",
        type=float,
        default=60.0,
        help="history: the seconds of the serving release recorded and laid out then (default: 60)",
    )
    parser.add_argument(
        "--cover-s",
        type=float,
        default=900.0,
        help="history: how long after now the history reaches, in seconds of runs to come (default: 900)",
    )
    args = parser.parse_args(argv)
    if args.kubernetes and args.command != "up":
        parser.error("--kubernetes goes with up (down and status include it when it runs)")
    if args.background_error_rate is not None and args.command != "up":
        parser.error("--background-error-rate goes with up")
    if args.background_error_rate is not None and not 0 <= args.background_error_rate <= 1:
        parser.error("--background-error-rate is a fraction between 0 and 1 (0.0005 is 0.05 %)")

    def say(line: str) -> None:
        if not args.quiet:
            print(line, flush=True)

    try:
        sandbox = stack.load(args.env)
        if args.command == "up":
            sandbox.up(say, background_error_rate=args.background_error_rate, kubernetes=args.kubernetes)
        elif args.command == "down":
            sandbox.down(say, force=args.force)
        elif args.command == "history":
            offset_s = duration_seconds(args.offset)
            say(sandbox.history(offset_s, record_s=args.record_s, cover_s=args.cover_s, progress=say))
        else:
            state = sandbox.status()
            for component in state.components:
                say(component.line())
            say(state.summary())
            return state.exit_code
    except ReleasegateError as exc:
        print(f"sandbox {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
