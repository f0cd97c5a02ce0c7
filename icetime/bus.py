"""The Redis Streams bus every service shares: connection, scripts, stream ids.

Two Lua scripts make the two writes that must be atomic:

* ``append_input`` (ingest), for one input or the inputs of one read of a
  connection: drop a repeat of (source, session, seq) with the same content or of
  (source, idempotency key), refuse a repeat of (source, session, seq) with other
  content, else XADD the input to the raw log and remember its id and content
  digest, all before the sender hears "ok".
* ``publish`` (scoring): for a batch of consecutive raw inputs, XADD their race
  events (per race in input order), store a race's view as of its last one (the
  snapshot) when scoring sends one (at a cadence: :mod:`icetime.snapshot`), record
  each input's verdict (officials' stream and its verdict key), record the last
  input they answer (the progress mark), and XACK them all; all only while the
  worker holds the competition's scoring lease (its token). A scoring worker that
  dies anywhere in between has either published all of a batch's output (and
  acknowledged it) or none of it.

A third, ``store_snapshot``, stores a race's snapshot built apart from the publish
(:mod:`services.scoring.snapshotter`): only when newer than the stored one.
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal, cast

import msgpack
import msgspec
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import (
    CrossSlotTransactionError,
    InvalidPipelineStack,
    RedisClusterException,
    RedisError,
    ResponseError,
)

from icetime import keys

APPEND_INPUT = """
-- KEYS: raw, seen, stats, source-seq, then per input its idempotency key
-- ARGV: per input: dedupe field, source-seq field, seq, payload, content digest,
--       idempotency key's lifetime (s; '' for none)
-- Inputs are taken in order (a repeat of an earlier one of the same call is its
-- duplicate). A repeat of the dedupe field with the same content is a duplicate (1);
-- with other content it is a conflict (2), for ingest to refuse: a reused seq must never
-- stand for a new input, nor drop one silently. A repeat of the idempotency key is a
-- duplicate. Returns (id, what) per input, flat.
local counts = {accepted = 0, duplicate = 0}
local function append(k, a)
  if ARGV[a + 1] ~= '' then
    local existing = redis.call('HGET', KEYS[2], ARGV[a + 1])
    if existing then
      local sp = string.find(existing, ' ', 1, true)
      if sp and string.sub(existing, sp + 1) ~= ARGV[a + 5] then
        return string.sub(existing, 1, sp - 1), 2
      end
      counts.duplicate = counts.duplicate + 1
      return sp and string.sub(existing, 1, sp - 1) or existing, 1
    end
  end
  if ARGV[a + 6] ~= '' then
    local existing = redis.call('GET', KEYS[k])
    if existing then
      counts.duplicate = counts.duplicate + 1
      return existing, 1
    end
  end
  local id = redis.call('XADD', KEYS[1], '*', 'd', ARGV[a + 4])
  if ARGV[a + 1] ~= '' then redis.call('HSET', KEYS[2], ARGV[a + 1], id .. ' ' .. ARGV[a + 5]) end
  if ARGV[a + 6] ~= '' then redis.call('SET', KEYS[k], id, 'EX', ARGV[a + 6]) end
  counts.accepted = counts.accepted + 1
  if ARGV[a + 3] ~= '' then
    local cur = tonumber(redis.call('HGET', KEYS[4], ARGV[a + 2]) or '-1')
    if tonumber(ARGV[a + 3]) > cur then redis.call('HSET', KEYS[4], ARGV[a + 2], ARGV[a + 3]) end
  end
  return id, 0
end
local out = {}
for i = 0, #KEYS - 5 do
  local id, what = append(5 + i, i * 6)
  table.insert(out, id)
  table.insert(out, what)
end
for name, n in pairs(counts) do
  if n > 0 then redis.call('HINCRBY', KEYS[3], name, n) end
end
return out
"""

PUBLISH = """
-- KEYS: progress, races-set, raw stream, officials stream, scoring lease,
--       then per verdict: its verdict key, then per race: events, snapshot, epoch
-- ARGV: progress id ('' to leave the mark), group, n races, n verdicts,
--       verdict lifetime (s), officials maxlen, lease token ('' for none), n acks,
--       then the input ids to acknowledge, then the verdicts' json,
--       then per race: race id, epoch candidate, view json ('' to keep the stored
--       snapshot), n, events...
-- A worker whose lease another worker holds now publishes nothing (NOTOWNER).
if ARGV[7] ~= '' and redis.call('GET', KEYS[5]) ~= ARGV[7] then
  return redis.error_reply('NOTOWNER another worker holds the scoring lease')
end
local nv, na = tonumber(ARGV[4]), tonumber(ARGV[8])
local pos = 9 + na
for v = 1, nv do
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'v', ARGV[pos])
  redis.call('SET', KEYS[5 + v], ARGV[pos], 'EX', ARGV[5])
  pos = pos + 1
end
local out = {}
for r = 1, tonumber(ARGV[3]) do
  local base = 5 + nv + (r - 1) * 3
  local race, cand, view, n = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2], tonumber(ARGV[pos + 3])
  pos = pos + 4
  local epoch = redis.call('GET', KEYS[base + 3])
  if not epoch then
    epoch = cand
    redis.call('SET', KEYS[base + 3], epoch)
  end
  redis.call('SADD', KEYS[2], race)
  local last = ''
  for i = 1, n do
    last = redis.call('XADD', KEYS[base + 1], '*', 'e', ARGV[pos])
    pos = pos + 1
  end
  if last ~= '' and view ~= '' then
    redis.call('HSET', KEYS[base + 2], 'offset', last, 'view', view, 'epoch', epoch)
  end
  table.insert(out, epoch)
  table.insert(out, last)
end
if ARGV[1] ~= '' then redis.call('SET', KEYS[1], ARGV[1]) end
-- In slices: unpack() puts every argument on Lua's stack, which is bounded.
local ACK_SLICE = 1000
for i = 9, 8 + na, ACK_SLICE do
  redis.call('XACK', KEYS[3], ARGV[2], unpack(ARGV, i, math.min(i + ACK_SLICE - 1, 8 + na)))
end
return out
"""

STORE_SNAPSHOT = """
-- KEYS: snapshot, epoch, scoring lease
-- ARGV: offset (the id of the event the view stands at), view json, epoch,
--       lease token ('' for none)
-- Stores the snapshot only when it is newer than the stored one and the race's
-- stream is still the epoch it was built in: 1 stored, 0 not.
if ARGV[4] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[4] then
  return redis.error_reply('NOTOWNER another worker holds the scoring lease')
end
if redis.call('GET', KEYS[2]) ~= ARGV[3] then return 0 end
local stored = redis.call('HGET', KEYS[1], 'offset')
if stored then
  local sm, ss = string.match(stored, '^(%d+)-(%d+)$')
  local nm, ns = string.match(ARGV[1], '^(%d+)-(%d+)$')
  sm, ss, nm, ns = tonumber(sm), tonumber(ss), tonumber(nm), tonumber(ns)
  if sm > nm or (sm == nm and ss >= ns) then return 0 end
end
redis.call('HSET', KEYS[1], 'offset', ARGV[1], 'view', ARGV[2], 'epoch', ARGV[3])
return 1
"""

#: What :meth:`Bus.append_input` did with an input.
Appended = Literal["new", "duplicate", "conflict"]
APPENDED: tuple[Appended, ...] = ("new", "duplicate", "conflict")
#: Fields that may differ between two sends of one input: not part of its content.
UNSTAMPED = ("source", "session", "seq", "rx_us", "sent_us")


def seq_field(source: str, session: str | None) -> str:
    """The key a source's numbering is kept under: the source, or the source and its
    session (a decoder's boot, a replay run) when the input names one. Inputs without a
    session keep the key they always had."""
    return source if session is None else f"{source}\x00{session}"


def digest(inp: dict[str, Any]) -> str:
    """An input's content (every field but its key and stamps) as 16 hex digits, so a
    resend compares equal and a reused seq with other content does not."""
    body = sorted((k, v) for k, v in inp.items() if k not in UNSTAMPED and v is not None)
    packed = msgpack.packb(body, use_bin_type=True)
    return hashlib.blake2b(packed, digest_size=8).hexdigest()


#: Connections per process. A burst of requests (a thousand phones subscribing at
#: once) waits for a free connection instead of failing.
POOL_SIZE = 64


#: Seconds to open a connection, and to wait for any reply. The longest blocking read
#: the services make is 1 s (the fan-out's XREAD), so 5 s means a server that went
#: away without closing its sockets (a host or network failure) is noticed in 5 s
#: instead of hanging a service for as long as the kernel keeps the connection.
CONNECT_TIMEOUT_S = 2.0
REPLY_TIMEOUT_S = 5.0
#: A pooled connection idle longer than this is PINGed before it is used again.
HEALTH_CHECK_S = 10


#: The URL schemes that name a node of a Redis Cluster (the rest of the URL as for
#: ``redis://`` and ``rediss://``).
CLUSTER_SCHEMES = {"redis+cluster://": "redis://", "rediss+cluster://": "rediss://"}


class ClusterUnavailable(RedisConnectionError):
    """The cluster client could not reach a node serving a key's slot (no node
    answers, or no master serves the slot for now, as in a failover): an outage, a
    RedisError like any other, which the services' retry loops handle."""


class _Cluster(RedisCluster):
    """redis-py's cluster client, whose "cannot reach the cluster" errors are
    RedisErrors (:class:`ClusterUnavailable`) like a single server's: redis-py raises
    them as ``RedisClusterException``, which is not one."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except (CrossSlotTransactionError, InvalidPipelineStack):
            raise  # icetime's own mistake, not an outage
        except RedisClusterException as exc:
            raise ClusterUnavailable(str(exc)) from exc

    def pipeline(self, transaction: Any | None = None,
                 shard_hint: Any | None = None) -> ClusterPipeline:
        """A pipeline whose "cannot reach the cluster" errors are RedisErrors too."""
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # refuses it, as redis-py does
        # redis-py declares _event_dispatcher abstract on its base and sets it in __init__.
        return _ClusterPipeline(self, transaction)  # type: ignore[abstract]


class _ClusterPipeline(ClusterPipeline):
    """redis-py's cluster pipeline, raising :class:`ClusterUnavailable` where it raises
    ``RedisClusterException`` for an unreachable cluster: its execute() does not go
    through :meth:`_Cluster.execute_command`, and the services' retry loops catch
    RedisError (without this, the scoring pool's announcement would kill the worker)."""

    async def execute(self, raise_on_error: bool = True,
                      allow_redirections: bool = True) -> list[Any]:
        try:
            return await super().execute(raise_on_error, allow_redirections)
        except (CrossSlotTransactionError, InvalidPipelineStack):
            raise
        except RedisClusterException as exc:
            raise ClusterUnavailable(str(exc)) from exc


def connect(url: str) -> aioredis.Redis:
    """An asyncio client for ``redis://``, ``rediss://`` or ``unix://`` URLs, or for a
    Redis Cluster through any of its nodes (``redis+cluster://host:port``,
    ``rediss+cluster://``): redis-py's ``RedisCluster``, which finds the other nodes,
    sends each command to the master of its keys' slot and follows a failover.

    A command that fails on the connection (Redis down, restarted, unreachable, a
    cluster master gone) raises ``redis.exceptions.ConnectionError`` or ``TimeoutError``
    (both RedisError) at once: the client never retries by itself, because the PUBLISH
    script must not run twice; each service has its own retry loop (:class:`Outage`
    logs it). Broken pooled connections are replaced when next taken from the pool; a
    cluster client learns the new layout (which node now serves a slot) on the next
    command after such an error."""
    options: dict[str, Any] = {
        "decode_responses": False, "health_check_interval": HEALTH_CHECK_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S, "socket_timeout": REPLY_TIMEOUT_S,
        "retry": Retry(NoBackoff(), 0)}
    for scheme, plain in CLUSTER_SCHEMES.items():
        if url.startswith(scheme):
            # The cluster client speaks every command the services use with the single
            # server's signatures; typed as one so the services need no second path.
            cluster = _Cluster.from_url(plain + url[len(scheme):],
                                            max_connections=POOL_SIZE, **options)
            return cast(aioredis.Redis, cluster)
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=POOL_SIZE, timeout=20, **options)
    return aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes both


class Outage:
    """The log of a service's Redis outages: one WARNING when Redis first fails, one
    INFO "recovered" (with how long it was away) at the first success after that, and
    nothing in between, however often the service retries. No traceback: a Redis that
    is away is an expected condition, and its error message says all there is."""

    def __init__(self, logger: logging.Logger, what: str,
                 on_change: Callable[[bool], None] | None = None) -> None:
        self.log = logger
        self.what = what
        #: time.monotonic() when the current outage began; None while Redis answers.
        self.since: float | None = None
        #: Called with True when an outage begins and False when it ends (a broadcast
        #: node tells its clients the data is stale).
        self.on_change = on_change

    def failed(self, exc: BaseException, doing: str = "") -> None:
        """A Redis call failed with ``exc`` (while ``doing`` something, for the log)."""
        if self.since is None:
            self.since = time.monotonic()
            if self.on_change is not None:
                self.on_change(True)
            self.log.warning("%s: Redis unavailable%s (%s); retrying until it is back",
                             self.what, f" while {doing}" if doing else "", exc)
        else:
            self.log.debug("%s: Redis still unavailable: %s", self.what, exc)

    def ok(self) -> None:
        """A Redis call succeeded."""
        if self.since is not None:
            self.log.info("%s: Redis recovered after %.1f s", self.what,
                          time.monotonic() - self.since)
            self.since = None
            if self.on_change is not None:
                self.on_change(False)


def parse_id(stream_id: str | bytes) -> tuple[int, int]:
    """A stream id as a comparable (ms, seq) tuple."""
    if isinstance(stream_id, bytes):
        stream_id = stream_id.decode()
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


#: A stream entry as redis-py types it: (id, fields), either part None for an entry
#: deleted while pending. The client speaks bytes (``decode_responses=False``), but its
#: types allow str too.
RawEntry = tuple[bytes | str | None, dict[bytes | str, bytes | str] | None]


def text(value: bytes | str | None) -> str:
    """A reply value as text (UTF-8); None (a missing key) as ``""``."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


#: A stream entry's fields, as the bus writes them (``{b"d": input}``, ``{b"e": event}``).
Fields = dict[bytes, bytes]


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def entries(reply: Iterable[RawEntry] | None) -> list[tuple[str, Fields | None]]:
    """An XRANGE or XREVRANGE reply as (stream id, fields) pairs, in order; the fields
    are None for an entry deleted while pending.

    Raises ValueError for an entry without an id, which Redis never sends."""
    out: list[tuple[str, Fields | None]] = []
    for sid, fields in reply or ():
        if sid is None:
            raise ValueError("a stream entry without an id")
        out.append((text(sid), None if fields is None else
                    {_bytes(k): _bytes(v) for k, v in fields.items()}))
    return out


def read_entries(reply: list[list[Any]] | dict[Any, Any] | None
                 ) -> list[tuple[str, Fields | None]]:
    """An XREAD or XREADGROUP reply (RESP2: ``[[stream, entries], ...]``, the protocol
    :func:`connect` speaks) as the pairs of :func:`entries`, stream after stream.

    Raises TypeError for a RESP3 reply (a dict)."""
    if isinstance(reply, dict):
        raise TypeError("a RESP3 stream reply: the bus speaks RESP2")
    return [pair for _stream, chunk in reply or () for pair in entries(chunk)]


def valid_id(stream_id: Any) -> bool:
    try:
        parse_id(str(stream_id))
        return True
    except ValueError:
        return False


def pack_input(inp: dict[str, Any]) -> bytes:
    data: bytes = msgpack.packb(inp, use_bin_type=True)
    return data


def unpack_input(data: bytes) -> dict[str, Any]:
    obj: dict[str, Any] = msgpack.unpackb(data, raw=False)
    return obj


#: msgspec's encoder: what ``json.dumps`` with compact separators and UTF-8 writes,
#: about 100x faster on a 10,000-skater view (the json module's took 90 ms for a 300 KB
#: event on this machine, msgspec under 1 ms).
_ENCODER = msgspec.json.Encoder()


def dumps(obj: Any) -> str:
    """Compact JSON (UTF-8, not ASCII-escaped), the encoding of every event and
    WebSocket frame. Raises TypeError for a value JSON has no form for."""
    try:
        return _ENCODER.encode(obj).decode()
    except msgspec.EncodeError as exc:
        raise TypeError(str(exc)) from None


class LeaseLost(RedisError):
    """The publishing worker's scoring lease is another worker's now: it must stop."""


class Bus:
    """The scripts registered on one connection, writing the keys of one competition
    (every key a script touches is in that competition's slot, so it runs on a cluster)."""

    def __init__(self, r: aioredis.Redis, competition: str, lease_token: str = "") -> None:
        self.r = r
        self.competition = competition
        #: The scoring lease's token of the worker publishing ("": publish unchecked).
        self.lease_token = lease_token
        self._append = r.register_script(APPEND_INPUT)
        self._publish = r.register_script(PUBLISH)
        self._store_snapshot = r.register_script(STORE_SNAPSHOT)

    async def append_input(self, inp: dict[str, Any], key: str = "",
                           key_ttl_s: int = 0) -> tuple[str, Appended]:
        """Append an accepted input to the raw log once: (stream id, what happened).

        The key is (source, session, seq). A repeat of the key is ``"duplicate"`` when
        its content (:func:`digest`) is the same, and ``"conflict"`` when it differs (the
        id is then the stored input's); nothing is appended for either. Without a
        ``seq``, the input's (source, ``key``) makes a repeat a duplicate for
        ``key_ttl_s`` seconds (``key`` "": always new). Raises RedisError."""
        return (await self.append_inputs([(inp, key, key_ttl_s)]))[0]

    async def append_inputs(self, inputs: list[tuple[dict[str, Any], str, int]]
                            ) -> list[tuple[str, Appended]]:
        """:meth:`append_input` for each (input, key, key_ttl_s) in order, in one
        atomic script call (a repeat of an earlier input of the list is its duplicate).
        Raises RedisError (then none was appended)."""
        if not inputs:
            return []
        c = self.competition
        ks = [keys.raw_stream(c), keys.seen_hash(c), keys.ingest_stats(c), keys.source_seq(c)]
        args: list[Any] = []
        for inp, key, key_ttl_s in inputs:
            seq = inp.get("seq")
            where = seq_field(inp["source"], inp.get("session"))
            use_key = seq is None and bool(key) and key_ttl_s > 0
            ks.append(keys.idempotency_key(c, inp["source"], key if use_key else ""))
            args += [f"{where}\x00{seq}" if seq is not None else "", where,
                     "" if seq is None else str(seq), pack_input(inp), digest(inp),
                     str(key_ttl_s) if use_key else ""]
        res = await self._append(keys=ks, args=args)
        return [(res[i].decode(), APPENDED[int(res[i + 1])]) for i in range(0, len(res), 2)]

    async def store_snapshot(self, race: str, epoch: str, offset: str,
                             view: bytes | str) -> bool:
        """Store ``view`` (JSON) as the snapshot of ``race`` at its event ``offset`` of
        stream epoch ``epoch``, unless the stored snapshot is as new or newer or the
        race's stream is now of another epoch (then the view is stale: False). A
        snapshot built off the publish script (:mod:`services.scoring.snapshotter`)
        may come back after a newer one was stored. Raises :class:`LeaseLost`
        (nothing written) and RedisError."""
        c = self.competition
        try:
            res = await self._store_snapshot(
                keys=[keys.snapshot_key(c, race), keys.epoch_key(c, race),
                      keys.scoring_lease(c)],
                args=[offset, view, epoch, self.lease_token])
        except ResponseError as exc:
            if str(exc).startswith("NOTOWNER"):
                raise LeaseLost(str(exc)) from None
            raise
        return bool(res)

    async def publish(self, input_id: str, races: list[tuple[str, str, str, list[str]]],
                      verdict: str = "") -> list[tuple[str, str]]:
        """:meth:`publish_batch` for one input ``input_id`` with its ``verdict`` ("":
        none)."""
        return await self.publish_batch(input_id, [input_id],
                                        [(input_id, verdict)] if verdict else [], races)

    async def publish_batch(self, progress: str, acks: list[str],
                            verdicts: list[tuple[str, str]],
                            races: list[tuple[str, str, str, list[str]]]
                            ) -> list[tuple[str, str]]:
        """Publish the output of a batch of raw inputs atomically, in one script call:
        per race (race, epoch candidate, view json, [event json]) with the events in
        input order (the view "" keeps the race's stored snapshot where it stands,
        else it is stored at the race's last event), each (input id, verdict json)
        (officials' stream, in this order, and the input's verdict key), the progress
        mark ``progress`` (the batch's last input with output; "" leaves the mark),
        and acknowledge ``acks`` in the scoring group.

        Returns (epoch, last event id) per race, in order. Raises :class:`LeaseLost`
        (nothing written) when the competition's scoring lease does not hold this
        bus's ``lease_token``, and RedisError.
        """
        c = self.competition
        ks = [keys.scoring_progress(c), keys.races_set(c), keys.raw_stream(c),
              keys.officials_stream(c), keys.scoring_lease(c)]
        ks += [keys.verdict_key(c, sid) for sid, _ in verdicts]
        args: list[Any] = [progress, keys.SCORING_GROUP, len(races), len(verdicts),
                           keys.VERDICT_TTL_S, keys.OFFICIALS_MAXLEN, self.lease_token,
                           len(acks), *acks, *(v for _, v in verdicts)]
        for race, epoch, view, events in races:
            ks += [keys.events_stream(c, race), keys.snapshot_key(c, race), keys.epoch_key(c, race)]
            args += [race, epoch, view, len(events), *events]
        try:
            res = await self._publish(keys=ks, args=args)
        except ResponseError as exc:
            if str(exc).startswith("NOTOWNER"):
                raise LeaseLost(str(exc)) from None
            raise
        return [(res[i].decode(), res[i + 1].decode()) for i in range(0, len(res), 2)]
