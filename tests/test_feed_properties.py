"""Property tests: the feed parser never crashes or stalls, whatever the bytes."""
from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest.feed import FeedError, LineSplitter, parse_json, validate

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
    assert validate(parse_json(items[-1]), "finish-loop")["seq"] == 7


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
                validate(parse_json(item), "gun")
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
        assert out["source"] == "officials"
