"""``mmaker``: one command for every process and tool, beside the ``python -m …`` forms.

``mmaker run`` starts the whole stack (on the simulator unless ``MASSIVE_API_KEY`` is set) under the
supervisor; ``mmaker sim | ingest | web | worker QUEUE | beat | flower`` runs one process; ``mmaker doctor``
checks Redis, the broker, the feed and the versions, one line each; ``mmaker replay-summary DIR`` describes a
recording. Every command answers ``--help`` without connecting to anything.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from mmaker.processes import WORKER_QUEUES, celery

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def _run(args: argparse.Namespace) -> int:
    """The whole stack on this host, supervised (what ``make run`` does)."""
    from fabric.redis_client import redis_from_url
    from fabric.settings import is_cluster_url, mask_url, settings_or_exit
    from mmaker.processes import process_table
    from mmaker.supervise import Supervisor

    settings = settings_or_exit()
    print("MASSIVE_API_KEY is not set: running on the built-in market simulator." if settings.uses_simulator
          else "MASSIVE_API_KEY is set: talking to Massive.")  # fmt: skip
    redis_port: int | None = None
    try:
        client = redis_from_url(settings.redis_url, socket_connect_timeout=1, socket_timeout=2)
        client.ping()
        client.close()
    except Exception:  # nothing answers (or refuses us): start one here if we may
        if is_cluster_url(settings.redis_url):
            print("Nothing answers at the Redis Cluster of REDIS_URL; start the cluster first (mmaker run starts "
                  "none).", file=sys.stderr)  # fmt: skip
            return 1
        parts = urlsplit(settings.redis_url)
        if (parts.hostname or "127.0.0.1") not in LOCAL_HOSTS:
            print(f"Nothing answers at REDIS_URL (host {parts.hostname}); start Redis there or point REDIS_URL at "
                  "a running server.", file=sys.stderr)  # fmt: skip
            return 1
        if shutil.which("redis-server") is None:
            print("Nothing answers at REDIS_URL and redis-server is not installed: install Redis (Debian: apt-get "
                  "install redis-server) or set REDIS_URL.", file=sys.stderr)  # fmt: skip
            return 1
        redis_port = parts.port or 6379
        (args.state_dir / "redis").mkdir(parents=True, exist_ok=True)
        print(f"No Redis at 127.0.0.1:{redis_port}: starting one with AOF persistence under {args.state_dir}/redis.")
    # the children (and a `celery call` copied from this output) see exactly these, not their defaults
    os.environ.setdefault("REDIS_URL", settings.redis_url)
    os.environ.setdefault("CELERY_BROKER_URL", settings.celery_broker_url)
    table = process_table(settings, state_dir=args.state_dir, redis_port=redis_port)
    if args.only:
        unknown = sorted(set(args.only) - set(table))
        if unknown:
            print(f"not a process of this stack: {', '.join(unknown)} (there are: {', '.join(table)})", file=sys.stderr)
            return 2
        table = {name: argv for name, argv in table.items() if name in args.only or name == "redis"}
    if settings.flower_address in LOCAL_HOSTS and not settings.flower_basic_auth:
        os.environ.setdefault("FLOWER_UNAUTHENTICATED_API", "true")  # loopback only: its API answers without auth
    web = f"http://{settings.web_host}:{settings.web_port}"
    if "sim" in table:
        print(f"Simulator REST/WS: http://{settings.sim_host}:{settings.sim_port}  (status: /admin/status)")
    print(f"Dashboard:         {web}/   (health: /healthz)")
    auth = "   (basic auth on)" if settings.flower_basic_auth else ""
    print(f"Flower:            http://{settings.flower_address}:{settings.flower_port}{auth}")
    print(f"State store:       {mask_url(settings.redis_url)}")
    print("Ctrl-C stops everything (the Redis it started last).", flush=True)
    supervisor = Supervisor(table, last=("redis",), redis_url=settings.redis_url, ready_url=f"{web}/healthz")
    return supervisor.run()


def _exec(argv: list[str]) -> int:
    """Replace this process with ``argv`` (a Celery process: its signals and exit code are its own)."""
    sys.stdout.flush()
    os.execv(argv[0], argv)
    return 0  # not reached


def _worker(args: argparse.Namespace) -> int:
    from fabric.settings import settings_or_exit

    level = args.loglevel or settings_or_exit().log_level
    return _exec(celery(sys.executable, "worker", "-Q", args.queue, "-n", f"{args.queue}@%h", "-c", "1", "-E",
                        "--loglevel", level, *args.rest))  # fmt: skip


def _beat(args: argparse.Namespace) -> int:
    from fabric.settings import settings_or_exit

    level = args.loglevel or settings_or_exit().log_level
    return _exec(celery(sys.executable, "beat", "--loglevel", level, "--schedule", str(args.schedule), *args.rest))


def _flower(args: argparse.Namespace) -> int:
    from fabric.settings import settings_or_exit

    settings = settings_or_exit()
    return _exec(celery(sys.executable, "flower", f"--address={settings.flower_address}",
                        f"--port={settings.flower_port}", *args.rest))  # fmt: skip


def _passthrough(module: str) -> Callable[[argparse.Namespace], int]:
    """Run ``python -m module`` in this process with the remaining arguments."""

    def run(args: argparse.Namespace) -> int:
        import importlib

        try:
            main = importlib.import_module(f"{module}.__main__").main
        except ModuleNotFoundError:  # a module run as a script itself (mmaker.supervise)
            main = importlib.import_module(module).main
        result = main(args.rest)
        return int(result or 0)

    return run


def _doctor(args: argparse.Namespace) -> int:
    from mmaker.doctor import run_doctor

    return run_doctor(feed=not args.no_feed)


def _replay_summary(args: argparse.Namespace) -> int:
    from sim.replay import main

    return main([str(args.directory)])


def build_parser() -> argparse.ArgumentParser:
    """The ``mmaker`` command line."""
    parser = argparse.ArgumentParser(prog="mmaker", description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="the whole stack on this host, supervised (what make run does)",
                         description=_run.__doc__)  # fmt: skip
    run.add_argument("only", nargs="*", help="start only these processes (default: all)")
    run.add_argument("--state-dir", type=Path, default=Path("var"), help="where the local Redis and beat keep state")
    run.set_defaults(func=_run)

    for name, text in (
        ("sim", "the Massive-compatible market simulator (python -m sim; mmaker sim --help for its options)"),
        ("ingest", "the WebSocket ingest process (python -m ingest)"),
        ("web", "the JSON API, SSE streams and dashboard (python -m web)"),
        ("supervise", "run a Procfile's processes under the supervisor (python -m mmaker.supervise)"),
    ):
        sub.add_parser(name, help=text)  # listed here; main() hands their arguments to the module itself

    worker = sub.add_parser("worker", help="one Celery worker for a queue", description="celery -A tasks worker -Q …")
    worker.add_argument("queue", choices=WORKER_QUEUES)
    worker.add_argument("--loglevel", default=None, help="default: MMAKER_LOG_LEVEL (WARNING)")
    worker.add_argument("rest", nargs=argparse.REMAINDER, help="more celery worker options")
    worker.set_defaults(func=_worker)
    beat = sub.add_parser("beat", help="Celery beat (exactly one per deployment)", description="celery -A tasks beat")
    beat.add_argument("--loglevel", default=None, help="default: MMAKER_LOG_LEVEL (WARNING)")
    beat.add_argument("--schedule", type=Path, default=Path("var/celerybeat-schedule"))
    beat.add_argument("rest", nargs=argparse.REMAINDER, help="more celery beat options")
    beat.set_defaults(func=_beat)
    flower = sub.add_parser("flower", help="Flower task monitoring (loopback by default)",
                            description="celery -A tasks flower")  # fmt: skip
    flower.add_argument("rest", nargs=argparse.REMAINDER, help="more flower options")
    flower.set_defaults(func=_flower)

    doctor = sub.add_parser("doctor", help="check Redis, the broker, the feed and the versions, one line each",
                            description="Checks what mmaker needs and says what is wrong, one line each.")  # fmt: skip
    doctor.add_argument("--no-feed", action="store_true", help="do not try the feed (REST and WebSocket)")
    doctor.set_defaults(func=_doctor)
    summary = sub.add_parser("replay-summary", help="describe a recording (and the MMAKER_CLOCK_MS to replay it)",
                             description="python -m sim.replay DIR")  # fmt: skip
    summary.add_argument("directory", type=Path)
    summary.set_defaults(func=_replay_summary)
    return parser


#: Commands that hand every argument, ``--help`` included, to a module's own command line.
PASSTHROUGH = {"sim": "sim", "ingest": "ingest", "web": "web", "supervise": "mmaker.supervise"}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mmaker`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASSTHROUGH:  # argparse would take their --help for its own
        return _passthrough(PASSTHROUGH[argv[0]])(argparse.Namespace(rest=argv[1:]))
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
