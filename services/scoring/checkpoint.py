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
Redis hash with the fingerprint and the progress mark (``keys.scoring_checkpoint``),
each field sealed with its digest (:func:`seal`) so damage is found when the hash is
read, not when a race is first used. It is read only from the Redis that holds the raw
log itself: whoever can write there already decides every result.

A restart unpickles only the competition's own state; each race stays sealed in a
:class:`RaceStore` until the engine first uses it. A day's finished races (most of a
long day's checkpoint: unpickling them took 13.6 of 18.6 s of a 200,000-input day's
restart, see bench/restart.py) then cost nothing until a correction or a standings
update names them.
"""
from __future__ import annotations

import hashlib
import pickle
from collections.abc import Iterable, Iterator, MutableMapping
from pathlib import Path

from icetime import feed_inputs, messages, race_events, race_views, rules
from icetime.settings import Settings

from .competition import Competition, Race

#: Bumped when the checkpoint's layout changes (2: fields sealed, races loaded lazily).
FORMAT = 2
#: Bytes of the digest that leads each sealed field (BLAKE2b).
DIGEST_BYTES = 16
#: The engine's code: every module of this package, and the typed messages it holds
#: (icetime.messages names them; the types live in the three modules beside it).
_SOURCES = (*sorted(Path(__file__).parent.glob("*.py")),
            *(Path(str(m.__file__)) for m in (messages, feed_inputs, race_events, race_views)))


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


def seal(data: bytes) -> bytes:
    """``data`` led by its digest (:data:`DIGEST_BYTES` of BLAKE2b)."""
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest() + data


def unseal(value: bytes) -> memoryview:
    """The data :func:`seal` sealed in ``value``; ValueError if it does not match its
    digest (a damaged or truncated field)."""
    data = memoryview(value)[DIGEST_BYTES:]
    if hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest() != value[:DIGEST_BYTES]:
        raise ValueError("checkpoint field does not match its digest")
    return data


def _mark(race: Race) -> tuple[int, int]:
    """What tells that a race changed: it changes only through its ``feed``, which
    logs the input first, or through a revision, which counts itself."""
    return len(race.log), race.revision


class RaceStore(MutableMapping[str, Race]):
    """A restored competition's races by id, in the order they were created; each is
    unpickled from its sealed checkpoint field the first time it is looked up.
    Membership, ids and order never unpickle; ``values()`` and ``items()`` do, all."""

    def __init__(self, sealed: Iterable[tuple[str, bytes]]) -> None:
        self._races: dict[str, Race | bytes] = dict(sealed)
        #: Race id -> its mark (:func:`_mark`) when unpickled: as the checkpoint holds it.
        self.marks: dict[str, tuple[int, int]] = {}

    def __getitem__(self, race_id: str) -> Race:
        race = self._races[race_id]
        if isinstance(race, bytes):
            race = pickle.loads(race[DIGEST_BYTES:])  # noqa: S301 (our own Redis; module doc)
            self._races[race_id] = race
            self.marks[race_id] = _mark(race)
        return race

    def __setitem__(self, race_id: str, race: Race) -> None:
        self._races[race_id] = race

    def __delitem__(self, race_id: str) -> None:
        del self._races[race_id]

    def __contains__(self, race_id: object) -> bool:
        return race_id in self._races

    def __iter__(self) -> Iterator[str]:
        return iter(self._races)

    def __len__(self) -> int:
        return len(self._races)

    def loaded(self) -> Iterator[tuple[str, Race]]:
        """The races unpickled (or added) so far."""
        return ((rid, r) for rid, r in self._races.items() if not isinstance(r, bytes))

    def sealed(self) -> Iterator[tuple[str, bytes]]:
        """The races not unpickled yet, as their sealed checkpoint fields."""
        return ((rid, r) for rid, r in self._races.items() if isinstance(r, bytes))


class Saver:
    """Turns the engine into the fields of the checkpoint hash, re-pickling only what
    changed since the last save: the competition's own state (small: the start list,
    routing, standings) every time, a race only when it took an input or a revision
    since (:func:`_mark`). A day of races costs each save about one race, not the day;
    a race a restart never unpickled has not changed."""

    def __init__(self) -> None:
        self.marks: dict[str, tuple[int, int]] = {}
        #: Write every race at the next save (the hash was replaced or is unknown).
        self.whole = True

    def fields(self, engine: Competition) -> dict[str, bytes]:
        """The hash fields to write: the competition's state and every changed race."""
        return dict(self.items(engine))

    def items(self, engine: Competition) -> Iterator[tuple[str, bytes]]:
        """:meth:`fields` one at a time, each race pickled when it is asked for: a
        whole save after a long day's replay is seconds of pickling, which the caller
        can interleave with its other work (the lease's keeper). The engine must not
        change until the iterator is exhausted."""
        own = {k: v for k, v in vars(engine).items() if k not in ("races", "seen")}
        own["races"] = list(engine.races)  # the ids: which race fields make it whole
        yield COMPETITION, seal(pickle.dumps(own, protocol=pickle.HIGHEST_PROTOCOL))
        races = engine.races
        store = races if isinstance(races, RaceStore) else None
        for rid, race in store.loaded() if store else races.items():
            mark = _mark(race)
            known = self.marks.get(rid) or (store.marks.get(rid) if store else None)
            if self.whole or known != mark:
                yield RACE + rid, seal(pickle.dumps(race, protocol=pickle.HIGHEST_PROTOCOL))
                self.marks[rid] = mark
        if self.whole and store:
            yield from ((RACE + rid, sealed) for rid, sealed in store.sealed())
        self.whole = False

    def forget(self) -> None:
        """Write every race at the next save (the hash was replaced or is unknown)."""
        self.marks = {}
        self.whole = True

    def holds(self) -> None:
        """The hash holds the engine just loaded from it: later saves add what changes."""
        self.marks = {}
        self.whole = False


def load(fields: dict[str, bytes]) -> Competition | None:
    """The engine saved as ``fields`` (:meth:`Saver.fields`, accumulated), its races
    still sealed in a :class:`RaceStore`; None when they are not one (a damaged or
    foreign value: the caller replays the whole log).

    The engine comes back without the input ids it had seen (``Competition.seen``): the
    runner never feeds an input at or before the checkpoint again (its progress mark)."""
    try:
        own = pickle.loads(unseal(fields[COMPETITION]))  # noqa: S301 (our own Redis; module doc)
        sealed = [(rid, fields[RACE + rid]) for rid in own.pop("races")]
        for _, value in sealed:
            unseal(value)  # every digest checked now: a damaged race is no checkpoint
        engine = Competition.__new__(Competition)
        vars(engine).update(own, races=RaceStore(sealed), seen=set())
    except Exception:  # any damage at all means "no checkpoint", never a dead worker
        return None
    return engine
