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
    if "pack" in ev:
        # Pack races (short track, mass start): the race-wide state travels whole.
        view["pack"] = ev["pack"]
    if kind == "pair_start":
        view["current_pair"] = ev["pair"]
        view["on_ice"][str(ev["pair"])] = {"pair": ev["pair"], "attempt": ev["attempt"],
                                           "clock_origin_us": ev["clock_origin_us"],
                                           "rate": ev["rate"]}
    elif kind == "split":
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
