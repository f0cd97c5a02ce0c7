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
Connecting (:func:`connect`, :class:`Outage`) is :mod:`icetime.redis_connect`'s; stream
ids, entries and encodings (:func:`parse_id`, :func:`entries`, :func:`dumps`, ...)
are :mod:`icetime.streams`'; both are imported from here.
"""
from __future__ import annotations

import hashlib
from typing import Any, Literal

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from icetime import keys

# Defined apart (connecting; stream ids, entries and encodings); the services use them
# as bus.<name>.
from icetime.redis_connect import ClusterUnavailable as ClusterUnavailable
from icetime.redis_connect import Outage as Outage
from icetime.redis_connect import connect as connect
from icetime.streams import Fields as Fields
from icetime.streams import RawEntry as RawEntry
from icetime.streams import dumps as dumps
from icetime.streams import entries as entries
from icetime.streams import pack_input as pack_input
from icetime.streams import parse_id as parse_id
from icetime.streams import read_entries as read_entries
from icetime.streams import text as text
from icetime.streams import unpack_input as unpack_input
from icetime.streams import valid_id as valid_id

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

SAVE_CHECKPOINT = """
-- KEYS: checkpoint, scoring lease, staging hash
-- ARGV: lease token ('' for none), then field, value, field, value...
-- With no fields: the staging hash (written in pieces) replaces the checkpoint whole;
-- else the fields are written into the checkpoint. Only by the lease's owner: a
-- worker that lost it must not mix its older state into its successor's checkpoint.
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return redis.error_reply('NOTOWNER another worker holds the scoring lease')
end
if #ARGV == 1 then
  redis.call('RENAME', KEYS[3], KEYS[1])
  redis.call('PERSIST', KEYS[1])
  return 1
end
-- In slices: unpack() puts every argument on Lua's stack, which is bounded.
local SLICE = 1000
for i = 2, #ARGV, SLICE do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + SLICE - 1, #ARGV)))
end
return 1
"""

#: A checkpoint larger than this (bytes) is written in pieces of about this size: one
#: command of hundreds of MB (a day of 1,000,000 inputs saved whole) outlasts the
#: client's reply timeout, and holds Redis as long.
CHECKPOINT_PIECE_BYTES = 4_000_000
#: Seconds a piece-wise written checkpoint may take before its pieces expire.
CHECKPOINT_STAGING_TTL_S = 3600

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
        self._save_checkpoint = r.register_script(SAVE_CHECKPOINT)

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

    async def save_checkpoint(self, fields: dict[str, bytes], whole: bool) -> None:
        """Write scoring's checkpoint ``fields`` (services/scoring/checkpoint.py): the
        whole hash when ``whole`` (it replaces what is stored, in pieces of about
        :data:`CHECKPOINT_PIECE_BYTES` into a staging hash renamed at the end), else
        added to the stored hash in one script call. Either way the checkpoint changes
        in one step: a worker that dies mid-way leaves the last whole one. Raises
        :class:`LeaseLost` (the checkpoint untouched) and RedisError."""
        c = self.competition
        staging = keys.scoring_checkpoint_staging(c, self.lease_token or "-")
        ks = [keys.scoring_checkpoint(c), keys.scoring_lease(c), staging]
        try:
            if not whole:
                args: list[Any] = [self.lease_token]
                for k, v in fields.items():
                    args += [k, v]
                await self._save_checkpoint(keys=ks, args=args)
                return
            await self.r.delete(staging)
            for piece in _pieces(fields, CHECKPOINT_PIECE_BYTES):
                async with self.r.pipeline(transaction=True) as pipe:
                    pipe.hset(staging, mapping=piece)  # type: ignore[arg-type]
                    pipe.expire(staging, CHECKPOINT_STAGING_TTL_S)
                    await pipe.execute()
            await self._save_checkpoint(keys=ks, args=[self.lease_token])
        except ResponseError as exc:
            if str(exc).startswith("NOTOWNER"):
                raise LeaseLost(str(exc)) from None
            raise

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


def _pieces(fields: dict[str, bytes], size: int) -> list[dict[str, bytes]]:
    """``fields`` split in order into dicts of about ``size`` bytes each (a field
    larger than ``size`` alone in its piece); at least one piece."""
    out: list[dict[str, bytes]] = [{}]
    held = 0
    for k, v in fields.items():
        if out[-1] and held + len(v) > size:
            out.append({})
            held = 0
        out[-1][k] = v
        held += len(k) + len(v)
    return out
