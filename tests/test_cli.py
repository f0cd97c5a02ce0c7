"""`icetime run` as a user runs it: a process, a config file, Ctrl-C."""
from __future__ import annotations

import json
import logging
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


def run_quick(args: list[str], cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a command that must end on its own; REDIS_URL and ICETIME_* come only from ``env``."""
    base = {k: v for k, v in os.environ.items()
            if k != "REDIS_URL" and not k.startswith("ICETIME_")}
    return subprocess.run([sys.executable, *args], cwd=cwd, env={**base, **env},
                          capture_output=True, text=True, timeout=60)


def test_a_bad_configuration_is_one_line_and_exit_2_everywhere(tmp_path):
    config, _ = write_venue_config(tmp_path)
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
         "(starts with redis://, rediss://, unix://)"),
        (["-m", "services.ingest", "--config", str(config)], {"REDIS_URL": "redis://x"},
         f"ingest: {want}"),
        (["-m", "services.broadcast", "--config", str(config)], {"REDIS_URL": "redis://x"},
         f"broadcast: {want}"),
        (["-m", "services.scoring"], {},
         "scoring: set REDIS_URL (or [redis] url), or start icetime with `icetime run`, "
         "which provides its embedded Redis"),
    ]
    for args, env, line in cases:
        done = run_quick(args, **env)
        assert (done.returncode, done.stderr.splitlines(), done.stdout) == (2, [line], ""), args
    assert not (tmp_path / "data").exists()  # checked before anything started


def wait_http(url: str, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.communicate()[0]
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
    config, http = write_venue_config(tmp_path)
    env = {k: v for k, v in os.environ.items()
           if k != "REDIS_URL" and not k.startswith("ICETIME_")}
    proc = subprocess.Popen([sys.executable, "-m", "icetime.cli", "run"], cwd=tmp_path,
                            env={**env, "ICETIME_CONFIG": config.name},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_http(f"http://127.0.0.1:{http}/healthz", proc)
        kids = children_of(proc.pid)
        ingest = [k for k in kids if "services.ingest" in Path(f"/proc/{k}/cmdline").read_text()]
        assert len(ingest) == 1
        config.write_text(config.read_text().replace("[ingest]", "[ingest]\ntcp_prot = 1"))
        os.kill(ingest[0], signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 2, out
        assert f"ingest: {config}: unknown key 'ingest.tcp_prot'" in out.splitlines()
        assert "service ingest refused the configuration (exit code 2); not restarting it, " \
               "stopping" in out
        assert out.count("; restarting it now (restart 1)") == 1  # once, after the kill
        assert "restart 2" not in out
        assert "Traceback" not in out, out
        assert not [k for k in kids if alive(k)], "a child outlived the stop"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_a_service_that_keeps_dying_at_start_is_restarted_later_each_time(tmp_path, caplog):
    """Ingest's port is taken while it is down: each restart dies at once, and the
    supervisor waits 0.5 s, 1 s... before the next rather than spin; once the port is
    free again, ingest comes back."""
    import socket

    from icetime import settings
    from icetime.cli import Supervisor

    caplog.set_level(logging.INFO, logger="icetime.cli")
    config = str(write_venue_config(tmp_path)[0])
    cfg = settings.load(config)
    sup = Supervisor(config, cfg)
    sup.start()
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
        assert waits == ["now", "in 0.5 s", "in 1.0 s"]
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
