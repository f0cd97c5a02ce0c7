"""What ``icetime run`` and ``icetime demo`` print: where each listener and screen is.

Every function takes the settings with the ports the services bound
(:attr:`icetime.cli.supervisor.Supervisor.cfg` after it started), so a port of 0 in the
configuration is printed as the one it became.
"""
from __future__ import annotations

from icetime.settings import Settings


def page_url(cfg: Settings, race: str | None = None, page: str = "") -> str:
    """The URL of a page (``""`` the index, ``"live"``, ``"board"``...), of ``race`` if given."""
    url = f"http://{cfg.host}:{cfg.broadcast_http_port}/{page}"
    return url + (f"?race={race}" if race else "")


def banner(cfg: Settings) -> str:
    """Every listener, one per line: a label padded to 11 characters, then its URL."""
    return "\n".join(f"  {label:<11}{url}" for label, url in (
        ("pages", page_url(cfg)),
        ("WebSocket", cfg.public_ws_url or f"ws://{cfg.host}:{cfg.broadcast_ws_port}/"),
        ("feed TCP", f"tcp://{cfg.host}:{cfg.ingest_tcp_port}"),
        ("feed HTTP", f"http://{cfg.host}:{cfg.ingest_http_port}/feed"),
        ("results", f"http://{cfg.host}:{cfg.broadcast_http_port}/api/results/competitions"),
        ("RMonitor", f"tcp://{cfg.host}:{cfg.broadcast_rmonitor_port}"),
        ("metrics", f"http://{cfg.host}:{cfg.broadcast_http_port}/metrics"),
        ("desk", f"http://{cfg.host}:{cfg.ingest_http_port}/desk")))


def screens(cfg: Settings, race: str) -> str:
    """The four screens of ``race``, one per line, for the console."""
    return "\n".join(f"  {label:<26}{page_url(cfg, race, page)}" for label, page in (
        ("fans (phones)", "live"), ("commentator monitor", "monitor"),
        ("arena board", "board"), ("overlay (OBS/vMix)", "overlay")))
