"""Names vulture (the dead-code check of ``make lint``) cannot see used: each is called
or read by a library, not by our code. Keep it to such names; remove dead code instead.
Vulture reads this file without running it, so ``_`` stands for any object."""
# ruff: noqa: F821, B018

# asyncio calls a protocol's callbacks (bench/wsclient.py, decoders/link.py, tests,
# services/scoring/snapshotter.py).
_.connection_made
_.connection_lost
_.data_received
_.datagram_received

# pytest reads these by name (tests/conftest.py and the test modules).
pytest_plugins
pytest_runtest_call
pytest_collection_modifyitems
pytestmark
clean_env  # an autouse fixture (tests/test_settings.py): no test names it
nothing_left_open  # an autouse fixture (tests/test_cluster.py): no test names it

# Fields of the wire Structs (icetime/feed_inputs.py, race_events.py, race_views.py) that
# msgspec decodes, encodes and puts in the JSON Schemas, but no Python code reads by name.
_.sent_us
_.rx_us
_.rtt_us
_.source_us
_.ingest_us
_.scoring_us
_.best_bib
_.leader_bib
_.gap_m
_.input
_.sprint_points_table
_.start_order
_.in_field
_.frm
_.tied
_.finish_rows
_.sprint_points_moved

# Fields of icetime/restarts.py's records: encoded to JSON for /api/health and the desk.
_.exit_code
_.ran_s
