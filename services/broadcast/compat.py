"""Protocol 1 for clients written before the field names changed (docs/protocol.md,
"Protocol versions"). Pure: no I/O, the input is never mutated.

Protocol 2 (what the engine publishes) gives every field term one meaning; protocol 1
used the same word for two things. :func:`to_v1` turns a protocol-2 WebSocket frame
into the frame a protocol-1 client expects:

=========================================  ===========================
protocol 2                                 protocol 1
=========================================  ===========================
long-track ``row.lap_time``                ``row.lap``
pack ``row.lap_number``, ``row.lap_time``  ``row.lap``, ``row.lap_t``
``pack.crossings``                         ``pack.laps``
``pack.sprint_points``                     ``pack.points``
``pack.sprints[].lap_number``,             ``lap``, ``points``
``pack.sprints[].sprint_points``
``pack.breakaway.lap_number``              ``pack.breakaway.lap``
``classification.sprint_points``           ``classification.points``
``race.sprint_points_table``               ``race.points``
``voided[].crossings``                     ``voided[].laps``
=========================================  ===========================

A pack row is told from a long-track row by its ``lap_number``. World Cup standings
(``points``) and event rankings did not change.

Protocol 1 also predates events that carry what changed: its clients replace
``view.pack`` and ``view.classification`` wholesale from every pack crossing and every
finish. :class:`Legacy` keeps a race's view folded from its events (one per race on a
broadcast node, while protocol-1 clients follow it) and gives each event back with the
whole pack state and classification, as protocol 1 had them.
"""
from __future__ import annotations

import json
from typing import Any

from icetime import bus
from icetime.view import apply_event

LONG_TRACK_ROW = {"lap_time": "lap"}
PACK_ROW = {"lap_number": "lap", "lap_time": "lap_t"}
PACK = {"crossings": "laps", "sprint_points": "points"}
SPRINT = {"lap_number": "lap", "sprint_points": "points"}
BREAKAWAY = {"lap_number": "lap"}
CLASSIFICATION = {"sprint_points": "points"}
RACE = {"sprint_points_table": "points"}
VOIDED = {"crossings": "laps"}


def _renamed(d: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """``d`` with its keys renamed by ``names``, in the same order."""
    return {names.get(k, k): v for k, v in d.items()}


def row_v1(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """A passage row (long track or pack) in protocol-1 names; None stays None."""
    if row is None:
        return None
    return _renamed(row, PACK_ROW if "lap_number" in row else LONG_TRACK_ROW)


def pack_v1(pack: dict[str, Any]) -> dict[str, Any]:
    """A pack race's ``pack`` state in protocol-1 names."""
    out = _renamed(pack, PACK)
    if isinstance(pack.get("sprints"), list):
        out["sprints"] = [_renamed(s, SPRINT) for s in pack["sprints"]]
    if isinstance(pack.get("breakaway"), dict):
        out["breakaway"] = _renamed(pack["breakaway"], BREAKAWAY)
    return out


def view_v1(view: dict[str, Any]) -> dict[str, Any]:
    """A race view (any kind) in protocol-1 names."""
    out = dict(view)
    if isinstance(view.get("race"), dict):
        out["race"] = _renamed(view["race"], RACE)
    if isinstance(view.get("results"), dict):
        # A marathon's results are times, not rows (a kind protocol 1 never had).
        out["results"] = {bib: {**res, "passages": [row_v1(p) for p in res["passages"]]}
                          if "passages" in res else res
                          for bib, res in view["results"].items()}
    if isinstance(view.get("pack"), dict):
        out["pack"] = pack_v1(view["pack"])
    if isinstance(view.get("classification"), dict):
        out["classification"] = _renamed(view["classification"], CLASSIFICATION)
    if isinstance(view.get("voided"), list):
        out["voided"] = [_renamed(v, VOIDED) for v in view["voided"]]
    return out


def event_v1(event: dict[str, Any]) -> dict[str, Any]:
    """A race event in protocol-1 names."""
    out = dict(event)
    if isinstance(event.get("row"), dict):
        out["row"] = row_v1(event["row"])
    if isinstance(event.get("pack"), dict):
        out["pack"] = pack_v1(event["pack"])
    if isinstance(event.get("classification"), dict):
        out["classification"] = _renamed(event["classification"], CLASSIFICATION)
    if isinstance(event.get("ranked"), dict):
        out["ranked"] = _renamed(event["ranked"], CLASSIFICATION)
    if isinstance(event.get("view"), dict):
        out["view"] = view_v1(event["view"])
    return out


def to_v1(frame: dict[str, Any]) -> dict[str, Any]:
    """A protocol-2 WebSocket frame as a protocol-1 client gets it: a ``snapshot``'s view
    and an ``event``'s race event renamed; every other frame as it is."""
    if frame.get("type") == "snapshot" and isinstance(frame.get("view"), dict):
        return {**frame, "view": view_v1(frame["view"])}
    if frame.get("type") == "event" and isinstance(frame.get("event"), dict):
        return {**frame, "event": event_v1(frame["event"])}
    return frame


def text_v1(frame: str) -> str:
    """:func:`to_v1` on an encoded frame (JSON text), encoded again."""
    return bus.dumps(to_v1(json.loads(frame)))


class Legacy:
    """A race's view, folded from its events in stream order, that turns each event
    into the one a protocol-1 client expects: a pack crossing with the whole ``pack``
    state, a finish with the whole ``classification`` (and no ``ranked``).

    ``view``: the race's view as of stream id ``offset`` ((ms, seq); the stored
    snapshot, or None for a race with none). Pure: the caller reads the events.
    """

    def __init__(self, view: dict[str, Any] | None, offset: tuple[int, int]) -> None:
        self.view = view
        self.offset = offset

    def event(self, sid: tuple[int, int], event: dict[str, Any]) -> dict[str, Any]:
        """Fold ``event`` (protocol 2, stream id ``sid``; one already folded is not
        folded again) and return it in protocol 1's shape, names and all. The returned
        event shares parts with the view: encode it before the next call."""
        if sid > self.offset:
            self.view = apply_event(self.view, event)
            self.offset = sid
        return self.whole(event)

    def whole(self, event: dict[str, Any]) -> dict[str, Any]:
        """``event`` in protocol 1's shape with the pack state and classification as the
        view has them now, without folding it: for a resumed client's missed events,
        which end at (or before) the fold's offset, so that after the last of them it
        holds the state as it is now."""
        view = self.view
        if view is None or event["type"] not in ("passage", "finish"):
            return event_v1(event)
        out = dict(event)
        if "pack" in event:
            out["pack"] = view["pack"]
        if event["type"] == "finish":
            out.pop("ranked", None)
            out["classification"] = view["classification"]
        return event_v1(out)

    def frame(self, sid: tuple[int, int], frame: str) -> str:
        """:meth:`event` on an encoded ``event`` frame (JSON text): the protocol-1 frame."""
        msg = json.loads(frame)
        return bus.dumps({**msg, "event": self.event(sid, msg["event"])})

    def snapshot(self, race: str, epoch: str) -> str:
        """The view as a protocol-1 ``snapshot`` frame at ``offset``."""
        view = None if self.view is None else view_v1(self.view)
        return bus.dumps({"type": "snapshot", "race": race, "epoch": epoch,
                          "offset": f"{self.offset[0]}-{self.offset[1]}", "view": view})
