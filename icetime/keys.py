"""Every Redis key and stream name icetime uses, in one place.

All keys share the ``icetime:`` prefix so one Redis can host other data.
"""
from __future__ import annotations

PREFIX = "icetime:"

#: The immutable input log: every accepted gun, passing, start list and decision.
RAW_STREAM = PREFIX + "raw"
#: Inputs that failed validation, with the reason and the bytes as received.
REJECTS_STREAM = PREFIX + "rejects"
#: Hash (source, sequence) -> raw stream id; makes a resent input idempotent.
SEEN_HASH = PREFIX + "seen"
#: Hash of ingest counters (accepted, duplicate, rejected, ...).
INGEST_STATS = PREFIX + "stats:ingest"
#: Hash of scoring counters.
SCORING_STATS = PREFIX + "stats:scoring"
#: Consumer group through which scoring reads RAW_STREAM.
SCORING_GROUP = "scoring"
#: Raw stream id of the last input whose output scoring has written.
SCORING_PROGRESS = PREFIX + "scoring:last-input"
#: Hash {fingerprint, progress, state}: scoring's engine as it stood after raw input
#: ``progress`` (services/scoring/checkpoint.py); a restart replays only what came after.
SCORING_CHECKPOINT = PREFIX + "scoring:checkpoint"
#: Hash decoder id -> JSON of its latest health (link, STATUS fields, counters).
DECODERS_HASH = PREFIX + "decoders"
#: Each decoder link's sessions (one per boot of the decoder), JSON per decoder id.
DECODER_SESSIONS = PREFIX + "decoder-sessions"
#: Capped stream of decoder health events: each STATUS, connect and disconnect.
DECODER_HEALTH_STREAM = PREFIX + "decoder-health"
#: How many decoder health events the stream keeps (about an hour at 1 STATUS/s each).
DECODER_HEALTH_MAXLEN = 10_000
#: Hash service name -> JSON {"pid", "host", "ports"}: where each running service process
#: listens (ports keyed by settings field), written once its listeners are bound.
LISTENING = PREFIX + "listening"
#: Set of race ids that have an event stream.
RACES_SET = PREFIX + "races"
#: The officials' stream: scoring's verdict (applied or refused, and why) on every input
#: but passings and clock offsets, and on every refused input; the desk's audit log.
OFFICIALS_STREAM = PREFIX + "officials"
#: How many verdicts the officials' stream keeps (a competition day's people inputs).
OFFICIALS_MAXLEN = 100_000
#: How long scoring keeps the verdict of one input for a feed that waits for it (s).
VERDICT_TTL_S = 24 * 3600


def verdict_key(input_id: str) -> str:
    """JSON ``{"verdict": "applied"|"refused", "reason"?}``: scoring's verdict on the raw
    input ``input_id``, written with its output; kept VERDICT_TTL_S."""
    return f"{PREFIX}verdict:{input_id}"


def idempotency_key(source: str, key: str) -> str:
    """Raw stream id of the input ``source`` sent under idempotency ``key`` (expires)."""
    return f"{PREFIX}idem:{source}\x00{key}"


def events_stream(race: str) -> str:
    """Ordered race events (the broadcast source) for one race."""
    return f"{PREFIX}events:{race}"


def snapshot_key(race: str) -> str:
    """Hash {offset, view}: the race view as of event ``offset``, written atomically with it."""
    return f"{PREFIX}snapshot:{race}"


def epoch_key(race: str) -> str:
    """The epoch of a race's event stream; a new value means the stream was recreated."""
    return f"{PREFIX}epoch:{race}"


def broadcast_wake_stream(node: str) -> str:
    """A broadcast node's own wake-up stream: an entry added here ends the node's
    blocking XREAD at once, so a race it starts reading is read from then on."""
    return f"{PREFIX}broadcast-wake:{node}"
