"""The supervisor behind ``icetime run`` and ``icetime demo``: Redis and the services.

It starts the embedded redis-server (unless REDIS_URL is set), the three services as child
processes (and the relay when the venue has a cloud), restarts a service that dies
(waiting longer each time it dies soon after starting) and, on :meth:`Supervisor.stop`,
stops the services first and Redis last. A service that exits with code 2 refused the
configuration: restarting cannot help, so :class:`ConfigRefused` is raised. One that
cannot bind its port while icetime starts (exit code 3) raises :class:`CannotListen`.
The embedded redis-server is watched too: one that dies is started again on its files.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icetime import keys, restarts
from icetime import settings as settings_mod
from icetime.redis_embed import EmbeddedRedis
from icetime.service import EXIT_BIND, EXIT_CONFIG, LISTEN_ENV, SUPERVISOR_ENV, with_ports
from icetime.timefmt import now_us

if TYPE_CHECKING:
    import redis

# Redis and HTTP are imported where a method needs them: `icetime --help` or a refused
# argument or configuration answers at once.

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("ingest", "scoring", "broadcast")
#: Run too when ``relay.cloud_url`` is set: mirrors the venue's races to the cloud.
RELAY = "relay"
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
        self.record(lambda r: restarts.restarts_cleared(r, self.cfg.competition_id))
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
            said = restarts.ServiceRestart(self.restarts[name], now_us(), code, round(ran, 1))
            self.record(functools.partial(restarts.service_restarted,
                                          competition=self.cfg.competition_id, name=name,
                                          restart=said))
            if delay:
                self.restart_at[name] = now + delay
            else:
                self.spawn(name)

    def record(self, write: Callable[[redis.Redis], None]) -> None:
        """Write what the supervisor did where ``/api/health`` and the desk show it
        (:mod:`icetime.restarts`); best effort: with Redis away it is only logged."""
        import redis

        r = redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=2)
        try:
            write(r)
        except (redis.RedisError, OSError) as exc:
            log.warning("restart not recorded in Redis: %s", exc)
        finally:
            r.close()

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
        """POST a start list (or a fixture holding one) to ingest (:func:`post_startlist`)."""
        return post_startlist(self.cfg, doc, source)


def post_startlist(cfg: settings_mod.Settings, doc: dict[str, Any],
                   source: str | None = None) -> dict[str, Any]:
    """POST a start list (or a fixture holding one) to the ingest ``cfg`` names, as
    ``source`` (by default the first source allowed to load one). Returns ingest's JSON
    reply; raises RuntimeError (ingest's reason) when it is refused or nobody may."""
    import urllib.error
    import urllib.request

    doc = doc.get("startlist", doc)
    src = cfg.source(source) if source else cfg.loader()
    if src is None:
        raise RuntimeError("no [[sources]] configured: nobody may load a start list")
    req = urllib.request.Request(
        f"http://{cfg.host}:{cfg.ingest_http_port}/api/startlist",
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
