"""Scoring checkpoints: the engine's whole state saved now and then, so that a restart
replays only the raw inputs since the last one instead of the whole day's log.

A checkpoint is ``(fingerprint, progress, engine)``: the engine as it stood right after
scoring published the output of raw input ``progress``. Between two inputs the engine
is exactly the state those inputs built, so the checkpoint plus a replay of the inputs
after ``progress`` rebuilds what a replay from the start would (the engine is
deterministic, see ``competition``).

The *fingerprint* names what the state depends on besides the inputs: the format below,
the source of the engine's modules, the rules and the engine's settings. A checkpoint
made by other code or other settings is never loaded (the worker replays the whole log,
as it would without one), so an upgrade can never resume from a state the new code would
not have built.

The state is pickles, one for the competition's own state and one per race, in one
Redis hash with the fingerprint and the progress mark (``keys.scoring_checkpoint``).
It is read only from the Redis that holds the raw log itself: whoever can write there
already decides every result.
"""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

from icetime import messages, rules
from icetime.settings import Settings

from .competition import Competition

#: Bumped when the checkpoint's layout changes.
FORMAT = 1
#: The engine's code: every module of this package, and the typed inputs it holds.
_SOURCES = (*sorted(Path(__file__).parent.glob("*.py")), Path(messages.__file__))


def fingerprint(settings: Settings) -> str:
    """A digest (hex) of the engine's code, the rules file and the engine's settings."""
    h = hashlib.sha256(f"icetime-checkpoint/{FORMAT}".encode())
    for path in _SOURCES:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    rules_file = Path(settings.rules_file) if settings.rules_file else rules.DEFAULT_FILE
    h.update(rules_file.read_bytes())
    h.update(repr((sorted(settings.source_offsets().items()), settings.max_speed_mps,
                   sorted(settings.loops.items()))).encode())
    return h.hexdigest()


#: The hash field of the competition's own state, and the prefix of each race's field.
COMPETITION = "competition"
RACE = "race:"


class Saver:
    """Turns the engine into the fields of the checkpoint hash, re-pickling only what
    changed since the last save: the competition's own state (small: the start list,
    routing, standings) every time, a race only when it took an input or a revision
    since. A day of races costs each save about one race, not the day.

    A race changes only through its ``feed``, which logs the input first, or through a
    revision, which counts itself: (log length, revision) tells that it changed."""

    def __init__(self) -> None:
        self.marks: dict[str, tuple[int, int]] = {}

    def fields(self, engine: Competition) -> dict[str, bytes]:
        """The hash fields to write: the competition's state and every changed race."""
        own = {k: v for k, v in vars(engine).items() if k not in ("races", "seen")}
        own["races"] = list(engine.races)  # the ids: which race fields make it whole
        out = {COMPETITION: pickle.dumps(own, protocol=pickle.HIGHEST_PROTOCOL)}
        for rid, race in engine.races.items():
            mark = (len(race.log), race.revision)
            if self.marks.get(rid) != mark:
                out[RACE + rid] = pickle.dumps(race, protocol=pickle.HIGHEST_PROTOCOL)
                self.marks[rid] = mark
        return out

    def forget(self) -> None:
        """Write every race at the next save (the hash was replaced or is unknown)."""
        self.marks = {}


def load(fields: dict[str, bytes]) -> Competition | None:
    """The engine saved as ``fields`` (:meth:`Saver.fields`, accumulated), or None when
    they are not one (a damaged or foreign value: the caller replays the whole log).

    The engine comes back without the input ids it had seen (``Competition.seen``): the
    runner never feeds an input at or before the checkpoint again (its progress mark)."""
    try:
        own = pickle.loads(fields[COMPETITION])  # noqa: S301 (our own Redis; module doc)
        races = {rid: pickle.loads(fields[RACE + rid])  # noqa: S301
                 for rid in own.pop("races")}
        engine = Competition.__new__(Competition)
        vars(engine).update(own, races=races, seen=set())
    except Exception:  # any damage at all means "no checkpoint", never a dead worker
        return None
    return engine
