"""`icetime run` as a user runs it: a process, a config file, Ctrl-C."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import websockets

from .conftest import ROOT, stop_processes, write_venue_config


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


def run_quick(args: list[str], cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a command that must end on its own; REDIS_URL and ICETIME_* come only from ``env``."""
    base = {k: v for k, v in os.environ.items()
            if k != "REDIS_URL" and not k.startswith("ICETIME_")}
    return subprocess.run([sys.executable, *args], cwd=cwd, env={**base, **env},
                          capture_output=True, text=True, timeout=60)


def run_side_by_side(cases: list[tuple[list[str], dict[str, str]]]
                     ) -> list[subprocess.CompletedProcess[str]]:
    """:func:`run_quick` for each ``(args, env)``, all at once (each mostly waits on its
    interpreter's start): the results in the order of ``cases``."""
    with ThreadPoolExecutor(len(cases)) as pool:
        return list(pool.map(lambda case: run_quick(case[0], **case[1]), cases))


def test_a_bad_configuration_is_one_line_and_exit_2_everywhere(tmp_path):
    config = write_venue_config(tmp_path)
    config.write_text(config.read_text().replace("ws_port", "htp_port = 80\nws_port"))
    want = f"{config}: unknown key 'broadcast.htp_port'"
    cases = [
        (["-m", "icetime.cli", "run", "--config", str(config)], {}, f"icetime: {want}"),
        (["-m", "icetime.cli", "run"], {"ICETIME_CONFIG": str(config)}, f"icetime: {want}"),
        (["-m", "icetime.cli", "run", "--config", "nowhere.toml"], {},
         "icetime: nowhere.toml: no such file"),
        (["-m", "icetime.cli", "run"], {},
         "icetime: icetime run: no configuration: give --config FILE or set ICETIME_CONFIG"),
        (["-m", "icetime.cli", "demo"], {"ICETIME_LOG": "loud"},
         "icetime: ICETIME_LOG: 'loud' is not a log level "
         "(allowed: DEBUG, INFO, WARNING, ERROR, CRITICAL)"),
        (["-m", "icetime.cli", "demo"], {"REDIS_URL": "localhost"},
         "icetime: REDIS_URL: 'localhost' is not a Redis URL "
         "(starts with redis://, rediss://, unix://, redis+cluster://, rediss+cluster://)"),
        (["-m", "services.ingest", "--config", str(config)], {"REDIS_URL": "redis://x"},
         f"ingest: {want}"),
        (["-m", "services.broadcast", "--config", str(config)], {"REDIS_URL": "redis://x"},
         f"broadcast: {want}"),
        (["-m", "services.scoring"], {},
         "scoring: set REDIS_URL (or [redis] url), or start icetime with `icetime run`, "
         "which provides its embedded Redis"),
    ]
    results = run_side_by_side([(args, env) for args, env, _ in cases])
    for (args, _, line), done in zip(cases, results, strict=True):
        assert (done.returncode, done.stderr.splitlines(), done.stdout) == (2, [line], ""), args
    assert not (tmp_path / "data").exists()  # checked before anything started


def wait_http(url: str, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, "icetime exited before it served"
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            assert time.monotonic() < deadline, f"{url} did not come up"
            time.sleep(0.2)


def test_a_relative_config_from_icetime_config_runs_and_a_service_refusing_it_stops_all(
        tmp_path):
    """Started from the file's folder with a relative ICETIME_CONFIG, icetime runs (its
    services start elsewhere). The file is then edited into a mistake and a service
    killed: its restart refuses the configuration, and icetime stops rather than loop."""
    config = write_venue_config(tmp_path)
    env = {k: v for k, v in os.environ.items()
           if k != "REDIS_URL" and not k.startswith("ICETIME_")}
    proc = subprocess.Popen([sys.executable, "-m", "icetime.cli", "run"], cwd=tmp_path,
                            env={**env, "ICETIME_CONFIG": config.name},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = Output(proc)
    try:
        # Every port is 0: the URL printed has the one bound.
        base = output.wait_for(r"icetime is running: (http://127\.0\.0\.1:\d+)/ ", 30)[1]
        wait_http(f"{base}/healthz", proc)
        kids = children_of(proc.pid)
        ingest = [k for k in kids if "services.ingest" in Path(f"/proc/{k}/cmdline").read_text()]
        assert len(ingest) == 1
        config.write_text(config.read_text().replace("[ingest]", "[ingest]\ntcp_prot = 1"))
        os.kill(ingest[0], signal.SIGKILL)
        proc.wait(timeout=30)
        out = output.rest()
        assert proc.returncode == 2, out
        assert f"ingest: {config}: unknown key 'ingest.tcp_prot'" in out.splitlines()
        assert "service ingest refused the configuration (exit code 2); not restarting it, " \
               "stopping" in out
        assert out.count("; restarting it now (restart 1)") == 1  # once, after the kill
        assert "restart 2" not in out
        assert "Traceback" not in out, out
        assert not [k for k in kids if alive(k)], "a child outlived the stop"
    finally:
        stop(proc)
        output.rest()


def test_a_service_that_keeps_dying_at_start_is_restarted_later_each_time(tmp_path, caplog):
    """Ingest's port is taken while it is down: each restart dies at once, and the
    supervisor waits 0.1 s, 0.2 s... (a shorter first wait than the default 0.5 s, for
    the test) before the next rather than spin; once the port is free again, ingest
    comes back."""
    import socket

    from icetime import settings
    from icetime.cli import Supervisor

    caplog.set_level(logging.INFO, logger="icetime.cli")
    config = str(write_venue_config(tmp_path))
    sup = Supervisor(config, settings.load(config), restart_first_s=0.1)
    sup.start()
    cfg = sup.cfg  # with the ports bound; a restart binds the same ones
    blocker = socket.socket()
    try:
        os.kill(sup.procs["ingest"].pid, signal.SIGKILL)
        sup.procs["ingest"].wait()
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
        blocker.bind(("127.0.0.1", cfg.ingest_http_port))
        blocker.listen()
        deadline = time.monotonic() + 60
        while sup.restarts.get("ingest", 0) < 3:
            assert time.monotonic() < deadline, sup.restarts
            sup.check_children()
            time.sleep(0.1)
        waits = [r.getMessage().split("restarting it ")[1].split(" (")[0]
                 for r in caplog.records if "service ingest exited" in r.getMessage()]
        assert waits == ["now", "in 0.1 s", "in 0.2 s"]
        blocker.close()
        deadline = time.monotonic() + 30
        while True:
            sup.check_children()
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{cfg.ingest_http_port}/healthz", timeout=1) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "ingest did not come back"
                time.sleep(0.2)
    finally:
        blocker.close()
        sup.stop()


def start_run(config: Path) -> tuple[subprocess.Popen[str], Output]:
    env = {k: v for k, v in os.environ.items()
           if k != "REDIS_URL" and not k.startswith("ICETIME_")}
    proc = subprocess.Popen([sys.executable, "-m", "icetime.cli", "run", "--config", str(config)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    return proc, Output(proc)


def health_of(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base}/api/health", timeout=5) as r:
        health: dict[str, Any] = json.loads(r.read())
    return health


def races_of(base: str, timeout: float = 30) -> list[dict[str, object]]:
    """/api/races once it lists a race (the start list is being scored)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{base}/api/races", timeout=2) as r:
                races = json.loads(r.read())
            if races:
                return races
        except OSError:
            pass
        assert time.monotonic() < deadline, "/api/races did not answer with a race"
        time.sleep(0.1)


def test_icetime_run_serves_refuses_a_second_run_counts_replays_survives_redis_and_stops(
        tmp_path):
    """One `icetime run` on a venue file with a start list, every port 0, seen as a user
    sees it: the banner names the ports bound; the race, the pages and the WebSocket
    are served; a second run on the same data dir exits 2 and the first keeps serving.
    A second `icetime replay` into it is a session of its own: every input new, said
    so, exit 0. Resending the first run's session, whose times are now other, is refused
    input by input: the counts say so, and the exit code is 1. A killed embedded
    redis-server is started again on its files, which hold everything. A scoring process
    killed outright is restarted, and /api/health says so. Ctrl-C then stops it all,
    with exit 0 and no traceback. (One start for all of these: a start
    costs seconds.)"""
    import redis as redis_lib

    from icetime import keys
    from icetime.keys import DEFAULT_COMPETITION as MAIN
    from icetime.view import apply_event

    fixture = ROOT / "fixtures" / "beijing2023_w1000a.json"
    config = write_venue_config(tmp_path, f'[competition]\nstartlists = ["{fixture}"]')
    proc, out = start_run(config)
    try:
        # Every port is 0 in the configuration: the URL printed has the one bound.
        base = out.wait_for(r"icetime is running: (http://127\.0\.0\.1:(\d+))/ ", 30)[1]
        assert not base.endswith(":0")
        # The banner names every listener with the port it got.
        banner = [out.wait_for(rf"^  {label} +(\S+)$", 5)[1]
                  for label in ("pages", "WebSocket", "feed TCP", "feed HTTP", "RMonitor")]
        assert banner[0] == f"{base}/"
        assert re.fullmatch(r"ws://127\.0\.0\.1:[1-9]\d*/", banner[1]), banner
        assert re.fullmatch(r"tcp://127\.0\.0\.1:[1-9]\d*", banner[2]), banner
        assert re.fullmatch(r"http://127\.0\.0\.1:[1-9]\d*/feed", banner[3]), banner
        assert re.fullmatch(r"tcp://127\.0\.0\.1:[1-9]\d*", banner[4]), banner
        assert races_of(base) == [{"id": "bj23-w1000a", "name": "Women 1000 m · Division A",
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

        redis_pid = int((tmp_path / "data" / "redis.pid").read_text())
        second = run_quick(["-m", "icetime.cli", "run", "--config", str(config)])
        assert (second.returncode, second.stderr.splitlines(), second.stdout) == (2, [
            f"icetime: {tmp_path / 'data'} is in use by icetime (pid {proc.pid}); stop it "
            "or choose another redis.data_dir"], ""), second.stderr
        assert alive(redis_pid) and proc.poll() is None
        assert races_of(base)[0]["id"] == "bj23-w1000a"

        # The venue's own file, ports 0: the replay finds the ones icetime bound.
        replay = ["-m", "icetime.cli", "replay", "beijing2023_w1000a", "--config",
                  str(config), "--speed", "1000"]
        counts = r"sent (\d+) inputs \(session (replay-\d+)\): (\d+) new, (\d+) duplicate, " \
                 r"(\d+) refused$"
        runs = [run_quick(replay), run_quick(replay)]
        found = [re.search(counts, r.stdout, re.M) for r in runs]
        assert all(found) and [r.returncode for r in runs] == [0, 0], runs
        sent = int(found[0][1])
        assert sent > 100 and found[0][2] != found[1][2]
        assert [m.group(1, 3, 4, 5) for m in found] == [(str(sent), str(sent), "0", "0")] * 2
        # Stored is not applied: the replay says what scoring made of its inputs.
        assert f"scoring refused 0 of the {sent} new inputs" in runs[0].stdout, runs[0]
        # A race whose start list was never loaded: refused before anything is sent
        # (scoring would refuse every input), in one line, exit 2.
        unloaded = run_quick([*replay[:3], "stavanger2022_w1000a", *replay[4:]])
        assert (unloaded.returncode, unloaded.stdout) == (2, ""), unloaded
        assert unloaded.stderr.splitlines() == [
            "icetime: race 'stv22-w1000a' is in no loaded start list, so scoring would "
            "refuse every input: load one first (docs/startlist.md) or give --startlist "
            "to load the fixture's"], unloaded.stderr
        again = run_quick([*replay, "--session", found[0][2]])
        m = re.search(counts.replace("$", "; first refusal: seq 1 in session '(replay-\\d+)' "
                                          "was already used by source '(\\S+)'"),
                      again.stdout, re.M)
        assert m and again.returncode == 1, again
        assert m.group(1, 3, 4, 5) == (str(sent), "0", "0", str(sent))
        assert "nothing of this replay was new" in again.stderr
        r = redis_lib.Redis(unix_socket_path=str(tmp_path / "data" / "redis.sock"))
        try:
            # The start list and two runs: nothing of the unloaded race.
            assert r.xlen(keys.raw_stream(MAIN)) == 1 + 2 * sent
            # The stored snapshot and the events after it, folded (icetime.snapshot).
            snap = r.hgetall(keys.snapshot_key(MAIN, "bj23-w1000a"))
            view = json.loads(snap[b"view"])
            for _, fields in r.xrange(keys.events_stream(MAIN, "bj23-w1000a"),
                                      "(" + snap[b"offset"].decode()):
                view = apply_event(view, json.loads(fields[b"e"]))
        finally:
            r.close()
        assert len(view["classification"]["bib"]) == 20

        races = races_of(base)
        os.kill(redis_pid, signal.SIGKILL)
        out.wait_for(r"embedded redis-server exited with code -9; restarting it on ", 10)
        deadline = time.monotonic() + 20
        while (new_pid := int((tmp_path / "data" / "redis.pid").read_text())) == redis_pid:
            assert time.monotonic() < deadline, "no new redis-server"
            time.sleep(0.1)
        assert new_pid in children_of(proc.pid)
        assert races_of(base) == races  # the AOF brought the start list back
        r = redis_lib.Redis(unix_socket_path=str(tmp_path / "data" / "redis.sock"))
        try:
            assert r.xlen(keys.raw_stream(MAIN)) == 1 + 2 * sent  # every input
        finally:
            r.close()

        # kill -9 scoring: the supervisor starts it again, and /api/health says so (not
        # only the supervisor's log): the restart, and the new life's rebuild.
        r = redis_lib.Redis(unix_socket_path=str(tmp_path / "data" / "redis.sock"))
        try:
            scoring_pid = json.loads(r.hget(keys.LISTENING, "scoring"))["pid"]
            raw_length = r.xlen(keys.raw_stream(MAIN))
        finally:
            r.close()
        before = health_of(base)["scoring"]
        os.kill(scoring_pid, signal.SIGKILL)
        out.wait_for(r"service scoring exited with code -9 after [\d.]+ s; restarting it now "
                     r"\(restart 1\)$", 10)
        deadline = time.monotonic() + 30
        while (got := health_of(base))["scoring"].get("rebuilds") == before.get("rebuilds"):
            assert time.monotonic() < deadline, got
            time.sleep(0.1)
        assert got["scoring"]["rebuilds"] == before["rebuilds"] + 1, (before, got)
        assert got["scoring"]["started_at_us"] > before["started_at_us"]
        rebuild = got["scoring"]["last_rebuild"]
        assert rebuild["at_us"] == got["scoring"]["started_at_us"]
        assert rebuild["source"] in ("checkpoint", "start") and rebuild["seconds"] >= 0
        assert rebuild["inputs"] <= raw_length
        assert rebuild["source"] == "checkpoint" or rebuild["inputs"] == raw_length
        restarted = got["service_restarts"]
        assert list(restarted) == ["scoring"], restarted
        assert (restarted["scoring"]["restarts"], restarted["scoring"]["exit_code"]) == (1, -9)
        assert restarted["scoring"]["at_us"] <= rebuild["at_us"]
        scoring_kids = [k for k in children_of(proc.pid) if k not in [*kids, new_pid]]
        assert len(scoring_kids) == 1, scoring_kids

        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        proc.wait(timeout=30)
        text = out.rest()
        assert proc.returncode == 0, text
        assert not [k for k in [*kids, new_pid, *scoring_kids] if alive(k)], \
            "a child outlived Ctrl-C"
        assert "Traceback" not in text, text
        # Log lines are text, not Python dicts.
        assert "{" not in text, [line for line in text.splitlines() if "{" in line]
    finally:
        stop(proc)
        out.rest()  # the reader closes the pipe, even when the test failed


def assert_stopped(data: Path) -> None:
    """Nothing of icetime runs on ``data``: redis-server removed its pid file as it
    stopped, and the data dir's lock is free."""
    from icetime.redis_embed import DataDirLock

    assert not (data / "redis.pid").exists()
    lock = DataDirLock(data)
    lock.acquire()
    lock.release()


def test_a_port_in_use_at_start_is_one_line_and_exit_3(tmp_path):
    import socket

    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    config = write_venue_config(tmp_path)
    config.write_text(config.read_text().replace("tcp_port = 0", f"tcp_port = {port}"))
    try:
        done = run_quick(["-m", "icetime.cli", "run", "--config", str(config)])
    finally:
        blocker.close()
    text = done.stdout + done.stderr
    assert done.returncode == 3, text
    assert "Traceback" not in text and "restarting" not in text, text
    assert (f"ingest: cannot listen on 127.0.0.1:{port} (ingest.tcp_port): "
            "Address already in use") in done.stderr.splitlines(), text
    assert_stopped(tmp_path / "data")


def test_a_bad_start_list_is_one_line_and_exit_2_with_nothing_left(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    refused = tmp_path / "refused.json"
    refused.write_text('{"races": 7}')
    for path, why in ((bad, "not JSON: Expecting property name enclosed in double quotes"),
                      (refused, "start list refused: ")):
        config = write_venue_config(tmp_path, f'[competition]\nstartlists = ["{path}"]')
        done = run_quick(["-m", "icetime.cli", "run", "--config", str(config)])
        text = done.stdout + done.stderr
        assert done.returncode == 2, text
        assert "Traceback" not in text, text
        lines = [line for line in done.stderr.splitlines() if line.startswith("icetime: ")]
        assert len(lines) == 1 and lines[0].startswith(f"icetime: {path}: {why}"), text
        assert_stopped(tmp_path / "data")


def test_unknown_races_and_bad_speeds_are_refused_with_exit_2(tmp_path):
    config = write_venue_config(tmp_path)
    unknown = (["replay", "nosuch", "--config", str(config)], ["demo", "--race", "nosuch"])
    # Both commands share the one --speed type: each bad kind of value once, between them.
    replay_args = ["replay", "beijing2023_w1000a", "--config", str(config)]
    speeds = (("0", replay_args), ("-2", ["demo"]), ("nan", replay_args),
              ("fast", ["demo"]), ("1001", replay_args), ("1001", ["demo"]))
    results = run_side_by_side([(["-m", "icetime.cli", *args], {}) for args in unknown] + [
        (["-m", "icetime.cli", *args, f"--speed={speed}"], {}) for speed, args in speeds])
    for done in results[:len(unknown)]:
        assert done.returncode == 2, done.stderr
        [line] = done.stderr.splitlines()
        assert line.startswith("icetime: no race 'nosuch'; known: ") and \
            "beijing2023_w1000a" in line, line
    for done in results[len(unknown):]:
        assert done.returncode == 2, done.stderr
        assert "argument --speed" in done.stderr.splitlines()[-1], done.stderr
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_replay_with_port_0_and_no_icetime_running_is_one_line_and_exit_2(tmp_path):
    """Port 0 in the file and nothing running to say which port it bound: one line, not a
    retry to port 0 for ever."""
    config = write_venue_config(tmp_path)
    done = run_quick(["-m", "icetime.cli", "replay", "beijing2023_w1000a", "--config",
                      str(config), "--speed", "1000"])
    assert done.returncode == 2, done
    [line] = done.stderr.splitlines()
    assert line == (f"icetime: {config}: ingest.tcp_port is 0 and no running icetime "
                    "reported the port it bound (start it first with icetime run on "
                    "this configuration)"), line


def test_a_replay_stopped_while_retrying_stops_quietly(tmp_path):
    """Nobody listens on the feed (a free port in the file): the replay retries until
    SIGTERM, or SIGINT (two replays side by side, one per signal)."""
    config = write_venue_config(tmp_path)
    config.write_text(config.read_text().replace("tcp_port = 0", f"tcp_port = {free_port()}"))
    procs = [subprocess.Popen(
        [sys.executable, "-m", "icetime.cli", "replay", "beijing2023_w1000a", "--config",
         str(config), "--speed", "10"], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [Output(proc) for proc in procs]
    try:
        for sig, proc, out in zip((signal.SIGTERM, signal.SIGINT), procs, outs, strict=True):
            out.wait_for(r"feed connection lost .*; retrying", 20)
            stop_processes([proc], sig)
            text = out.rest()
            assert proc.returncode == 0, text
            assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
            assert text.splitlines()[-1] == "replay stopped", text
    finally:
        for proc, out in zip(procs, outs, strict=True):
            stop(proc)
            out.rest()


async def test_replay_startlist_loads_the_fixtures_start_list_first(redis_server, tmp_path):
    """``icetime replay --startlist`` into a running icetime that has no start list:
    the fixture's is loaded first, and scoring applies every input of the replay."""
    from .conftest import ROLES, TOKENS, make_settings, start_stack

    st = await start_stack(make_settings(redis_server.url), redis_server.url)
    try:
        # The stack's own Redis and feed ports (it runs in this process).
        config = tmp_path / "venue.toml"
        config.write_text("\n".join([
            'host = "127.0.0.1"', f'[redis]\nurl = "{redis_server.url}"',
            f"[ingest]\nhttp_port = {st.settings.ingest_http_port}\n"
            f"tcp_port = {st.settings.ingest_tcp_port}"]
            + [f'[[sources]]\nid = "{k}"\ntoken = "{v}"\nrole = "{ROLES[k]}"'
               for k, v in TOKENS.items()]) + "\n")
        done = await asyncio.to_thread(run_quick, [
            "-m", "icetime.cli", "replay", "beijing2023_w1000a", "--config", str(config),
            "--speed", "1000", "--startlist"])
        assert done.returncode == 0, done
        assert re.search(r"^start list loaded: \d+ races$", done.stdout, re.M), done.stdout
        said = re.search(r"^scoring refused 0 of the (\d+) new inputs", done.stdout, re.M)
        assert said and int(said[1]) > 100, done.stdout
    finally:
        await st.close()
