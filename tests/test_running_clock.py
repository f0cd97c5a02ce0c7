"""The screens' running clock shows the race time of the passages, however late the gun
arrived: ``clock_origin_us`` is the gun's own instant on the wall clock (docs/time.md)."""
from __future__ import annotations

from typing import Any

from icetime.feedclient import FeedClient
from icetime.timefmt import now_us
from services.scoring.wallclock import LATE_MAX_US, WallClock

from .conftest import TOKENS
from .test_pipeline import Follower

LATE_US = 30_000_000
#: tests/test_passages.py's race, here so the browser test need not import that module.
PAIR_1000 = [{"id": "1000", "distance": 1000, "pairs": [{"pair": 1, "inner": "1", "outer": "2"}]}]


class Sender:
    """The feed's sources over TCP, each numbering its inputs; what each took (µs from
    taking ``t`` off the wall clock to the reply) bounds how late ingest stamped it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.clients: dict[str, FeedClient] = {}
        self.seq: dict[str, int] = {}
        self.took: list[int] = []

    async def send(self, source: str, inp: dict[str, Any]) -> None:
        if source not in self.clients:
            self.clients[source] = FeedClient("127.0.0.1", self.port, TOKENS[source])
        self.seq[source] = self.seq.get(source, 0) + 1
        reply = await self.clients[source].send({**inp, "seq": self.seq[source]})
        assert reply.get("ok"), (inp, reply)

    async def load_pair(self) -> None:
        """The start list: race 1000 (PAIR_1000), bibs 1 and 2 in pair 1 on chips 11
        and 22."""
        skaters = [{"bib": b, "name": f"Skater {b}", "transponders": [b * 2]}
                   for b in ("1", "2")]
        await self.send("officials", {"type": "startlist", "skaters": skaters,
                                      "races": PAIR_1000})

    async def read_now(self, transponder: str) -> int:
        """A passing stamped now by the loop's clock (the host's); its ``t``."""
        t = now_us()
        await self.send("finish-loop", {"type": "passing", "transponder": transponder, "t": t})
        self.took.append(now_us() - t)
        return t

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()


async def test_a_gun_arriving_30s_late_starts_the_running_clock_at_its_own_time(stack):
    """The loop is on time; the gun (its source's first input) reaches ingest 30 s after
    it was fired, between the skaters' 200 m reads. The running clock at each passage
    shows that passage's race time, within how late ingest can have stamped a read."""
    st = Sender(stack.settings.ingest_tcp_port)
    try:
        await st.load_pair()
        a = await st.read_now("11")  # bib 1's 200 m, before her gun is known: held
        gun_t = a - LATE_US
        await st.send("gun", {"type": "gun", "race": "1000", "pair": 1, "t": gun_t})
        b = await st.read_now("22")
        f = Follower(stack.ws_url, race="1000")
        await f.run(lambda s: s.view is not None and all(
            s.view["results"][bib]["passages"][0] is not None for bib in ("1", "2")))
    finally:
        await st.close()
    res = f.view["results"]
    assert [res[bib]["passages"][0]["t"] // 1000 for bib in ("1", "2")] == \
        [(a - gun_t) // 1000, (b - gun_t) // 1000]
    origin = f.view["on_ice"]["1"]["clock_origin_us"]
    # Ingest stamped bib 1's read, the one the loop sent before the gun, between taking
    # its t and the reply (the same host clock): the running clock at its arrival
    # (rx - origin) is its race time (t - gun_t) plus at most that (milliseconds, where
    # the gun's arrival gave 30 s), so the origin lies that close after the gun.
    before_gun = st.took[0]
    assert gun_t <= origin <= gun_t + before_gun, (origin - gun_t, before_gun)

def test_a_gun_maps_by_its_sources_own_clock_else_the_others():
    """Pure: the smallest (rx - t) of the gun's source maps it; a source heard from
    first takes the others' (not a fast replay's, whose clock runs ahead); no estimate,
    a replay's rate or a lateness past belief keep the arrival."""
    w = WallClock()
    assert w.origin(("gun", None), 5_000, 1_000, 1.0) == 5_000  # nothing known yet
    assert w.origin(("gun", None), 9_000, 8_000, 1.0) == 9_000  # sooner than the first: on time
    w.seen(("gun", None), 10_020, 10_000)
    assert w.origin(("gun", None), 40_000, 20_000, 1.0) == 20_020
    w.seen(("loop", "r1"), 1_000, 60_000_000)  # a fast replay: ahead of the wall clock
    w.seen(("loop", None), 50_005, 50_000)
    assert w.origin(("starter", None), 90_000, 60_000, 1.0) == 60_005
    assert w.origin(("starter", None), 190_000, 160_000, 1.0) == 160_005  # now its own
    assert w.origin(("starter", None), 290_000, 260_000, 4.0) == 290_000  # a replay's gun
    far = 300_000 + LATE_MAX_US + 1_000
    assert w.origin(("starter", None), far + 10, 300_000, 1.0) == far + 10
    assert w.origin(("x", None), None, 300_000, 1.0) == 0  # fed without ingest
    w.forget("starter")  # a measured clock offset: learnt anew
    assert ("starter", None) not in w.lags
