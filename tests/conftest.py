"""Shared test fixtures: a real redis-server per test, the real services on free ports."""
from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from icetime import bus
from icetime.messages import convert_input
from icetime.redis_embed import EmbeddedRedis
from icetime.settings import Settings, Source
from services.broadcast import server as broadcast
from services.ingest import server as ingest
from services.scoring import runner as scoring
from services.scoring.competition import Competition

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
TOKENS = {"gun": "t-gun", "finish-loop": "t-loop", "photo-finish": "t-photo",
          "officials": "t-officials"}


def feed(comp: Competition, input_id: str, obj: dict[str, Any]
         ) -> dict[str, list[dict[str, Any]]]:
    """Feed the engine one input written as a plain dict, typed on the way in as ingest
    types it (``msgspec.ValidationError`` if it is not a valid input)."""
    return comp.feed(input_id, convert_input(obj))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_venue_config(tmp_path: Path, *extra: str) -> tuple[Path, int]:
    """A venue TOML on free ports with the test tokens; returns (path, broadcast http port)."""
    http = free_port()
    path = tmp_path / "venue.toml"
    path.write_text("\n".join([
        'host = "127.0.0.1"',
        f'[redis]\nurl = ""\ndata_dir = "{tmp_path / "data"}"',
        f"[ingest]\nhttp_port = {free_port()}\ntcp_port = {free_port()}",
        f"[broadcast]\nhttp_port = {http}\nws_port = {free_port()}",
        *extra,
    ] + [f'[[sources]]\nid = "{k}"\ntoken = "{v}"' for k, v in TOKENS.items()]) + "\n")
    return path, http


def make_settings(redis_url: str = "", data_dir: str = "", **kw: object) -> Settings:
    base = Settings(
        redis_url=redis_url, data_dir=data_dir, host="127.0.0.1",
        ingest_http_port=free_port(), ingest_tcp_port=free_port(),
        broadcast_http_port=free_port(), broadcast_ws_port=free_port(),
        sources=tuple(Source(k, v) for k, v in TOKENS.items()))
    return replace(base, **kw)  # type: ignore[arg-type]


@pytest.fixture
def redis_server(tmp_path):
    with EmbeddedRedis(tmp_path / "redis") as emb:
        yield emb


@pytest.fixture
async def redis_client(redis_server):
    r = bus.connect(redis_server.url)
    yield r
    await r.aclose()


async def wait_port(port: int, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.02)


@dataclass
class Stack:
    settings: Settings
    url: str
    tasks: dict[str, asyncio.Task[None]]
    stops: dict[str, asyncio.Event]
    clients: list

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.settings.broadcast_ws_port}/"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.settings.broadcast_http_port}"

    async def start(self, name: str) -> None:
        serve = {"ingest": ingest.serve, "scoring": scoring.serve,
                 "broadcast": broadcast.serve}[name]
        r = bus.connect(self.url)
        self.clients.append(r)
        self.stops[name] = asyncio.Event()
        self.tasks[name] = asyncio.create_task(serve(self.settings, r, self.stops[name]))

    async def stop(self, name: str) -> None:
        self.stops[name].set()
        await asyncio.wait_for(self.tasks.pop(name), 10)

    async def close(self) -> None:
        for name in list(self.tasks):
            await self.stop(name)
        for r in self.clients:
            await r.aclose()


async def start_stack(settings: Settings, redis_url: str) -> Stack:
    """The three services in this process, on ``settings``' ports, ready to use."""
    s = Stack(settings, redis_url, {}, {}, [])
    for name in ("ingest", "scoring", "broadcast"):
        await s.start(name)
    await wait_port(s.settings.ingest_tcp_port)
    await wait_port(s.settings.broadcast_ws_port)
    await wait_port(s.settings.broadcast_http_port)
    return s


@pytest.fixture
async def stack(redis_server):
    s = await start_stack(make_settings(redis_server.url), redis_server.url)
    yield s
    with contextlib.suppress(Exception):
        await s.close()
