"""Property tests: the feed parser never crashes or stalls, whatever the bytes, and the
one-pass line decoder and the object validator agree on every input."""
from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from icetime.messages import stored
from services.ingest.feed import FeedError, LineSplitter, decode_line, parse_json, validate

GOOD = {"type": "passing", "seq": 7, "transponder": "4100051", "t": 1_700_000_000_000_000}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=12)


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in points + [len(data)]:
        out.append(data[prev:p])
        prev = p
    return out


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=300), cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_a_valid_line_after_garbage_is_still_found(garbage, cuts):
    good = json.dumps(GOOD).encode()
    stream = garbage + b"\n" + good + b"\n"
    splitter = LineSplitter(max_line=1024)
    items = [x for part in chunks(stream, cuts) for x in splitter.feed(part)]
    assert all(isinstance(x, bytes | FeedError) for x in items)
    assert items and items[-1] == good
    assert validate(parse_json(items[-1]), "finish-loop").seq == 7
    assert decode_line(items[-1], "finish-loop").seq == 7


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2000), cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_arbitrary_bytes_only_ever_give_lines_or_clear_errors(data, cuts):
    splitter = LineSplitter(max_line=256)
    for part in chunks(data, cuts):
        for item in splitter.feed(part):
            if isinstance(item, FeedError):
                assert str(item)
                continue
            assert b"\n" not in item and len(item) <= 256
            try:
                decode_line(item, "gun")
            except FeedError as exc:
                assert str(exc)
    assert len(splitter.buf) <= 256 + len(data)  # bounded: never more than one line held


@settings(max_examples=500, deadline=None)
@given(value=json_values)
def test_validate_refuses_with_a_message_never_a_crash(value):
    try:
        out = validate(value, "officials")
    except FeedError as exc:
        assert str(exc)
    else:
        assert out.source == "officials"
        assert stored(out)["source"] == "officials"


def outcome(typed):
    try:
        return stored(typed())
    except FeedError as exc:
        return str(exc)


inputs = st.fixed_dictionaries(
    {"type": st.sampled_from(["passing", "gun", "clock", "call", "finish_time", "decision",
                              "teleport"])},
    optional={"seq": st.integers(-2, 2**54) | st.text(max_size=3),
              "t": st.integers(-5, 2**63) | st.floats(allow_nan=False, allow_infinity=False)
              | st.booleans(),
              "transponder": st.text(max_size=70) | st.integers(),
              "race": st.text(max_size=3) | st.none(), "pair": st.integers(-1, 1001),
              "bib": st.text(max_size=3) | st.integers(), "time_us": st.integers(-1, 10**11),
              "action": st.sampled_from(["dq", "manual_time", "void", "restart", "fly"]),
              "origin": st.sampled_from(["photo", "beam", "eye"]), "offset_us": st.integers(),
              "rate": st.floats(allow_nan=False, allow_infinity=False) | st.integers(-1, 2000),
              "source": st.sampled_from(["gun", "officials"]), "piont": st.just("p1")})


@settings(max_examples=500, deadline=None)
@given(value=inputs | json_values)
def test_the_line_decoder_and_the_validator_agree(value):
    """A TCP line (decoded in one pass) and the same object sent over HTTP (validated after
    parsing) are stored alike, or refused with the same words."""
    line = json.dumps(value).encode()
    assert outcome(lambda: decode_line(line, "gun")) == \
        outcome(lambda: validate(parse_json(line), "gun"))
