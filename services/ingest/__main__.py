from icetime.service import main

from .server import serve

main("ingest", serve)
