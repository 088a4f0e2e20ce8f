"""``python -m sandbox up|down|status [--env NAME|PATH] [--quiet]`` (run from the repository root).

Exit codes: 0 done (status: fully up), 1 a component failed (one line says which and why),
3 status: down, 4 status: partly up.
"""

from __future__ import annotations

import argparse
import sys

from releasegate.errors import ReleasegateError
from sandbox import stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description="the embedded sandbox")
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument(
        "--env", default="sandbox", help="environment name or path to its TOML (default: sandbox)"
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    parser.add_argument(
        "--force", action="store_true", help="down: even while a run holds the environment's lease"
    )
    args = parser.parse_args(argv)

    def say(line: str) -> None:
        if not args.quiet:
            print(line, flush=True)

    try:
        sandbox = stack.load(args.env)
        if args.command == "up":
            sandbox.up(say)
        elif args.command == "down":
            sandbox.down(say, force=args.force)
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
