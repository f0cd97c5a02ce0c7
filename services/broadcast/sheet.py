"""The printable result sheet of a race, in the style of the ISU's: a PDF made with
typst (``sheet.typ`` beside this file is the layout; docs/results.md shows it).

The layout gets its values as data (``sys.inputs``), already formatted here, so no
value from a start list is ever read as markup. Times print as the ISU publishes them:
truncated to hundredths, in thousandths where two classified times share their
hundredths (thousandths decide ranks, docs/time.md).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typst

from icetime.timefmt import format_diff, format_time

from .result_rows import MARATHON, Row, long_time, marathon_rows, rows
from .results import Meta, iso_ms

TEMPLATE = Path(__file__).with_name("sheet.typ")
#: More intermediate passages than this: the page is turned to landscape.
PORTRAIT_PASSAGES_MAX = 6
#: More than this: the passages go on a line of their own under each competitor
#: instead of a column each.
PASSAGES_MAX = 10
GENERATOR = "icetime live timing"
#: A marathon's rows per table, a page each (landscape at 7 pt; 48 fit under the heading
#: of the first page): see sheet.typ.
MARATHON_CHUNK = 44


def _col(label: str, right: bool = False, wide: bool = False, mm: int = 0
         ) -> dict[str, Any]:
    """A column: its heading, aligned right, taking the room left (``wide``), or ``mm``
    wide (fixed widths spare typst measuring every cell of a long field)."""
    return {"label": label, "right": right, "wide": wide, "mm": mm}


def _digits(all_rows: list[Row]) -> dict[str, int]:
    """Decimals to print each classified time with: 3 where two share hundredths."""
    hundredths: dict[int, int] = {}
    for r in all_rows:
        if r.rank is not None and r.t is not None:
            hundredths[r.t // 10_000] = hundredths.get(r.t // 10_000, 0) + 1
    return {r.bib: 3 if r.t is not None and hundredths.get(r.t // 10_000, 0) > 1 else 2
            for r in all_rows}


def _stamp(ms: int | None) -> str:
    """``2023-11-17 09:45:17 UTC`` (the sheet's clock is UTC)."""
    text = iso_ms(ms)
    return f"{text[:10]} {text[11:19]} UTC" if text else "time unknown"


def status_line(view: dict[str, Any], meta: Meta) -> str:
    """``Official results, 2023-11-17 09:47:03 UTC`` or ``Provisional results, as of …``."""
    if view["race"].get("official"):
        return f"Official results, {_stamp(meta.official_ms)}"
    return f"Provisional results, as of {_stamp(meta.updated_ms)}"


def _passage_cell(r: Row, m: float) -> str:
    for lap in r.laps:
        if lap.m == m:
            rank = f" ({lap.rank})" if lap.rank is not None else ""
            return format_time(lap.t) + rank
    return ""


def _detail(r: Row, passages: list[float], pack: bool) -> str:
    """Every intermediate passage on one line: ``Lap 1 40.40 (4) · Lap 2 1:14.43 (4)``."""
    parts = []
    for i, m in enumerate(passages):
        cell = _passage_cell(r, m)
        if cell:
            parts.append(f"{_label(i, m, pack)} {cell}")
    return " · ".join(parts)


def _label(i: int, m: float, pack: bool) -> str:
    return f"Lap {i + 1}" if pack else f"{m:g} m"


def official_times_note(all_rows: list[Row]) -> list[str]:
    """The legend under the table naming every time that came from photo finish, a
    beam or an official rather than a transponder: classified finish times and
    intermediate passages keyed in (``["Times from …: 12 finish (photo), 20 600 m
    (manual)"]``), or no line when every time is a transponder's."""
    marked = []
    for r in all_rows:
        # Only a long-track intermediate passage has an origin of its own (metres).
        marked += [f"{r.bib} {lap.m:g} m ({lap.origin})" for lap in r.laps if lap.origin]
        if r.rank and r.origin and r.origin != "transponder":
            marked.append(f"{r.bib} finish ({r.origin})")
    if not marked:
        return []
    return ["Times from photo finish, a beam or an official (bib, passage, origin): "
            + ", ".join(marked)]


def _row_cells(r: Row, shown: list[float], digits: int, points: bool) -> list[str]:
    lane = f"{r.pair} {r.lane}" if r.pair is not None else str(r.start_position or "")
    cells = [str(r.rank) if r.rank is not None else "", r.bib, r.name, r.nation, lane]
    cells += [_passage_cell(r, m) for m in shown]
    if r.rank is not None and r.t is not None:
        cells.append(format_time(r.t, digits))
        cells.append(format_diff(r.behind) if r.behind else "")
    else:
        cells += [r.status or "", ""]
    if points:
        cells.append("" if r.sprint_points is None else str(r.sprint_points))
    cells.append(" ".join(r.records))
    return cells


def sheet_data(view: dict[str, Any], meta: Meta) -> dict[str, Any]:
    """What ``sheet.typ`` lays out: headings, columns and rows, every cell as text."""
    race = view["race"]
    if race["kind"] == MARATHON:
        return marathon_sheet_data(view, meta)
    all_rows = rows(view)
    finish = max((float(m) for m in race.get("passages") or []), default=0.0)
    passages = [float(m) for m in race.get("passages") or [] if float(m) < finish]
    shown = passages if len(passages) <= PASSAGES_MAX else []
    points = race["kind"] == "mass_start"
    pack = "start_order" in view
    columns = [_col("Rank", right=True), _col("Bib", right=True), _col("Name", wide=True),
               _col("Nat"), _col("Start" if pack else "Pair")]
    columns += [_col(_label(i, m, pack), right=True) for i, m in enumerate(shown)]
    columns += [_col("Time", right=True), _col("Behind", right=True)]
    if points:
        columns.append(_col("Points", right=True))
    columns.append(_col("Records"))
    digits = _digits(all_rows)
    notes = official_times_note(all_rows)
    records = [f"{k} {format_time(v)}" for k, v in (race.get("records") or {}).items()]
    return {
        **_head(view, meta),
        "records": records,
        "columns": columns,
        "rows": [{"cells": _row_cells(r, shown, digits[r.bib], points),
                  "detail": "" if shown else _detail(r, passages, pack)} for r in all_rows],
        "notes": notes,
        "landscape": len(shown) > PORTRAIT_PASSAGES_MAX,
        "font_size": 9 if len(shown) <= PORTRAIT_PASSAGES_MAX else 8,
    }


def _head(view: dict[str, Any], meta: Meta) -> dict[str, Any]:
    """What every sheet's head and foot say: title, competition, race, provisional or
    official, the status line and the generator."""
    race = view["race"]
    return {
        "title": f"{race['name']}: results",
        "competition": (meta.competition or {}).get("name", ""),
        "race": race["name"],
        "heading": "Official results" if race.get("official") else "Provisional results",
        "status_line": status_line(view, meta),
        "generator": GENERATOR,
    }


def _marathon_cells(r: Row, n_points: int) -> list[str]:
    at = {lap.number - 1: lap for lap in r.laps}
    cells = [str(r.rank) if r.rank is not None else "", r.bib, r.name, r.nation,
             r.club or "", str(r.wave or "")]
    cells += [long_time(at[k].t, 2) if k in at else "" for k in range(1, n_points - 1)]
    if r.rank is not None and r.t is not None:
        finished = r.point == r.laps[-1].point and r.laps[-1].number == n_points
        cells += [long_time(r.t, 2) if finished else f"({r.point})",
                  long_time(r.behind, 2) if finished and r.behind else ""]
    else:
        cells += [r.status or "", ""]
    return cells


def marathon_sheet_data(view: dict[str, Any], meta: Meta) -> dict[str, Any]:
    """A marathon's sheet: rank, bib, name, nation, club, wave, the time at each
    intermediate timing point, the finish time and behind (a skater who has not finished
    shows the furthest point she reached), landscape; times to hundredths, truncated."""
    race = view["race"]
    course = race["course"]
    columns = [_col("Rank", right=True, mm=11), _col("Bib", right=True, mm=11),
               _col("Name", wide=True), _col("Nat", mm=9), _col("Club", wide=True),
               _col("Wave", right=True, mm=9)]
    columns += [_col(p["point"], right=True, mm=17) for p in course[1:-1]]
    columns += [_col("Time", right=True, mm=17), _col("Behind", right=True, mm=15)]
    return {
        **_head(view, meta),
        "records": [],
        "columns": columns,
        "rows": [{"cells": _marathon_cells(r, len(course)), "detail": ""}
                 for r in marathon_rows(view)],
        "notes": [],
        "landscape": True,
        "font_size": 7,
        "chunk": MARATHON_CHUNK,
        "inset_y": 2,
    }


def pdf(view: dict[str, Any], meta: Meta) -> bytes:
    """The race's result sheet as PDF bytes. CPU-bound (a few tens of ms): call it off
    the event loop. Raises KeyError for a view without results, RuntimeError when
    typst fails (a bug in the layout)."""
    data = json.dumps(sheet_data(view, meta), ensure_ascii=False)
    out = typst.compile(TEMPLATE.read_bytes(), format="pdf", sys_inputs={"data": data})
    if not isinstance(out, bytes):
        raise RuntimeError("typst returned no PDF")
    return out
