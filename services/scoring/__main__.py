from icetime.service import main

from .runner import serve

main("scoring", serve)
