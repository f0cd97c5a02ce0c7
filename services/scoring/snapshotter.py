"""Race snapshots built off the scoring loop, in a forked child (as Redis' BGSAVE is).

At 10,000 skaters a race's view is ~3 MB of JSON that takes 0.05-0.2 s to build and
encode; built in the scoring loop, every passing read meanwhile waited that long
(docs/delivery.md, "Snapshots off the passings' path"). ``fork()`` gives a child the
engine exactly as it stands after the last published input, copy-on-write, for a few
ms of the parent's time; the child builds and encodes the views of the races due and
hands the JSON back over a pipe; the parent, still scoring, stores each one with
:meth:`icetime.bus.Bus.store_snapshot` (only when newer than the stored one, in the
same epoch, while this worker holds the lease).

One child at a time: a race that falls due meanwhile waits for the next one (its
readers fold a few more events, as they do between any two snapshots).

The child runs only the engine's view code and the JSON and msgpack encoders (no I/O
but its pipe, no logging, no locks another thread may hold) and leaves with
``os._exit``: it never runs the parent's event loop, atexit handlers or finalisers.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

log = logging.getLogger(__name__)

#: A child that has not handed its views back after this long (s) is killed (a view
#: takes well under a second to build at 10,000 skaters).
CHILD_TIMEOUT_S = 60.0
#: Above any descriptor the child inherits (os.closerange uses close_range() on Linux:
#: the range costs nothing).
MAX_FD = 2**31 - 1
#: The child's niceness increment (19: the lowest priority).
CHILD_NICE = 19
#: How often the parent looks whether a child that closed its pipe has exited (s).
REAP_POLL_S = 0.005

_encode_json = msgspec.json.Encoder().encode
_encode_pack = msgspec.msgpack.Encoder().encode
_decode_pack = msgspec.msgpack.Decoder(list[tuple[str, bytes]]).decode


@dataclass(frozen=True)
class Job:
    """A race's snapshot to build: as of its event ``offset`` in stream epoch ``epoch``
    (what the engine stands at when the child is forked)."""

    race: str
    epoch: str
    offset: str


#: Stores one built view: (job, view JSON) -> whether it was stored.
Store = Callable[[Job, bytes], Awaitable[bool]]
#: Told how a child ended: (its jobs, the races stored, seconds from fork to the end).
Done = Callable[[list[Job], list[str], float], None]


class _Collect(asyncio.Protocol):
    """Everything a child writes to its pipe, until it closes it."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class Snapshotter:
    """Builds snapshots in a forked child, one child at a time (see the module doc)."""

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.pid: int | None = None
        #: Children started, and those that handed back no views (failed, killed).
        self.started = 0
        self.failed = 0

    @property
    def busy(self) -> bool:
        """Whether a child is at work (its views not yet stored)."""
        return self.task is not None and not self.task.done()

    def start(self, view: Callable[[str], dict[str, Any]], jobs: list[Job],
              store: Store, done: Done) -> None:
        """Fork a child that builds ``view(job.race)`` for each job, as the engine
        stands now; then, in a task of the running loop, ``store`` each view the child
        hands back and tell ``done``. Raises RuntimeError when a child is busy, and
        OSError when the system cannot fork (the caller then builds the views itself)."""
        if self.busy:
            raise RuntimeError("a snapshot child is still at work")
        rfd, wfd = os.pipe()
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                # Python 3.12 warns about forking a process with threads (a test runner's
                # or a library's): the child takes no lock any thread may hold (module doc).
                warnings.filterwarnings("ignore", category=DeprecationWarning,
                                        message=r".*fork\(\)")
                pid = os.fork()
        except OSError:
            os.close(rfd)
            os.close(wfd)
            raise
        if pid == 0:  # pragma: no cover - the child: its coverage is not collected
            os.close(rfd)
            _child(view, [job.race for job in jobs], wfd)
        os.close(wfd)
        self.pid = pid
        self.started += 1
        self.task = asyncio.create_task(self._collect(pid, rfd, jobs, store, done, t0))

    async def _collect(self, pid: int, rfd: int, jobs: list[Job], store: Store, done: Done,
                       t0: float) -> None:
        stored: list[str] = []
        views = None
        try:
            views = await self._read(rfd)
            await self._reap(pid)
            if views is None:
                log.warning("snapshot child %d ended without its views", pid)
            else:
                for job, (race, js) in zip(jobs, views, strict=False):
                    if race == job.race and await store(job, js):
                        stored.append(race)
        finally:
            self._kill(pid)
            if views is None:
                self.failed += 1
            done(jobs, stored, time.perf_counter() - t0)

    async def _read(self, rfd: int) -> list[tuple[str, bytes]] | None:
        """What the child wrote to ``rfd`` (the views), or None when it is not whole."""
        loop = asyncio.get_running_loop()
        pipe = os.fdopen(rfd, "rb", buffering=0)
        transport, proto = await loop.connect_read_pipe(_Collect, pipe)
        try:
            await asyncio.wait_for(proto.closed, CHILD_TIMEOUT_S)
        except TimeoutError:
            return None
        finally:
            transport.close()
        try:
            return _decode_pack(b"".join(proto.chunks))
        except msgspec.DecodeError:
            return None

    async def _reap(self, pid: int) -> None:
        """Wait (without blocking the loop) until child ``pid`` has exited."""
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        while time.monotonic() < deadline:
            got, _ = os.waitpid(pid, os.WNOHANG)
            if got:
                self.pid = None
                return
            await asyncio.sleep(REAP_POLL_S)

    def _kill(self, pid: int) -> None:
        """Kill and reap child ``pid`` unless it was reaped already."""
        if self.pid != pid:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        self.pid = None

    async def close(self) -> None:
        """Stop the child at work, if any (its views are not stored)."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None


def _child(view: Callable[[str], dict[str, Any]], races: list[str], wfd: int) -> None:
    """The forked child: write the views of ``races`` to ``wfd`` (msgpack: a list of
    (race, view JSON)), then leave at once."""
    code = 1
    try:
        # The parent's handlers would wake the parent's loop (through its wakeup fd).
        # Only the main thread may change them: a child forked from another keeps
        # them, and is stopped by SIGKILL if at all.
        with contextlib.suppress(ValueError):
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
        # Every descriptor but stdio and the pipe: a child still at work (slow, at
        # nice 19, on a busy machine) would otherwise keep the parent's listeners
        # accepting and its connections open after the parent closed them (a stopped
        # service's port still taken; a Redis client never seen to leave).
        os.closerange(3, wfd)
        os.closerange(wfd + 1, MAX_FD)
        # Behind every other process: on a machine of few cores the child would
        # otherwise take CPU from ingest, scoring and the fan-out the passings wait for.
        os.nice(CHILD_NICE)
        data = _encode_pack([(race, _encode_json(view(race))) for race in races])
        with os.fdopen(wfd, "wb") as out:
            out.write(data)
        code = 0
    finally:
        os._exit(code)
