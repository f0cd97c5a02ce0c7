"""Story lines for the commentator: short sentences the engine attaches to events.

Pure functions of numbers the engine already computed; no state of their own.
"""
from __future__ import annotations

from icetime.timefmt import format_diff, format_gap, format_time

FLAG_LABELS = {"WR": "world record", "TR": "track record", "PB": "personal best",
               "SB": "season best"}


def ordinal(n: int) -> str:
    if 10 <= n % 100 <= 20:
        suffix = "th"
    else:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def at_passage(
    name: str,
    m: int,
    rank: int,
    previous_best: str | None,
    margin_best: int | None,
    leader: str | None,
    gap_leader: int | None,
    pace: tuple[str, int] | None = None,
) -> list[str]:
    """Lines for an intermediate passage.

    ``margin_best`` is how far under the previous best the skater went (µs, > 0);
    ``gap_leader`` is the skater's time minus the provisional leader's at ``m``;
    ``pace`` is (flag, projected finish) when the projection beats a record or the PB.
    """
    lines = []
    if rank == 1 and previous_best and previous_best != name and margin_best:
        lines.append(f"{name} fastest at {m} m, {format_diff(margin_best)} under {previous_best}")
    elif rank == 1:
        lines.append(f"{name} fastest at {m} m")
    if leader and leader != name and gap_leader is not None:
        if gap_leader >= 0:
            lines.append(f"{name} {format_diff(gap_leader)} behind {leader} at {m} m")
        else:
            lines.append(f"{name} {format_diff(gap_leader)} ahead of leader {leader} at {m} m")
    if pace:
        flag, projected = pace
        lines.append(f"{name} on {FLAG_LABELS.get(flag, flag)} pace at {m} m "
                     f"(projected {format_time(projected)})")
    return lines


def at_finish(
    name: str,
    t: int,
    rank: int,
    behind: int,
    previous_leader: str | None,
    margin: int | None,
    flags: list[str],
    digits: int = 2,
) -> list[str]:
    """Lines for a finish: a new leader (with the margin), or the place and the gap.

    ``t``, ``behind`` and ``margin`` are µs; ``digits`` the decimals of ``t``: 3 where
    another ranked time ties it in hundredths (DOMAIN.md §1.4), as the screens show it."""
    lines = []
    if rank == 1 and previous_leader and previous_leader != name and margin is not None:
        lines.append(
            f"New leader: {name} in {format_time(t, digits)}, {format_diff(margin)} ahead of "
            f"{previous_leader}"
        )
    elif rank == 1:
        lines.append(f"{name} leads in {format_time(t, digits)}")
    else:
        lines.append(f"{name} {ordinal(rank)} in {format_time(t, digits)}, {format_gap(behind)}")
    for flag in flags:
        lines.append(f"{name}: {FLAG_LABELS.get(flag, flag)}")
    return lines


# ---------------------------------------------------------------- pack races
def laps_word(n: int) -> str:
    return "1 lap" if n == 1 else f"{n} laps"


def pack_lead(name: str, laps_to_go: int) -> str:
    return f"{name} takes the lead, {laps_word(laps_to_go)} to go"


def pack_bell(name: str) -> str:
    return f"Bell: last lap, {name} leads"


def pack_sprint(number: int, lap_number: int, names: list[str],
                sprint_points: list[int]) -> str:
    scored = ", ".join(f"{n} {p}" for n, p in zip(names, sprint_points, strict=True))
    return f"Sprint {number} (lap {lap_number}): {scored}"


def pack_stopped(name: str, crossings: int) -> str:
    return f"{name} has stopped after {laps_word(crossings)} (fall?)"


def pack_breakaway(names: list[str], gap_us: int, metres: int | None, laps_to_go: int) -> str:
    who = " and ".join(names)
    lead = f"{format_diff(gap_us)} s" + (f" ({metres} m)" if metres is not None else "")
    return f"{who} {'leads' if len(names) == 1 else 'lead'} the pack by {lead}, " \
           f"{laps_word(laps_to_go)} to go"


def pack_finish(name: str, t: int, rank: int | None, sprint_points: int | None) -> list[str]:
    pts = "" if sprint_points is None else \
        f", {sprint_points} point{'' if sprint_points == 1 else 's'}"
    if rank == 1:
        return [f"{name} wins in {format_time(t, 3)}{pts}"]
    place = ordinal(rank) if rank else "finishes"
    return [f"{name} {place} in {format_time(t, 3)}{pts}"]


def pack_revised(reason: str, moved: list[tuple[str, int]]) -> str:
    """``reason`` is the revision's: "official time (photo)", "decision: pen", ..."""
    places = ", ".join(f"{name} {ordinal(rank)}" for name, rank in moved)
    label = {"official time (photo)": "Photo finish", "official time (beam)": "Finish beam"}
    return f"{label.get(reason, 'Result revised (' + reason + ')')}: {places}"


def relay_warning(team: str) -> str:
    return f"Warning shot: 3 laps to go, {team} leads"


SANCTION_LABELS = {"PEN": "penalty", "YC": "yellow card", "RC": "red card",
                   "ADV": "advanced by the referee", "DNF": "did not finish",
                   "DNS": "did not start", "DQ": "disqualified"}


def pack_sanction(name: str, code: str, reason: str | None) -> str:
    why = f" ({reason})" if reason else ""
    return f"{name}: {SANCTION_LABELS.get(code, code)}{why}"


def relay_late_exchange(team: str) -> str:
    return f"{team}: an exchange in the last two laps (for the referee)"


#: Skaters a correction line names as moved (the best placed first); the rest counted.
CORRECTED_MAX = 3


def corrected(reason: str, moved: list[tuple[str, int, int | None]],
              gone: list[str]) -> list[str]:
    """What a correction (``reason``: "decision: reassign", "official time (photo)"...)
    changed in the classification: ``moved`` is (name, rank, rank before or None),
    ``gone`` the names out of it. The lines told before are told again from the
    corrected log; this one says why they changed."""
    parts = [f"{name} out" for name in gone]
    parts += [f"{name} {ordinal(rank)}" + (f" (was {ordinal(old)})" if old else "")
              for name, rank, old in moved[:CORRECTED_MAX]]
    more = len(moved) - CORRECTED_MAX
    return [f"Corrected ({reason}): {', '.join(parts)}" + (f" and {more} more" if more > 0 else "")]


def reassigned(transponder: str, name: str) -> str:
    """An official gave a chip to another skater (chips swapped): its passings are theirs."""
    return f"Transponder {transponder} reassigned to {name}"
