"""System calls of one process over a window, counted by the kernel's tracepoints.

``perf stat`` (Debian's linux-perf) counts ``raw_syscalls:sys_enter`` (every system
call) and ``syscalls:sys_enter_<name>`` for the calls a network server makes, on every
thread of a running process, started disabled and switched on and off through its
control FIFOs, so the window is exactly the one the bench measures CPU over. A
tracepoint costs the traced process a counter increment per call (no stop, unlike
strace), so the server runs at nearly its own speed.

Used by ``python -m bench.fanout_scale --syscalls`` (docs/delivery.md, "System calls
per frame").
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import IO

#: The calls counted one by one (those a server on epoll makes while it writes and
#: reads sockets); the rest are counted together as ``other``.
NAMES = ("sendto", "sendmsg", "write", "writev", "recvfrom", "recvmsg", "read", "readv",
         "epoll_wait", "epoll_pwait", "epoll_pwait2", "epoll_ctl", "futex", "getsockopt",
         "setsockopt", "ioctl", "accept4", "close", "mmap", "munmap", "madvise", "brk",
         "mprotect", "getpid", "sched_yield", "io_uring_enter")
TOTAL = "raw_syscalls:sys_enter"
#: Software events counted beside them: how often the process was switched out (it
#: blocked, or was preempted), moved to another CPU, or faulted a page in.
SOFTWARE = ("context-switches", "cpu-migrations", "page-faults")
#: How long perf may take to start, and to answer a control command, seconds.
PERF_TIMEOUT_S = 30.0


def available() -> tuple[list[str], str | None]:
    """The names of :data:`NAMES` whose tracepoints this kernel has, and why counting
    is impossible (no ``perf``, tracepoints not readable), or None."""
    perf = shutil.which("perf")
    if perf is None:
        return [], "no `perf` on PATH (Debian: linux-perf)"
    try:
        done = subprocess.run([perf, "stat", "-x,", "-e", TOTAL, "true"],
                              capture_output=True, text=True, timeout=PERF_TIMEOUT_S)
        listed = subprocess.run([perf, "list", "syscalls:sys_enter_*"],
                                capture_output=True, text=True, timeout=PERF_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return [], "`perf` did not answer"
    if done.returncode != 0 or "not supported" in done.stderr:
        return [], f"`perf stat -e {TOTAL}` failed: {done.stderr.strip()[-200:]}"
    have = {w.split(":", 1)[1].removeprefix("sys_enter_") for w in listed.stdout.split()
            if w.startswith("syscalls:sys_enter_")}
    return [n for n in NAMES if n in have], None


class Perf:
    """``perf <command> <args>`` on process ``pid`` (all its threads), started disabled.
    :meth:`start` it, then :meth:`enable`, :meth:`disable` (any number of windows) and
    :meth:`stop`. ``workdir``: where its FIFOs go. Raises RuntimeError when perf ends
    early or does not answer."""

    def __init__(self, pid: int, command: str, args: list[str], workdir: Path) -> None:
        self.pid = pid
        self.subcommand = command
        self.args = args
        self.dir = workdir
        self.proc: asyncio.subprocess.Process | None = None
        self.ctl: IO[str] | None = None
        self.ack: IO[str] | None = None

    async def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        ctl, ack = self.dir / "ctl", self.dir / "ack"
        for fifo in (ctl, ack):
            with contextlib.suppress(FileNotFoundError):
                fifo.unlink()
            os.mkfifo(fifo)
        self.proc = await asyncio.create_subprocess_exec(
            "perf", self.subcommand, "-D", "-1", "--control", f"fifo:{ctl},{ack}",
            *self.args, "-p", str(self.pid),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        # Each open waits for perf to open the other end.
        self.ctl = await asyncio.wait_for(asyncio.to_thread(open, ctl, "w"), PERF_TIMEOUT_S)
        self.ack = await asyncio.wait_for(asyncio.to_thread(open, ack), PERF_TIMEOUT_S)

    async def command(self, what: str) -> None:
        """Send ``enable`` or ``disable`` and wait for perf's ``ack``: counting has
        changed when this returns."""
        assert self.ctl is not None and self.ack is not None
        self.ctl.write(what + "\n")
        self.ctl.flush()
        answer = await asyncio.wait_for(asyncio.to_thread(self.ack.readline), PERF_TIMEOUT_S)
        if answer.strip("\x00 \n") != "ack":  # perf ends each "ack\n" with a NUL
            raise RuntimeError(f"perf answered {answer!r} to {what!r}")

    async def enable(self) -> None:
        await self.command("enable")

    async def disable(self) -> None:
        await self.command("disable")

    async def stop(self) -> None:
        """End perf (it writes its output first)."""
        assert self.proc is not None
        for f in (self.ctl, self.ack):
            if f is not None:
                f.close()
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(2)  # SIGINT: perf writes its output and ends
        await asyncio.wait_for(self.proc.wait(), PERF_TIMEOUT_S)


class Counter(Perf):
    """``perf stat`` of :data:`TOTAL`, the calls ``names`` and :data:`SOFTWARE` on
    ``pid``; :meth:`counts` once stopped (windows summed)."""

    def __init__(self, pid: int, names: list[str], workdir: Path) -> None:
        events = ",".join([TOTAL, *(f"syscalls:sys_enter_{n}" for n in names), *SOFTWARE])
        super().__init__(pid, "stat", ["-x,", "-e", events, "-o", str(workdir / "out")],
                         workdir)

    def counts(self) -> dict[str, int]:
        """By call name (each of ``names``, ``other``, ``total``) and software event."""
        return parse(self.dir / "out")


class Profile(Perf):
    """``perf record``: ``pid``'s stacks, user and kernel, sampled on the CPU clock
    (no hardware counters needed) at ``freq`` Hz into ``out``; ``perf report -i out``."""

    def __init__(self, pid: int, out: Path, workdir: Path, freq: int = 999) -> None:
        super().__init__(pid, "record", ["-e", "cpu-clock", "-F", str(freq), "-g",
                                         "-o", str(out)], workdir)


def parse(path: Path) -> dict[str, int]:
    """Counts from ``perf stat -x,`` output: by call name, ``total`` (every call),
    ``other`` (total less the named ones) and each of :data:`SOFTWARE`. A count perf did
    not take is 0."""
    counts: dict[str, int] = {}
    for line in path.read_text().splitlines():
        fields = line.split(",")
        if len(fields) < 3:
            continue
        if fields[2] in SOFTWARE:
            counts[fields[2]] = int(fields[0]) if fields[0].isdigit() else 0
            continue
        if not fields[2].startswith(("syscalls:", "raw_syscalls:")):
            continue
        value = int(fields[0]) if fields[0].isdigit() else 0
        name = "total" if fields[2] == TOTAL else fields[2].removeprefix(
            "syscalls:sys_enter_")
        counts[name] = counts.get(name, 0) + value
    counts["other"] = counts.get("total", 0) - sum(
        v for k, v in counts.items() if k != "total" and k not in SOFTWARE)
    return counts


def table(columns: dict[str, tuple[dict[str, int], int]]) -> list[str]:
    """Lines comparing processes' counts per 1,000 delivered frames: ``columns`` maps a
    name to (counts, frames delivered). Calls none of them made are left out."""
    names = [n for n in (*NAMES, "other", "total", *SOFTWARE)
             if any(c.get(n, 0) for c, _ in columns.values())]
    head = f"{'per 1,000':<16}" + "".join(f"{k:>14}" for k in columns)
    lines = ["system calls per 1,000 delivered frames (perf tracepoints, the same window)",
             head]
    for n in names:
        lines.append(f"{n:<16}" + "".join(f"{c.get(n, 0) * 1000 / max(1, frames):14.1f}"
                                          for c, frames in columns.values()))
    return lines
