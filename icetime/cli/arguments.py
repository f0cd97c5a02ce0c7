"""The ``icetime`` command line: its arguments, and each failure's one line and exit code.

:func:`main` is the ``icetime`` entry point (``python -m icetime.cli`` too). A refused
argument is answered before asyncio, Redis or HTTP are imported (each command imports
them when it needs them), so it costs no more than the interpreter's start.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys

from icetime import logs
from icetime import settings as settings_mod
from icetime.cli.demo import cmd_demo
from icetime.cli.replaying import cmd_replay
from icetime.cli.supervisor import CannotListen, ConfigRefused
from icetime.cli.venue import StartlistFailed, cmd_relay, cmd_run
from icetime.redis_embed import DataDirInUse
from icetime.service import EXIT_BIND, EXIT_CONFIG, config_exit

log = logging.getLogger(__name__)
DESCRIPTION = "The ``icetime`` command: run a venue, run the demo, replay a race script."
#: The fastest replay: a gun's ``rate`` is at most this (icetime/messages.py).
MAX_SPEED = 1000.0


def positive_speed(text: str) -> float:
    """argparse type of ``--speed``: a number above 0, at most the gun's ``rate`` limit
    (1000; a faster replay would have every gun refused)."""
    try:
        speed = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < speed < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: the speed must be above 0")
    if speed > MAX_SPEED:
        raise argparse.ArgumentTypeError(f"{text!r}: the speed must be at most {MAX_SPEED:g}")
    return speed


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def parser() -> argparse.ArgumentParser:
    """The ``icetime`` parser: each subcommand sets ``func``, the command it runs."""
    p = argparse.ArgumentParser(prog="icetime", description=DESCRIPTION,
                                epilog="Exit codes: 0 stopped, 1 failed, 2 bad configuration "
                                       "or arguments, data dir in use or start list refused, "
                                       "3 a port could not be bound (docs/configuration.md).")
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run icetime for a venue from a configuration file")
    run.add_argument("--config", help="the venue's TOML file (default: $ICETIME_CONFIG)")
    run.set_defaults(func=cmd_run)
    demo = sub.add_parser("demo", help="run icetime and replay a real race through it")
    demo.add_argument("--race", default="beijing2023_w1000a",
                      help="a fixture name in fixtures/ or a path")
    demo.add_argument("--speed", type=positive_speed, default=1.0,
                      help="replay speed factor (above 0)")
    demo.add_argument("--exit-after-replay", action="store_true")
    demo.set_defaults(func=cmd_demo)
    rep = sub.add_parser("replay", help="feed a fixture's script to a running icetime")
    rep.add_argument("race")
    rep.add_argument("--config", help="the venue's TOML file (default: $ICETIME_CONFIG)")
    rep.add_argument("--speed", type=positive_speed, default=1.0,
                     help="replay speed factor (above 0)")
    rep.add_argument("--session", help="resend an earlier run (its session, as printed); "
                                       "by default each run is a session of its own")
    rep.add_argument("--startlist", action="store_true",
                     help="load the fixture's start list first (without it, the race must "
                          "be in a loaded start list)")
    rep.set_defaults(func=cmd_replay)
    rel = sub.add_parser("relay", help="mirror a venue's races to a cloud Redis "
                                       "(docs/cloud.md)")
    rel.add_argument("--config", help="the TOML file with [relay] (default: $ICETIME_CONFIG)")
    rel.set_defaults(func=cmd_relay)
    return p


def main(argv: list[str] | None = None) -> None:
    """Run the command ``argv`` names (default: ``sys.argv[1:]``); SystemExit with the
    exit code the epilog lists when it fails in a way a user can mend."""
    # Ctrl-C and SIGTERM (systemd, kill) both stop the services first and Redis
    # last, however icetime was started (a background job inherits SIGINT ignored).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    args = parser().parse_args(argv)
    try:
        logs.configure("icetime")
        args.func(args)
    except settings_mod.ConfigError as exc:
        config_exit("icetime", exc)
    except ConfigRefused as exc:
        log.error("%s", exc)
        raise SystemExit(EXIT_CONFIG) from None
    except (DataDirInUse, StartlistFailed) as exc:
        print(f"icetime: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_CONFIG) from None
    except CannotListen:  # the service printed the one line naming the port and the key
        raise SystemExit(EXIT_BIND) from None
