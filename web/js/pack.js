// Pack races (short track, mass start) on any page: the order, laps to go, gaps,
// sprint points. Every pack event carries the race-wide state whole (view.pack).
import { esc, fmtFinal, fmtTime, fmtGap } from "./view.js";
import { t } from "./i18n.js";

export const isPack = (view) => Boolean(view && view.pack);

export function lapsToGo(pack) {
  const n = pack.laps_to_go;
  if (!pack.run && n === 0) return t("Finished");
  if (!pack.run && !Object.values(pack.crossings).some(Boolean)) return t("Start soon");
  return n === 1 ? t("Last lap") : n === 0 ? t("Finished") : t("{n} laps to go", { n });
}

// The skater's last crossing row, if any.
export function lastRow(view, bib) {
  return [...view.results[bib].passages].reverse().find(Boolean) || null;
}

// Laps the leader had completed when this skater last crossed the line, minus hers: a
// skater who crosses a moment after the leader is in the same lap, not a lap down.
export function lapsDown(view, bib) {
  const lead = view.pack.order[0];
  const row = lastRow(view, bib);
  if (!row || bib === lead) return 0;
  const ahead = view.results[lead].passages.filter((p) => p && p.t <= row.t).length;
  return Math.max(0, ahead - row.lap_number);
}

// Behind the leader: in laps when lapped, else the gap at her last crossing.
export function behind(view, bib) {
  const down = lapsDown(view, bib);
  const res = view.results[bib];
  if (res.final) {
    const c = view.classification, at = c.bib.indexOf(bib);
    return at > 0 ? fmtGap(c.behind[at]) : "";
  }
  if (down >= 1) return down > 1 ? t("−{n} laps", { n: down }) : t("−1 lap");
  const row = lastRow(view, bib);
  return row && row.gap_leader ? fmtGap(row.gap_leader) : "";
}

// A badge for a skater out of the running order: a sanction, or stopped (a fall).
export function badge(view, bib) {
  const st = view.results[bib].status;
  if (st) return `<span class="code" title="${esc(st)}">${esc(st)}</span>`;
  if (view.pack.stopped.includes(bib)) return `<span class="code stopped">${esc(t("stopped"))}</span>`;
  return "";
}

// Rank in the final classification, else the running position.
export function place(view, bib) {
  const c = view.classification, at = c.bib.indexOf(bib);
  if (at >= 0) return c.rank[at];
  if (view.results[bib].status) return "";
  return view.pack.order.indexOf(bib) + 1;
}

// Sprint points as words: "1 pt", "63 pts".
export const ptsText = (n) => (n === 1 ? t("1 pt") : t("{n} pts", { n }));

// A skater's sprint points so far (mass start), else null.
export function pointsOf(view, bib) {
  return view.pack.sprint_points ? view.pack.sprint_points[bib] || 0 : null;
}

// The live sprint points table (mass start): everyone with points, most first.
export function pointsTable(view) {
  if (!view.pack.sprint_points) return [];
  return Object.entries(view.pack.sprint_points).filter(([, p]) => p > 0)
    .sort((a, b) => b[1] - a[1] || view.pack.order.indexOf(a[0]) - view.pack.order.indexOf(b[0]));
}

export function breakawayText(view) {
  const b = view.pack.breakaway;
  if (!b || !view.pack.run) return "";
  const who = b.bibs.map((x) => view.skaters[x].short).join(" & ");
  return `${who} +${fmtTime(b.gap_us)}${b.gap_m !== null ? ` (${b.gap_m} m)` : ""}`;
}

// Short track publishes thousandths; long track (the mass start) hundredths, truncated.
export const digits = (view) => (view.race.kind.startsWith("short_track") ? 3 : 2);

export function finalTime(view, bib) {
  const f = view.results[bib].final;
  return f ? fmtFinal(view, f.t, digits(view)) : "";
}

// Under a name: the nation, or in a relay the team's skater on the track.
export function subtitle(view, bib) {
  const active = view.pack.active && view.pack.active[bib];
  if (active && view.teams) return view.teams[bib].members[active].short;
  return view.skaters[bib].nation;
}

// Relays: the warning shot has gone (three laps to go) and the bell not yet.
export const warned = (pack) => Boolean(pack.warning) && pack.laps_to_go > 1 && Boolean(pack.run);
