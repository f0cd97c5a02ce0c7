"""`icetime run` as a user runs it: a process, a config file, Ctrl-C."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

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


def test_icetime_run_serves_the_configured_race_and_stops_on_ctrl_c(tmp_path):
    fixture = ROOT / "fixtures" / "beijing2023_w1000a.json"
    config, http = write_venue_config(tmp_path, f'[competition]\nstartlists = ["{fixture}"]')
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    proc = subprocess.Popen([sys.executable, "-m", "icetime.cli", "run", "--config", str(config)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        races = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not races:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/api/races", timeout=1) as r:
                    races = json.loads(r.read())
            except OSError:
                time.sleep(0.2)
        assert races == [{"id": "bj23-w1000a", "name": "Women 1000 m · Division A",
                          "distance": 1000, "kind": "long_track_individual"}]
        for page in ("/", "/live", "/monitor", "/board", "/overlay"):
            with urllib.request.urlopen(f"http://127.0.0.1:{http}{page}", timeout=2) as r:
                assert b"<title>icetime" in r.read(), page
        kids = children_of(proc.pid)
        assert len(kids) == 4  # redis-server and the three services
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert not [k for k in kids if alive(k)], "a child outlived Ctrl-C"
        assert "Traceback" not in out, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()  # reap it and close its pipe, even when the test failed


def test_a_supervisor_killed_outright_leaves_nothing_behind(tmp_path):
    """SIGKILL the supervisor: the services stop by themselves, and the next start
    stops the orphaned redis-server before starting its own on the same files."""
    from icetime.redis_embed import EmbeddedRedis

    data = tmp_path / "data"
    config, _ = write_venue_config(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    proc = subprocess.Popen([sys.executable, "-m", "icetime.cli", "run", "--config", str(config)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while len(children_of(proc.pid)) < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    kids = children_of(proc.pid)
    redis_pid = int((data / "redis.pid").read_text())
    assert redis_pid in kids
    proc.kill()
    proc.wait()
    services = [k for k in kids if k != redis_pid]
    deadline = time.monotonic() + 10
    while any(alive(k) for k in services) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [k for k in services if alive(k)], "a service outlived its supervisor"
    assert alive(redis_pid)  # nobody can tell redis-server; the next start does
    with EmbeddedRedis(data):
        assert not alive(redis_pid)
