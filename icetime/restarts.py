"""Restarts made visible: scoring's rebuilds and the supervisor's restarts of services,
kept in Redis so that ``GET /api/health`` (broadcast) and the officials' desk (ingest)
show them, not only the supervisor's log (docs/protocol.md, ``GET /api/health``).

* Scoring's counters hash (:func:`icetime.keys.scoring_stats`) gets
  ``started_at_us`` (when the worker scoring now began, Unix µs), ``rebuilds`` (how
  many times a worker rebuilt the engine from the raw log since the data began: a
  crash and restart, a Redis outage, a takeover; a start with nothing scored yet is
  none) and ``last_rebuild``, a JSON :class:`Rebuild`.
* The supervisor's restarts of each service are a hash
  (:func:`icetime.keys.service_restarts`): service name -> JSON :class:`ServiceRestart`.
  The supervisor empties it when it starts: it counts the restarts of its own run.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import msgspec

from icetime import keys

if TYPE_CHECKING:
    # Types only: the supervisor imports this module, and `icetime --help` must not
    # wait for redis-py to load.
    import redis
    import redis.asyncio as aioredis

#: The field of scoring's counters hash holding the last :class:`Rebuild` (JSON).
LAST_REBUILD = "last_rebuild"


class Rebuild(msgspec.Struct, frozen=True):
    """One rebuild of scoring's engine: begun ``at_us`` (Unix µs), ``source``
    ``"checkpoint"`` (the saved engine, then the inputs after it) or ``"start"`` (the
    whole raw log), ``checkpoint`` the raw input id the checkpoint stood at (None from
    the start), ``inputs`` replayed, ``seconds`` it took, by ``worker`` (lease owner)."""

    at_us: int
    source: str
    checkpoint: str | None
    inputs: int
    seconds: float
    worker: str


class ServiceRestart(msgspec.Struct, frozen=True):
    """A service's restarts by the supervisor: how many (``restarts``), the last one
    ``at_us`` (Unix µs), the dead process's ``exit_code`` (negative: killed by that
    signal) and how long it had run (``ran_s``)."""

    restarts: int
    at_us: int
    exit_code: int
    ran_s: float


async def scoring_started(r: aioredis.Redis, competition: str, at_us: int) -> None:
    """Record that a scoring worker began (``started_at_us``); ``rebuilds`` reads 0
    until the first. Raises RedisError."""
    async with r.pipeline(transaction=False) as pipe:
        pipe.hset(keys.scoring_stats(competition), "started_at_us", at_us)
        pipe.hincrby(keys.scoring_stats(competition), "rebuilds", 0)
        await pipe.execute()


async def scoring_rebuilt(r: aioredis.Redis, competition: str, rebuild: Rebuild) -> None:
    """Count a rebuild and keep it as ``last_rebuild``. Raises RedisError."""
    async with r.pipeline(transaction=False) as pipe:
        pipe.hincrby(keys.scoring_stats(competition), "rebuilds", 1)
        pipe.hset(keys.scoring_stats(competition), LAST_REBUILD, msgspec.json.encode(rebuild))
        await pipe.execute()


async def scoring_health(r: aioredis.Redis, competition: str) -> dict[str, Any]:
    """Scoring's counters (ints) with ``last_rebuild`` as an object (absent before the
    first rebuild). Raises RedisError, ValueError for a counter that is no integer."""
    out: dict[str, Any] = {}
    for k, v in (await r.hgetall(keys.scoring_stats(competition))).items():
        name = _text(k)
        out[name] = json.loads(v) if name == LAST_REBUILD else int(v)
    return out


async def service_restarts(r: aioredis.Redis, competition: str) -> dict[str, Any]:
    """The supervisor's restarts, per service name: ``{restarts, at_us, exit_code,
    ran_s}``; empty when none (or no supervisor). Raises RedisError, ValueError."""
    return {_text(k): json.loads(v) for k, v in
            (await r.hgetall(keys.service_restarts(competition))).items()}


async def desk_health(r: aioredis.Redis, competition: str) -> dict[str, Any]:
    """What the desk shows of restarts: ``{"scoring": {started_at_us, rebuilds,
    last_rebuild}, "service_restarts": {...}}`` (a field not recorded yet is null).
    Raises RedisError, ValueError."""
    started, rebuilds, last = await r.hmget(keys.scoring_stats(competition),
                                            ["started_at_us", "rebuilds", LAST_REBUILD])
    return {"scoring": {"started_at_us": None if started is None else int(started),
                        "rebuilds": int(rebuilds or 0),
                        LAST_REBUILD: None if last is None else json.loads(last)},
            "service_restarts": await service_restarts(r, competition)}


def restarts_cleared(r: redis.Redis, competition: str) -> None:
    """The supervisor starts: no restart of its own yet. Raises RedisError."""
    r.delete(keys.service_restarts(competition))


def service_restarted(r: redis.Redis, competition: str, name: str,
                      restart: ServiceRestart) -> None:
    """Record the supervisor's latest restart of service ``name``. Raises RedisError."""
    r.hset(keys.service_restarts(competition), name, msgspec.json.encode(restart))


def _text(k: bytes | str) -> str:
    return k.decode() if isinstance(k, bytes) else k
