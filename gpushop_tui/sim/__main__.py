"""`python -m gpushop_tui.sim [--state DIR] [--seed N] [--timing fast|real] [--clock real|fake]`.

Prints one JSON line with the base URLs, the control URL and the accepted credentials, then
serves until SIGTERM or SIGINT, and exits cleanly. With --state, the world survives a crash.
With `--clock fake` the world's time starts at the real time and stands still until
`POST {control}/clock/advance {"seconds": N}` moves it (due node watchdogs act then), so a check
can skip hours; with the real clock that route answers 409.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

from gpushop_tui.clock import FakeClock
from gpushop_tui.sim.runner import run_simulator


async def _main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    clock = FakeClock(datetime.now(UTC)) if args.clock == "fake" else None
    async with run_simulator(
        seed=args.seed, clock=clock, timing=args.timing, state_dir=args.state
    ) as sim:
        print(json.dumps(sim.describe()), flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gpushop_tui.sim", description="Run the simulated GPU marketplace."
    )
    parser.add_argument("--state", type=Path, help="directory that keeps the world across runs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated offers")
    parser.add_argument(
        "--timing",
        choices=("fast", "real"),
        default="fast",
        help="boot times: seconds (fast) or the providers' real minutes",
    )
    parser.add_argument(
        "--clock",
        choices=("real", "fake"),
        default="real",
        help="world time: the real clock, or a fake one that only POST /clock/advance moves",
    )
    args = parser.parse_args(argv)
    try:
        asyncio.run(_main(args))
    except OSError as exc:
        print(f"simulator: cannot start: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
