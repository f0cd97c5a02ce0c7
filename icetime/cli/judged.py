"""What scoring said of the inputs ``icetime replay`` sent (docs/configuration.md).

Ingest's "ok" means stored, not applied: a replay into a competition whose start list
does not hold the fixture's race is stored input by input and then refused by scoring
input by input (an unknown race, an unknown transponder). ``icetime replay`` therefore
waits for scoring to reach the last input it stored and counts scoring's refusals among
them, from the verdicts scoring writes (:func:`icetime.keys.verdict_key`: every refused
input has one; a passing that is applied has none).
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from icetime import keys
from icetime import settings as settings_mod
from icetime.streams import parse_id

if TYPE_CHECKING:
    import redis

#: How long ``icetime replay`` waits for scoring to reach the last input it stored (s).
JUDGED_WITHIN_S = 10.0
#: Verdicts read in one MGET.
VERDICT_BATCH = 500


@dataclass
class ScoringSaid:
    """Of ``stored`` inputs: ``refused`` by scoring (the first reason in
    ``first_reason``); ``judged`` False when scoring had not reached the last of them
    within :data:`JUDGED_WITHIN_S` (then ``refused`` counts only those it had reached)."""

    stored: int
    refused: int = 0
    first_reason: str | None = None
    judged: bool = True
    #: Why the verdicts could not be read (Redis did not answer), if so.
    error: str | None = None

    def __str__(self) -> str:
        if self.error:
            return f"scoring's verdicts could not be read: {self.error}"
        if not self.judged:
            return (f"scoring had not reached the last of the {self.stored} new inputs "
                    f"within {JUDGED_WITHIN_S:g} s (is it running?); it refused "
                    f"{self.refused} of those it had")
        text = f"scoring refused {self.refused} of the {self.stored} new inputs"
        if self.first_reason:
            text += f"; first: {self.first_reason}"
        return text

    @property
    def all_refused(self) -> bool:
        return self.stored > 0 and self.refused == self.stored


def redis_url(cfg: settings_mod.Settings) -> str | None:
    """``cfg.redis_url``, or the embedded Redis's socket in ``cfg.data_dir``; None when
    there is neither."""
    if cfg.redis_url:
        return cfg.redis_url
    sock = Path(cfg.data_dir) / "redis.sock"
    return f"unix://{sock}" if sock.exists() else None


@contextmanager
def running_redis(cfg: settings_mod.Settings) -> Iterator[redis.Redis | None]:
    """A short-lived client of the running icetime's Redis (:func:`redis_url`; 2 s to
    connect and to answer), closed afterwards; None when there is no such Redis. What
    it raises (redis.RedisError, OSError) is the caller's to handle."""
    import redis as redis_lib

    url = redis_url(cfg)
    if url is None:
        yield None
        return
    r = redis_lib.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        yield r
    finally:
        r.close()


def scoring_said(cfg: settings_mod.Settings, ids: list[str]) -> ScoringSaid:
    """Scoring's verdicts on the raw inputs ``ids`` (stream ids, in order) of
    ``cfg.competition_id``; Redis not answering is said in ``error``."""
    import redis

    said = ScoringSaid(len(ids))
    if not ids:
        said.judged = True
        return said
    with running_redis(cfg) as r:
        if r is None:
            said.judged = False
            return said
        try:
            said.judged = _wait_for_progress(r, cfg.competition_id, ids[-1])
            for start in range(0, len(ids), VERDICT_BATCH):
                batch = ids[start:start + VERDICT_BATCH]
                for raw in r.mget([keys.verdict_key(cfg.competition_id, i) for i in batch]):
                    verdict = json.loads(raw) if raw else {}
                    if verdict.get("verdict") == "refused":
                        said.refused += 1
                        said.first_reason = said.first_reason or str(verdict.get("reason"))
        except (redis.RedisError, OSError) as exc:
            said.judged, said.error = False, str(exc)
    return said


def _wait_for_progress(r: redis.Redis, competition: str, last: str) -> bool:
    """Whether scoring's progress mark reached ``last`` within JUDGED_WITHIN_S."""
    deadline = time.monotonic() + JUDGED_WITHIN_S
    while True:
        mark = r.get(keys.scoring_progress(competition))
        if mark and parse_id(mark) >= parse_id(last):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
