"""Shared test fixtures: a real redis-server per test, the real services on port 0."""
from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import gc
import inspect
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from icetime import bus, keys, snapshot
from icetime.keys import DEFAULT_COMPETITION as MAIN
from icetime.messages import convert_input
from icetime.redis_embed import EmbeddedRedis
from icetime.service import Ports, Serve, with_ports
from icetime.settings import Settings, Source
from services.broadcast import server as broadcast
from services.ingest import server as ingest
from services.scoring import runner as scoring
from services.scoring.competition import Competition

pytest_plugins = ["pytester"]  # tests/test_stack.py runs tests that must fail
ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
TOKENS = {"gun": "t-gun", "finish-loop": "t-loop", "photo-finish": "t-photo",
          "officials": "t-officials", "referee": "t-referee", "loader": "t-loader"}
#: Each test source's role ("officials" loads start lists and decides, as admin).
ROLES = {"gun": "gun", "finish-loop": "decoder", "photo-finish": "photo",
         "officials": "admin", "referee": "referee", "loader": "loader"}


def feed(comp: Competition, input_id: str, obj: dict[str, Any]
         ) -> dict[str, list[dict[str, Any]]]:
    """Feed the engine one input written as a plain dict, typed on the way in as ingest
    types it (``msgspec.ValidationError`` if it is not a valid input)."""
    return comp.feed(input_id, convert_input(obj))


async def race_view(r: Redis, race: str, competition: str = MAIN) -> dict[str, Any] | None:
    """The race's view as every reader takes it: the stored snapshot and the events
    after it, folded (:func:`icetime.snapshot.latest`); None without a snapshot."""
    got = await snapshot.latest(r, keys.snapshot_key(competition, race),
                                keys.events_stream(competition, race))
    return None if got is None else got.view


async def post_feed(s: Any, stack: Stack, source: str, body: dict[str, Any],
                    seq: int | None = None, wait: bool = True) -> dict[str, Any]:
    """POST one input to ingest's ``/feed`` as ``source`` (its token), with ``seq`` when
    given; with ``wait`` the reply carries scoring's verdict (``?wait=1``). ``s``: an
    aiohttp ClientSession. Returns the JSON reply."""
    url = f"http://127.0.0.1:{stack.settings.ingest_http_port}/feed"
    async with s.post(url, params={"wait": "1"} if wait else None,
                      json=body if seq is None else {**body, "seq": seq},
                      headers={"Authorization": f"Bearer {TOKENS[source]}"}) as r:
        reply: dict[str, Any] = await r.json()
        return reply


async def caught_up(r: Redis, race: str, timeout_s: float = 10.0) -> str:
    """Wait until scoring has taken every input ingest accepted; the race's last event id
    (snapshots are stored at a cadence, so the stored one may be behind it). Raises
    AssertionError after ``timeout_s``."""
    for _ in range(int(timeout_s / 0.005)):
        last = bus.entries(await r.xrevrange(keys.raw_stream(MAIN), count=1))
        done = await r.get(keys.scoring_progress(MAIN))
        if last and done and bus.text(done) == last[0][0]:
            break
        await asyncio.sleep(0.005)
    else:
        raise AssertionError("scoring did not catch up")
    stamp = await snapshot.end(r, keys.snapshot_key(MAIN, race), keys.events_stream(MAIN, race))
    assert stamp is not None
    return stamp[1]


def write_venue_config(tmp_path: Path, *extra: str) -> Path:
    """A venue TOML with every listener on port 0 (any free port) and the test tokens.

    A supervisor started on it tells the ports it got: ``Supervisor.cfg`` after start,
    the URL ``icetime run`` prints."""
    path = tmp_path / "venue.toml"
    path.write_text("\n".join([
        'host = "127.0.0.1"',
        f'[redis]\nurl = ""\ndata_dir = "{tmp_path / "data"}"',
        "[ingest]\nhttp_port = 0\ntcp_port = 0",
        "[broadcast]\nhttp_port = 0\nws_port = 0\nrmonitor_port = 0",
        *extra,
    ] + [f'[[sources]]\nid = "{k}"\ntoken = "{v}"\nrole = "{ROLES[k]}"'
         for k, v in TOKENS.items()]) + "\n")
    return path


def make_settings(redis_url: str = "", data_dir: str = "", **kw: object) -> Settings:
    """Settings for an in-process :class:`Stack`: every listener on port 0."""
    base = Settings(
        redis_url=redis_url, data_dir=data_dir, host="127.0.0.1",
        ingest_http_port=0, ingest_tcp_port=0, broadcast_http_port=0, broadcast_ws_port=0,
        broadcast_rmonitor_port=0,
        sources=tuple(Source(k, v, role=ROLES[k]) for k, v in TOKENS.items()))
    return replace(base, **kw)  # type: ignore[arg-type]


@pytest.fixture
def redis_server(tmp_path):
    with EmbeddedRedis(tmp_path / "redis") as emb:
        yield emb


@pytest.fixture
async def redis_client(redis_server):
    r = bus.connect(redis_server.url)
    yield r
    await r.aclose()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chromium():
    """One Playwright driver and one Chromium (tests/chromium.py) for a module whose page
    tests run in one event loop (``pytest.mark.asyncio(loop_scope="module")``): a launch
    is a second or more of CPU on a busy machine."""
    from playwright.async_api import async_playwright

    from .chromium import launch

    async with async_playwright() as p:
        browser = await launch(p)
        yield browser
        await browser.close()


@pytest_asyncio.fixture(loop_scope="module")
async def browser(chromium):
    """The module's Chromium, as fresh as a new one: each page a test opens has a context
    of its own (tests/chromium.py's ``open_page``), all closed when the test ends."""
    yield chromium
    for context in chromium.contexts:
        await context.close()


class ServiceDied(Exception):
    """A service of a test's :class:`Stack` raised or returned while the test ran;
    ``__cause__`` is what it raised. ``reported`` once a test or teardown failed with it."""

    reported = False


#: Modules whose tests take tens of seconds (browsers, many processes, many examples):
#: collected first, so the parallel workers start them early instead of one worker
#: finishing the suite alone on them (xdist hands out tests in collection order).
SLOW_FIRST = ("test_screens.py", "test_marathon_live.py", "test_browser.py", "test_stack.py",
              "test_feed_properties.py", "test_escaping.py", "test_snapshots.py",
              "test_marathon_results.py", "test_desk.py", "test_cli.py",
              "test_loadbalancer.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow modules first (:data:`SLOW_FIRST`), each in its own order, the rest after."""
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return SLOW_FIRST.index(name) if name in SLOW_FIRST else len(SLOW_FIRST)
    items.sort(key=rank)  # stable: the order within a module is kept


#: The test being run (pytest_runtest_call), so a dying service can fail it at once.
_RUNNING: list[pytest.Item] = []
_SERVICE_FAILURE = pytest.StashKey[ServiceDied]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """Report a service's death as the test's failure, instead of the cancellation
    :func:`fail_running_test` used to stop the test at once."""
    _RUNNING.append(item)
    watch = threading.Timer(max(1.0, _timeout_s(item) - DUMP_BEFORE_TIMEOUT_S),
                            _dump_pending_tasks, args=(item.nodeid,))
    watch.daemon = True
    watch.start()
    try:
        return (yield)
    except asyncio.CancelledError:
        failure = item.stash.get(_SERVICE_FAILURE, None)
        if failure is None:
            raise
        failure.reported = True
        raise failure from failure.__cause__
    finally:
        watch.cancel()
        _RUNNING.pop()


#: How long before pytest-timeout's limit the pending asyncio tasks are printed: its own
#: dump shows threads only, and an async test's main thread just waits in select().
DUMP_BEFORE_TIMEOUT_S = 10.0


def _timeout_s(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    return float(item.config.getini("timeout") or 0) or float("inf")


def _dump_pending_tasks(nodeid: str) -> None:
    """Print every pending asyncio task's coroutine stack (from a timer thread: a test
    about to time out is stuck on one of them). Found through gc, as the loop runs in
    another thread; a task that moves meanwhile prints a stale frame at worst."""
    # type(), not isinstance(): isinstance() asks a weak proxy for its referent's class,
    # which raises ReferenceError once the referent is gone (and lost a dump so).
    tasks = [o for o in gc.get_objects()
             if issubclass(type(o), asyncio.Task) and not o.done()]
    out = [f"\n=== {len(tasks)} pending asyncio tasks, {DUMP_BEFORE_TIMEOUT_S:.0f} s before "
           f"the timeout of {nodeid} ==="]
    for task in tasks[:60]:
        out.append(f"--- {task.get_name()}")
        with contextlib.suppress(Exception):
            out += [f"    {f.f_code.co_filename}:{f.f_lineno} {f.f_code.co_name}"
                    for f in task.get_stack()]
    print("\n".join(out), file=sys.stderr, flush=True)


def service_died(what: str, task: asyncio.Task[None]) -> ServiceDied:
    """The failure of ``what`` (e.g. "service ingest"), whose ``task`` ended while the
    test ran: caused by what it raised, if anything."""
    exc = None if task.cancelled() else task.exception()
    failure = ServiceDied(f"{what} " + (
        f"died: {exc!r}" if exc else "was cancelled" if task.cancelled()
        else "returned while the test ran"))
    failure.__cause__ = exc
    return failure


def fail_running_test(failure: ServiceDied) -> None:
    """Cancel the running test's task (pytest-asyncio runs the test function's coroutine
    as one task) so it stops now rather than at its next timeout."""
    if not _RUNNING or not isinstance(_RUNNING[-1], pytest.Function):
        return
    item = _RUNNING[-1]
    code = getattr(inspect.unwrap(item.obj), "__code__", None)
    for task in asyncio.all_tasks():
        if getattr(task.get_coro(), "cr_code", None) is code and not task.done():
            item.stash[_SERVICE_FAILURE] = failure
            task.cancel(f"{failure}")
            return


#: How long a service process may take to stop on SIGTERM before it is killed and its
#: test fails (seconds): a second on a quiet machine; over 10 s was seen beside five
#: test runners (a scoring worker handing over, a broadcast node's interpreter exit).
STOP_S = 30.0


def stop_processes(procs: list[subprocess.Popen[Any]], sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to each of ``procs`` still running and wait for all: one that has not
    stopped after :data:`STOP_S` is killed (none left behind to trouble later tests) and
    the test fails (AssertionError naming it)."""
    running = [p for p in procs if p.poll() is None]
    for proc in running:
        proc.send_signal(sig)
    stuck = []
    for proc in running:
        try:
            proc.wait(STOP_S)
        except subprocess.TimeoutExpired:
            stuck.append(proc.args)
            proc.kill()
            proc.wait(STOP_S)
    assert not stuck, f"still running {STOP_S} s after signal {sig}: {stuck}"


#: The services a Stack runs by name: ``serve(settings, redis, stop, ready)``.
SERVICES: dict[str, Serve] = {"ingest": ingest.serve, "scoring": scoring.serve,
                              "broadcast": broadcast.serve}
#: How long a service may take to report its ports.
START_TIMEOUT_S = 10.0
#: How long a restarted service's taken port is tried again (:meth:`Stack.start`).
RESTART_BIND_S = 10.0


@dataclass
class Stack:
    """Services running as tasks in the test's event loop.

    ``settings`` holds the ports each service reported, so with port 0 configured
    (:func:`make_settings`) nothing is ever picked by binding and releasing. A service
    that raises or returns while running (not stopped) fails the running test at once
    with :class:`ServiceDied` caused by its exception, and :meth:`close` raises it too
    if the test did not already fail with it."""

    settings: Settings
    url: str
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    stops: dict[str, asyncio.Event] = field(default_factory=dict)
    clients: list[Redis] = field(default_factory=list)
    failure: ServiceDied | None = None
    #: The ports each service reported, and sockets holding a stopped service's ports
    #: (bound, not listening: a client is refused as by a dead server) until it starts
    #: again. Without them the kernel may hand a free port to another test's client or
    #: listener meanwhile, and the service could not come back where its clients knew it.
    ports: dict[str, Ports] = field(default_factory=dict)
    held: dict[str, list[socket.socket]] = field(default_factory=dict)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.settings.broadcast_ws_port}/"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.settings.broadcast_http_port}"

    async def start(self, name: str, serve: Serve | None = None) -> None:
        """Start service ``name`` (or ``serve`` under that name) and return once it has
        reported its ports, which are then in ``settings``; a restarted service gets
        the ports it had. Raises what the service raised if it died starting (e.g.
        OSError for a taken port), TimeoutError if it never reported.

        A restart whose port is still taken is tried again for up to
        :data:`RESTART_BIND_S` (seen on a busy machine: the stopped node's listener not
        yet gone when the test started it again)."""
        self.release(name)
        for _ in range(int(RESTART_BIND_S / 0.1)):
            try:
                return await self._start(name, serve)
            except OSError as exc:
                if name not in self.ports or exc.errno != errno.EADDRINUSE:
                    raise
            await asyncio.sleep(0.1)
        return await self._start(name, serve)

    async def _start(self, name: str, serve: Serve | None) -> None:
        serve = serve or SERVICES[name]
        r = bus.connect(self.url)
        self.clients.append(r)
        stop = self.stops[name] = asyncio.Event()
        reported: asyncio.Future[Ports] = asyncio.get_running_loop().create_future()

        async def ready(ports: Ports) -> None:
            if not reported.done():
                reported.set_result(ports)

        task = asyncio.create_task(serve(self.settings, r, stop, ready), name=name)
        self.tasks[name] = task
        await asyncio.wait({reported, task}, timeout=START_TIMEOUT_S,
                           return_when=asyncio.FIRST_COMPLETED)
        if not reported.done():
            reported.cancel()
            self.tasks.pop(name)
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                raise TimeoutError(f"service {name} did not report its ports "
                                   f"in {START_TIMEOUT_S} s")
            exc = task.exception()
            if exc is not None:
                raise exc
            raise ServiceDied(f"service {name} returned before it reported its ports")
        self.settings = with_ports(self.settings, reported.result())
        self.ports[name] = reported.result()
        task.add_done_callback(functools.partial(self._ended, name))

    def hold(self, name: str) -> None:
        """Bind (SO_REUSEADDR, no listen) the ports stopped service ``name`` had."""
        held = self.held.setdefault(name, [])
        for port in self.ports.get(name, {}).values():
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()  # taken already: its restart will say so
            else:
                held.append(sock)

    def release(self, name: str) -> None:
        for sock in self.held.pop(name, []):
            sock.close()

    def _ended(self, name: str, task: asyncio.Task[None]) -> None:
        if self.stops[name].is_set():
            return  # stopped on purpose; stop() hands on whatever it raised
        failure = service_died(f"service {name}", task)
        if self.failure is None:
            self.failure = failure
            fail_running_test(failure)

    async def stop(self, name: str) -> None:
        self.stops[name].set()
        task = self.tasks.pop(name)
        try:
            if not task.done():
                await asyncio.wait_for(task, 10)
        finally:
            self.hold(name)

    async def close(self) -> None:
        """Stop every service and close the clients; raises the failure of a service
        that died, unless the test already failed with it."""
        try:
            for name in list(self.tasks):
                await self.stop(name)
        finally:
            for r in self.clients:
                await r.aclose()
            self.clients.clear()
            for name in list(self.held):
                self.release(name)
        if self.failure is not None and not self.failure.reported:
            self.failure.reported = True
            raise self.failure


async def start_stack(settings: Settings, redis_url: str) -> Stack:
    """The three services in this process, ready to use: ``settings`` with port 0
    gets free ports, which the returned Stack's ``settings`` hold."""
    s = Stack(settings, redis_url)
    try:
        for name in SERVICES:
            await s.start(name)
    except BaseException:
        await s.close()
        raise
    return s


@pytest.fixture
async def stack(redis_server):
    s = await start_stack(make_settings(redis_server.url), redis_server.url)
    yield s
    await s.close()


def without_inputs(view: Any) -> Any:
    """A race view without its passages' ``input`` ids: two runs of the same race fed
    under other input ids (an engine in a test, scoring on the raw log) compare equal."""
    if isinstance(view, dict):
        return {k: without_inputs(v) for k, v in view.items()
                if not (k == "input" and "lap_time" in view)}
    if isinstance(view, list):
        return [without_inputs(v) for v in view]
    return view
