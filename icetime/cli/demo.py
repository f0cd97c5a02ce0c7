"""``icetime demo``: icetime on the demo configuration, with a real race replayed into it.

The finish line's passings cross a simulated P3 decoder and ingest's decoder link, the
gun comes through the JSON feed: the whole path a venue uses.
"""
from __future__ import annotations

import argparse
import contextlib
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from icetime import settings as settings_mod
from icetime.cli import console
from icetime.cli.replaying import Tally, fixture_path, replay
from icetime.cli.supervisor import ROOT, Supervisor
from icetime.replay import load_fixture

if TYPE_CHECKING:
    import asyncio

# asyncio and the decoder simulator are imported when the demo starts: a refused race
# or speed answers at once.


def cmd_demo(args: argparse.Namespace) -> None:
    import asyncio

    config = str(ROOT / "deploy" / "demo.toml")
    cfg = settings_mod.load(config)
    doc = load_fixture(fixture_path(args.race))
    sup = Supervisor(config, cfg, clean=True)  # a demo starts clean
    try:
        asyncio.run(run_demo(sup, doc, args.speed, args.exit_after_replay))
    except KeyboardInterrupt:  # before or after the loop ran
        print("\n  stopping", flush=True)
    finally:
        sup.stop()


async def run_demo(sup: Supervisor, doc: dict[str, Any], speed: float,
               exit_after_replay: bool) -> None:
    """Start the services, replay the fixture ``doc`` at ``speed`` times real time, then
    serve until Ctrl-C (or stop at once with ``exit_after_replay``).

    Ctrl-C is handled in the loop, so everything stops in order: the feed clients, the
    services, then the decoder (asyncio.run would cancel them all at once)."""
    import asyncio

    from services.ingest.decoders.simulator import DecoderSimulator

    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupted.set)

    async def carry_on() -> bool:
        """Wait a second, watching the services; False once interrupted."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(interrupted.wait(), 1.0)
        if interrupted.is_set():
            return False
        sup.check_children()
        return True

    # The finish line's passings come from a (simulated) P3 decoder, through
    # ingest's decoder link: the whole real path. The gun uses the JSON feed. Like a
    # real one, the decoder is on before ingest starts and until ingest has stopped,
    # so the link's log neither starts nor ends with a decoder that is down.
    sim = None
    sup.start_redis()  # first: a data dir in use stops the demo before anything binds
    if sup.cfg.decoders:
        sim = DecoderSimulator()
        await sim.start(sup.cfg.decoders[0].host, sup.cfg.decoders[0].port)
    task: asyncio.Task[Tally] | None = None
    race = doc["script"]["race"]
    try:
        sup.start()
        sup.load_startlist(doc)
        print(f"\n  {doc['startlist']['races'][0]['name']}, live:\n"
              f"{console.screens(sup.cfg, race)}\n"
              f"  replaying at {speed}x; Ctrl-C stops everything\n", flush=True)
        task = asyncio.create_task(replay(doc, sup.cfg, speed, decoder=sim))
        await _follow_replay(task, carry_on, console.page_url(sup.cfg, race),
                             exit_after_replay)
    finally:
        if interrupted.is_set():
            print("\n  stopping", flush=True)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        sup.stop()
        if sim:
            await sim.stop()


async def _follow_replay(task: asyncio.Task[Tally], carry_on: Callable[[], Awaitable[bool]],
                         page_url: str, exit_after_replay: bool) -> None:
    """Wait for the replay ``task`` to end, then serve until ``carry_on`` says stop."""
    while not task.done():
        if not await carry_on():
            return
    if not await carry_on():  # the last passings cross the link
        return
    tally = task.result()
    if exit_after_replay:
        print(f"  replay finished: {tally}", flush=True)
        return
    print(f"  replay finished: {tally}; still serving {page_url}", flush=True)
    while await carry_on():
        pass
