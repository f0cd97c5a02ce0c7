from icetime.service import main

from .probe import serve

main("scoring", serve)
