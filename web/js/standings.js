// World Cup standings (the "wc-standings" view): one table per cup.
import { esc, raceHref } from "./view.js";
import { t } from "./i18n.js";

// Views that are a summary, not a race: the World Cup standings, an event's rounds.
export const isStandings = (view) => Boolean(view && ["standings", "rounds"].includes(view.race.kind));

export function cupTable(view, cup, limit = Infinity) {
  const rows = cup.rows.slice(0, limit).map((r) => {
    const sk = view.skaters[r.bib] || { name: r.bib, nation: "" };
    const here = Object.values(r.races).reduce((a, b) => a + b, 0);
    return `<tr data-bib="${esc(r.bib)}"><td class="num">${r.rank}</td><td class="who">${esc(sk.name)}</td>` +
      `<td class="nation">${esc(sk.nation)}</td><td class="num pts">${r.points}</td>` +
      `<td class="num plus">${here ? "+" + here : ""}</td></tr>`;
  }).join("");
  return `<table class="cls standings" data-cup="${esc(cup.cup)}"><caption>${esc(cup.cup)}</caption>` +
    `<thead><tr><th>#</th><th>${esc(t("Skater"))}</th><th></th><th class="num">${esc(t("Points"))}</th><th class="num">${esc(t("Here"))}</th></tr></thead>` +
    `<tbody>${rows}</tbody></table>`;
}

// An event in rounds: its ranking so far, and the races of each round.
export function eventRanking(view, limit = Infinity) {
  const r = view.ranking;
  const rows = r.bib.slice(0, limit).map((bib, i) => {
    const sk = view.skaters[bib] || { name: bib, nation: "" };
    return `<tr data-bib="${esc(bib)}"><td class="num">${r.rank[i]}</td><td class="who">${esc(sk.name)}</td>` +
      `<td class="nation">${esc(sk.nation || "")}</td><td class="num">${esc(r.how[i])}</td><td></td></tr>`;
  }).join("");
  return `<table class="cls standings" data-cup="${esc(view.race.name)}"><caption>${esc(view.race.name)}` +
    `${view.race.official ? "" : ` (${esc(t("provisional"))})`}</caption><tbody>${rows}</tbody></table>`;
}

export function allCups(view, limit) {
  if (view.race.kind === "rounds") {
    return eventRanking(view, limit) + `<ul class="counted">${view.rounds.map((rnd) =>
      `<li>${esc(rnd.name)}: ${rnd.races.map((id) => `<a href="${raceHref("live", id)}">${esc(id)}</a>`).join(", ") || esc(t("to come"))}</li>`).join("")}</ul>`;
  }
  if (!view.cups.length) return `<p class="idle">${esc(t("No official results yet"))}</p>`;
  return view.cups.map((c) => cupTable(view, c, limit)).join("");
}
