"""Every line gets an answer: hostile bytes over the real TCP and HTTP feeds (a real
redis-server behind them) end in a clear refusal that is counted and kept in the rejects
stream; the connection stays usable, a resent poison line is refused again, and a valid
input right after is stored. Also: a hello while storage is away gets a retry answer,
and a token in a URL is refused on every HTTP endpoint."""
from __future__ import annotations

import asyncio
import io
import itertools
import json

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icetime import bus, keys
from icetime.feedclient import FeedClient
from icetime.keys import DEFAULT_COMPETITION as MAIN
from services.ingest.core import REJECT_KEEP_BYTES
from services.ingest.feed import MAX_ERROR, MAX_LINE

from .conftest import TOKENS, Stack, make_settings

# ---------------------------------------------------------------- hostile JSON
surrogates = st.sampled_from([rb'"\ud800"', rb'"\udfff"', rb'"a\ud83db"', rb'"\udc00\ud800"',
                              b'"\xed\xa0\x80"'])  # the last: a surrogate encoded in UTF-8
nesting = st.one_of(
    st.just(b"[" * 10_000 + b"]" * 10_000),
    st.just(b'{"a":' * 10_000 + b"1" + b"}" * 10_000),
    st.integers(1, 10_000).flatmap(lambda n: st.sampled_from([
        b"[" * n + b"]" * n, b'{"a":' * n + b"[]" + b"}" * n, b"[" * n])))
huge_numbers = st.one_of(
    st.sampled_from([b"1e400", b"-1e400", b"1e-400", b"9" * 5_000, b"-" + b"9" * 4_000,
                     str(2**200).encode(), str(-(2**200)).encode(), str(2**64).encode()]),
    st.integers(2**53, 2**300).map(lambda i: str(i).encode()))
not_numbers = st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"nan", b"inf", b"0x10",
                               b"01", b"1.", b"+1", b".5", b"1e", b"--1"])
invalid_utf8 = st.sampled_from([b"\xff", b"\xfe\xff", b"\xc3", b"\xc0\xaf", b"\xf4\x90\x80\x80",
                                b"\xe2\x82", b"\x80"]).map(lambda b: b'"a' + b + b'b"')
nul = st.sampled_from([b'"a\x00b"', b"\x00", rb'"\u0000"', b'"passing\x00"', b"1\x00"])
enormous_strings = st.sampled_from([100, 70_000, 1_000_000, 3_000_000]).map(
    lambda n: b'"' + b"x" * n + b'"')
plain = st.one_of(  # a number where a string goes and the other way round
    st.integers(-(2**63), 2**63).map(lambda i: str(i).encode()),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: repr(f).encode()),
    st.text(max_size=20).map(lambda s: json.dumps(s).encode()),
    st.sampled_from([b"true", b"null", b"[]", b"{}", b'"1"', b'"-5"', b'""']))
hostile_values = st.one_of(surrogates, nesting, huge_numbers, not_numbers, invalid_utf8, nul,
                           enormous_strings, plain)
FIELDS = ["type", "seq", "transponder", "t", "point", "race", "pair", "source", "rate",
          "time_us", "action", "offset_us", "sent_us", "skaters"]
BASE = {"type": b'"passing"', "seq": b"1", "transponder": b'"4100051"', "t": b"1000000"}


def as_line(value: bytes, where: str, field: str) -> bytes:
    """``value`` as a whole line, as the value of ``field`` in an input, or as a key."""
    if where == "line":
        return value
    fields = {json.dumps(k).encode(): v for k, v in BASE.items()}
    if where == "key":  # not a string there is not JSON either
        fields[value] = b"1"
    else:
        fields[json.dumps(field).encode()] = value
    return b"{" + b",".join(k + b":" + v for k, v in fields.items()) + b"}"


hostile_lines = st.builds(as_line, hostile_values, st.sampled_from(["line", "value", "key"]),
                          st.sampled_from(FIELDS)).filter(
    lambda line: line.strip() and b"\n" not in line and b"\r" not in line)

# One fresh seq per valid input sent after a poison line, across examples (far from the
# small numbers a hostile line may carry as its own seq).
_seqs = itertools.count(2**52)
HOSTILE = settings(max_examples=25, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.function_scoped_fixture,
                                          HealthCheck.too_slow, HealthCheck.data_too_large])


def valid_passing() -> dict[str, object]:
    return {"type": "passing", "seq": next(_seqs), "transponder": "4100051",
            "t": 1_700_000_000_000_000}


async def counters(r) -> tuple[int, int]:
    stats = await r.hgetall(keys.ingest_stats(MAIN))
    return int(stats.get(b"rejected", 0)), await r.xlen(keys.rejects_stream(MAIN))


def check_refusal(reply: object) -> str:
    """A refusal as the docs give it: ``{"ok": false, "error": "..."}``, short, plain words,
    and not the catch-all for errors nobody foresaw."""
    assert isinstance(reply, dict) and reply["ok"] is False, reply
    error = reply["error"]
    assert isinstance(error, str) and error and len(error) <= MAX_ERROR
    assert not error.startswith("ingest could not read"), error
    return error


async def last_rejects(r, n: int) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in reversed(await r.xrevrange(keys.rejects_stream(MAIN), count=n))]


async def stored_seq(r, stream_id: str) -> int:
    [(_, fields)] = await r.xrange(keys.raw_stream(MAIN), stream_id, stream_id)
    return int(bus.unpack_input(fields[b"d"])["seq"])


class Line:
    """One TCP connection to the feed: send a line, read its one reply."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, token: str | None = None) -> Line:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=MAX_LINE)
        conn = cls(reader, writer)
        if token is not None:
            assert (await conn.ask(json.dumps({"type": "hello", "token": token}).encode()))["ok"]
        return conn

    async def ask(self, line: bytes) -> dict[str, object]:
        self.writer.write(line + b"\n")
        await self.writer.drain()
        reply = await asyncio.wait_for(self.reader.readline(), 10)
        assert reply.endswith(b"\n"), "the feed closed the connection without a reply"
        out: dict[str, object] = json.loads(reply)
        return out

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@HOSTILE
@given(line=hostile_lines)
async def test_tcp_answers_every_hostile_line_and_carries_on(stack, redis_client, line):
    port = stack.settings.ingest_tcp_port
    conn = await Line.open(port, TOKENS["finish-loop"])
    try:
        before = await counters(redis_client)
        first = await conn.ask(line)
        if first["ok"]:  # a hostile value that happens to be valid (a string as 'point')
            assert (await conn.ask(line))["ok"]
        else:
            error = check_refusal(first)
            assert await conn.ask(line) == first, "a resent poison line is refused alike"
            assert await counters(redis_client) == (before[0] + 2, before[1] + 2)
            for kept in await last_rejects(redis_client, 2):
                assert kept[b"source"] == b"finish-loop" and kept[b"reason"] == error.encode()
                assert kept[b"raw"] == line[:REJECT_KEEP_BYTES]
        good = valid_passing()
        reply = await conn.ask(json.dumps(good).encode())
        assert reply["ok"] and "duplicate" not in reply, reply
        assert await stored_seq(redis_client, str(reply["id"])) == good["seq"]
    finally:
        await conn.close()
    # The same line as a connection's first: answered too (a hello is JSON with a token).
    conn = await Line.open(port)
    try:
        check_refusal(await conn.ask(line))
    finally:
        await conn.close()


@HOSTILE
@given(line=hostile_lines)
async def test_http_answers_every_hostile_body_and_carries_on(stack, redis_client, line):
    url = f"http://127.0.0.1:{stack.settings.ingest_http_port}"
    auth = {"Authorization": f"Bearer {TOKENS['officials']}"}
    async with aiohttp.ClientSession() as s:
        first = None
        for _ in range(2):  # a resent poison body is answered alike
            before = await counters(redis_client)
            async with s.post(url + "/feed", data=io.BytesIO(line), headers=auth) as resp:
                assert resp.status == 200, await resp.text()
                reply = await resp.json()
            results = reply if isinstance(reply, list) else [reply]
            refused = [check_refusal(x) for x in results if not x["ok"]]
            assert await counters(redis_client) == (before[0] + len(refused),
                                                    before[1] + len(refused))
            assert first is None or reply == first
            first = reply
        before = await counters(redis_client)
        async with s.post(url + "/api/startlist", data=io.BytesIO(line),
                          headers=auth) as resp:
            reply = await resp.json()
            if resp.status == 200:  # '{}' is an empty start list
                assert reply["ok"]
            else:
                assert resp.status == 400, reply
                check_refusal(reply)
                assert await counters(redis_client) == (before[0] + 1, before[1] + 1)
                [kept] = await last_rejects(redis_client, 1)
                assert kept[b"source"] == b"officials"
                assert kept[b"raw"] == line[:REJECT_KEEP_BYTES]
        good = valid_passing()
        async with s.post(url + "/feed", json=good, headers=auth) as resp:
            reply = await resp.json()
    assert reply["ok"] and "duplicate" not in reply, reply
    assert await stored_seq(redis_client, reply["id"]) == good["seq"]


@pytest.mark.parametrize("line", [
    rb'{"type":"passing","seq":1,"transponder":"\ud800","t":1000}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"type":"passing","seq":' + b"9" * 5_000 + b',"transponder":"1","t":1}',
    b'{"type":"hello","token":["t-gun"]}',
    b'{"type":"startlist","skaters":[{"bib":"1","name":"A","x":%d}],"races":[]}' % 2**200,
    b'{"type":"passing","seq":1,"' + b"k" * 3_000_000 + b'":1,"transponder":"1","t":1}',
], ids=["surrogate", "100k-nesting", "5000-digits", "token-a-list", "startlist-2**200",
        "3MB-field-name"])
async def test_the_issues_poison_lines_are_refused_and_the_next_line_served(
        stack, redis_client, line):
    """The lines that closed connections (and gave HTTP 500) before, one by one."""
    conn = await Line.open(stack.settings.ingest_tcp_port)
    try:
        check_refusal(await conn.ask(line))  # as a hello
    finally:
        await conn.close()
    conn = await Line.open(stack.settings.ingest_tcp_port, TOKENS["gun"])
    try:
        for _ in range(3):
            check_refusal(await conn.ask(line))
        good = {"type": "gun", "seq": next(_seqs), "race": "r", "pair": 1, "t": 5}
        assert (await conn.ask(json.dumps(good).encode()))["ok"]
    finally:
        await conn.close()
    async with aiohttp.ClientSession() as s:
        async with s.post(f"http://127.0.0.1:{stack.settings.ingest_http_port}/feed",
                          data=io.BytesIO(line),
                          headers={"Authorization": f"Bearer {TOKENS['gun']}"}) as resp:
            assert resp.status == 200
            reply = await resp.json()
    assert all(not x["ok"] for x in (reply if isinstance(reply, list) else [reply]))


async def test_empty_and_oversize_http_bodies_are_refused_and_counted(stack, redis_client):
    url = f"http://127.0.0.1:{stack.settings.ingest_http_port}"
    auth = {"Authorization": f"Bearer {TOKENS['gun']}"}
    async with aiohttp.ClientSession() as s:
        for path in ("/feed", "/api/startlist"):
            async with s.post(url + path, data=b" \n", headers=auth) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"].startswith("empty body")
            async with s.post(url + path, data=io.BytesIO(b"x" * (MAX_LINE + 1)),
                              headers=auth) as resp:
                assert resp.status == 413
                assert await resp.json() == {"ok": False,
                                             "error": f"body longer than {MAX_LINE} bytes"}
    assert await counters(redis_client) == (4, 4)


# ---------------------------------------------------------------- storage away
async def test_a_hello_while_storage_is_away_gets_a_retry_answer(redis_server, tmp_path):
    """redis-server stopped: a source's hello is answered with ``retry`` (never a silent
    close) and the connection stays open; once redis-server is back, the same connection
    says hello again and is served, and a FeedClient that started sending during the
    outage gets its input stored."""
    url = redis_server.url
    s = Stack(make_settings(url, str(tmp_path / "data")), url)
    await s.start("ingest")  # the other services are not what this test is about
    port = s.settings.ingest_tcp_port
    try:
        early = FeedClient("127.0.0.1", port, TOKENS["gun"])
        assert (await early.send({"type": "gun", "seq": 1, "race": "r", "pair": 1, "t": 5}))["ok"]
        await early.close()
        redis_server.stop()
        conn = await Line.open(port)
        hello = json.dumps({"type": "hello", "token": TOKENS["gun"]}).encode()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        reply = await conn.ask(hello)
        answered_in = loop.time() - t0
        assert reply == {"ok": False, "error": "storage unavailable; send the hello again",
                         "retry": True}
        assert answered_in < 5, answered_in
        late = FeedClient("127.0.0.1", port, TOKENS["gun"], retry_for=30)
        sending = asyncio.create_task(late.send(
            {"type": "gun", "seq": 2, "race": "r", "pair": 2, "t": 6}))
        await asyncio.sleep(0.5)
        assert not sending.done()
        redis_server.start()
        for _ in range(100):  # the client's pool reconnects on its next command
            reply = await conn.ask(hello)
            if reply["ok"]:
                break
            assert reply.get("retry"), reply
            await asyncio.sleep(0.1)
        assert reply == {"ok": True, "source": "gun", "role": "gun", "last_seq": 1}
        stored = await conn.ask(b'{"type":"gun","seq":3,"race":"r","pair":3,"t":7}')
        assert stored["ok"] and stored["seq"] == 3
        assert (await asyncio.wait_for(sending, 30))["ok"]
        await late.close()
        await conn.close()
    finally:
        await s.close()


# ---------------------------------------------------------------- tokens in URLs
@pytest.mark.parametrize("method,path", [("POST", "/feed"), ("POST", "/api/startlist"),
                                         ("GET", "/api/stats"), ("GET", "/healthz")])
async def test_a_token_in_the_url_is_refused_on_every_endpoint(stack, redis_client, method,
                                                               path):
    url = f"http://127.0.0.1:{stack.settings.ingest_http_port}{path}"
    body = json.dumps(valid_passing()).encode()
    header = {"Authorization": f"Bearer {TOKENS['finish-loop']}"}
    async with aiohttp.ClientSession() as s:
        for query, headers in (("?token=t-loop", {}), ("?token=t-loop", header),
                               ("?access_token=t-loop", {}), ("?x=1&token=nope", header)):
            async with s.request(method, url + query, data=body, headers=headers) as resp:
                assert resp.status == 400
                reply = await resp.json()
            assert reply["ok"] is False
            assert "Authorization: Bearer" in reply["error"] and "URL" in reply["error"]
        if method == "POST":  # the header alone is served
            async with s.request(method, url, data=body, headers=header) as resp:
                assert resp.status in (200, 400)  # a passing is no start list
            async with s.request(method, url, data=body) as resp:
                assert resp.status == 401
                assert "Authorization: Bearer" in (await resp.json())["error"]
    assert await redis_client.xlen(keys.raw_stream(MAIN)) == (1 if path == "/feed" else 0)
    rejects = await redis_client.xrange(keys.rejects_stream(MAIN))
    assert [f[b"reason"] for _, f in rejects][:4] == [b"a token in the URL"] * 4
    assert not any(b"t-loop" in v for _, f in rejects for v in f.values())
