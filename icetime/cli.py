"""The ``icetime`` command: run a venue, run the demo, replay a race script.

``icetime run`` is a small supervisor: it checks the configuration, starts the
embedded redis-server (unless REDIS_URL is set), the three services as child
processes, restarts a service that dies (waiting longer each time it dies soon
after starting), loads the configured start lists and, on Ctrl-C, stops the
services first and Redis last. A service that exits with code 2 refused the
configuration: restarting cannot help, so icetime stops and exits with 2 too. One
that cannot bind its port while icetime starts (exit code 3) stops icetime with 3.
The embedded redis-server is watched too: one that dies is started again on its files.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icetime import keys, logs
from icetime import settings as settings_mod
from icetime.redis_embed import DataDirInUse, EmbeddedRedis
from icetime.replay import LOOP_SOURCE, Timed, load_fixture, script_inputs
from icetime.service import (
    EXIT_BIND,
    EXIT_CONFIG,
    LISTEN_ENV,
    SUPERVISOR_ENV,
    config_exit,
    with_ports,
)
from icetime.timefmt import now_us

if TYPE_CHECKING:
    import asyncio

    import redis

    from services.ingest.decoders.simulator import DecoderSimulator

# asyncio, Redis, HTTP and the decoder simulator are imported where a command needs
# them: `icetime --help` or a refused argument or configuration answers at once.

log = logging.getLogger("icetime.cli")
#: The fastest replay: a gun's ``rate`` is at most this (icetime/messages.py).
MAX_SPEED = 1000.0  # not __main__ under `python -m icetime.cli`
ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("ingest", "scoring", "broadcast")
#: Run too when ``relay.cloud_url`` is set: mirrors the venue's races to the cloud.
RELAY = "relay"
FIXTURES = ROOT / "fixtures"
#: A service that ran at least this long before it died was healthy: restart it at once.
STABLE_S = 30.0
#: A second death in a row within STABLE_S of starting waits this long before the
#: restart, each further one twice as long, up to RESTART_MAX_S.
RESTART_FIRST_S = 0.5
RESTART_MAX_S = 30.0


class ConfigRefused(Exception):
    """A service exited with EXIT_CONFIG: its configuration is wrong, so it is not restarted."""


class CannotListen(Exception):
    """A service exited with EXIT_BIND while icetime was starting: a configured port is
    taken (the service said which on stderr)."""


class StartlistFailed(Exception):
    """A configured start list could not be read or ingest refused it; one line."""


class Supervisor:
    """Redis plus the three service processes, kept running until :meth:`stop`.

    ``config`` is the configuration file (any path; the services get it absolute) and
    ``cfg`` the settings loaded from it.

    After :meth:`start`, ``cfg`` holds the ports the services bound (what a port of 0
    in the configuration became); a restarted service binds the same ones again.
    ``restart_first_s`` is the first wait before restarting a service that keeps dying
    (:data:`RESTART_FIRST_S`; a test takes a shorter one).
    """

    def __init__(self, config: str, cfg: settings_mod.Settings, clean: bool = False,
                 restart_first_s: float = RESTART_FIRST_S) -> None:
        self.config = str(Path(config).resolve())
        self.cfg = cfg
        self.clean = clean  # empty the embedded Redis's data dir first (the demo)
        self.redis: EmbeddedRedis | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.url = cfg.redis_url
        self.restarts: dict[str, int] = {}
        self.restart_first_s = restart_first_s
        self.started_at: dict[str, float] = {}
        self.quick_deaths: dict[str, int] = {}  # in a row, each within STABLE_S of its start
        self.restart_at: dict[str, float] = {}  # restarts due (monotonic time)
        #: Service name -> the ports it reported (settings field -> port).
        self.ports: dict[str, dict[str, int]] = {}
        #: The services this venue runs: the three, and the relay when it has a cloud.
        self.services = SERVICES + ((RELAY,) if cfg.relay_cloud_url else ())

    def start(self) -> None:
        self.start_redis()
        for name in self.services:
            self.spawn(name)
        self.wait_ready()

    def start_redis(self) -> None:
        """Start the embedded redis-server, unless a URL is set or it runs already.
        Raises DataDirInUse when another icetime owns the data dir."""
        if not self.url:
            redis_server = EmbeddedRedis(Path(self.cfg.data_dir), self.cfg.aof_fsync, self.clean)
            self.url = redis_server.start()  # DataDirInUse: another icetime runs on it
            self.redis = redis_server
            log.info("embedded redis-server at %s", self.url)

    def spawn(self, name: str) -> None:
        env = {**os.environ, "REDIS_URL": self.url, SUPERVISOR_ENV: str(os.getpid())}
        if "ICETIME_DATA" in env:  # the services run in ROOT: give them the absolute path
            env["ICETIME_DATA"] = self.cfg.data_dir
        self.started_at[name] = time.monotonic()
        if name in self.ports:  # a restart: the same ports, even where port 0 chose them
            env[LISTEN_ENV] = json.dumps(self.ports[name])
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}", "--config", self.config],
            env=env, cwd=ROOT, start_new_session=True)

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait until each service has reported the ports it bound (the Redis hash
        ``keys.LISTENING``, from the process we started) and both HTTP servers answer
        ``/healthz``; ``cfg`` then carries the bound ports, so a port of 0 in the
        configuration works. Raises RuntimeError after ``timeout`` seconds."""
        import urllib.error
        import urllib.request

        import redis

        deadline = time.monotonic() + timeout
        r = redis.Redis.from_url(self.url)
        try:
            for name in self.services:
                while (ports := self.reported_ports(r, name)) is None:
                    self.check_children()
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"service {name} did not start listening "
                                           "(is a configured port in use?)")
                    time.sleep(0.05)
                self.ports[name] = ports
        finally:
            r.close()
        self.cfg = with_ports(self.cfg, {k: v for p in self.ports.values() for k, v in p.items()})
        urls = [f"http://{self.cfg.host}:{self.cfg.ingest_http_port}/healthz",
                f"http://{self.cfg.host}:{self.cfg.broadcast_http_port}/healthz"]
        if RELAY in self.services:
            urls.append(f"http://{self.cfg.host}:{self.cfg.relay_http_port}/healthz")
        for url in urls:
            while True:
                self.check_children()
                try:
                    with urllib.request.urlopen(url, timeout=1) as resp:
                        if resp.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{url} did not come up (is the port in use?)")
                time.sleep(0.1)

    def reported_ports(self, r: redis.Redis, name: str) -> dict[str, int] | None:
        """The ports service ``name`` reported, if the process we started did."""
        import redis

        try:
            raw = r.hget(keys.LISTENING, name)
        except redis.RedisError:
            return None
        entry = json.loads(raw) if raw else {}
        if entry.get("pid") != self.procs[name].pid:
            return None  # nothing yet, or an earlier process's entry
        return {str(k): int(v) for k, v in entry["ports"].items()}

    def check_children(self) -> None:
        """Restart a service that exited on its own: a crash must not end the meet.

        The first restart is at once; one that keeps dying soon after starting waits
        longer each time (``restart_first_s`` doubling up to RESTART_MAX_S) rather than spin.
        Raises ConfigRefused for one that exited with EXIT_CONFIG, which a restart cannot
        mend, and CannotListen for one that exited with EXIT_BIND before it ever bound
        (while icetime starts); later, a port taken meanwhile is waited out like any death.
        An embedded redis-server that died is started again on the same files.
        """
        self.check_redis()
        now = time.monotonic()
        for name, proc in list(self.procs.items()):
            if name in self.restart_at:
                if now >= self.restart_at[name]:
                    del self.restart_at[name]
                    self.spawn(name)
                continue
            code = proc.poll()
            if code is None:
                continue
            if code == EXIT_CONFIG:
                raise ConfigRefused(f"service {name} refused the configuration (exit code "
                                    f"{code}); not restarting it, stopping")
            if code == EXIT_BIND and name not in self.ports:
                raise CannotListen(name)
            ran = now - self.started_at[name]
            quick = self.quick_deaths.get(name, 0) + 1 if ran < STABLE_S else 0
            self.quick_deaths[name] = quick
            delay = 0.0 if quick <= 1 else min(self.restart_first_s * 2 ** (quick - 2),
                                               RESTART_MAX_S)
            self.restarts[name] = self.restarts.get(name, 0) + 1
            log.error("service %s exited with code %s after %.1f s; restarting it %s "
                      "(restart %d)", name, code, ran,
                      f"in {delay:.1f} s" if delay else "now", self.restarts[name])
            if delay:
                self.restart_at[name] = now + delay
            else:
                self.spawn(name)

    def check_redis(self) -> None:
        """Start the embedded redis-server again if it died (the AOF keeps the data);
        one that will not start is tried again at the next check."""
        if self.redis is None:
            return
        code = self.redis.proc.poll() if self.redis.proc else "?"  # "?": a restart failed
        if code is None:
            return
        log.error("embedded redis-server exited with code %s; restarting it on %s",
                  code, self.redis.data_dir)
        try:
            self.redis.restart()
        except (RuntimeError, OSError) as exc:  # TimeoutError is an OSError
            log.error("embedded redis-server did not restart: %s", exc)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        if self.redis:
            self.redis.stop()

    def load_startlist(self, doc: dict[str, Any], source: str | None = None) -> dict[str, Any]:
        """POST a start list (or a fixture holding one) to ingest."""
        import urllib.error
        import urllib.request

        doc = doc.get("startlist", doc)
        src = self.cfg.source(source) if source else self.cfg.loader()
        if src is None:
            raise RuntimeError("no [[sources]] configured: nobody may load a start list")
        req = urllib.request.Request(
            f"http://{self.cfg.host}:{self.cfg.ingest_http_port}/api/startlist",
            data=json.dumps(doc).encode(), method="POST",
            headers={"Authorization": f"Bearer {src.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                result: dict[str, Any] = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            with exc:  # its body is the open response: read it, then close it
                body = exc.read().decode(errors="replace")
            try:
                reason = json.loads(body)["error"]
            except (ValueError, KeyError, TypeError):
                reason = body
            raise RuntimeError(f"start list refused: {reason}") from None
        return result

    def banner(self) -> str:
        """Every listener, one per line, with the ports bound (after :meth:`start`)."""
        c = self.cfg
        return "\n".join(f"  {label:<11}{url}" for label, url in (
            ("pages", self.page_url()),
            ("WebSocket", c.public_ws_url or f"ws://{c.host}:{c.broadcast_ws_port}/"),
            ("feed TCP", f"tcp://{c.host}:{c.ingest_tcp_port}"),
            ("feed HTTP", f"http://{c.host}:{c.ingest_http_port}/feed"),
            ("results", f"http://{c.host}:{c.broadcast_http_port}/api/results/competitions"),
            ("RMonitor", f"tcp://{c.host}:{c.broadcast_rmonitor_port}"),
            ("metrics", f"http://{c.host}:{c.broadcast_http_port}/metrics"),
            ("desk", f"http://{c.host}:{c.ingest_http_port}/desk")))

    def page_url(self, race: str | None = None, page: str = "") -> str:
        url = f"http://{self.cfg.host}:{self.cfg.broadcast_http_port}/{page}"
        return url + (f"?race={race}" if race else "")

    def screens(self, race: str) -> str:
        """The four screens of a race, one per line, for the console."""
        return "\n".join(f"  {label:<26}{self.page_url(race, page)}" for label, page in (
            ("fans (phones)", "live"), ("commentator monitor", "monitor"),
            ("arena board", "board"), ("overlay (OBS/vMix)", "overlay")))


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

    def count(self, reply: dict[str, Any]) -> None:
        if not reply.get("ok"):
            self.refused += 1
            self.first_refusal = self.first_refusal or str(reply.get("error"))
        elif reply.get("duplicate"):
            self.duplicate += 1
        else:
            self.new += 1

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
    p = Path(name)
    if p.exists():
        return p
    candidates = sorted(FIXTURES.glob(f"{name}*.json"))
    if not candidates:
        known = ", ".join(f.stem for f in sorted(FIXTURES.glob("*.json")))
        raise settings_mod.ConfigError(f"no race {name!r}; known: {known}")
    return candidates[0]


def positive_speed(text: str) -> float:
    """argparse type of ``--speed``: a number above 0, at most the gun's ``rate`` limit
    (1000; a faster replay would have every gun refused)."""
    try:
        speed = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < speed < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: the speed must be above 0")
    if speed > MAX_SPEED:
        raise argparse.ArgumentTypeError(f"{text!r}: the speed must be at most {MAX_SPEED:g}")
    return speed


def config_file(args: argparse.Namespace) -> str:
    """The --config file, or $ICETIME_CONFIG; ConfigError if there is neither."""
    path = settings_mod.config_path(args.config)
    if path is None:
        raise settings_mod.ConfigError(f"icetime {args.cmd}: no configuration: give "
                                       "--config FILE or set ICETIME_CONFIG")
    return str(path)


def read_startlists(paths: Iterable[str]) -> list[tuple[str, dict[str, Any]]]:
    """Each configured start list file read and parsed, before anything starts: a file
    that cannot be read or is not JSON raises StartlistFailed (one line) at once."""
    docs = []
    for path in paths:
        try:
            docs.append((path, load_fixture(path)))
        except OSError as exc:
            raise StartlistFailed(f"{path}: {exc.strerror or exc}") from None
        except ValueError as exc:  # json.JSONDecodeError
            raise StartlistFailed(f"{path}: not JSON: {exc}") from None
    return docs


def load_startlists(sup: Supervisor, docs: list[tuple[str, dict[str, Any]]]) -> None:
    """POST each start list (:func:`read_startlists`); StartlistFailed names the file and
    ingest's reason when it refuses one."""
    for path, doc in docs:
        try:
            res = sup.load_startlist(doc)
        except RuntimeError as exc:
            raise StartlistFailed(f"{path}: {exc}") from None
        races = res.get("races") or []
        log.info("start list %s loaded%s", path,
                 f": {len(races)} race(s)" if isinstance(races, list) and races else "")


def cmd_run(args: argparse.Namespace) -> None:
    config = config_file(args)
    cfg = settings_mod.load(config)  # before anything starts: a bad file stops here
    startlists = read_startlists(cfg.startlists)  # and so does a start list that is not JSON
    sup = Supervisor(config, cfg)
    try:
        sup.start()
        load_startlists(sup, startlists)
        print(f"icetime is running: {sup.page_url()}  (Ctrl-C to stop)\n{sup.banner()}",
              flush=True)
        while True:
            time.sleep(1)
            sup.check_children()
    except KeyboardInterrupt:
        pass
    finally:
        sup.stop()


def cmd_demo(args: argparse.Namespace) -> None:
    import asyncio

    config = str(ROOT / "deploy" / "demo.toml")
    cfg = settings_mod.load(config)
    doc = load_fixture(fixture_path(args.race))
    sup = Supervisor(config, cfg, clean=True)  # a demo starts clean
    try:
        asyncio.run(run_demo(sup, doc, args.speed, args.exit_after_replay))
    except KeyboardInterrupt:  # before or after the loop ran
        print("\n  stopping", flush=True)
    finally:
        sup.stop()


async def run_demo(sup: Supervisor, doc: dict[str, Any], speed: float,
               exit_after_replay: bool) -> None:
    """Start the services, replay the fixture ``doc`` at ``speed`` times real time, then
    serve until Ctrl-C (or stop at once with ``exit_after_replay``).

    Ctrl-C is handled in the loop, so everything stops in order: the feed clients, the
    services, then the decoder (asyncio.run would cancel them all at once)."""
    import asyncio

    from services.ingest.decoders.simulator import DecoderSimulator

    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupted.set)

    async def carry_on() -> bool:
        """Wait a second, watching the services; False once interrupted."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(interrupted.wait(), 1.0)
        if interrupted.is_set():
            return False
        sup.check_children()
        return True

    # The finish line's passings come from a (simulated) P3 decoder, through
    # ingest's decoder link: the whole real path. The gun uses the JSON feed. Like a
    # real one, the decoder is on before ingest starts and until ingest has stopped,
    # so the link's log neither starts nor ends with a decoder that is down.
    sim = None
    sup.start_redis()  # first: a data dir in use stops the demo before anything binds
    if sup.cfg.decoders:
        sim = DecoderSimulator()
        await sim.start(sup.cfg.decoders[0].host, sup.cfg.decoders[0].port)
    task: asyncio.Task[Tally] | None = None
    race = doc["script"]["race"]
    try:
        sup.start()
        sup.load_startlist(doc)
        print(f"\n  {doc['startlist']['races'][0]['name']}, live:\n{sup.screens(race)}\n"
              f"  replaying at {speed}x; Ctrl-C stops everything\n", flush=True)
        task = asyncio.create_task(replay(doc, sup.cfg, speed, decoder=sim))
        await _follow_replay(task, carry_on, sup.page_url(race), exit_after_replay)
    finally:
        if interrupted.is_set():
            print("\n  stopping", flush=True)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        sup.stop()
        if sim:
            await sim.stop()


async def _follow_replay(task: asyncio.Task[Tally], carry_on: Callable[[], Awaitable[bool]],
                         page_url: str, exit_after_replay: bool) -> None:
    """Wait for the replay ``task`` to end, then serve until ``carry_on`` says stop."""
    while not task.done():
        if not await carry_on():
            return
    if not await carry_on():  # the last passings cross the link
        return
    tally = task.result()
    if exit_after_replay:
        print(f"  replay finished: {tally}", flush=True)
        return
    print(f"  replay finished: {tally}; still serving {page_url}", flush=True)
    while await carry_on():
        pass


def running_ports(cfg: settings_mod.Settings) -> dict[str, int]:
    """The ports the running services reported in the Redis hash ``keys.LISTENING``
    (settings field -> port, e.g. ``{"ingest_tcp_port": 40124}``), through
    ``cfg.redis_url`` or the embedded Redis's socket in ``cfg.data_dir``; ``{}`` when
    that Redis does not answer (icetime is not running)."""
    import redis

    url = cfg.redis_url
    if not url:
        sock = Path(cfg.data_dir) / "redis.sock"
        if not sock.exists():
            return {}
        url = f"unix://{sock}"
    r = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        entries = r.hgetall(keys.LISTENING)
    except (redis.RedisError, OSError):
        return {}
    finally:
        r.close()
    ports: dict[str, int] = {}
    for raw in entries.values():
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            ports.update({str(k): int(v) for k, v in json.loads(raw)["ports"].items()})
    return ports


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


def cmd_relay(args: argparse.Namespace) -> None:
    """The relay alone, in the foreground (``python -m services.relay``)."""
    config = config_file(args)
    settings_mod.load(config)  # a bad file stops here, with its one line
    os.execv(sys.executable, [sys.executable, "-m", f"services.{RELAY}", "--config",
                              str(Path(config).resolve())])


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    # Ctrl-C and SIGTERM (systemd, kill) both stop the services first and Redis
    # last, however icetime was started (a background job inherits SIGINT ignored).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    p = argparse.ArgumentParser(prog="icetime", description=__doc__.splitlines()[0],
                                epilog="Exit codes: 0 stopped, 1 failed, 2 bad configuration "
                                       "or arguments, data dir in use or start list refused, "
                                       "3 a port could not be bound (docs/configuration.md).")
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run icetime for a venue from a configuration file")
    run.add_argument("--config", help="the venue's TOML file (default: $ICETIME_CONFIG)")
    run.set_defaults(func=cmd_run)
    demo = sub.add_parser("demo", help="run icetime and replay a real race through it")
    demo.add_argument("--race", default="beijing2023_w1000a",
                      help="a fixture name in fixtures/ or a path")
    demo.add_argument("--speed", type=positive_speed, default=1.0,
                      help="replay speed factor (above 0)")
    demo.add_argument("--exit-after-replay", action="store_true")
    demo.set_defaults(func=cmd_demo)
    rep = sub.add_parser("replay", help="feed a fixture's script to a running icetime")
    rep.add_argument("race")
    rep.add_argument("--config", help="the venue's TOML file (default: $ICETIME_CONFIG)")
    rep.add_argument("--speed", type=positive_speed, default=1.0,
                     help="replay speed factor (above 0)")
    rep.add_argument("--session", help="resend an earlier run (its session, as printed); "
                                       "by default each run is a session of its own")
    rep.set_defaults(func=cmd_replay)
    rel = sub.add_parser("relay", help="mirror a venue's races to a cloud Redis "
                                       "(docs/cloud.md)")
    rel.add_argument("--config", help="the TOML file with [relay] (default: $ICETIME_CONFIG)")
    rel.set_defaults(func=cmd_relay)
    args = p.parse_args(argv)
    try:
        logs.configure("icetime")
        args.func(args)
    except settings_mod.ConfigError as exc:
        config_exit("icetime", exc)
    except ConfigRefused as exc:
        log.error("%s", exc)
        raise SystemExit(EXIT_CONFIG) from None
    except (DataDirInUse, StartlistFailed) as exc:
        print(f"icetime: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_CONFIG) from None
    except CannotListen:  # the service printed the one line naming the port and the key
        raise SystemExit(EXIT_BIND) from None


if __name__ == "__main__":
    main()
