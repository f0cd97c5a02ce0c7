"""`make bench`: every benchmark, figures printed (not asserted)."""
from __future__ import annotations

from . import engine, latency, p3

p3.main()
engine.main()
latency.main()
