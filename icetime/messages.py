"""Every message of the timing feed and of the race event streams, defined once.

Two tagged unions on ``type``, built from msgspec ``Struct`` types:

* :data:`FeedInput`: what a source sends to ingest (docs/protocol.md §1): ``passing``,
  ``gun``, ``clock``, ``call``, ``finish_time``, ``decision``, ``startlist``. Ingest
  decodes each line straight into it; that is the whole validation (ranges, enums,
  required fields, unknown fields refused so that a typo is named, not ignored).
* :data:`RaceEvent`: what scoring publishes per race (§2): ``revision``, ``pair_start``,
  ``start``, ``passage``, ``finish``, ``split``, ``wave_start``, ``course_passage``,
  ``refused``.

The JSON Schemas in docs/schema/ are generated from these types
(``python -m icetime.messages --write docs/schema``; ``--check`` compares), and the
tests hold the checked-in files, the protocol's examples and every event the engine
emits for every fixture to them.

Absent versus null. An *input's* optional field is ``None`` when absent, and ingest
stores no key for it (:func:`stored`). An *event's* field that only some races carry
(``pair`` in long track, ``pack`` in pack races) is ``UNSET`` when absent and ``None``
only where the engine sends ``null``, so decoding an event and encoding it again gives
the same object.

The race ``view`` (a ``revision``'s whole race) stays a ``dict`` on the event: its shape
depends on ``view.race.kind`` and carries no tag of its own, so it cannot sit in a
tagged union. :data:`VIEW_TYPES` maps each kind to its Struct (:class:`LongTrackView`,
:class:`PackView`, :class:`MarathonView`, :class:`RoundsView`, :class:`StandingsView`)
and :func:`decode_view` checks a view against it; the schema of ``view`` points at those five.

Start lists are typed at the top level only (``skaters``, ``races``, ``events`` are
lists of objects): their rules depend on the race kind and live in
:func:`icetime.startlist.validate_startlist`, which a ``startlist`` input runs.

The types are defined by what they are: the feed inputs in :mod:`icetime.feed_inputs`,
the race events in :mod:`icetime.race_events`, the race views in
:mod:`icetime.race_views`; this module names them all (import them from here) and
writes the JSON Schemas.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import get_args

import msgspec

from icetime.feed_inputs import (
    DECISIONS,
    INPUT_TYPES,
    MAX_PAIR,
    MAX_RACE_TIME_US,
    MAX_SEQ,
    MAX_TIME_US,
    Action,
    Call,
    Clock,
    Decision,
    FeedInput,
    FinishOrigin,
    FinishTime,
    Gun,
    Name,
    Pair,
    Passing,
    RaceTimeUs,
    Reason,
    Seq,
    StartList,
    TimeUs,
    Wave,
    convert_input,
    decode_input,
    decode_stored,
    explain,
    stored,
)
from icetime.race_events import (
    EVENT_TYPES,
    Breakaway,
    Classification,
    CoursePassage,
    CourseRow,
    Final,
    Finish,
    Flag,
    Hops,
    Lane,
    MarathonCounts,
    Origin,
    PackChange,
    PackMove,
    PackRun,
    PackState,
    PairStart,
    Passage,
    PassageRow,
    RaceEvent,
    Ranked,
    Refused,
    Revision,
    Split,
    SplitEntry,
    Sprint,
    Start,
    Status,
    WaveRun,
    WaveStart,
    _Event,
)
from icetime.race_views import (
    VIEW_TYPES,
    Counted,
    Cup,
    CupRow,
    HeldRead,
    LongTrackKind,
    LongTrackRaceInfo,
    LongTrackView,
    MarathonPoint,
    MarathonRaceInfo,
    MarathonResult,
    MarathonSkater,
    MarathonView,
    MarathonWave,
    NameInfo,
    OnIce,
    PackKind,
    PackRaceInfo,
    PackView,
    PairEntry,
    PointsTable,
    RaceView,
    Ranking,
    Result,
    RoundEntry,
    RoundsRaceInfo,
    RoundsView,
    SkaterInfo,
    StandingsRaceInfo,
    StandingsView,
    TeamEntry,
    Voided,
    decode_view,
)
from icetime.startlist import MarathonRace

#: Every message type and helper, importable from here as before the split.
__all__ = [
    "Action",
    "Call",
    "Clock",
    "DECISIONS",
    "Decision",
    "FeedInput",
    "FinishOrigin",
    "FinishTime",
    "Gun",
    "INPUT_TYPES",
    "MAX_PAIR",
    "MAX_RACE_TIME_US",
    "MAX_SEQ",
    "MAX_TIME_US",
    "Name",
    "Pair",
    "Passing",
    "RaceTimeUs",
    "Reason",
    "Seq",
    "StartList",
    "TimeUs",
    "Wave",
    "convert_input",
    "decode_input",
    "decode_stored",
    "explain",
    "stored",
    "Breakaway",
    "Classification",
    "CoursePassage",
    "CourseRow",
    "EVENT_TYPES",
    "Final",
    "Finish",
    "Flag",
    "Hops",
    "Lane",
    "MarathonCounts",
    "Origin",
    "PackChange",
    "PackMove",
    "PackRun",
    "PackState",
    "PairStart",
    "Passage",
    "PassageRow",
    "RaceEvent",
    "Ranked",
    "Refused",
    "Revision",
    "Split",
    "SplitEntry",
    "Sprint",
    "Start",
    "Status",
    "WaveRun",
    "WaveStart",
    "_Event",
    "Counted",
    "Cup",
    "CupRow",
    "HeldRead",
    "LongTrackKind",
    "LongTrackRaceInfo",
    "LongTrackView",
    "MarathonPoint",
    "MarathonRaceInfo",
    "MarathonResult",
    "MarathonSkater",
    "MarathonView",
    "MarathonWave",
    "NameInfo",
    "OnIce",
    "PackKind",
    "PackRaceInfo",
    "PackView",
    "PairEntry",
    "PointsTable",
    "RaceView",
    "Ranking",
    "Result",
    "RoundEntry",
    "RoundsRaceInfo",
    "RoundsView",
    "SkaterInfo",
    "StandingsRaceInfo",
    "StandingsView",
    "TeamEntry",
    "VIEW_TYPES",
    "Voided",
    "decode_view",
    "schemas",
    "main",
]


_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schemas() -> dict[str, str]:
    """The JSON Schema files, by file name, as the text to write."""
    out = {}
    for name, roots, title, about in (
            ("feed-input.json", [FeedInput], "icetime feed input",
             "One input a source sends to ingest (docs/protocol.md §1), tagged on `type`."),
            ("race-event.json", [RaceEvent, *get_args(RaceView)], "icetime race event",
             "One event of a race stream (docs/protocol.md §2), tagged on `type`; "
             "a revision's `view` is one of the views in $defs, by `race.kind`."),
            ("startlist-marathon.json", [MarathonRace], "icetime marathon race",
             "One marathon entry of a start list's `races` (docs/startlist.md).")):
        (root, *_), defs = msgspec.json.schema_components(roots)
        doc = {"$schema": _SCHEMA_DIALECT, "title": title, "description": about,
               **root, "$defs": defs}
        out[name] = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m icetime.messages --write DIR`` writes the schemas; ``--check DIR``
    exits 1 if the files there differ from the types."""
    ap = argparse.ArgumentParser(prog="python -m icetime.messages",
                                 description="JSON Schemas of the feed inputs and race events")
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", metavar="DIR", type=Path)
    group.add_argument("--check", metavar="DIR", type=Path)
    args = ap.parse_args(argv)
    stale = []
    for name, text in schemas().items():
        if args.write:
            args.write.mkdir(parents=True, exist_ok=True)
            (args.write / name).write_text(text, encoding="utf-8")
            print(f"wrote {args.write / name}")
        else:
            path = args.check / name
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
    if stale:
        print(f"out of date (run python -m icetime.messages --write {args.check}): "
              + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
