// World Cup standings (the "wc-standings" view): one table per cup.
import { esc } from "./view.js";

export const isStandings = (view) => Boolean(view && view.race.kind === "standings");

export function cupTable(view, cup, limit = Infinity) {
  const rows = cup.rows.slice(0, limit).map((r) => {
    const sk = view.skaters[r.bib] || { name: r.bib, nation: "" };
    const here = Object.values(r.races).reduce((a, b) => a + b, 0);
    return `<tr data-bib="${esc(r.bib)}"><td class="num">${r.rank}</td><td class="who">${esc(sk.name)}</td>` +
      `<td class="nation">${esc(sk.nation)}</td><td class="num pts">${r.points}</td>` +
      `<td class="num plus">${here ? "+" + here : ""}</td></tr>`;
  }).join("");
  return `<table class="cls standings" data-cup="${esc(cup.cup)}"><caption>${esc(cup.cup)}</caption>` +
    `<thead><tr><th>#</th><th>Skater</th><th></th><th class="num">Points</th><th class="num">Here</th></tr></thead>` +
    `<tbody>${rows}</tbody></table>`;
}

export function allCups(view, limit) {
  if (!view.cups.length) return `<p class="idle">No official results yet.</p>`;
  return view.cups.map((c) => cupTable(view, c, limit)).join("");
}
