"""`make bench`: every benchmark, figures printed (not asserted)."""
from __future__ import annotations

from . import engine, latency

engine.main()
latency.main()
