from icetime.service import Serve, main


def load() -> Serve:
    """The service itself, imported once its configuration has been read."""
    from .server import serve

    return serve


main("relay", load)
