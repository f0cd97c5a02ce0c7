"""What one publish of the scoring worker carries (``runner.ScoringRunner.flush``):
the :class:`Outbox` of consecutive raw inputs (acknowledgements, the progress mark,
verdicts, encoded events per race), and the verdict record an input gets on the
officials' stream (docs/protocol.md).
"""
from __future__ import annotations

import time
from collections.abc import Container
from typing import Any

from icetime import bus
from icetime.messages import Clock, FeedInput, Passing

#: Inputs whose verdict is written only when refused: the timing hot path (a passing a
#: race ignores, a re-read or a skater not on the ice, is not refused: it is counted).
UNJUDGED = (Passing, Clock)
#: The fields of an input a verdict repeats, for the desk's audit log.
VERDICT_FIELDS = ("race", "pair", "action", "bib", "target", "time_us", "m", "origin",
                  "reason", "t", "transponder")


def input_type(inp: FeedInput) -> str:
    """The input's ``type`` as sent (``decision``, ``gun``...)."""
    tag: str = inp.__struct_config__.tag  # type: ignore[assignment]
    return tag


def verdict_record(sid: str, inp: FeedInput, refused: str | None,
                   hops: dict[str, Any]) -> dict[str, Any]:
    """One entry of the officials' stream: who sent what (input type, source, seq, the
    input's own fields), when (``rx_us``: ingest received it; ``scoring_us``: judged),
    and its effect: ``verdict`` ``applied``, or ``refused`` with the ``reason``."""
    what = {name: getattr(inp, name) for name in VERDICT_FIELDS
            if getattr(inp, name, None) is not None}
    record: dict[str, Any] = {"input": sid, "type": input_type(inp), "source": inp.source,
                              "seq": inp.seq, "rx_us": hops["ingest_us"],
                              "scoring_us": hops["scoring_us"], "input_fields": what,
                              "verdict": "refused" if refused is not None else "applied"}
    if refused is not None:
        record["reason"] = refused
    return record


def refused_event(sid: str, inp: FeedInput, races: Container[str], reason: str
                  ) -> dict[str, list[dict[str, Any]]]:
    """The ``refused`` event (race id -> events, as the engine's output) for the race
    the refused input ``sid`` names, when that race is one of ``races`` (the races
    scoring knows: an unknown race has no stream, its refusal is on the officials'
    stream only); ``reason`` is the engine's."""
    race = getattr(inp, "race", None)
    if race is None or str(race) not in races:
        return {}
    event: dict[str, Any] = {"type": "refused", "race": str(race), "input": sid,
                             "input_type": input_type(inp), "source": inp.source or "",
                             "reason": reason}
    if inp.seq is not None:
        event["seq"] = inp.seq
    return {str(race): [event]}


class Outbox:
    """The output of consecutive raw inputs of one read, for one publish: the input
    ids to acknowledge, the last one with output (the progress mark; "" none), the
    verdicts and the encoded events per race, in input order."""

    def __init__(self) -> None:
        self.acks: list[str] = []
        self.last = ""
        self.verdicts: list[tuple[str, str]] = []
        self.events: dict[str, list[str]] = {}
        #: Races with a revision among their events here (its snapshot is due).
        self.revised: set[str] = set()
        #: Whether the last input taken is a judged one (:data:`UNJUDGED`).
        self.judged = False
        #: Bytes of the events so far.
        self.size = 0
        self.started = time.perf_counter()

    def add(self, out: dict[str, list[dict[str, Any]]], hops: dict[str, Any]) -> int:
        """Add an input's events per race, each with the input's ``hops``; returns how
        many."""
        n = 0
        for race, events in out.items():
            if events:
                encoded = [bus.dumps({**ev, "hops": hops}) for ev in events]
                self.events.setdefault(race, []).extend(encoded)
                self.size += sum(len(e) for e in encoded)
                if any(ev["type"] == "revision" for ev in events):
                    self.revised.add(race)
                n += len(events)
        return n
