"""``python -m icetime.probe URL``: exit 0 when ``GET URL`` answers 200, else 1.

The health check of icetime's containers (deploy/compose.*.yaml): the image has Python
but no curl. One line on stderr says what failed.
"""
from __future__ import annotations

import sys
import urllib.error
import urllib.request

#: Seconds the probe waits for the answer.
TIMEOUT_S = 3.0


def probe(url: str) -> str | None:
    """None when ``url`` answers 200; else what went wrong, in one line."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            return None if resp.status == 200 else f"{url}: HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        exc.close()
        return f"{url}: HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{url}: {exc}"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m icetime.probe URL", file=sys.stderr)
        return 2
    problem = probe(argv[0])
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
