"""Replaying a race script into icetime: the ``replay`` function and ``icetime replay``.

:func:`replay` sends a fixture's script through ingest's TCP feed (or, for the loop's
passings, across a simulated P3 decoder), paced like the race; ``icetime replay`` feeds
one to a running icetime, finding the ports it bound when the configuration says 0.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icetime import keys
from icetime import settings as settings_mod
from icetime.cli.venue import config_file
from icetime.replay import LOOP_SOURCE, Timed, load_fixture, script_inputs
from icetime.service import with_ports
from icetime.timefmt import now_us

if TYPE_CHECKING:
    from services.ingest.decoders.simulator import DecoderSimulator

# asyncio and Redis are imported where a function needs them: a refused race or
# configuration answers at once.

log = logging.getLogger(__name__)
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


@dataclass
class Tally:
    """What a replay's inputs came to: ``sent`` in all; of those sent on the feed,
    ``new`` (stored: scoring applies them), ``duplicate`` (already stored, the same
    input) and ``refused`` (the first refusal's words in ``first_refusal``); ``crossed``
    went to a decoder simulator as P3 passings instead. ``session`` names the run."""

    session: str
    sent: int = 0
    new: int = 0
    duplicate: int = 0
    refused: int = 0
    crossed: int = 0
    first_refusal: str | None = None
    #: The raw stream ids of the new inputs, in order.
    ids: list[str] = field(default_factory=list)

    def count(self, reply: dict[str, Any]) -> None:
        if not reply.get("ok"):
            self.refused += 1
            self.first_refusal = self.first_refusal or str(reply.get("error"))
        elif reply.get("duplicate"):
            self.duplicate += 1
        else:
            self.new += 1
            if reply.get("id"):
                self.ids.append(str(reply["id"]))

    def __str__(self) -> str:
        crossed = f", {self.crossed} crossed the decoder" if self.crossed else ""
        text = (f"sent {self.sent} inputs (session {self.session}): {self.new} new, "
                f"{self.duplicate} duplicate, {self.refused} refused{crossed}")
        if self.first_refusal:
            text += f"; first refusal: {self.first_refusal}"
        return text


async def replay(doc: dict[str, Any], cfg: settings_mod.Settings, speed: float = 1.0,
                 announce: bool = True, decoder: DecoderSimulator | None = None,
                 hold: Callable[[Timed], Awaitable[None]] | None = None,
                 session: str | None = None) -> Tally:
    """Send a fixture's script through the TCP feed, paced in real time / ``speed``.

    Every run is its own ``session`` of each source (``replay-<start µs>`` unless
    given), so a second replay into a running system is new input, not a duplicate of
    the first; replaying with the ``session`` of an earlier run resends that run (its
    inputs are duplicates, or refused where their content differs, as their times do).
    With a ``decoder`` (a P3 simulator icetime's decoder link is connected to), the
    loop's passings cross that decoder as P3 records instead of the JSON feed. ``hold``,
    when given, is awaited with each input when it is due, before it is sent: the script
    pauses for as long as it takes (a test looking at a moment of the race), then goes on
    with its own spacing. Returns the :class:`Tally` of what ingest answered.
    """
    import asyncio

    from icetime.feedclient import FeedClient

    base = now_us()
    items = script_inputs(doc, clock_base_us=base, rate=speed)
    tally = Tally(session or f"replay-{base}")
    clients: dict[str, FeedClient] = {}
    for source in {i.source for i in items if not (decoder and i.source == LOOP_SOURCE)}:
        src = cfg.source(source)
        if src is None:
            raise RuntimeError(f"the configuration has no source {source!r} for the replay")
        clients[source] = FeedClient(cfg.host, cfg.ingest_tcp_port, src.token)
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        for item in items:
            delay = start + item.at_us / 1e6 / speed - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if hold is not None:
                held = loop.time()
                await hold(item)
                start += loop.time() - held
            if decoder and item.source == LOOP_SOURCE:
                decoder.passing(int(item.inp["transponder"]), item.inp["t"])
                tally.crossed += 1
            else:
                reply = await clients[item.source].send(
                    {**item.inp, "session": tally.session, "sent_us": now_us()})
                tally.count(reply)
                if not reply.get("ok"):
                    log.error("feed refused %s: %s", item.inp, reply.get("error"))
            tally.sent += 1
            if announce and item.inp["type"] == "gun":
                what = f"pair {item.inp['pair']}" if "pair" in item.inp \
                    else f"wave {item.inp['wave']}" if "wave" in item.inp else "everyone"
                print(f"  gun: {what}", flush=True)
    finally:
        for c in clients.values():
            await c.close()
    return tally


def fixture_path(name: str) -> Path:
    """The fixture ``name`` names: a path, or the first file of fixtures/ whose name
    starts with it. ConfigError (one line, the known names) when there is none."""
    p = Path(name)
    if p.exists():
        return p
    candidates = sorted(FIXTURES.glob(f"{name}*.json"))
    if not candidates:
        known = ", ".join(f.stem for f in sorted(FIXTURES.glob("*.json")))
        raise settings_mod.ConfigError(f"no race {name!r}; known: {known}")
    return candidates[0]


def running_ports(cfg: settings_mod.Settings) -> dict[str, int]:
    """The ports the running services reported in the Redis hash ``keys.LISTENING``
    (settings field -> port, e.g. ``{"ingest_tcp_port": 40124}``), through
    ``cfg.redis_url`` or the embedded Redis's socket in ``cfg.data_dir``; ``{}`` when
    that Redis does not answer (icetime is not running)."""
    import redis

    from icetime.cli.judged import running_redis

    with running_redis(cfg) as r:
        if r is None:
            return {}
        try:
            entries = r.hgetall(keys.LISTENING)
        except (redis.RedisError, OSError):
            return {}
    ports: dict[str, int] = {}
    for raw in entries.values():
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            ports.update({str(k): int(v) for k, v in json.loads(raw)["ports"].items()})
    return ports


def race_known(cfg: settings_mod.Settings, race: str) -> bool | None:
    """Whether scoring has configured ``race`` from a loaded start list (it is in the
    competition's race set); None when the running icetime's Redis does not answer."""
    import redis

    from icetime.cli.judged import running_redis

    with running_redis(cfg) as r:
        if r is None:
            return None
        try:
            return bool(r.sismember(keys.races_set(cfg.competition_id), race))
        except (redis.RedisError, OSError):
            return None


def load_or_check_startlist(cfg: settings_mod.Settings, doc: dict[str, Any],
                            load: bool) -> None:
    """With ``load``, the fixture's start list is loaded first; otherwise the script's
    race must be in a loaded start list: a replay into an unknown race would be refused
    input by input (a fresh user sent 37,457 so). Raises ConfigError (one line)."""
    race = str(doc.get("script", {}).get("race", ""))
    if load:
        from icetime.cli.supervisor import post_startlist

        if "startlist" not in doc:
            raise settings_mod.ConfigError("--startlist: this fixture holds no start list")
        try:
            post_startlist(cfg, doc)
        except (RuntimeError, OSError) as exc:
            raise settings_mod.ConfigError(f"--startlist: {exc}") from None
        print(f"start list loaded: {len(doc['startlist'].get('races', []))} races", flush=True)
    elif race and race_known(cfg, race) is False:
        raise settings_mod.ConfigError(
            f"race {race!r} is in no loaded start list, so scoring would refuse every input: "
            "load one first (docs/startlist.md) or give --startlist to load the fixture's")


def with_running_ports(cfg: settings_mod.Settings, config: str) -> settings_mod.Settings:
    """``cfg`` with each port configured as 0 replaced by the one the running service
    bound (:func:`running_ports`). ConfigError (one line) when the feed's port is still
    0: no running icetime reported it, and a client cannot connect to port 0."""
    zero = {f.name for f in dataclasses.fields(cfg)
            if f.name.endswith("_port") and getattr(cfg, f.name) == 0}
    if zero:
        found = running_ports(cfg)
        cfg = with_ports(cfg, {k: v for k, v in found.items() if k in zero})
    if not cfg.ingest_tcp_port:
        raise settings_mod.ConfigError(
            f"{config}: ingest.tcp_port is 0 and no running icetime reported the port it "
            "bound (start it first with icetime run on this configuration)")
    return cfg


def cmd_replay(args: argparse.Namespace) -> None:
    config = config_file(args)
    cfg = settings_mod.load(config)
    doc = load_fixture(fixture_path(args.race))  # a wrong race name is told first
    cfg = with_running_ports(cfg, config)
    load_or_check_startlist(cfg, doc, args.startlist)
    import asyncio  # here: a refused race or configuration has answered by now

    try:
        tally = asyncio.run(replay(doc, cfg, args.speed, session=args.session))
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM, say while the feed is retrying
        print("replay stopped", flush=True)
        return
    print(tally, flush=True)
    if tally.sent and not tally.new:
        # Nothing of it will change a result: say so in the exit code too.
        print("icetime: nothing of this replay was new; no result changed", file=sys.stderr,
              flush=True)
        raise SystemExit(1)
    # Stored is not applied: what scoring made of it (say, a race whose start list was
    # never loaded is refused by scoring input by input).
    from icetime.cli.judged import scoring_said

    said = scoring_said(cfg, tally.ids)
    print(said, flush=True)
    if said.all_refused:
        print("icetime: scoring refused every input of this replay; no result changed "
              "(is the race's start list loaded?)", file=sys.stderr, flush=True)
        raise SystemExit(1)
