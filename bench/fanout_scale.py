"""10,000 WebSocket clients on one broadcast node, next to a Node.js ``ws`` server.

icetime runs as ``icetime run`` starts it (embedded redis-server, ingest, scoring,
broadcast). A race is fed through the TCP feed at a steady passing rate, each passing
stamped with ``sent_us``. The clients live in several client processes of this module
(``--procs``), each stamping every chunk of bytes on arrival and decoding after the run,
then reporting the passing -> client latencies (clocks: this machine's) and frames.

Then the same client processes follow a Node.js ``ws`` server (bench/node/server.mjs)
that is fed the frames icetime sent, recorded by one more client, at the times they
arrived, with each frame's ``source_us`` stamped when the frame is handed to Node. For
each server: p50/p99/max latency, frames delivered, the server process's CPU time
(/proc/<pid>/stat, user + system, from the first passing until a recorder client has
the last one, and 2 s more) per delivered frame and the system (kernel) part of it, the
client processes' CPU time per frame over the same window, the median *spread* (from the
first client's receipt of a frame to the last one's: how long one frame's fan-out
takes), and the ratio icetime / Node.

The number of open files is raised to the hard limit (each client holds a socket in a
client process and one in the server); the number of clients is capped to fit and the cap
is printed. ``npm ci`` installs ``ws`` into bench/node/node_modules when it is missing; if
that or ``node`` is not there, the Node half is skipped with the reason.

``--repeat N`` runs both halves N times, interleaved (icetime, Node, Node, icetime,
icetime, ...; a Node half that goes first sends the frames of the icetime half before it,
and each icetime half starts from an empty Redis), then prints the median and range of
the ratio and of its kernel part, with the load average. ``--syscalls`` counts each
server's system calls, context switches and page faults over the same window
(:mod:`bench.syscalls`, perf tracepoints), per 1,000 delivered frames;
``--perf-record DIR`` samples each server's stacks, user and kernel, into DIR.

Run alone: ``python -m bench.fanout_scale --clients 10000 [--procs 4] [--rate 5]
[--repeat 3] [--syscalls]``.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np

from icetime import settings
from icetime.cli import Supervisor
from icetime.feedclient import FeedClient
from icetime.service import run_loop
from icetime.timefmt import now_us

from . import latency, syscalls
from .wsclient import RawClient, open_client

ROOT = Path(__file__).resolve().parents[1]
NODE_DIR = ROOT / "bench" / "node"
#: File descriptors kept free beyond one per client: Redis, listeners, pipes, logs.
FD_SPARE = 256
#: Clients a client process connects at once (the listener's accept queue is short).
CONNECT_BATCH = 25
READY_TIMEOUT_S = 300.0
#: After the last frame, how long clients may take to get it (and the CPU window runs on).
DRAIN_S = 2.0
#: How long the recorder may take to get an event for every passing, s.
DRAIN_WAIT_S = 60.0
SOURCE_US = re.compile(r'"source_us":\d+')


# ---------------------------------------------------------------- client processes
class Hops(msgspec.Struct):
    source_us: int | None = None  # none on events no passing caused (a gun)


class Event(msgspec.Struct):
    type: str
    hops: Hops | None = None


class Frame(msgspec.Struct):
    type: str
    event: Event | None = None


FRAME = msgspec.json.Decoder(Frame)


class ScaleClient(RawClient):
    """A RawClient (frames split and stamped on arrival, pings answered) whose frames
    are decoded after the run (:meth:`results`)."""

    def results(self) -> tuple[int, list[tuple[int, int]]]:
        """(event frames received, (passing sent µs, passing -> receipt µs) of each
        passage and finish)."""
        lat = []
        count = 0
        for got, payload in self.frames:
            msg = FRAME.decode(payload)
            if msg.type != "event" or msg.event is None:
                continue
            count += 1
            hops = msg.event.hops
            if msg.event.type in ("passage", "finish") and hops and hops.source_us:
                lat.append((hops.source_us, got - hops.source_us))
        return count, lat


async def connect_all(port: int, race: str, n: int) -> list[ScaleClient]:
    """``n`` clients subscribed to ``race``, CONNECT_BATCH at a time; each has had its
    snapshot (or READY_TIMEOUT_S passed)."""
    loop = asyncio.get_running_loop()
    sub = {"op": "subscribe", "race": race, "protocol": 2}
    clients: list[ScaleClient] = []
    for start in range(0, n, CONNECT_BATCH):
        batch = await asyncio.gather(*(
            loop.create_connection(lambda: ScaleClient(sub), "127.0.0.1", port)
            for _ in range(min(CONNECT_BATCH, n - start))))
        clients += [proto for _, proto in batch]
        await asyncio.sleep(0.01)
    pending = [asyncio.ensure_future(c.ready.wait()) for c in clients]
    await asyncio.wait(pending, timeout=READY_TIMEOUT_S)
    for p in pending:
        p.cancel()
    return clients


async def worker(n: int) -> None:
    """A client process: commands on stdin, one a line, answers on stdout.

    ``connect <port> <race>``: open ``n`` clients; answers ``ready <k>`` (k had a
    snapshot). ``stop <file>``: close them, save (passing sent µs, latency µs) rows
    (int64, shape (k, 2)) to ``file`` (numpy), answer ``done <event frames received>``.
    EOF ends the process."""
    clients: list[ScaleClient] = []
    while line := await asyncio.to_thread(sys.stdin.readline):
        cmd, *args = line.split()
        if cmd == "connect":
            clients = await connect_all(int(args[0]), args[1], n)
            print("ready", sum(c.ready.is_set() for c in clients), flush=True)
        elif cmd == "stop":
            for c in clients:
                c.close()
            count, lat = 0, []
            for c in clients:
                k, more = c.results()
                count += k
                lat += more
            np.save(args[0], np.asarray(lat, dtype=np.int64).reshape(-1, 2))
            clients = []
            print("done", count, flush=True)


# ---------------------------------------------------------------- the bench
def raise_open_files(want: int) -> int:
    """Raise this process's open-files limit (inherited by what it starts) towards
    ``want``, as far as the hard limit allows. Returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new = want if hard == resource.RLIM_INFINITY else min(hard, want)
    if new > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return soft


def cpu_s(pid: int) -> np.ndarray:
    """(user, system) CPU time of process ``pid`` so far, seconds (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return np.array([int(fields[11]), int(fields[12])]) / os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    name: str
    clients: int
    frames: int
    expected: int
    #: The server process's (user, system) CPU seconds over the feed.
    cpu: np.ndarray
    load: float
    #: (passing sent µs, passing -> client µs) per passage or finish each client got.
    lat: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    #: The client processes' CPU seconds (user + system) over the same time.
    clients_cpu_s: float = 0.0
    #: The server process's system calls over the same time, by name (``--syscalls``).
    calls: dict[str, int] | None = None

    @property
    def cpu_s(self) -> float:
        return float(self.cpu.sum())

    def cpu_per_frame_us(self) -> float:
        return self.cpu_s * 1e6 / max(1, self.frames)

    def clients_per_frame_us(self) -> float:
        return self.clients_cpu_s * 1e6 / max(1, self.frames)

    def sys_per_frame_us(self) -> float:
        return float(self.cpu[1]) * 1e6 / max(1, self.frames)

    def spread_ms(self) -> float:
        """Median over passings of the time from the first client's receipt of its
        frame to the last client's (ms): how long one frame's fan-out takes."""
        if not len(self.lat):
            return 0.0
        order = np.argsort(self.lat[:, 0], kind="stable")
        sent, lat = self.lat[order, 0], self.lat[order, 1]
        starts = np.flatnonzero(np.r_[True, sent[1:] != sent[:-1]])
        spread = np.maximum.reduceat(lat, starts) - np.minimum.reduceat(lat, starts)
        return float(np.median(spread)) / 1000

    def line(self) -> str:
        lat = np.sort(self.lat[:, 1]) / 1000 if len(self.lat) else np.zeros(1)
        return (f"{self.name:<10} {self.clients:>7} {self.frames:>10}/{self.expected:<10} "
                f"{np.percentile(lat, 50):7.1f} {np.percentile(lat, 99):7.1f} "
                f"{lat.max():7.1f} {self.cpu_per_frame_us():9.2f} "
                f"{self.sys_per_frame_us():9.2f} {self.spread_ms():9.1f}   {self.load:5.2f}")


class Workers:
    """The client processes and their stdin/stdout."""

    def __init__(self, n: int, procs: int) -> None:
        self.shares = [n // procs + (i < n % procs) for i in range(procs)]
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self) -> None:
        for share in self.shares:
            self.procs.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.fanout_scale", "--worker", str(share),
                cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE))

    async def ask(self, command: str | list[str]) -> list[list[str]]:
        """Send a command (one each, or the same to all); their answers, split."""
        commands = [command] * len(self.procs) if isinstance(command, str) else command
        for p, c in zip(self.procs, commands, strict=True):
            assert p.stdin
            p.stdin.write(c.encode() + b"\n")
            await p.stdin.drain()

        async def answer(p: asyncio.subprocess.Process) -> list[str]:
            assert p.stdout
            line = await p.stdout.readline()
            if not line:
                raise RuntimeError(f"client process {p.pid} ended (exit {await p.wait()})")
            return line.decode().split()

        return list(await asyncio.gather(*(answer(p) for p in self.procs)))

    def cpu_s(self) -> float:
        """The client processes' CPU time so far (user + system), seconds."""
        return sum(float(cpu_s(p.pid).sum()) for p in self.procs)

    async def connect(self, port: int, race: str) -> int:
        return sum(int(a[1]) for a in await self.ask(f"connect {port} {race}"))

    async def stop(self, tmp: Path) -> tuple[int, np.ndarray]:
        files = [tmp / f"lat{i}.npy" for i in range(len(self.procs))]
        answers = await self.ask([f"stop {f}" for f in files])
        lat = np.concatenate([np.load(f) for f in files]).reshape(-1, 2)
        return sum(int(a[1]) for a in answers), lat

    async def close(self) -> None:
        for p in self.procs:
            if p.stdin:
                p.stdin.close()
        for p in self.procs:
            await p.wait()


async def feed(cfg: settings.Settings, race: str, passings: int, rate: float) -> None:
    """Guns and ``passings`` passings of ``latency.startlist(race)`` over the TCP feed at
    ``rate`` a second, each stamped with ``sent_us``."""
    gun = FeedClient(cfg.host, cfg.ingest_tcp_port, latency.TOKENS["gun"])
    loop = FeedClient(cfg.host, cfg.ingest_tcp_port, latency.TOKENS["finish-loop"])
    base, seq, sent = now_us(), 0, 0
    start = time.monotonic()
    try:
        for pair in range(1, latency.PAIRS + 1):
            zero = base + pair * 10**9
            seq += 1
            await gun.send({"type": "gun", "seq": seq, "race": race, "pair": pair, "t": zero})
            for k in range(latency.PASSAGES):
                for lane in (0, 1):
                    if sent >= passings:
                        return
                    seq += 1
                    t = zero + (k + 1) * 30_000_000 + lane * 150_000
                    await loop.send({"type": "passing", "seq": seq, "t": t,
                                     "transponder": f"{race}-T{2 * (pair - 1) + lane}",
                                     "sent_us": now_us()})
                    sent += 1
                    # Paced against the start, so a slow send does not slow the rate.
                    await asyncio.sleep(max(0.0, start + sent / rate - time.monotonic()))
    finally:
        await gun.close()
        await loop.close()


async def icetime_half(args: argparse.Namespace, workers: Workers, tmp: Path
                       ) -> tuple[Result, RawClient]:
    """The real system's run; the result, and the recorder client (its frames). Each run
    starts from an empty Redis (its own data directory under ``tmp``)."""
    path = latency.config(Path(tempfile.mkdtemp(prefix="icetime-", dir=tmp)))
    sup = Supervisor(path, settings.load(path))
    await asyncio.to_thread(sup.start)
    cfg = sup.cfg
    race = "scale"
    try:
        await asyncio.to_thread(sup.load_startlist, latency.startlist(race))
        recorder = await open_client(cfg.host, cfg.broadcast_ws_port,
                                     {"op": "subscribe", "race": race, "protocol": 2})
        await asyncio.wait_for(recorder.ready.wait(), 30)
        ready = await workers.connect(cfg.broadcast_ws_port, race)
        pid = sup.procs["broadcast"].pid
        counter = await start_counting(args, "icetime", pid, tmp)
        cpu0, clients0 = cpu_s(pid), workers.cpu_s()
        spy = await start_py_spy(args.py_spy, pid)
        await feed(cfg, race, args.passings, args.rate)
        await drained(recorder, args.passings)
        used, clients_used = cpu_s(pid) - cpu0, workers.cpu_s() - clients0
        calls = await stop_counting(counter)
        await stop_py_spy(spy, args.py_spy)
        load = os.getloadavg()[0]
        recorder.close()
        frames, lat = await workers.stop(tmp)
        events = sum(1 for _, p in recorder.frames if p.startswith(b'{"type":"event"'))
        return Result("icetime", ready, frames, events * ready, used, load, lat,
                      clients_used, calls), recorder
    finally:
        await asyncio.to_thread(sup.stop)


def passing_events(client: RawClient) -> int:
    return sum(1 for _, p in client.frames
               if p.startswith(b'{"type":"event"') and b'"source_us":null' not in p)


async def drained(recorder: RawClient, passings: int) -> None:
    """Wait until the recorder has an event for each of ``passings`` passings (at most
    DRAIN_WAIT_S), then DRAIN_S for the other clients."""
    deadline = time.monotonic() + DRAIN_WAIT_S
    while passing_events(recorder) < passings and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(DRAIN_S)


async def start_py_spy(out: str | None, pid: int) -> asyncio.subprocess.Process | None:
    """py-spy recording ``pid`` (collapsed stacks into ``out``), when asked for."""
    if out is None:
        return None
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return await asyncio.create_subprocess_exec(
        exe, "record", "--pid", str(pid), "--format", "raw", "--rate", "250",
        "--output", out, stdout=asyncio.subprocess.DEVNULL)


async def stop_py_spy(spy: asyncio.subprocess.Process | None, out: str | None) -> None:
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        await spy.wait()
        print(f"py-spy: the broadcast node's stacks during the feed in {out}")


def node_missing() -> str | None:
    """Why the Node half cannot run (no node, ``npm ci`` failed), or None."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None:
        return "no `node` on PATH"
    if (NODE_DIR / "node_modules" / "ws").is_dir():
        return None
    if npm is None:
        return "bench/node/node_modules is missing and there is no `npm` to install it"
    try:
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                              capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        return "`npm ci` in bench/node took over 180 s (offline?)"
    if done.returncode != 0:
        return f"`npm ci` in bench/node failed: {done.stderr.strip().splitlines()[-1:]}"
    return None


def source_times(recorder: RawClient) -> list[tuple[int, str]]:
    """The recorded event frames, each with the time its passing was sent (µs); an event
    no passing caused (a gun) goes with the one before it."""
    out: list[tuple[int, str]] = []
    for got, payload in recorder.frames:
        if not payload.startswith(b'{"type":"event"'):
            continue
        msg = FRAME.decode(payload)
        hops = msg.event.hops if msg.event else None
        at = hops.source_us if hops and hops.source_us else (out[-1][0] if out else got)
        out.append((at, payload.decode()))
    return out


async def node_half(args: argparse.Namespace, workers: Workers, recorder: RawClient,
                    tmp: Path) -> Result:
    """The same clients on the Node ``ws`` server, fed the recorded frames at the pace
    their passings were sent."""
    node = await asyncio.create_subprocess_exec(
        "node", str(NODE_DIR / "server.mjs"), cwd=NODE_DIR,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert node.stdin and node.stdout
    try:
        port = int((await node.stdout.readline()).split()[1])
        snapshot = next(p for _, p in recorder.frames if p.startswith(b'{"type":"snapshot"'))
        node.stdin.write(b"S " + snapshot + b"\n")
        events = source_times(recorder)
        # Its own recorder, as on icetime: the end of the feed is when it has every passing.
        watch = await open_client("127.0.0.1", port, {"op": "subscribe", "race": "scale"})
        await asyncio.wait_for(watch.ready.wait(), 30)
        ready = await workers.connect(port, "scale")
        counter = await start_counting(args, "node", node.pid, tmp)
        cpu0, clients0 = cpu_s(node.pid), workers.cpu_s()
        start, first = time.monotonic(), events[0][0]
        for at, text in events:
            await asyncio.sleep(max(0.0, start + (at - first) / 1e6 - time.monotonic()))
            frame = SOURCE_US.sub(f'"source_us":{now_us()}', text)
            node.stdin.write(b"F " + frame.encode() + b"\n")
            await node.stdin.drain()
        await drained(watch, passing_events(recorder))
        used, clients_used = cpu_s(node.pid) - cpu0, workers.cpu_s() - clients0
        calls = await stop_counting(counter)
        watch.close()
        load = os.getloadavg()[0]
        frames, lat = await workers.stop(tmp)
        return Result("node ws", ready, frames, len(events) * ready, used, load, lat,
                      clients_used, calls)
    finally:
        node.stdin.close()
        try:
            await asyncio.wait_for(node.wait(), 10)
        except TimeoutError:
            node.kill()
            await node.wait()


@dataclass
class Watch:
    """perf on one server over the measured window: its system calls (``--syscalls``)
    and its stacks (``--perf-record``), each when asked for."""

    counter: syscalls.Counter | None
    profile: syscalls.Profile | None

    def all(self) -> list[syscalls.Perf]:
        return [p for p in (self.counter, self.profile) if p is not None]


async def start_counting(args: argparse.Namespace, name: str, pid: int, tmp: Path) -> Watch:
    """perf on server ``name`` (process ``pid``) as ``args`` ask, enabled."""
    watch = Watch(None, None)
    if args.syscalls is not None:
        watch.counter = syscalls.Counter(pid, args.syscalls, tmp / f"perf-{name}")
    if args.perf_record is not None:
        folder = Path(args.perf_record)
        folder.mkdir(parents=True, exist_ok=True)
        out = folder / f"{name}-{len(list(folder.glob(name + '-*.data'))) + 1}.data"
        watch.profile = syscalls.Profile(pid, out, tmp / f"perf-record-{name}")
    for p in watch.all():
        await p.start()
    for p in watch.all():
        await p.enable()
    return watch


async def stop_counting(watch: Watch) -> dict[str, int] | None:
    """Stop the perf processes of ``watch``; the system call counts (when counted)."""
    for p in watch.all():
        await p.disable()
    for p in watch.all():
        await p.stop()
    if watch.profile is not None:
        print(f"perf record: {watch.profile.args[-1]} (perf report -i ...)", flush=True)
    return watch.counter.counts() if watch.counter is not None else None


def order(run: int) -> tuple[str, str]:
    """Which half goes first in run ``run`` (0-based): icetime, Node, Node, icetime,
    icetime, Node, ... so neither is always first (nor always right after the other's
    start-up)."""
    return ("icetime", "node") if run % 2 == 0 else ("node", "icetime")


@dataclass
class Runs:
    """Each run's (icetime, Node) results; Node None when its half is skipped."""

    pairs: list[tuple[Result, Result | None]] = field(default_factory=list)
    #: The recorder client of the last icetime half: the frames the Node half sends.
    recorder: RawClient | None = None


async def one_run(args: argparse.Namespace, workers: Workers, tmp: Path, runs: Runs,
                  node_ok: bool) -> None:
    """Run ``len(runs.pairs)``: both halves in :func:`order`, printed as they end."""
    ice: Result | None = None
    node: Result | None = None
    first = order(len(runs.pairs))[0]
    if first == "icetime" or runs.recorder is None or not node_ok:
        ice, runs.recorder = await icetime_half(args, workers, tmp)
        print(ice.line(), flush=True)
    if node_ok:
        node = await node_half(args, workers, runs.recorder, tmp)
        print(node.line(), flush=True)
    if ice is None:
        ice, runs.recorder = await icetime_half(args, workers, tmp)
        print(ice.line(), flush=True)
    runs.pairs.append((ice, node))
    if node is None:
        return
    print(f"CPU per delivered frame, icetime / Node ws: "
          f"{ice.cpu_per_frame_us() / node.cpu_per_frame_us():.2f}x "
          f"(broadcast node {ice.cpu_s:.2f} s, node {node.cpu_s:.2f} s)", flush=True)
    if args.repeat == 1:
        for r in (ice, node):
            print(cost_line(r), flush=True)
    if ice.calls is not None and node.calls is not None:
        for line in syscalls.table({"icetime": (ice.calls, ice.frames),
                                    "node ws": (node.calls, node.frames)}):
            print(line, flush=True)


def summary(runs: Runs) -> list[str]:
    """The ratio's median and range over the runs, and each run's figures, one line each
    (lines only when Node ran more than once)."""
    pairs = [(i, n) for i, n in runs.pairs if n is not None]
    if len(pairs) < 2:
        return []
    ratios = np.array([i.cpu_per_frame_us() / n.cpu_per_frame_us() for i, n in pairs])
    sys_ratios = np.array([i.sys_per_frame_us() / n.sys_per_frame_us() for i, n in pairs])
    lines = [f"-- {len(pairs)} runs (icetime first in runs "
             f"{', '.join(str(k + 1) for k in range(len(pairs)) if order(k)[0] == 'icetime')})"]
    for k, (i, n) in enumerate(pairs):
        lines.append(f"run {k + 1}: icetime {i.cpu_per_frame_us():.2f} µs/frame "
                     f"({i.sys_per_frame_us():.2f} sys, load {i.load:.1f}), Node "
                     f"{n.cpu_per_frame_us():.2f} ({n.sys_per_frame_us():.2f} sys, load "
                     f"{n.load:.1f}): {ratios[k]:.2f}x")
    lines.append(f"CPU per delivered frame, icetime / Node ws: median {np.median(ratios):.2f}x, "
                 f"range {ratios.min():.2f}x-{ratios.max():.2f}x; kernel part alone: median "
                 f"{np.median(sys_ratios):.2f}x, range {sys_ratios.min():.2f}x-"
                 f"{sys_ratios.max():.2f}x; load1 {min(min(i.load, n.load) for i, n in pairs):.1f}"
                 f"-{max(max(i.load, n.load) for i, n in pairs):.1f}")
    return lines


async def amain(args: argparse.Namespace) -> None:
    limit = raise_open_files(args.clients + FD_SPARE)
    n = min(args.clients, limit - FD_SPARE)
    print(f"\n== fan-out at scale: {n:,} WebSocket clients in {args.procs} client processes, "
          f"{args.passings} passings at {args.rate:g}/s; icetime and a Node `ws` server"
          + (f", {args.repeat} runs" if args.repeat > 1 else "") + " ==")
    print(f"open files: limit {limit}" + (
        f" (hard limit): {args.clients:,} clients capped to {n:,}" if n < args.clients
        else ""))
    if args.syscalls is not None:
        args.syscalls, why_not = await asyncio.to_thread(syscalls.available)
        if why_not:
            print(f"system calls not counted: {why_not}")
            args.syscalls = None
    why = await asyncio.to_thread(node_missing)
    if why:
        print(f"node ws    skipped: {why}")
    workers = Workers(n, args.procs)
    await workers.start()
    runs = Runs()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"{'server':<10} {'clients':>7} {'frames delivered/expected':>21} "
                  f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'CPU µs/frame':>12} "
                  f"{'of it sys':>9} {'spread ms':>9} {'load1':>6}", flush=True)
            for _ in range(args.repeat):
                await one_run(args, workers, Path(tmp), runs, why is None)
            for line in summary(runs):
                print(line, flush=True)
    finally:
        await workers.close()


def cost_line(r: Result) -> str:
    """What one frame to every client costs on this machine, server and clients."""
    ms = r.clients / 1000
    kernel, user = r.sys_per_frame_us() * ms, (r.cpu_per_frame_us() - r.sys_per_frame_us()) * ms
    return (f"{r.name}: one frame to {r.clients:,} clients: {kernel:.0f} ms of kernel time "
            f"and {user:.0f} ms in the server process, {r.clients_per_frame_us() * ms:.0f} ms "
            f"in the client processes; the last client gets it {r.spread_ms():.0f} ms "
            "after the first (median)")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.fanout_scale", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=10_000)
    p.add_argument("--procs", type=int, default=4, help="client processes")
    p.add_argument("--rate", type=float, default=5.0, help="passings a second")
    p.add_argument("--passings", type=int, default=latency.PAIRS * latency.PASSAGES * 2)
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="runs of both halves, interleaved (icetime, Node, Node, icetime, "
                        "...); prints the ratio's median and range")
    p.add_argument("--syscalls", action="store_const", const=[],
                   help="count each server's system calls over the same window (perf)")
    p.add_argument("--perf-record", metavar="DIR",
                   help="record each server's stacks (perf, user and kernel) over the same "
                        "window into DIR/<server>-<k>.data")
    p.add_argument("--py-spy", metavar="FILE",
                   help="record the broadcast node with py-spy (collapsed stacks) into FILE")
    p.add_argument("--worker", type=int, metavar="N", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.worker is not None:
        run_loop(worker(args.worker))
    else:
        os.environ.setdefault("ICETIME_LOG", "WARNING")  # the services: figures only
        run_loop(amain(args))


if __name__ == "__main__":
    main(sys.argv[1:])
