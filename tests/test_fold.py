"""The clients' fold, in both languages, against the engine's own view.

Every fixture is fed through the engine and every race's event stream recorded. Folding a
stream must give ``Competition.view(race)``: with icetime/view.py here, and with
web/js/view.js inside Chromium, from the first event, and resumed from a snapshot taken
midway (what a client that reconnects gets). A second run takes a decision and its undoing
mid-race, so revisions arrive between deltas. Events go through JSON, as clients get them.

Time and gap formatting is checked with one set of cases (tests/cases/timefmt.json) against
icetime/timefmt.py and against the pages' formatters in web/js/view.js.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import msgspec
import pytest

from icetime import bus
from icetime.messages import convert_input
from icetime.replay import Timed, load_fixture, script_inputs
from icetime.timefmt import format_diff, format_gap, format_time, parse_time
from icetime.view import apply_event
from services.scoring.competition import Competition

from .chromium import ARGS, CHROMIUM

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "web"
FIXTURES = sorted((ROOT / "fixtures").glob("*.json"))
CASES = json.loads((Path(__file__).parent / "cases" / "timefmt.json").read_text())
#: An extra loop in the ice, 100 m past the finish line (unofficial splits), how long after
#: a finish-line passage a skater crosses it, and how late a delayed read of it arrives.
LOOP, LOOP_M, LOOP_AFTER_US, LOOP_LATE_US = "p100", 100, 7_000_000, 40_000_000
#: "early photo": a pack race's photo-finish times arrive just after the first finish
#: read, so later finishes carry the finish rows they change (``finish_rows``).
VARIANTS = ("plain", "officials", "loops", "early photo")
#: Pages are served from this made-up origin by the browser's own request routing: ES
#: modules need http(s), and nothing listens on a port. https, so that the page is a
#: secure context and has crypto.subtle (the digests of the folded views).
ORIGIN = "https://icetime.test"


def wire(obj: Any) -> Any:
    """``obj`` as a client receives it: through JSON, encoded as the services encode every
    event and frame (:func:`icetime.bus.dumps`)."""
    return msgspec.json.decode(bus.dumps(obj))


def js_number(text: str) -> float | int:
    """A JSON float as JavaScript writes it back: a whole number (``1.0``) without its
    decimals, as an int (below 1e21, where JavaScript turns to exponents)."""
    x = float(text)
    return int(x) if x.is_integer() and abs(x) < 1e21 else x


#: Decodes JSON with whole floats as ints (:func:`js_number`).
AS_JS = msgspec.json.Decoder(float_hook=js_number)


def digest(view: Any) -> str:
    """SHA-256 (hex) of ``view`` as JSON with every object's keys sorted and whole floats
    written as ints: what the page's ``canon`` writes for an equal view. (A float
    JavaScript writes otherwise, an exponent's form, say, gives another digest: such a
    view is then compared whole.)"""
    canon = msgspec.json.encode(AS_JS.decode(msgspec.json.encode(view)), order="sorted")
    return hashlib.sha256(canon).hexdigest()


@dataclass
class Fold:
    """One way a client sees a race: a starting view (``None``, or a snapshot) and the
    events after it. ``checks`` are (events applied, the engine's view then), one after
    every input that changed the race: the fold must equal each."""
    name: str
    race: str
    start: dict[str, Any] | None
    events: list[dict[str, Any]]
    checks: list[tuple[int, dict[str, Any]]]


def with_loop(items: list[Timed]) -> list[Timed]:
    """The script with a crossing of the extra loop after every finish-line passing; the
    reads of every other crossing arrive late, after the skater's next passage and split
    (another decoder's path)."""
    out = list(items)
    crossings: dict[str, int] = {}
    for item in items:
        if item.inp["type"] != "passing":
            continue
        n = crossings[item.inp["transponder"]] = crossings.get(item.inp["transponder"], 0) + 1
        late = LOOP_LATE_US if n % 2 else 0
        out.append(Timed(item.at_us + LOOP_AFTER_US + late, "loop", {
            **item.inp, "point": LOOP, "t": item.inp["t"] + LOOP_AFTER_US}))
    return sorted(out, key=lambda i: i.at_us)


def record(doc: dict[str, Any], variant: str) -> list[Fold]:
    """Feed a fixture through a fresh engine; every race's folds, from the start and
    resumed from the snapshot at the midpoint.

    ``officials``: an official disqualifies the last skater (or team) seen at the midpoint
    and reinstates them at three quarters: revisions mid-race, deltas after.
    ``loops``: an extra loop in the ice gives unofficial splits, some out of order.
    ``early photo``: the photo-finish times arrive 5 ms after the first finish read.
    """
    if variant == "early photo":
        ends = [parse_time(times[-1]) or 0 for times in doc["script"]["crossings"].values()]
        doc = {**doc, "script": {**doc["script"],
                                 "official_after_s": (min(ends) - max(ends) + 5_000) / 1e6}}
    items = script_inputs(doc)
    if variant == "loops":
        items = with_loop(items)
    race = doc["script"]["race"]
    n = len(items)
    revise = variant == "officials"
    snap_at = n * 3 // 5 if revise else n // 2
    comp = Competition(loops={LOOP: LOOP_M} if variant == "loops" else None)
    streams: dict[str, list[dict[str, Any]]] = {}
    views: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    snapshot: dict[str, tuple[int, dict[str, Any]]] = {}

    def feed(input_id: str, inp: dict[str, Any]) -> None:
        for rid, evs in comp.feed(input_id, convert_input(inp)).items():
            streams.setdefault(rid, []).extend(wire(evs))
            views.setdefault(rid, []).append((len(streams[rid]), wire(comp.view(rid))))

    feed("sl", {"type": "startlist", **doc["startlist"]})
    last_bib = None
    for i, item in enumerate(items):
        feed(f"in-{i}", {**item.inp, "source": item.source, "rx_us": item.at_us})
        last_bib = next((e["bib"] for e in reversed(streams[race])
                         if e["type"] in ("passage", "finish", "course_passage")), last_bib)
        if revise and i in (n // 2, n * 3 // 4):
            assert last_bib is not None
            action = "dq" if i == n // 2 else "reinstate"
            feed(f"officials-{i}", {"type": "decision", "race": race, "action": action,
                                    "bib": last_bib, "source": "officials"})
        if i == snap_at:
            snapshot = {rid: (len(evs), wire(comp.view(rid))) for rid, evs in streams.items()}
    assert comp.stats["refused"] == 0, comp.last_error
    folds = []
    for rid, evs in streams.items():
        checks = [*views[rid], (len(evs), wire(comp.view(rid)))]
        folds.append(Fold(f"{variant}, from the start", rid, None, evs, checks))
        at, view = snapshot.get(rid, (0, None))
        folds.append(Fold(f"{variant}, resumed after event {at}", rid, view, evs[at:],
                          [(k - at, v) for k, v in checks if k > at]))
    assert_variant_shows(streams[race], variant)
    return folds


def assert_variant_shows(events: list[dict[str, Any]], variant: str) -> None:
    """The race's stream has what ``variant`` is there for: the officials' revisions,
    or splits, some of them late."""
    kinds = [e["type"] for e in events]
    if variant == "officials":
        reasons = {e["reason"] for e in events if e["type"] == "revision"}
        assert {"decision: dq", "decision: reinstate"} <= reasons, reasons
    if variant == "loops":
        # Splits in time come as deltas; a late one is earlier than passings already
        # applied, so it comes in a revision (reason "late read").
        reasons = {e["reason"] for e in events if e["type"] == "revision"}
        assert "split" in kinds and "late read" in reasons, (kinds, reasons)
    if variant == "early photo":
        assert any("finish_rows" in e for e in events), kinds
        if any(e.get("pack", {}).get("sprint_points") is not None for e in events[1:]):
            assert any("sprint_points_moved" in e for e in events), kinds
    assert kinds[0] == "revision" and len(kinds) > 10, kinds


def with_mass_start_photo(doc: dict[str, Any]) -> dict[str, Any]:
    """A mass start without photo-finish times gets two: they put the third across the
    line ahead of the second, so in the "early photo" variant her finish takes the
    second's final sprint points (``sprint_points_moved``)."""
    race = next(r for r in doc["startlist"]["races"] if r["id"] == doc["script"]["race"])
    if race.get("kind") != "mass_start" or doc["script"].get("official"):
        return doc
    ends = sorted((parse_time(times[-1]) or 0, bib)
                  for bib, times in doc["script"]["crossings"].items())
    (second, b2), (_, b3) = ends[1], ends[2]
    official = {b2: format_time(second, 3), b3: format_time(second - 10_000, 3)}
    return {**doc, "script": {**doc["script"], "official": official}}


@functools.cache
def all_folds(name: str) -> tuple[Fold, ...]:
    """Recorded once per module run (the Python and the browser test share them)."""
    doc = with_mass_start_photo(load_fixture(ROOT / "fixtures" / f"{name}.json"))
    # No extra loops in pack races and marathons (a marathon's points are its course).
    pack = doc["script"].get("format") in ("pack", "marathon")
    photo = bool(doc["script"].get("official")) and doc["script"].get("format") == "pack"
    return tuple(f for variant in VARIANTS if not (pack and variant == "loops")
                 and (photo or variant != "early photo")
                 for f in record(doc, variant))


NAMES = [p.stem for p in FIXTURES]


def test_every_fixture_is_covered():
    assert len(NAMES) >= 10 and "beijing2023_w1000a" in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_python_fold_equals_the_engine_view(name):
    for f in all_folds(name):
        view = wire(f.start)  # the fold changes the view it is given
        events = wire(f.events)
        applied = 0
        for n, expected in f.checks:
            for ev in events[applied:n]:
                view = apply_event(view, ev)
            applied = n
            assert view == expected, (name, f.race, f.name, f"after event {n}")


# ---------------------------------------------------------------- in Chromium

def serve_web(route: Any) -> None:
    path = urlparse(route.request.url).path
    if path == "/":
        route.fulfill(body="<!doctype html><title>fold</title>", content_type="text/html")
        return
    file = (WEB / path.lstrip("/")).resolve()
    if WEB in file.parents and file.is_file():
        route.fulfill(path=file)  # content type from the name: text/javascript for modules
    else:
        route.fulfill(status=404, body="not found")


@pytest.fixture(scope="module")
def page():
    """One Chromium for the whole module, on a blank page that can import web/js."""
    if CHROMIUM is None:
        pytest.skip("no Chromium found: install Debian's `chromium` (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.route(f"{ORIGIN}/**", serve_web)
        pg.goto(f"{ORIGIN}/")
        yield pg
        browser.close()
        assert not errors, errors


#: Each fold's view after each check's number of events: the SHA-256 (hex) of its JSON
#: with sorted keys, the form :func:`digest` hashes. The JSON texts stay in the page
#: (``window.folded``) for :data:`JS_FOLDED`: sending every view whole (15 MB for the
#: marathon) took longer than folding them.
JS_FOLD = """async (payload) => {
  const { applyEvent } = await import("/js/view.js");
  // JSON.stringify with every object's keys sorted (undefined left out, as it does).
  const canon = (v) => {
    if (v === null || typeof v !== "object") return JSON.stringify(v);
    if (Array.isArray(v)) return `[${v.map((x) => canon(x) ?? "null").join(",")}]`;
    const parts = [];
    for (const k of Object.keys(v).sort()) {
      const s = canon(v[k]);
      if (s !== undefined) parts.push(`${JSON.stringify(k)}:${s}`);
    }
    return `{${parts.join(",")}}`;
  };
  window.folded = JSON.parse(payload).map(({ start, events, checks }) => {
    let view = start, applied = 0;
    return checks.map((n) => {
      for (; applied < n; applied++) view = applyEvent(view, events[applied]);
      return canon(view);
    });
  });
  const hex = (buf) => [...new Uint8Array(buf)]
    .map((b) => b.toString(16).padStart(2, "0")).join("");
  const utf8 = new TextEncoder();
  return Promise.all(window.folded.map((views) => Promise.all(views.map(
    async (text) => hex(await crypto.subtle.digest("SHA-256", utf8.encode(text)))))));
}"""
#: One folded view whole, as JSON text: (fold index, check index).
JS_FOLDED = "([f, c]) => window.folded[f][c]"


@pytest.mark.parametrize("name", NAMES)
def test_browser_fold_equals_the_engine_view(page, name):
    folds = all_folds(name)
    payload = json.dumps([{"start": f.start, "events": f.events,
                           "checks": [n for n, _ in f.checks]} for f in folds])
    got = page.evaluate(JS_FOLD, payload)
    for i, (f, digests) in enumerate(zip(folds, got, strict=True)):
        for c, ((n, expected), seen) in enumerate(zip(f.checks, digests, strict=True)):
            # Equal digests are equal JSON texts; the others are compared whole (a float
            # may be written two ways and still be equal).
            if seen != digest(expected):
                view = json.loads(page.evaluate(JS_FOLDED, [i, c]))
                assert view == expected, (name, f.race, f.name, f"after event {n}")


# ---------------------------------------------------------------- formatting

def label(case: dict[str, Any]) -> str:
    return f"{case['us']}/{case.get('digits', 2)}->{case['text']!r}"


@pytest.mark.parametrize("case", CASES["time"], ids=label)
def test_python_format_time(case):
    args = (case["us"],) if "digits" not in case else (case["us"], case["digits"])
    assert format_time(*args) == case["text"], case["why"]


@pytest.mark.parametrize("case", CASES["gap"], ids=label)
def test_python_format_gap(case):
    assert format_gap(case["us"]) == case["text"], case["why"]


@pytest.mark.parametrize("case", CASES["diff"], ids=label)
def test_python_format_diff(case):
    assert format_diff(case["us"]) == case["text"], case["why"]


JS_FORMAT = """async (cases) => {
  const { fmtTime, fmtGap } = await import("/js/view.js");
  return {
    time: cases.time.map((c) => c.digits === undefined ? fmtTime(c.us) : fmtTime(c.us, c.digits)),
    gap: cases.gap.map((c) => fmtGap(c.us)),
  };
}"""


def test_browser_formatting_matches_the_cases(page):
    got = page.evaluate(JS_FORMAT, {"time": CASES["time"], "gap": CASES["gap"]})
    for kind in ("time", "gap"):
        wrong = [(c["us"], c.get("digits"), text, c["text"])
                 for c, text in zip(CASES[kind], got[kind], strict=True) if text != c["text"]]
        assert not wrong, f"{kind}: (µs, digits, JS text, expected) {wrong}"
