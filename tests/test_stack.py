"""The test Stack itself: a service that dies fails the test at once, with its exception."""
from __future__ import annotations

import errno
import shutil
import socket
import tempfile
import time
from pathlib import Path

import pytest

from .conftest import ROOT, Stack, make_settings


@pytest.mark.parametrize(("service", "field"), [
    ("ingest", "ingest_tcp_port"),  # its HTTP listener is already bound by then
    ("broadcast", "broadcast_ws_port"),
    ("broadcast", "broadcast_http_port"),  # its WebSocket listener is already bound
])
async def test_a_configured_port_that_is_taken_fails_the_start_with_its_error(
        redis_server, service, field):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        st = Stack(make_settings(redis_server.url, **{field: port}), redis_server.url)
        try:
            with pytest.raises(OSError) as err:
                await st.start(service)
            assert err.value.errno == errno.EADDRINUSE
            assert service not in st.tasks
            # What it had bound is closed again (a leak would be a ResourceWarning, an
            # error here), and the other listeners still come up on port 0.
            await st.start("scoring")
        finally:
            await st.close()


INNER = '''
import asyncio

import pytest

from tests.conftest import Stack, make_settings

async def crashing(settings, r, stop, ready):
    """A service that reports ready, then dies of a fault of its own."""
    await ready({})
    await asyncio.sleep(0.3)
    raise RuntimeError("the feed broke")

async def test_own_stack(redis_server):
    st = Stack(make_settings(redis_server.url), redis_server.url)
    try:
        await st.start("ingest")
        await st.start("crashing", crashing)
        await asyncio.sleep(3600)  # waiting for what the dead service would have sent
    finally:
        await st.close()

async def test_the_stack_fixture(stack):
    await stack.start("crashing", crashing)
    await asyncio.sleep(3600)

async def test_that_swallows_the_cancellation(stack):
    await stack.start("crashing", crashing)
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        pass  # the test passes, so its teardown must report the death
'''


@pytest.mark.timeout(400)  # the inner run's start-up alone took a minute on a busy machine
def test_a_service_that_dies_fails_the_running_test_at_once(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    # A short base: redis-server's unix socket path must stay under 108 bytes.
    base = Path(tempfile.mkdtemp(prefix="icetime-"))
    # Without the Stack's watch each inner test would sleep until its timeout (600 s): far
    # from the few seconds the deaths take, even on a machine busy with other tests.
    pytester.makeini("[pytest]\nasyncio_mode = auto\ntimeout = 600\n"
                     "asyncio_default_fixture_loop_scope = function\nfilterwarnings = error\n")
    pytester.makeconftest('pytest_plugins = ["tests.conftest"]\n')
    pytester.makepyfile(test_inner=INNER)
    started = time.monotonic()
    try:
        # Without the plugins the inner tests do not use: hypothesis' alone costs the
        # inner process over a second of CPU at start.
        result = pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:xdist",
            "-p", "no:xdist.looponfail", "-q", "--tb=long", f"--basetemp={base}", timeout=900)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    elapsed = time.monotonic() - started
    out = result.stdout.str()
    assert result.parseoutcomes() == {"failed": 2, "passed": 1, "errors": 1}, out
    assert elapsed < 300, f"the tests waited for their timeout ({elapsed:.0f} s)"
    # Each failure is the service's death, caused by the service's own exception and
    # traceback, not a bare cancellation or a timeout.
    # Counted in the failure reports only: the short summary repeats the message or cuts
    # it, depending on the terminal's width.
    reports = out.split("short test summary info")[0]
    assert reports.count("ServiceDied: service crashing died: RuntimeError('the feed broke')") == 3
    assert out.count('raise RuntimeError("the feed broke")') >= 3
    assert "ERROR at teardown of test_that_swallows_the_cancellation" in out
    assert "CancelledError" not in out.split("short test summary")[-1], out
