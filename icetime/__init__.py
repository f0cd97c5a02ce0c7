"""icetime: live timing for ISU speed skating.

This package holds what every service shares: stream and key names, time
formatting, settings, the embedded Redis and the Redis Streams bus. The
services live in ``services.ingest``, ``services.scoring`` and
``services.broadcast`` and import from here, never from each other.
"""
