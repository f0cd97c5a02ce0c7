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
    if "pack" in ev:
        # Pack races (short track, mass start): the race-wide state travels whole.
        view["pack"] = ev["pack"]
    if kind == "split":
        result = view["results"][ev["bib"]]
        m = ev["split"]["m"]
        result["splits"] = sorted([s for s in result["splits"] if s["m"] != m] + [ev["split"]],
                                  key=lambda s: s["m"])
    elif kind in ("passage", "finish"):
        if ev["stories"]:
            view["stories"] = (view["stories"] + ev["stories"])[-STORY_LOG_MAX:]
        result = view["results"][ev["bib"]]
        result["passages"][ev["row"]["k"]] = ev["row"]
        if kind == "finish":
            result["final"] = ev["final"]
            view["classification"] = ev["classification"]
            if ev.get("pair_done"):
                view["on_ice"].pop(str(ev["pair"]), None)
    return view


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
_OWN = {"pair_start": _pair_start, "wave_start": _wave_start, "course_passage": _course_passage}
