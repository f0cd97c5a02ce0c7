import argparse
from collections.abc import Callable
from typing import Any

from icetime.service import Serve, main


def load() -> Serve:
    """The scorer, imported once its configuration has been read."""
    from .probe import serve

    return serve


def flags(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], dict[str, Any]]:
    """Scoring's own flag: ``--any-competition`` (``scoring.competitions = "*"``)."""
    parser.add_argument("--any-competition", action="store_true",
                        help='score any competition in the registry, sharing them with the '
                             'other workers (scoring.competitions = "*"; docs/configuration.md)')

    def overrides(args: argparse.Namespace) -> dict[str, Any]:
        return {"scoring_any_competition": True} if args.any_competition else {}

    return overrides


main("scoring", load, flags)
