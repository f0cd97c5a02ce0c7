"""Prometheus metrics for the operations crew: ``GET /metrics`` on the broadcast node.

One scrape target shows the whole chain. Ingest and scoring already keep their
counters in Redis (the hashes behind ``/api/health``) and every decoder link its
health; the broadcast node reads them at each scrape, so no service needs a listener
of its own (scoring has none) and the figures are the same ones ``/api/health`` and
the monitor show. The node adds what only it knows: its clients, its frames, and the
per-hop latency of every event it fans out, from the ``hops`` stamps each event
carries (source → ingest → scoring → broadcast). docs/results.md lists every metric.

Redis-backed metrics are the system's (every node shows the same values); the node's
own (clients, frames, latencies) are per node: scrape every node, sum across them.
"""
from __future__ import annotations

import json
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from icetime import bus, keys

#: Latency buckets, seconds: a hop takes well under a millisecond to about a second.
BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
#: The hops of an event, as (label, from stamp, to stamp); ``broadcast`` is when the
#: node framed it.
HOPS = (("source_ingest", "source_us", "ingest_us"),
        ("ingest_scoring", "ingest_us", "scoring_us"),
        ("scoring_broadcast", "scoring_us", "broadcast_us"),
        ("source_broadcast", "source_us", "broadcast_us"))
#: How many of the latest events the health's end-to-end latency is taken over.
RECENT_EVENTS = 50
#: Ingest counters that are not inputs (everything else in the hash is an outcome).
SCORING_PUBLISHED = "published_events"
#: Fields of scoring's counters hash that are no input outcome (icetime/restarts.py).
SCORING_LIFE = ("rebuilds", "started_at_us")
HOPS_KEY = '"hops":'
#: Decoder health fields exported as counters (they only grow while the link lives).
DECODER_COUNTERS = ("passings", "duplicates", "refused", "damaged", "records", "failures",
                    "connects", "resend_requests", "missing_given_up", "jumps")


def hops_of(event_json: str) -> dict[str, Any] | None:
    """The ``hops`` object of a stored event without decoding the whole event: scoring
    writes it last (``{…,"hops":{…}}``). None when it is not there."""
    at = event_json.rfind(HOPS_KEY)
    if at < 0:
        return None
    try:
        hops: dict[str, Any] = json.loads(event_json[at + len(HOPS_KEY):-1])
    except ValueError:
        return None
    return hops


class Snapshot:
    """What the last scrape read from Redis; the collector reports it."""

    def __init__(self) -> None:
        self.ingest: dict[str, int] = {}
        self.scoring: dict[str, int] = {}
        self.decoders: list[dict[str, Any]] = []
        self.raw_length = 0
        self.redis_up = 0


class Metrics:
    """This node's registry: the hop histograms it observes, and a collector reporting
    the Redis counters read for each scrape (:meth:`scrape`) and the node's own state
    (``node_stats()``: :meth:`services.broadcast.fanout.Hub.stats` plus extras)."""

    def __init__(self, r: aioredis.Redis, node_stats: Callable[[], dict[str, Any]],
                 competition: str = keys.DEFAULT_COMPETITION) -> None:
        self.r = r
        #: The competition whose counters a scrape reads (the node's own).
        self.competition = competition
        self.node_stats = node_stats
        self.registry = CollectorRegistry()
        self.latency = Histogram("icetime_hop_latency_seconds",
                                 "Time an event took per hop of the chain (events this node "
                                 "fanned out)", ["hop"], buckets=BUCKETS,
                                 registry=self.registry)
        self.snapshot = Snapshot()
        #: End to end (the source's send, else ingest's receipt, to this node's frame),
        #: µs, of the latest events: what the monitor shows as the feed's latency.
        self.recent: deque[int] = deque(maxlen=RECENT_EVENTS)
        self.registry.register(_Collector(self))

    def observe(self, event_json: str, broadcast_us: int) -> None:
        """Record the hops of one event this node framed at ``broadcast_us``."""
        hops = hops_of(event_json)
        if not hops:
            return
        stamps = {**hops, "broadcast_us": broadcast_us}
        for hop, start, end in HOPS:
            a, b = stamps.get(start), stamps.get(end)
            if isinstance(a, int) and isinstance(b, int):
                self.latency.labels(hop).observe(max(0, b - a) / 1e6)
        # A JSON source that sends no ``sent_us`` has no source stamp: from ingest then.
        start_us = stamps.get("source_us") or stamps.get("ingest_us")
        if isinstance(start_us, int):
            self.recent.append(max(0, broadcast_us - start_us))

    def recent_latency(self) -> dict[str, Any]:
        """The latest events' end-to-end latency for ``/api/health``: ``{"events": n,
        "median_ms": float | None, "last_ms": float | None}`` over up to
        :data:`RECENT_EVENTS` events this node fanned out (any race, any feed)."""
        if not self.recent:
            return {"events": 0, "median_ms": None, "last_ms": None}
        return {"events": len(self.recent),
                "median_ms": statistics.median_low(self.recent) / 1000,
                "last_ms": self.recent[-1] / 1000}

    async def scrape(self) -> bytes:
        """Read the Redis counters, then the text exposition format of everything."""
        snap = Snapshot()
        try:
            async with self.r.pipeline(transaction=False) as pipe:
                c = self.competition
                pipe.hgetall(keys.ingest_stats(c))
                pipe.hgetall(keys.scoring_stats(c))
                pipe.hgetall(keys.decoders_hash(c))
                pipe.xlen(keys.raw_stream(c))
                ingest, scoring, decoders, raw_length = await pipe.execute()
            snap.ingest = _ints(ingest)
            snap.scoring = _ints(scoring)
            snap.decoders = [json.loads(v) for _, v in sorted(decoders.items())]
            snap.raw_length = int(raw_length)
            snap.redis_up = 1
        except (RedisError, ValueError):
            snap.redis_up = 0  # the node's own metrics are still worth a scrape
        self.snapshot = snap
        return generate_latest(self.registry)


def _ints(raw: dict[Any, Any]) -> dict[str, int]:
    out = {}
    for k, v in raw.items():
        try:
            out[bus.text(k)] = int(v)
        except ValueError:
            continue
    return out


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        snap = self.metrics.snapshot
        up = GaugeMetricFamily("icetime_redis_up", "1 if the last scrape could read Redis")
        up.add_metric([], snap.redis_up)
        yield up
        if snap.redis_up:
            yield from _inputs(snap)
            yield from _decoders(snap.decoders)
        yield from _node(self.metrics.node_stats())


def _counter(name: str, doc: str, labels: list[str],
             values: Iterable[tuple[list[str], float]]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for label_values, value in values:
        family.add_metric(label_values, value)
    return family


def _inputs(snap: Snapshot) -> Iterator[Metric]:
    ingest = {"accepted": 0, "duplicate": 0, "rejected": 0, **snap.ingest}
    yield _counter("icetime_ingest_inputs", "Inputs ingest answered, by outcome "
                   "(accepted, duplicate, rejected, …)", ["outcome"],
                   (([k], v) for k, v in sorted(ingest.items())))
    scoring = {k: v for k, v in snap.scoring.items()
               if k not in (SCORING_PUBLISHED, *SCORING_LIFE)}
    scoring = {"applied": 0, "refused": 0, **scoring}
    yield _counter("icetime_scoring_inputs", "Inputs scoring read, by what became of them "
                   "(applied, refused, unknown_transponder, not_on_ice, …)", ["outcome"],
                   (([k], v) for k, v in sorted(scoring.items())))
    yield _counter("icetime_scoring_events_published", "Race events scoring published",
                   [], [([], snap.scoring.get(SCORING_PUBLISHED, 0))])
    yield _counter("icetime_scoring_rebuilds", "Times a scoring worker rebuilt the engine "
                   "from the raw log (a restart, an outage, a takeover)",
                   [], [([], snap.scoring.get("rebuilds", 0))])
    raw = GaugeMetricFamily("icetime_raw_log_entries", "Entries in the raw input log")
    raw.add_metric([], snap.raw_length)
    yield raw


def _decoders(decoders: list[dict[str, Any]]) -> Iterator[Metric]:
    labels = ["decoder"]
    connected = GaugeMetricFamily("icetime_decoder_connected",
                                  "1 while the decoder link is up", labels=labels)
    age = GaugeMetricFamily("icetime_decoder_last_passing_age_seconds",
                            "Seconds since the decoder's last passing", labels=labels)
    noise = GaugeMetricFamily("icetime_decoder_noise", "The decoder's loop noise (STATUS)",
                              labels=labels)
    temp = GaugeMetricFamily("icetime_decoder_temperature_celsius",
                             "The decoder's temperature (STATUS)", labels=labels)
    missing = GaugeMetricFamily("icetime_decoder_missing_passings",
                                "Passing numbers not received (being asked again)",
                                labels=labels)
    counters = {f: CounterMetricFamily(f"icetime_decoder_{f}", f"Decoder link: {f}",
                                       labels=labels) for f in DECODER_COUNTERS}
    now = time.time()
    for d in decoders:
        lv = [str(d.get("id", ""))]
        connected.add_metric(lv, 1 if d.get("connected") else 0)
        if d.get("last_passing_us"):
            age.add_metric(lv, max(0.0, now - d["last_passing_us"] / 1e6))
        status = d.get("status") or {}
        if isinstance(status.get("noise"), int | float):
            noise.add_metric(lv, status["noise"])
        if isinstance(status.get("temperature"), int | float):
            temp.add_metric(lv, status["temperature"] / 10)  # tenths of a degree
        if isinstance(d.get("missing"), int):
            missing.add_metric(lv, d["missing"])
        for f, family in counters.items():
            if isinstance(d.get(f), int):
                family.add_metric(lv, d[f])
    yield from (connected, age, noise, temp, missing, *counters.values())


def _node(stats: dict[str, Any]) -> Iterator[Metric]:
    clients = GaugeMetricFamily("icetime_broadcast_clients",
                                "Clients connected to this node", labels=["kind"])
    clients.add_metric(["websocket"], stats.get("clients", 0))
    clients.add_metric(["rmonitor"], stats.get("rmonitor_clients", 0))
    yield clients
    yield _counter("icetime_broadcast_subscribes_refused", "WebSocket subscribes refused, "
                   "by code", ["code"],
                   (([k], v) for k, v in sorted((stats.get("refused") or {}).items())))
    races = stats.get("races") or {}
    yield _counter("icetime_broadcast_frames", "Live event frames this node sent, by race",
                   ["race"], (([r], s.get("frames", 0)) for r, s in sorted(races.items())))
    yield _counter("icetime_broadcast_fell_behind", "Times a live client fell behind and "
                   "was resynced from a snapshot", ["race"],
                   (([r], s.get("fell_behind", 0)) for r, s in sorted(races.items())))
    yield _counter("icetime_rmonitor_lines", "RMonitor records this node sent", [],
                   [([], stats.get("rmonitor_lines", 0))])
