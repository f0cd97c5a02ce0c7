"""bench/syscalls.py: system calls of a running process counted over a window (perf),
and the order of bench/fanout_scale.py's repeated halves."""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from bench import fanout_scale, syscalls

#: A child that, for each line on stdin, makes ``n`` empty writes, then says "done".
CHILD = """
import os, sys
for line in sys.stdin:
    for _ in range({n}):
        os.write(1, b"")
    print("done", flush=True)
"""
WRITES = 5000


def test_parse_reads_perf_csv(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.write_text("# started on Tue Dec  1 22:27:37 2026\n\n"
                   "1639,,raw_syscalls:sys_enter,42238958,100.00,,\n"
                   "1000,,syscalls:sys_enter_write,42238958,100.00,,\n"
                   "<not counted>,,syscalls:sys_enter_sendto,0,100.00,,\n"
                   "7,,context-switches,42238958,100.00,,\n"
                   "Events disabled\n")
    assert syscalls.parse(out) == {"total": 1639, "write": 1000, "sendto": 0,
                                   "context-switches": 7, "other": 639}


def test_runs_alternate_which_half_goes_first() -> None:
    firsts = [fanout_scale.order(k)[0] for k in range(4)]
    assert firsts == ["icetime", "node", "icetime", "node"]  # I N, N I, I N, N I


async def test_counter_counts_the_window_only(tmp_path: Path) -> None:
    names, why = await asyncio.to_thread(syscalls.available)
    if why:
        pytest.skip(why)
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD.format(n=WRITES), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE)
    assert child.stdin and child.stdout
    try:
        counter = syscalls.Counter(child.pid, names, tmp_path / "perf")
        await counter.start()
        for window in (False, True, False):  # only the middle round is counted
            if window:
                await counter.enable()
            child.stdin.write(b"go\n")
            await child.stdin.drain()
            assert await child.stdout.readline() == b"done\n"
            if window:
                await counter.disable()
        await counter.stop()
        counts = counter.counts()
    finally:
        child.kill()
        await child.wait()
    # The round's writes and its "done"; the other rounds' fell outside the window.
    assert WRITES + 1 <= counts["write"] <= WRITES + 10
    assert counts["total"] >= counts["write"]
