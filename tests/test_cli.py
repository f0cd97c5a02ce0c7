"""`icetime run` as a user runs it: a process, a config file, Ctrl-C."""
from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import websockets

from .conftest import ROOT, write_venue_config


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout
    return [int(x) for x in out.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


class Output:
    """A child's merged stdout/stderr, read line by line as it comes (in a thread)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert proc.stdout is not None
        self.thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.put(line)
        stream.close()

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first line matching ``pattern``; AssertionError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(line)
            if m := re.search(pattern, line):
                return m
        raise AssertionError(f"no line matching {pattern!r}:\n{''.join(self.seen)}")

    def rest(self) -> str:
        """Everything, once the child has exited."""
        self.thread.join(10)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return "".join(self.seen)


def stop(proc: subprocess.Popen[str]) -> None:
    """After a failed test: Ctrl-C first, so the supervisor stops its children too."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_icetime_run_serves_the_configured_race_and_stops_on_ctrl_c(tmp_path):
    fixture = ROOT / "fixtures" / "beijing2023_w1000a.json"
    config = write_venue_config(tmp_path, f'[competition]\nstartlists = ["{fixture}"]')
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    proc = subprocess.Popen([sys.executable, "-m", "icetime.cli", "run", "--config", str(config)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    out = Output(proc)
    try:
        # Every port is 0 in the configuration: the URL printed has the one bound.
        base = out.wait_for(r"icetime is running: (http://127\.0\.0\.1:(\d+))/ ", 30)[1]
        assert not base.endswith(":0")
        races = []
        deadline = time.monotonic() + 30
        while not races and time.monotonic() < deadline:  # the start list is being scored
            with urllib.request.urlopen(f"{base}/api/races", timeout=2) as r:
                races = json.loads(r.read())
            time.sleep(0.05)
        assert races == [{"id": "bj23-w1000a", "name": "Women 1000 m · Division A",
                          "distance": 1000, "kind": "long_track_individual"}]
        for page in ("/", "/live", "/monitor", "/board", "/overlay"):
            with urllib.request.urlopen(f"{base}{page}", timeout=2) as r:
                assert b"<title>icetime" in r.read(), page
        # The pages are told the WebSocket's bound port, and it serves the race.
        with urllib.request.urlopen(f"{base}/api/config", timeout=2) as r:
            ws_port = json.loads(r.read())["ws_port"]
        assert ws_port > 0
        asyncio.run(expect_snapshot(f"ws://127.0.0.1:{ws_port}/", "bj23-w1000a"))
        kids = children_of(proc.pid)
        assert len(kids) == 4  # redis-server and the three services
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        proc.wait(timeout=30)
        text = out.rest()
        assert proc.returncode == 0, text
        assert not [k for k in kids if alive(k)], "a child outlived Ctrl-C"
        assert "Traceback" not in text, text
    finally:
        stop(proc)
        out.rest()  # the reader closes the pipe, even when the test failed


async def expect_snapshot(url: str, race: str) -> None:
    async with websockets.connect(url, open_timeout=5) as ws:
        await ws.send(json.dumps({"op": "subscribe", "race": race}))
        async with asyncio.timeout(5):
            msg = json.loads(await ws.recv())
    assert msg["type"] == "snapshot" and msg["view"]["race"]["id"] == race


def test_a_supervisor_killed_outright_leaves_nothing_behind(tmp_path):
    """SIGKILL the supervisor: the services stop by themselves, and the next start
    stops the orphaned redis-server before starting its own on the same files."""
    from icetime.redis_embed import EmbeddedRedis

    data = tmp_path / "data"
    config = write_venue_config(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    proc = subprocess.Popen([sys.executable, "-m", "icetime.cli", "run", "--config", str(config)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while len(children_of(proc.pid)) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    # Killed at once, while the services are still starting: they stop all the same.
    kids = children_of(proc.pid)
    redis_pid = int((data / "redis.pid").read_text())
    assert redis_pid in kids
    proc.kill()
    proc.wait()
    services = [k for k in kids if k != redis_pid]
    deadline = time.monotonic() + 20  # each still has to start before it can notice
    while any(alive(k) for k in services) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [k for k in services if alive(k)], "a service outlived its supervisor"
    assert alive(redis_pid)  # nobody can tell redis-server; the next start does
    with EmbeddedRedis(data):
        assert not alive(redis_pid)
