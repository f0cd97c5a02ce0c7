"""The message types (icetime/messages.py) against everything that uses them: the
checked-in JSON Schemas, the protocol's examples, the feed's error texts, and every
event the engine emits for every fixture (strictly: an unknown field fails)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import msgspec
import pytest

from icetime import bus, messages
from icetime.messages import RaceEvent, decode_stored, decode_view, stored
from icetime.replay import load_fixture, script_inputs
from services.ingest.feed import FeedError, NotJSON, decode_line, validate
from services.scoring.competition import Competition

from .test_rounds import US, Feeder

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_DIR = ROOT / "docs" / "schema"
FIXTURES = sorted((ROOT / "fixtures").glob("*.json"))
EVENT_DECODER = msgspec.json.Decoder(RaceEvent)


def json_blocks(text: str) -> list[str]:
    return re.findall(r"```json\n(.*?)```", text, re.S)


# ---------------------------------------------------------------- schema
def test_the_checked_in_schemas_are_the_ones_the_types_give(tmp_path):
    for name, text in messages.schemas().items():
        assert (SCHEMA_DIR / name).read_text(encoding="utf-8") == text, (
            f"docs/schema/{name} is stale: run python -m icetime.messages --write docs/schema")
    assert messages.main(["--check", str(SCHEMA_DIR)]) == 0
    assert messages.main(["--write", str(tmp_path)]) == 0
    stale = tmp_path / "race-event.json"
    stale.write_text(stale.read_text().replace('"revision"', '"revised"'))
    assert messages.main(["--check", str(tmp_path)]) == 1


def test_the_input_schema_says_what_the_validator_enforces():
    schema = json.loads((SCHEMA_DIR / "feed-input.json").read_text())
    passing = schema["$defs"]["Passing"]
    assert passing["required"] == ["type", "transponder", "t"]
    assert passing["additionalProperties"] is False
    assert passing["properties"]["t"]["maximum"] == messages.MAX_TIME_US
    assert set(schema["discriminator"]["mapping"]) == set(messages.INPUT_TYPES)
    events = json.loads((SCHEMA_DIR / "race-event.json").read_text())
    assert set(events["discriminator"]["mapping"]) == set(messages.EVENT_TYPES)
    assert {"LongTrackView", "PackView", "RoundsView", "StandingsView"} <= set(events["$defs"])


# ---------------------------------------------------------------- inputs
def protocol_inputs() -> list[str]:
    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    feed = text[text.index("## 1."):text.index("## 2.")]
    return json_blocks(feed)


def test_every_input_example_in_the_protocol_decodes():
    examples = protocol_inputs()
    kinds = set()
    for text in examples:
        inp = decode_line(text.encode(), "any-source")
        assert stored(validate(json.loads(text), "any-source")) == stored(inp)
        kinds.add(inp.__struct_config__.tag)
    assert kinds == {"passing", "gun", "call", "clock", "finish_time", "decision"}


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_what_the_replay_and_the_decoders_send_is_accepted(path):
    doc = load_fixture(path)
    for item in script_inputs(doc):
        assert stored(validate(item.inp, item.source))["source"] == item.source


@pytest.mark.parametrize(("sent", "kept"), [
    # point defaults to finish; an integer transponder is stored as its string
    ({"type": "passing", "seq": 1, "transponder": 4100201, "t": 5},
     {"type": "passing", "seq": 1, "transponder": "4100201", "t": 5, "point": "finish"}),
    # a beacon's gun names nothing: the stored input has no race or pair key at all
    ({"type": "gun", "seq": 2, "t": 5}, {"type": "gun", "seq": 2, "t": 5}),
    ({"type": "finish_time", "race": "r", "bib": 20, "time_us": 74_446_000},
     {"type": "finish_time", "race": "r", "bib": "20", "time_us": 74_446_000,
      "origin": "photo"}),
    # fields the action does not use are dropped, as they always were
    ({"type": "decision", "race": "r", "action": "dq", "bib": "17", "pair": 3,
      "reason": "lane"},
     {"type": "decision", "race": "r", "action": "dq", "bib": "17", "reason": "lane"}),
    ({"type": "decision", "race": "r", "action": "restart", "pair": 3},
     {"type": "decision", "race": "r", "action": "restart", "pair": 3}),
    ({"type": "clock", "offset_us": -2_500_013, "rtt_us": 180, "sent_us": 9},
     {"type": "clock", "offset_us": -2_500_013, "rtt_us": 180, "sent_us": 9}),
    # an optional field sent as null counts as absent (docs/protocol.md §1)
    ({"type": "passing", "transponder": "7", "t": 5, "point": None, "seq": None},
     {"type": "passing", "transponder": "7", "t": 5, "point": "finish"}),
    ({"type": "finish_time", "race": "r", "bib": "1", "time_us": 5, "origin": None},
     {"type": "finish_time", "race": "r", "bib": "1", "time_us": 5, "origin": "photo"}),
    # a start list keeps its rounds and the standings so far
    ({"type": "startlist", "skaters": [], "races": [], "standings_before": {"c": {"1": 5}}},
     {"type": "startlist", "skaters": [], "races": [], "standings_before": {"c": {"1": 5}}}),
])
def test_the_raw_stream_keeps_what_scoring_reads(sent, kept):
    line = json.dumps(sent).encode()
    assert stored(decode_line(line, "gun")) == {**kept, "source": "gun"}
    assert bus.unpack_input(bus.pack_input(stored(validate(sent, "gun")))) == \
        {**kept, "source": "gun"}


@pytest.mark.parametrize(("sent", "error"), [
    ({"type": "passing", "transponder": "7", "t": -5},
     "'t' out of range [0, 7258118400000000]: -5"),
    ({"type": "passing", "transponder": "7", "t": "12.5"}, "'t' must be an integer, got \"12.5\""),
    ({"type": "passing", "transponder": "7", "t": True}, "'t' must be an integer, got true"),
    ({"type": "passing", "t": 5}, "'transponder' is required in a passing input"),
    ({"type": "passing", "transponder": "", "t": 5},
     "'transponder' must be a non-empty string of at most 64 characters"),
    ({"type": "passing", "transponder": "7", "t": 5, "piont": "p300"},
     "unknown field 'piont' in a passing input (did you mean 'point'?)"),
    ({"type": "teleport", "seq": 4},
     "unknown type 'teleport': expected passing, gun, clock, call, finish_time, decision "
     "or startlist"),
    ({"seq": 4}, "an input needs a 'type': one of passing, gun, clock, call, finish_time, "
                 "decision or startlist"),
    ({"type": None}, "an input needs a 'type': one of passing, gun, clock, call, "
                     "finish_time, decision or startlist"),
    (["a list"], "an input must be a JSON object"),
    ({"type": "passing", "transponder": "7", "t": 1, "source": "officials"},
     "this connection is source 'gun', not 'officials'"),
    ({"type": "gun", "race": "r", "pair": 0, "t": 5}, "'pair' out of range [1, 1000]: 0"),
    ({"type": "gun", "pair": 3, "t": 5}, "a gun that names a 'pair' names its 'race' too"),
    ({"type": "gun", "t": 5, "rate": 0}, "'rate' must be a number in (0, 1000]"),
    ({"type": "finish_time", "race": "r", "bib": "1", "time_us": 5, "origin": "eye"},
     "'origin' must be one of beam, manual, photo, got \"eye\""),
    ({"type": "decision", "race": "r", "action": "fly"},
     "'action' must be one of adv, dnf, dns, dq, manual_time, official, pen, rc, reassign, "
     "reinstate, restart, void, yc, got \"fly\""),
    ({"type": "decision", "race": "r", "action": "manual_time", "bib": "1"},
     "a 'manual_time' decision needs 'time_us'"),
    ({"type": "startlist", "seq": 3, "skaters": [{"bib": "1", "name": "A"}], "races": [],
      "colour": "red"},
     "unknown field 'colour' in a startlist input (a startlist has competition, skaters, "
     "races, events, standings_before, seq, session, sent_us)"),
    ({"type": "startlist", "race": []},
     "unknown field 'race' in a startlist input (did you mean 'races'?)"),
    ({"type": "startlist", "skaters": [{"bib": "1", "name": "A"}],
      "races": [{"id": "r", "distance": 1000, "pairs": [{"pair": 1, "inner": "2"}]}]},
     "start list: races[0].pairs[0].inner: bib 2 is not in 'skaters'"),
])
def test_a_refusal_names_the_field_the_same_way_on_both_paths(sent, error):
    with pytest.raises(FeedError) as parsed:
        validate(sent, "gun")
    with pytest.raises(FeedError) as line:
        decode_line(json.dumps(sent).encode(), "gun")
    assert str(parsed.value) == str(line.value) == error
    if isinstance(sent, dict):
        assert line.value.seq == sent.get("seq")


def test_a_line_that_is_not_json_says_so():
    with pytest.raises(NotJSON, match="^not JSON: "):
        decode_line(b'{"type":"passing",', "gun")


# ---------------------------------------------------------------- events
def fixture_events(doc: dict, loops: dict[str, int] | None = None) -> tuple[Competition, list]:
    """Feed a fixture the way the services do: each input typed by ingest and stored,
    then scoring; returns the engine and every event as the runner encodes it."""
    comp = Competition(loops=loops)
    items = [("officials", 0, {"type": "startlist", **doc["startlist"]})]
    for item in script_inputs(doc, clock_base_us=1_700_000_000_000_000):
        items.append((item.source, item.at_us, item.inp))
        if loops and item.inp["type"] == "passing":
            # an extra loop 300 m past the finish line, a few seconds before each crossing
            # (sent when it is crossed: a read sent late would come in a revision)
            items.append((item.source, item.at_us - 5_000_000, {
                **item.inp, "point": "p300", "t": item.inp["t"] - 5_000_000, "seq": None}))
    items[1:] = sorted(items[1:], key=lambda x: x[1])
    out = []
    for n, (source, at_us, sent) in enumerate(items):
        typed = validate({k: v for k, v in sent.items() if v is not None}, source)
        typed.rx_us = at_us
        inp = decode_stored(bus.pack_input(stored(typed)))  # as scoring reads the raw stream
        assert inp == typed
        hops = {"source_us": inp.sent_us, "ingest_us": inp.rx_us, "scoring_us": at_us + 1}
        for events in comp.feed(f"{1_700_000_000_000 + n}-0", inp).values():
            out += [bus.dumps({**ev, "hops": hops}) for ev in events]
    return comp, out


def check_event(text: str) -> messages._Event:
    ev = EVENT_DECODER.decode(text)
    # Nothing dropped, nothing added: the typed event encodes back to the same object.
    assert json.loads(msgspec.json.encode(ev)) == json.loads(text)
    if isinstance(ev, messages.Revision):
        view = decode_view(ev.view)
        assert msgspec.to_builtins(view) == json.loads(json.dumps(ev.view))
    return ev


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_every_event_of_every_fixture_decodes_strictly(path):
    doc = load_fixture(path)
    kinds = set()
    for loops in (None, {"p300": 300}):
        comp, events = fixture_events(doc, loops)
        assert events and comp.stats["refused"] == 0, comp.last_error
        for text in events:
            kinds.add(check_event(text).__struct_config__.tag)
        for race in comp.races:
            decode_view(json.loads(bus.dumps(comp.view(race))))
    pair_race = "pairs" in doc["script"]
    fmt = doc["script"].get("format")
    assert kinds >= ({"revision", "pair_start", "passage", "finish"} if pair_race
                     else {"revision", "wave_start", "course_passage"} if fmt == "marathon"
                     else {"revision", "start", "passage", "finish"})
    if pair_race and doc["startlist"]["races"][0].get("kind") is None:
        assert "split" in kinds  # long-track individual races cross the extra loop


def test_events_of_rounds_and_standings_decode_strictly():
    f = Feeder()
    f.race("w500-sf1", ["1", "2", "3", "4", "5"], spacing_s=0.3, stop=("5",), t0=0)
    f.feed({"type": "decision", "race": "w500-sf1", "action": "adv", "bib": "5"})
    f.race("w500-sf2", ["6", "7", "8", "9", "10"], spacing_s=0.2, t0=100 * US)
    f.race("w500-finala", ["1", "6", "2", "7", "8", "5"], t0=300 * US)
    f.feed({"type": "decision", "race": "w500-finala", "action": "yc", "bib": "7"})
    f.race("w500-finalb", ["9", "3", "4"], t0=400 * US)
    views = set()
    for events in f.out.values():
        for ev in events:
            decoded = check_event(bus.dumps(ev))
            if isinstance(decoded, messages.Revision):
                views.add(type(decode_view(decoded.view)).__name__)
    assert views == {"PackView", "RoundsView", "StandingsView"}


def test_the_event_types_refuse_what_the_engine_does_not_send():
    comp, events = fixture_events(load_fixture(ROOT / "fixtures" / "beijing2023_w1000a.json"))
    passage = json.loads(next(e for e in events if '"type":"passage"' in e))
    with pytest.raises(msgspec.ValidationError, match="unknown field `lapp`"):
        EVENT_DECODER.decode(json.dumps({**passage, "lapp": 1}))
    # A row is of one kind, and of the kind of its event.
    with pytest.raises(msgspec.ValidationError, match="either long track"):
        EVENT_DECODER.decode(json.dumps({**passage, "row": {**passage["row"], "position": 1}}))
    row = {k: passage["row"][k] for k in ("k", "m", "t", "lap_time", "gap_leader")}
    with pytest.raises(msgspec.ValidationError, match="long-track passage has a row of its"):
        EVENT_DECODER.decode(json.dumps({**passage, "row": {**row, "lap_number": 1,
                                                                 "position": 1}}))
    with pytest.raises(msgspec.ValidationError, match="Expected `int`"):
        EVENT_DECODER.decode(json.dumps({**passage, "pair": "10"}))
    view = comp.view("bj23-w1000a")
    with pytest.raises(msgspec.ValidationError):
        decode_view({**view, "results": {"20": {**view["results"]["20"], "status": "OUT"}}})
