"""The client-side fold: how a race view follows the event stream.

``apply_event(view, event)`` is what every client does (web/js/view.js is the
same fold in JavaScript). Applying a race's events in order to the first
snapshot gives the view the engine holds; tests check exactly that.
"""
from __future__ import annotations

import copy
from typing import Any

#: Story lines a view keeps; the engine keeps the same number (STORY_LOG_MAX there).
STORY_LOG_MAX = 50


def apply_event(view: dict[str, Any] | None, ev: dict[str, Any]) -> dict[str, Any] | None:
    """Apply one race event to a view (mutated and returned)."""
    kind = ev["type"]
    if kind == "revision":
        fresh: dict[str, Any] = copy.deepcopy(ev["view"])
        return fresh
    if view is None or kind == "refused":
        # Deltas before any snapshot carry nothing to apply to; a refused input
        # changed nothing.
        return view
    own = _OWN.get(kind)
    if own is not None:
        return own(view, ev)
    if kind == "split":
        result = view["results"][ev["bib"]]
        m = ev["split"]["m"]
        result["splits"] = sorted([s for s in result["splits"] if s["m"] != m] + [ev["split"]],
                                  key=lambda s: s["m"])
    elif kind in ("passage", "finish"):
        _crossed(view, ev)
    return view


def _crossed(view: dict[str, Any], ev: dict[str, Any]) -> None:
    """A passage or a finish (long track or pack)."""
    if "pack" in ev:
        # A pack race's crossing: what it changed in the race-wide state.
        _pack_change(view["pack"], ev["bib"], ev["pack"], view["start_order"])
    if ev["stories"]:
        view["stories"] = (view["stories"] + ev["stories"])[-STORY_LOG_MAX:]
    result = view["results"][ev["bib"]]
    result["passages"][ev["row"]["k"]] = ev["row"]
    if ev["type"] == "finish":
        result["final"] = ev["final"]
        # A pack finish whose official time put her ahead of finishers before her.
        for bib, row in ev.get("finish_rows", {}).items():
            view["results"][bib]["passages"][row["k"]] = row
        # A mass start's final sprint points she took from them.
        for bib, points in ev.get("sprint_points_moved", {}).items():
            view["pack"]["sprint_points"][bib] = points
        if "ranked" in ev:
            _ranked(view["classification"], ev["bib"], ev["ranked"])
        else:
            view["classification"] = ev["classification"]
        if ev.get("pair_done"):
            view["on_ice"].pop(str(ev["pair"]), None)


def _start(view: dict[str, Any], ev: dict[str, Any]) -> dict[str, Any]:
    """A pack race's gun: the race-wide state, whole."""
    view["pack"] = ev["pack"]
    return view


#: Pack state fields a crossing's event carries whole (they do not grow with the field).
PACK_WHOLE = ("run", "laps_to_go", "bell", "sprints", "breakaway", "attempt", "in_field",
              "warning", "late_exchange")


def _pack_change(pack: dict[str, Any], bib: str, change: dict[str, Any],
                 start_order: list[str]) -> None:
    """A crossing by ``bib``: her move in the order, her crossings, sprint points and
    (relays) active skater and exchanges; who stopped; the small fields whole."""
    move = change["move"]
    order = pack["order"]
    order.pop(move["from"])
    order.insert(move["to"], bib)
    pack["crossings"][bib] = change["crossings"]
    if pack["sprint_points"] is not None:
        pack["sprint_points"][bib] = change["sprint_points"]
    for field in PACK_WHOLE:
        if field in change:
            pack[field] = change[field]
    if "active" in change:
        pack["active"][bib] = change["active"]
        pack["exchanges"][bib] = change["exchanges"]
    stopped = pack["stopped"]
    if bib in stopped:
        stopped.remove(bib)  # crossing again: she is going
    if change["now_stopped"]:
        # The stopped are listed in start order.
        place = {b: i for i, b in enumerate(start_order)}
        pack["stopped"] = sorted(stopped + change["now_stopped"], key=place.__getitem__)


def _ranked(cls: dict[str, list[Any]], bib: str, ranked: dict[str, Any]) -> None:
    """A finisher's place in the classification: inserted at ``at``; the ``tied`` rows
    right behind her keep their rank, every other row behind her goes down one; at
    the head, everyone's ``behind`` is measured from her."""
    at = ranked["at"]
    for col in ("bib", "rank", "t", "behind", "sprint_points"):
        if col in cls:
            cls[col].insert(at, bib if col == "bib" else ranked[col])
    ranks = cls["rank"]
    for j in range(at + 1 + ranked["tied"], len(ranks)):
        ranks[j] += 1
    if at == 0:
        lead = ranked["t"]
        cls["behind"] = [t - lead for t in cls["t"]]


def _pair_start(view: dict[str, Any], ev: dict[str, Any]) -> dict[str, Any]:
    view["current_pair"] = ev["pair"]
    view["on_ice"][str(ev["pair"])] = {"pair": ev["pair"], "attempt": ev["attempt"],
                                       "clock_origin_us": ev["clock_origin_us"],
                                       "rate": ev["rate"]}
    return view


def _wave_start(view: dict[str, Any], ev: dict[str, Any]) -> dict[str, Any]:
    view["waves"][str(ev["wave"])]["run"] = ev["run"]
    view["counts"] = ev["counts"]
    return view


def _course_passage(view: dict[str, Any], ev: dict[str, Any]) -> dict[str, Any]:
    """A marathon passage: the skater's passage at the point, and her place in that
    point's order (``at``, after taking out an earlier passage of hers there)."""
    row, bib = ev["row"], ev["bib"]
    k = row["k"]
    result = view["results"].get(bib)
    if result is None:
        result = view["results"][bib] = {"t": [None] * len(view["race"]["course"]),
                                         "status": None, "manual": []}
    if ev["at"] is not None:
        order = view["order"][k]
        if result["t"][k] is not None:
            order.remove(bib)
        order.insert(ev["at"], bib)
    result["t"][k] = row["t"]
    view["counts"] = ev["counts"]
    return view


#: Events applied by a function of their own.
_OWN = {"start": _start, "pair_start": _pair_start, "wave_start": _wave_start,
        "course_passage": _course_passage}
