"""Every Redis key and stream name icetime uses, in one place.

All keys share the ``icetime:`` prefix so one Redis can host other data. Every key that
belongs to one competition (its raw log, its races' streams and snapshots, scoring's
marks, its decoders...) is named by a function taking the competition id and carries
the Redis Cluster hash tag ``{<competition>}``: all of a competition's keys hash to one
slot, so the bus's scripts (which touch many of them at once) run on a cluster, and so
does a blocking XREAD over one competition's streams. The registries that span
competitions (:data:`COMPETITIONS`, :func:`race_competitions`, :data:`LISTENING`,
:data:`SCORING_WORKERS`) are keys of their own, in whatever slot their name hashes to.
"""
from __future__ import annotations

import re

PREFIX = "icetime:"
#: The competition of a configuration that names none (``[competition] id``).
DEFAULT_COMPETITION = "main"
#: What a competition id may be: it is written inside a hash tag, so no braces, and
#: it is part of every key, so short and plain.
COMPETITION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

#: Consumer group through which scoring reads a competition's raw stream.
SCORING_GROUP = "scoring"
#: How many decoder health events a competition's stream keeps (about an hour at 1 STATUS/s each).
DECODER_HEALTH_MAXLEN = 10_000
#: How many verdicts the officials' stream keeps (a competition day's people inputs).
OFFICIALS_MAXLEN = 100_000
#: How long scoring keeps the verdict of one input for a feed that waits for it (s).
VERDICT_TTL_S = 24 * 3600

# ---------------------------------------------------------------- global registries
#: Hash service name -> JSON {"pid", "host", "ports"}: where each running service process
#: listens (ports keyed by settings field), written once its listeners are bound.
LISTENING = PREFIX + "listening"
#: Set of competition ids that have a raw stream (ingest adds its competition before
#: the first raw input it writes, scoring each it scores); workers that score any
#: competition take theirs from it (services/scoring/pool.py).
COMPETITIONS = PREFIX + "competitions"
#: Sorted set of the live scoring workers that score any competition: member the
#: worker's name, score the time (ms, Redis's clock) its announcement runs out.
SCORING_WORKERS = PREFIX + "scoring-workers"


def race_competitions(race: str) -> str:
    """Set of the competition ids that have published race ``race`` (race ids may
    repeat across competitions); scoring adds its competition before it publishes."""
    return f"{PREFIX}race-competitions:{race}"


# ---------------------------------------------------------------- one competition
def _base(competition: str) -> str:
    """``icetime:{<competition>}:``, the start of every key of one competition."""
    return f"{PREFIX}{{{competition}}}:"


def raw_stream(competition: str) -> str:
    """The immutable input log: every accepted gun, passing, start list and decision."""
    return _base(competition) + "raw"


def rejects_stream(competition: str) -> str:
    """Inputs that failed validation, with the reason and the bytes as received."""
    return _base(competition) + "rejects"


def seen_hash(competition: str) -> str:
    """Hash (source, session, seq) -> raw stream id and content digest; makes a resent
    input idempotent."""
    return _base(competition) + "seen"


def source_seq(competition: str) -> str:
    """Hash (source, session) -> the highest seq stored from it."""
    return _base(competition) + "source-seq"


def ingest_stats(competition: str) -> str:
    """Hash of ingest counters (accepted, duplicate, rejected, ...)."""
    return _base(competition) + "stats:ingest"


def last_passing(competition: str) -> str:
    """String: the newest passing ingest stored, from any source (a decoder link, a JSON
    feed over HTTP or TCP, a mat, a replay), as JSON ``{at_us, source, point}``
    (``at_us``: ingest's receipt, Unix µs)."""
    return _base(competition) + "last-passing"


def scoring_stats(competition: str) -> str:
    """Hash of scoring counters, and its rebuilds (icetime/restarts.py)."""
    return _base(competition) + "stats:scoring"


def service_restarts(competition: str) -> str:
    """Hash service name -> JSON: the supervisor's restarts of it (icetime/restarts.py)."""
    return _base(competition) + "stats:restarts"


def scoring_progress(competition: str) -> str:
    """Raw stream id of the last input whose output scoring has written."""
    return _base(competition) + "scoring:last-input"


def scoring_checkpoint(competition: str) -> str:
    """Hash {fingerprint, progress, state}: scoring's engine as it stood after raw input
    ``progress`` (services/scoring/checkpoint.py); a restart replays only what came after."""
    return _base(competition) + "scoring:checkpoint"


def scoring_checkpoint_staging(competition: str, writer: str) -> str:
    """Hash where worker ``writer`` (its lease token) writes a whole new checkpoint in
    pieces before it replaces :func:`scoring_checkpoint` in one RENAME; it expires if
    the writer dies mid-way."""
    return _base(competition) + "scoring:checkpoint:new:" + writer


def scoring_lease(competition: str) -> str:
    """The lease (a redis-py ``Lock``; its value the owner's name) of the scoring worker
    that scores ``competition`` now (services/scoring/lease.py). In the competition's
    slot: the publish script checks it."""
    return f"{_base(competition)}scoring:lease"


def decoders_hash(competition: str) -> str:
    """Hash decoder id -> JSON of its latest health (link, STATUS fields, counters)."""
    return _base(competition) + "decoders"


def decoder_sessions(competition: str) -> str:
    """Each decoder link's sessions (one per boot of the decoder), JSON per decoder id."""
    return _base(competition) + "decoder-sessions"


def decoder_health_stream(competition: str) -> str:
    """Capped stream of decoder health events: each STATUS, connect and disconnect."""
    return _base(competition) + "decoder-health"


def races_set(competition: str) -> str:
    """Set of the competition's race ids that have an event stream."""
    return _base(competition) + "races"


def chips(competition: str) -> str:
    """Hash transponder -> bib of the start lists ingest accepted (the latest list wins):
    whose chip a read is on the desk, even a chip that never made a passage."""
    return _base(competition) + "chips"


def officials_stream(competition: str) -> str:
    """The officials' stream: scoring's verdict (applied or refused, and why) on every
    input but passings and clock offsets, and on every refused input; the desk's audit log."""
    return _base(competition) + "officials"


def verdict_key(competition: str, input_id: str) -> str:
    """JSON ``{"verdict": "applied"|"refused", "reason"?}``: scoring's verdict on the raw
    input ``input_id``, written with its output; kept VERDICT_TTL_S."""
    return f"{_base(competition)}verdict:{input_id}"


def idempotency_key(competition: str, source: str, key: str) -> str:
    """Raw stream id of the input ``source`` sent under idempotency ``key`` (expires)."""
    return f"{_base(competition)}idem:{source}\x00{key}"


def events_stream(competition: str, race: str) -> str:
    """Ordered race events (the broadcast source) for one race."""
    return f"{_base(competition)}events:{race}"


def snapshot_key(competition: str, race: str) -> str:
    """Hash {offset, view}: the race view as of event ``offset``, written atomically with it."""
    return f"{_base(competition)}snapshot:{race}"


def epoch_key(competition: str, race: str) -> str:
    """The epoch of a race's event stream; a new value means the stream was recreated."""
    return f"{_base(competition)}epoch:{race}"


def broadcast_wake_stream(competition: str, node: str) -> str:
    """A broadcast node's wake-up stream for one competition: an entry added here ends
    the node's blocking XREAD of that competition's races at once, so a race it starts
    reading is read from then on. In the competition's slot, like the streams it
    is read with."""
    return f"{_base(competition)}broadcast-wake:{node}"
