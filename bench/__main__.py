"""`make bench`: every benchmark, figures printed (not asserted)."""
from __future__ import annotations

from . import engine, latency, p3, pack

p3.main()
engine.main()
pack.main()
latency.main()
