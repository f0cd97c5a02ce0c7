"""`make bench`: every benchmark, figures printed (not asserted).

The services it starts log at WARNING (``ICETIME_LOG`` chooses otherwise), so what is
printed is the figures and any trouble.
"""
from __future__ import annotations

import os

from icetime import logs

from . import (
    chain_jitter,
    corrections,
    decoder_fuzz,
    engine,
    fanout,
    fanout_scale,
    field,
    fsync,
    jitter,
    latency,
    p3,
    pack,
    restart,
    startlist,
)

os.environ.setdefault("ICETIME_LOG", "WARNING")
logs.configure("bench")
p3.main()
decoder_fuzz.main(["--seconds", "3"])
engine.main()
corrections.main()
pack.main()
jitter.main()
latency.main()
field.main()
fsync.main()
chain_jitter.main()
restart.main(["--inputs", "1000000"])
startlist.main([])
fanout.main()
fanout_scale.main([])
