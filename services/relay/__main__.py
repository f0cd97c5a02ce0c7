from icetime.service import main

from .server import serve

main("relay", serve)
