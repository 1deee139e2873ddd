"""``python -m sim``: run the simulator until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from recording.format import recording_files
from sim.config import SimConfig, parse_clock, parse_fault
from sim.replay import START_MODES, Player, parse_speed
from sim.server import SimServer


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    ap = argparse.ArgumentParser(prog="python -m sim", description="Massive-protocol options market simulator")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--underlyings", default="SPY,SPX", help="comma separated, e.g. SPY,SPX,QQQ")
    ap.add_argument("--api-key", default=None, help="only accept this key (default: any non-empty key)")
    ap.add_argument("--tick-rate", type=float, default=5000.0, help="option events per second (all underlyings)")
    ap.add_argument("--clock", default="now", help="'now' or an ISO-8601 start instant")
    ap.add_argument("--topology-every-s", type=float, default=None, help="cycle topology changes every S s")
    ap.add_argument("--page-delay-ms", type=int, default=0, help="delay every snapshot page")
    ap.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KIND[:COUNT[:AFTER_PAGES]]",
        help="429|500|slow|break|invalid_json|repeat_cursor (repeatable)",
    )
    ap.add_argument(
        "--replay",
        default=None,
        metavar="DIR",
        help="replay a recording (MMAKER_RECORD_DIR) instead of simulating a market",
    )
    ap.add_argument("--speed", default="1", type=parse_speed, help="replay pace: a factor of the recorded pace, or max")
    ap.add_argument(
        "--replay-start",
        default="auto",
        choices=START_MODES,
        help="auto: --replay-wait-s after the first options subscription; now; admin: on GET /admin/replay/start",
    )
    ap.add_argument("--replay-wait-s", type=float, default=3.0)
    ap.add_argument("--log-level", default="WARNING")
    return ap


def config_from_args(argv: list[str] | None = None) -> SimConfig:
    """Parse arguments into a :class:`SimConfig`."""
    return config_from_namespace(build_parser().parse_args(argv))


def config_from_namespace(args: argparse.Namespace) -> SimConfig:
    """Build a :class:`SimConfig` from parsed arguments."""
    return SimConfig(
        host=args.host,
        port=args.port,
        seed=args.seed,
        underlyings=tuple(u.strip().upper() for u in args.underlyings.split(",") if u.strip()),
        api_key=args.api_key,
        tick_rate=args.tick_rate,
        clock=parse_clock(args.clock),
        topology_every_s=args.topology_every_s,
        page_delay_ms=args.page_delay_ms,
        faults=tuple(parse_fault(f) for f in args.fault),
    )


def player_from_namespace(args: argparse.Namespace) -> Player | None:
    """The replay player of ``--replay`` (None: simulate a market)."""
    if not args.replay:
        return None
    if not recording_files(args.replay):
        raise SystemExit(f"python -m sim: no recording in {args.replay} (expected <feed>-<start>-p<pid>.jsonl.gz)")
    return Player(args.replay, speed=args.speed, start=args.replay_start, wait_s=args.replay_wait_s)


async def run(config: SimConfig, player: Player | None = None) -> None:
    """Start the server, announce it on stdout and serve until cancelled."""
    server = SimServer(config, player)
    await server.start()
    print(f"sim listening on http://{config.host}:{server.port}", flush=True)
    try:
        await server.serve_forever()
    finally:
        await server.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    signal.signal(signal.SIGTERM, _interrupt)  # a supervisor's SIGTERM stops it as Ctrl-C does: exit 0
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(config_from_namespace(args), player_from_namespace(args)))


if __name__ == "__main__":
    main()
