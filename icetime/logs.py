"""Logging for every icetime process, set up once with :func:`logging.config.dictConfig`.

Lines read ``<time> <process> <LEVEL> <logger>: <message> [race=… input=…]``: loggers
are named by module (``logging.getLogger(__name__)``), and a record about one input
carries its race and input id as context (``extra=about(...)``). ``ICETIME_LOG`` sets
the level (``INFO`` by default). Connections opening and closing are logged at DEBUG,
and so are the libraries' own chatter (websockets, aiohttp) unless the level is DEBUG.
"""
from __future__ import annotations

import logging
import logging.config
import os
from typing import Any

from icetime.settings import ConfigError

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: Libraries that log each connection or request at INFO: quiet unless debugging.
CHATTY = ("websockets", "aiohttp.access", "aiohttp.server", "asyncio")


def level_from_env() -> str:
    """``$ICETIME_LOG`` as a level name (``INFO`` if unset); ConfigError if it is not one."""
    value = os.environ.get("ICETIME_LOG", "").strip() or "INFO"
    if value.upper() not in LEVELS:
        raise ConfigError(f"ICETIME_LOG: {value!r} is not a log level "
                          f"(allowed: {', '.join(LEVELS)})")
    return value.upper()


class ContextFilter(logging.Filter):
    """Gives every record a ``context`` text: `` [race=R input=I]`` from the record's
    ``race_id`` / ``input_id`` extras, or empty."""

    def filter(self, record: logging.LogRecord) -> bool:
        parts = [f"{label}={value}" for label, value in (
            ("race", getattr(record, "race_id", None)),
            ("input", getattr(record, "input_id", None))) if value is not None]
        record.context = f" [{' '.join(parts)}]" if parts else ""
        return True


def about(inp: Any = None, race: str | None = None, input_id: str | None = None
          ) -> dict[str, Any]:
    """The ``extra=`` for a record about one input: its race and its id.

    ``inp`` is a feed input (a typed input or a dict); its ``race`` and its
    ``source``#``seq`` are used unless ``race`` or ``input_id`` are given. Anything
    missing is left out.
    """
    if inp is not None and not isinstance(inp, dict):
        inp = {name: getattr(inp, name, None) for name in ("race", "source", "seq")}
    if isinstance(inp, dict):
        race = race or (inp.get("race") if isinstance(inp.get("race"), str) else None)
        if input_id is None and inp.get("seq") is not None:
            input_id = f"{inp.get('source', '?')}#{inp['seq']}"
    return {"race_id": race, "input_id": input_id}


def configure(process: str, level: str | None = None) -> None:
    """Route every logger to stderr in one format, at ``level`` (default: $ICETIME_LOG).

    ``process`` names the process in each line (``icetime``, ``ingest``...). Raises
    ConfigError for an unknown level. Calling it again replaces the set-up.
    """
    level = (level or level_from_env()).upper()
    chatty = "DEBUG" if level == "DEBUG" else "WARNING"
    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {"line": {
            "format": f"%(asctime)s {process:<9} %(levelname)-7s %(name)s: "
                      "%(message)s%(context)s"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                                "formatter": "line", "filters": ["context"]}},
        "loggers": {name: {"level": chatty} for name in CHATTY},
        "root": {"level": level, "handlers": ["stderr"]},
    })
