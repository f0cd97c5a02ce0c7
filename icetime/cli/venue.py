"""``icetime run`` and ``icetime relay``: a venue from its configuration file.

``icetime run`` checks the configuration and the start lists it names before anything
starts, then runs the :class:`~icetime.cli.supervisor.Supervisor` until Ctrl-C, loading
the start lists once the services answer.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from icetime import settings as settings_mod
from icetime.cli import console
from icetime.cli.supervisor import RELAY, Supervisor
from icetime.replay import load_fixture

log = logging.getLogger(__name__)


class StartlistFailed(Exception):
    """A configured start list could not be read or ingest refused it; one line."""


def config_file(args: argparse.Namespace) -> str:
    """The --config file, or $ICETIME_CONFIG; ConfigError if there is neither."""
    path = settings_mod.config_path(args.config)
    if path is None:
        raise settings_mod.ConfigError(f"icetime {args.cmd}: no configuration: give "
                                       "--config FILE or set ICETIME_CONFIG")
    return str(path)


def read_startlists(paths: Iterable[str]) -> list[tuple[str, dict[str, Any]]]:
    """Each configured start list file read and parsed, before anything starts: a file
    that cannot be read or is not JSON raises StartlistFailed (one line) at once."""
    docs = []
    for path in paths:
        try:
            docs.append((path, load_fixture(path)))
        except OSError as exc:
            raise StartlistFailed(f"{path}: {exc.strerror or exc}") from None
        except ValueError as exc:  # json.JSONDecodeError
            raise StartlistFailed(f"{path}: not JSON: {exc}") from None
    return docs


def load_startlists(sup: Supervisor, docs: list[tuple[str, dict[str, Any]]]) -> None:
    """POST each start list (:func:`read_startlists`); StartlistFailed names the file and
    ingest's reason when it refuses one."""
    for path, doc in docs:
        try:
            res = sup.load_startlist(doc)
        except RuntimeError as exc:
            raise StartlistFailed(f"{path}: {exc}") from None
        races = res.get("races") or []
        log.info("start list %s loaded%s", path,
                 f": {len(races)} race(s)" if isinstance(races, list) and races else "")


def cmd_run(args: argparse.Namespace) -> None:
    config = config_file(args)
    cfg = settings_mod.load(config)  # before anything starts: a bad file stops here
    startlists = read_startlists(cfg.startlists)  # and so does a start list that is not JSON
    sup = Supervisor(config, cfg)
    try:
        sup.start()
        load_startlists(sup, startlists)
        print(f"icetime is running: {console.page_url(sup.cfg)}  (Ctrl-C to stop)\n"
              f"{console.banner(sup.cfg)}", flush=True)
        while True:
            time.sleep(1)
            sup.check_children()
    except KeyboardInterrupt:
        pass
    finally:
        sup.stop()


def cmd_relay(args: argparse.Namespace) -> None:
    """The relay alone, in the foreground (``python -m services.relay``)."""
    config = config_file(args)
    settings_mod.load(config)  # a bad file stops here, with its one line
    os.execv(sys.executable, [sys.executable, "-m", f"services.{RELAY}", "--config",
                              str(Path(config).resolve())])
