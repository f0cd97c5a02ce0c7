"""Broadcast nodes behind a real HAProxy, on the configuration deploy/ ships.

Two broadcast nodes on one Redis (one in this process, one a process of its own so it
can hang: SIGSTOP), and a real ``haproxy`` on deploy/haproxy.cfg with only what must
differ on this machine replaced (:func:`derive_config`). Fans connect through HAProxy's
``/ws``, spread over both nodes, and those of the node that hangs mid-race reconnect
through HAProxy, land on the other node and resume with their (epoch, offset); the
node back, it takes new fans; killed, its fans are retried on the other node. The
fans' page, in Chromium, works through HAProxy too.

Skipped when ``haproxy`` is not on PATH (.ci/run installs Debian's).
"""
from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from icetime import bus, keys
from icetime.cli import replay
from icetime.keys import DEFAULT_COMPETITION as MAIN

from .conftest import ROOT, caught_up, make_settings, start_stack
from .test_pipeline import Follower, load_startlist
from .test_restart import FIXTURE, RACE, expected_view

HAPROXY = shutil.which("haproxy")
pytestmark = pytest.mark.skipif(
    HAPROXY is None, reason="haproxy is not on PATH (Debian: apt-get install haproxy; "
                            ".ci/run installs it)")
SHIPPED = ROOT / "deploy" / "haproxy.cfg"
#: The node ports the shipped file names (deploy/k8s/cloud.toml), by listener.
SHIPPED_PORTS = {8080: "http", 8081: "ws"}
#: Health checks in the test: every 200 ms, a check unanswered for 3 s failed (the
#: shipped file: 2 s and 2 s), so a hung node is out within about 7 s. Not less: node a
#: shares its event loop with the test's fans and feed, and on a busy machine two checks
#: of 1 s timed out in a row, HAProxy took the live node out too and answered 503.
CHECK_INTER = "200ms"
CHECK_TIMEOUT = "3s"
#: How long HAProxy keeps its half of a connection to a hung node its fan has left
#: (the shipped file: 5 s).
FIN_TIMEOUT = "1s"
SPEED = 200.0
FANS = 6
#: The fans' heartbeat (web/js/live.js: 5 s, dead after 9 s of silence), faster here.
HEARTBEAT_S, DEAD_S = 0.25, 1.5
#: The node hangs at this passing of the script (of 120); the script waits at
#: RESUMED_BY until its fans have resumed on the other node, so they do so mid-race.
HANG_AT, RESUMED_BY = 30, 60


def derive_config(text: str, port: int, nodes: dict[str, dict[str, int]],
                  stats: Path) -> str:
    """deploy/haproxy.cfg as the test runs it: the frontend bound to 127.0.0.1:``port``;
    each ``server-template`` line (Docker's DNS names) replaced by one ``server`` line per
    node of ``nodes`` (name -> {"http": port, "ws": port}) with the same options, the
    ports the nodes got and :data:`CHECK_INTER`; ``timeout check`` and ``timeout
    server-fin`` set to :data:`CHECK_TIMEOUT` and :data:`FIN_TIMEOUT`; and a stats
    socket at ``stats`` (how the test sees what HAProxy thinks of each node). Everything
    else is the shipped file's. Raises AssertionError when the shipped file no longer
    has what is replaced (fix this function with it)."""
    out, n = re.subn(r"(?m)^(\s*)bind :80$", rf"\1bind 127.0.0.1:{port}", text)
    assert n == 1, "the frontend's `bind :80`"
    for name, value in (("check", CHECK_TIMEOUT), ("server-fin", FIN_TIMEOUT)):
        out, n = re.subn(rf"(?m)^(\s*)timeout {name} \S+$", rf"\1timeout {name} {value}", out)
        assert n == 1, f"`timeout {name}` in defaults"
    out, n = re.subn(r"(?m)^global$", f"global\n    stats socket {stats} level user", out)
    assert n == 1

    def servers(m: re.Match[str]) -> str:
        indent, target, options = m[1], SHIPPED_PORTS[int(m[2])], m[3]
        options = re.sub(r"\bport 8080\b", "port {http}", options)
        options = re.sub(r"\binter \S+", f"inter {CHECK_INTER}", options)
        options = re.sub(r"\s*resolvers \S+|\s*init-addr \S+", "", options)
        return "\n".join(f"{indent}server {name} 127.0.0.1:{ports[target]} "
                         + options.format(**ports) for name, ports in nodes.items())

    out, n = re.subn(r"(?m)^(\s*)server-template \S+ \S+ broadcast:(\d+) (.*)$", servers, out)
    assert n == 2, "a server-template line in each backend"
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HAProxy:
    """A ``haproxy`` process in the foreground on a config derived from the shipped one."""

    def __init__(self, tmp: Path, nodes: dict[str, dict[str, int]]) -> None:
        self.tmp, self.nodes = tmp, nodes
        self.stats_path = tmp / "haproxy.sock"
        self.log = tmp / "haproxy.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    async def start(self, attempts: int = 5) -> None:
        """Start on a free port; HAProxy cannot bind port 0, so a port taken between
        picking and binding (another test) means picking again. Returns once HAProxy
        answers on its stats socket."""
        for _ in range(attempts):
            self.port = free_port()
            path = self.tmp / "haproxy.cfg"
            path.write_text(derive_config(SHIPPED.read_text(), self.port, self.nodes,
                                          self.stats_path))
            with self.log.open("wb") as log:
                assert HAPROXY is not None
                self.proc = subprocess.Popen([HAPROXY, "-db", "-f", str(path)], stdout=log,
                                             stderr=subprocess.STDOUT)
            if await self._started():
                return
            if "cannot bind" not in self.log.read_text():
                raise AssertionError(f"haproxy did not start:\n{self.log.read_text()}")
        raise AssertionError(f"no free port for haproxy in {attempts} attempts")

    async def _started(self) -> bool:
        assert self.proc is not None
        async with asyncio.timeout(10):
            while self.proc.poll() is None:
                with contextlib.suppress(OSError):
                    await self.stat()
                    return True
                await asyncio.sleep(0.05)
        return False

    async def stat(self) -> dict[tuple[str, str], dict[str, str]]:
        """``show stat`` on the stats socket: (backend, server) -> its row (``status``
        UP/DOWN..., ``scur`` the connections it has now, ``check_status``...)."""
        reader, writer = await asyncio.open_unix_connection(str(self.stats_path))
        try:
            writer.write(b"show stat\n")
            await writer.drain()
            text = (await reader.read()).decode()
        finally:
            writer.close()
        rows = csv.DictReader(text.lstrip("# ").splitlines())
        return {(r["pxname"], r["svname"]): r for r in rows if r["svname"] in self.nodes}

    async def wait(self, until, timeout: float = 15.0) -> dict[tuple[str, str], dict[str, str]]:
        """Poll the stats until ``until(stats)`` holds; the stats then."""
        st: dict[tuple[str, str], dict[str, str]] = {}
        try:
            async with asyncio.timeout(timeout):
                while not until(st := await self.stat()):
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(f"HAProxy's stats: {brief(st)}") from None
        return st

    async def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            await asyncio.to_thread(self.proc.wait, 10)


def brief(st) -> dict[str, str]:
    """What HAProxy thinks of each node: "backend/server" -> "status, connections"."""
    return {f"{px}/{sv}": f"{r['status']}, {r['scur']}" for (px, sv), r in st.items()}


def all_on_a(st) -> bool:
    """Node b out of rotation and every fan's tunnel on node a."""
    return status(st, "b") == {"DOWN"} and st[("ws", "a")]["scur"] == str(FANS)


def status(st, server: str) -> set[str]:
    """The status word (UP, DOWN; a transition reads "UP 1/2") of ``server`` in both
    backends."""
    return {st[(px, server)]["status"].split()[0] for px in ("pages", "ws")}


class NodeProcess:
    """A broadcast node as the compose file runs one: ``python -m services.broadcast``,
    every listener on port 0; :meth:`start` reads the ports it published."""

    def __init__(self, tmp: Path, redis_url: str) -> None:
        self.config = tmp / "node.toml"
        self.config.write_text(
            'host = "127.0.0.1"\n[broadcast]\nhttp_port = 0\nws_port = 0\n'
            'rmonitor_port = 0\npublic_ws_url = "/ws"\n')
        self.redis_url = redis_url
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}

    async def start(self, r) -> None:
        env = {**os.environ, "REDIS_URL": self.redis_url}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.broadcast", "--config", str(self.config)],
            cwd=ROOT, env=env)
        async with asyncio.timeout(20):
            while True:
                assert self.proc.poll() is None, "the node process exited"
                raw = await r.hget(keys.LISTENING, "broadcast")
                entry = json.loads(raw) if raw else {}
                if entry.get("pid") == self.proc.pid:
                    break
                await asyncio.sleep(0.05)
        p = entry["ports"]
        self.ports = {"http": p["broadcast_http_port"], "ws": p["broadcast_ws_port"]}

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    async def close(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.signal(signal.SIGCONT)  # a stopped process acts on SIGTERM once continued
        self.proc.terminate()
        try:
            await asyncio.to_thread(self.proc.wait, 10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait, 10)


class Fan(Follower):
    """A fan through the load balancer, as web/js/live.js is one: a clock sync every
    HEARTBEAT_S doubles as a heartbeat, and a connection silent for DEAD_S (a hung
    node behind an open tunnel) or closed under it is replaced by a new one, which
    resumes with the fan's (epoch, offset). ``drops``: connections lost so;
    ``refused``: connection attempts that failed (no node ready, say)."""

    drops = refused = 0

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.refusals: list[str] = []

    async def follow(self, until, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    await self.connection(until)
                    return
                except (ConnectionClosed, TimeoutError):
                    self.drops += 1
                except (InvalidHandshake, OSError) as exc:
                    self.refused += 1
                    self.refusals.append(repr(exc))
                    await asyncio.sleep(0.1)

    async def connection(self, until) -> None:
        async with websockets.connect(self.url, open_timeout=DEAD_S,
                                      close_timeout=0.1) as ws:
            sub = {"op": "subscribe", "race": self.race, "protocol": 2}
            if self.epoch is not None:
                sub.update(epoch=self.epoch, offset=self.offset)
            await ws.send(json.dumps(sub))
            beat = asyncio.create_task(self.heartbeat(ws))
            try:
                while not until(self):
                    async with asyncio.timeout(DEAD_S):
                        self.take(json.loads(await ws.recv()))
            finally:
                beat.cancel()
                ws.transport.abort()  # a hung node would never answer a close

    def take(self, msg: dict) -> None:
        self.frames.append(msg)
        if msg["type"] == "snapshot":
            self.view, self.epoch, self.offset = msg["view"], msg["epoch"], msg["offset"]
        elif msg["type"] == "event":
            self.events.append(msg)
            self.view = self.fold(self.view, msg["event"])
            self.offset = msg["offset"]

    @staticmethod
    async def heartbeat(ws) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.send(json.dumps({"op": "time", "c": 0}))
                await asyncio.sleep(HEARTBEAT_S)


class Hang:
    """A replay ``hold``: SIGSTOP node b at passing HANG_AT; at RESUMED_BY wait (the
    race paused) until HAProxy has taken b out and every fan is on node a again,
    resumed there."""

    def __init__(self, node: NodeProcess, lb: HAProxy, fans: list[Fan]) -> None:
        self.node, self.lb, self.fans = node, lb, fans
        self.passings = 0
        self.events_at_hang: list[int] = []
        #: HAProxy's stats once the fans have moved.
        self.stats_moved: dict[tuple[str, str], dict[str, str]] = {}

    async def __call__(self, item) -> None:
        self.passings += item.inp["type"] == "passing"
        if item.inp["type"] != "passing":
            return
        if self.passings == HANG_AT:
            self.events_at_hang = [len(f.events) for f in self.fans]
            self.node.signal(signal.SIGSTOP)
        elif self.passings == RESUMED_BY:
            self.stats_moved = await self.lb.wait(all_on_a, timeout=30)

def never(_fan: Fan) -> bool:
    return False


async def until_at(fans: list[Fan], offset: str, timeout: float = 15.0) -> None:
    """Wait until every fan of ``fans`` (following in a task) has had ``offset``."""
    async with asyncio.timeout(timeout):
        while any(f.offset != offset for f in fans):
            await asyncio.sleep(0.02)


async def get(s: aiohttp.ClientSession, url: str) -> tuple[int, str, dict[str, str]]:
    async with s.get(url) as resp:
        return resp.status, await resp.text(), dict(resp.headers)


def test_the_shipped_haproxy_cfg_parses():
    out = subprocess.run([HAPROXY or "haproxy", "-c", "-f", str(SHIPPED)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ALERT" not in out.stdout + out.stderr


@contextlib.asynccontextmanager
async def balanced(redis_url: str, redis_client, tmp: Path):
    """Node a (the whole venue stack in this process) and node b (a process of its own)
    on one Redis, behind a HAProxy on the shipped config with both nodes up; yields
    (stack, b, lb). Both nodes' pages open their WebSocket at /ws on the host they came
    from, as deploy/k8s/cloud.toml has it."""
    stack = await start_stack(make_settings(redis_url, public_ws_url="/ws"), redis_url)
    b = NodeProcess(tmp, redis_url)
    lb = HAProxy(tmp, {})
    try:
        await b.start(redis_client)
        lb.nodes = {"a": {"http": stack.settings.broadcast_http_port,
                          "ws": stack.settings.broadcast_ws_port}, "b": b.ports}
        await lb.start()
        await lb.wait(lambda st: status(st, "a") == status(st, "b") == {"UP"})
        yield stack, b, lb
    finally:
        await lb.close()
        await b.close()
        await stack.close()


async def test_fans_spread_over_nodes_and_resume_through_haproxy_when_one_hangs(
        redis_server, redis_client, tmp_path):
    """Two nodes behind HAProxy on the shipped config: pages and /api/* answer, fans
    connect through /ws and spread over both (leastconn); one node hangs mid-race
    (SIGSTOP), HAProxy's /api/ready check takes it out, its fans find it silent and
    resume on the other node through HAProxy: every event once, the final view that
    of a fan that stayed on the live node. The node back, new fans go to it; the node
    killed, its fans are retried on the other, none refused."""
    fan_tasks: list[asyncio.Task[None]] = []
    async with balanced(redis_server.url, redis_client, tmp_path) as (stack, b, lb):
        try:
            front = f"http://127.0.0.1:{lb.port}"
            ws_url = f"ws://127.0.0.1:{lb.port}/ws"
            await load_startlist(stack)

            async with aiohttp.ClientSession() as s:
                code, html, headers = await get(s, front + "/live")
                assert code == 200 and "<html" in html.lower()
                # The page opens its WebSocket on the host it came from, /ws (/api/config),
                # and its Content-Security-Policy allows that host.
                assert f"ws://127.0.0.1:{lb.port}" in headers["Content-Security-Policy"]
                code, text, _ = await get(s, front + "/api/config")
                assert code == 200 and json.loads(text)["ws_url"] == "/ws"
                code, text, _ = await get(s, front + "/api/races")
                assert code == 200 and RACE in [r["id"] for r in json.loads(text)]

            stayer = Fan(stack.ws_url)  # straight on node a, never through HAProxy
            fans = [Fan(ws_url) for _ in range(FANS)]
            fan_tasks.append(asyncio.create_task(stayer.follow(never)))
            for f in fans:  # one by one, so leastconn sees each connection before the next
                fan_tasks.append(asyncio.create_task(f.follow(never)))
                async with asyncio.timeout(10):
                    while f.view is None:
                        await asyncio.sleep(0.02)
            # Least connections: three on each (a fan that found its node silent on a
            # busy machine and connected again is put back where there are fewer).
            await lb.wait(lambda st: [st[("ws", n)]["scur"] for n in ("a", "b")] == ["3", "3"],
                          timeout=10)

            hang = Hang(b, lb, fans)
            tally = await asyncio.wait_for(
                replay(FIXTURE, stack.settings, speed=SPEED, announce=False, hold=hang), 60)
            assert tally.new == tally.sent
            # b's three fans moved (a's too, should one have found a's node silent for DEAD_S
            # on a busy machine: that is a fan's duty, not a fault); mid-race: with events
            # before the hang and after it.
            moved = [f for f in fans if f.drops]
            assert len(moved) >= 3
            assert all(0 < hang.events_at_hang[fans.index(f)] for f in moved)
            async with aiohttp.ClientSession() as s:  # every request to the live node
                for _ in range(4):
                    assert (await get(s, front + "/api/time"))[0] == 200

            # Every input scored first: the replay's end is ingest's, and on a busy
            # machine scoring is still behind it (the stream's last event then is not
            # the race's last).
            await caught_up(redis_client, RACE, timeout_s=30)
            entries = bus.entries(await redis_client.xrange(keys.events_stream(MAIN, RACE)))
            last = entries[-1][0]
            await until_at([stayer, *fans], last)
            assert stayer.view["classification"] == expected_view()["classification"]
            for f in fans:
                # Every event once, in order: the stream after the fan's one snapshot.
                kinds = [m["type"] for m in f.frames]
                assert kinds.count("snapshot") == 1, kinds[:5]
                first = bus.parse_id(f.frames[0]["offset"])
                assert [e["offset"] for e in f.events] == \
                    [sid for sid, _ in entries if bus.parse_id(sid) > first]
                assert f.view == stayer.view
                assert ("resumed" in kinds) == (f.drops > 0)
            print(f"\nthrough HAProxy: {len(moved)} fans moved; refused connections "
                  f"{sum(f.refused for f in fans)}; stats when moved: "
                  f"{brief(hang.stats_moved)}")

            # The node continues: HAProxy's checks bring it back, and being the node with
            # the fewest connections (leastconn) it takes the new fans.
            await lb.wait(lambda st: all_on_a(st) and st[("ws", "b")]["scur"] == "0")
            b.signal(signal.SIGCONT)
            await lb.wait(lambda st: status(st, "b") == {"UP"})
            late = [Fan(ws_url) for _ in range(2)]
            fan_tasks += [asyncio.create_task(f.follow(never)) for f in late]
            await until_at(late, last)
            st = await lb.stat()
            assert int(st[("ws", "b")]["scur"]) >= 2, "the fans of a node that came back"
            assert all(f.view == stayer.view for f in late)

            # Node b dies (SIGKILL): its fans reconnect at once, before a check has seen it
            # go; leastconn sends them to b, which refuses, and HAProxy retries them on a
            # (option redispatch) instead of answering 503. Node b's fans are counted by
            # HAProxy, not picked by name: a fan of node a that found it silent for DEAD_S
            # on a busy machine may have moved to b, and a late fan gone to a.
            everyone = [*fans, *late]
            on_b = int((await lb.stat())[("ws", "b")]["scur"])
            seen = [(f.drops, len(f.frames)) for f in everyone]
            refused_before = [len(f.refusals) for f in everyone]

            def resumed_since_kill() -> list[Fan]:
                return [f for f, (d, n) in zip(everyone, seen, strict=True)
                        if f.drops > d and "resumed" in [m["type"] for m in f.frames[n:]]]

            b.signal(signal.SIGKILL)
            async with asyncio.timeout(15):
                while len(resumed_since_kill()) < on_b:
                    await asyncio.sleep(0.02)
            assert on_b >= 2
            # None refused since the kill (before it, on a machine too busy for HAProxy's
            # checks, a fan may have met "no server is available" while b hung).
            assert [f.refusals[n:] for f, n in zip(everyone, refused_before, strict=True)] \
                == [[]] * len(everyone)
            assert (await lb.stat())[("ws", "a")]["scur"] == str(FANS + len(late))
        finally:
            for t in fan_tasks:
                t.cancel()
            await asyncio.gather(*fan_tasks, return_exceptions=True)


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="no Chromium found: install Debian's `chromium` (.ci/run does)")
async def test_the_live_page_through_haproxy(redis_server, redis_client, tmp_path):
    """The fans' page in Chromium, reached through HAProxy: it opens its WebSocket at
    /ws on HAProxy's host and port (/api/config's path), its Content-Security-Policy
    lets it, and it follows the race live."""
    from playwright.async_api import async_playwright, expect

    from .chromium import launch, open_page

    async with balanced(redis_server.url, redis_client, tmp_path) as (stack, _b, lb):
        await load_startlist(stack)
        async with async_playwright() as p:
            browser = await launch(p)
            try:
                page, errors = await open_page(
                    browser, f"http://127.0.0.1:{lb.port}/live?race={RACE}", 412, 915)
                await expect(page.get_by_test_id("status")).to_have_attribute(
                    "data-state", "live", timeout=10_000)
                assert await page.evaluate("window.icetime.url") == \
                    f"ws://127.0.0.1:{lb.port}/ws"
                assert await page.evaluate("window.icetime.stats.snapshots") == 1
                assert not errors, errors
            finally:
                await browser.close()
