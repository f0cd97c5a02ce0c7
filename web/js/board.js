// The arena video board: no interaction; it switches by itself between the pair on the
// ice, the standings between pairs, and the podium when the distance is done.
import { LiveRace, pickRace } from "./live.js";
import { esc, fmtTime, fmtGap, ordinal } from "./view.js";
import { cupTable, eventRanking, isStandings } from "./standings.js";
import { badge, behind, digits, isPack, lapsToGo, place, pointsOf, pointsTable, warned } from "./pack.js";

// How many of the pack the board lists: what reads from the stands.
const PACK_ROWS = 8;
const CUP_TURN_MS = 8000;

const $ = (id) => document.getElementById(id);
const STALE_MS = 10000;

function mode(view) {
  if (!view) return "idle";
  if (isStandings(view)) return "cups";
  if (isPack(view)) {
    if (view.pack.run) return "pack";
    return view.classification.bib.length ? "podium" : "idle";
  }
  if (Object.keys(view.on_ice).length) return "pair";
  // The distance is done when its last pair is: then the podium stays up.
  const last = view.pairs.reduce((a, p) => (p.pair > a.pair ? p : a), view.pairs[0]);
  const lastDone = last && [last.inner, last.outer].filter(Boolean)
    .every((b) => view.results[b].final || view.results[b].status);
  if (lastDone && view.classification.bib.length) return "podium";
  return view.classification.bib.length ? "standings" : "idle";
}

function lane(view, bib, lane) {
  const sk = view.skaters[bib], res = view.results[bib];
  const last = [...res.passages].reverse().find(Boolean);
  let clock = `<div class="clock" data-bib="${esc(bib)}" data-testid="board-clock-${lane}"></div>`;
  if (res.final) {
    const rank = view.classification.rank[view.classification.bib.indexOf(bib)];
    clock = `<div class="clock final" data-testid="board-clock-${lane}">${fmtTime(res.final.t)}</div>` +
      `<div class="under" data-testid="board-result-${lane}">${rank ? ordinal(rank) : ""} ` +
      `<span class="flags">${res.final.flags.map((f) => `<span>${esc(f)}</span>`).join("")}</span></div>`;
  } else if (res.status) {
    clock = `<div class="clock"><span class="code">${esc(res.status)}</span></div>`;
  }
  // Two short lines, so the gap is never the part that does not fit.
  const lastPassage = last && !res.final
    ? `<div class="under" data-testid="board-passage-${lane}"><div>${last.m} m ${fmtTime(last.t)}</div>` +
      `<div><span class="rank">${ordinal(last.rank)}</span> ` +
      (last.gap_leader !== null ? `<span class="gap ${last.gap_leader > 0 ? "slower" : "faster"}">${fmtGap(last.gap_leader)}</span>` : "") + `</div></div>`
    : "";
  return `<section class="lane ${lane}" data-testid="board-lane-${lane}">
    <div class="name">${esc(sk.name)}</div><div class="nation">${esc(sk.nation)}</div>${clock}${lastPassage}</section>`;
}

// The pack on the ice: the order with gaps (or laps down), laps to go with the bell,
// and for a mass start the points so far and a breakaway's lead.
function packBoard(view) {
  const pack = view.pack;
  const rows = pack.order.slice(0, PACK_ROWS).map((bib) => {
    const sk = view.skaters[bib], pts = pointsOf(view, bib);
    return `<div class="prow" data-bib="${esc(bib)}"><span class="pos">${place(view, bib)}</span>` +
      `<span class="pname">${esc(sk.short)}</span>` +
      `<span class="pgap">${badge(view, bib) || behind(view, bib)}</span>` +
      (pts !== null ? `<span class="ppts">${pts || ""}</span>` : "") + `</div>`;
  }).join("");
  const side = [`<div class="clock pclock" data-bib="pack" data-testid="board-clock"></div>`,
    `<div class="ltg${pack.laps_to_go === 1 ? " bell" : warned(pack) ? " warn" : ""}" data-testid="board-laps">${lapsToGo(pack)}</div>`];
  const away = view.pack.breakaway;
  if (away && view.pack.run) {
    // Two short lines (who; how far) rather than one that will not fit.
    const who = away.bibs.map((b) => view.skaters[b].short).join(" & ");
    side.push(`<div class="away" data-testid="board-breakaway"><div>${esc(who)}</div>` +
      `<div>+${fmtTime(away.gap_us)}${away.gap_m !== null ? ` · ${away.gap_m} m` : ""}</div></div>`);
  }
  const table = pointsTable(view).slice(0, 3);
  if (table.length) {
    side.push(`<div class="ptable" data-testid="board-points">${table.map(([bib, p]) =>
      `<div><span>${esc(view.skaters[bib].short)}</span><b>${p}</b></div>`).join("")}</div>`);
  }
  return `<div class="packboard" data-testid="board-pack"><div class="order">${rows}</div>` +
    `<div class="side">${side.join("")}</div></div>`;
}

function render(view) {
  const m = mode(view);
  $("board").dataset.mode = m;
  $("race").textContent = view ? view.race.name : "icetime";
  if (m === "pair") {
    const pair = view.pairs.find((p) => p.pair === view.current_pair);
    $("main").innerHTML = `<div class="lanes">${[["I", pair.inner], ["O", pair.outer]]
      .filter(([, b]) => b).map(([l, b]) => lane(view, b, l)).join("")}</div>`;
  } else if (m === "cups") {
    // One cup at a time, turning every few seconds: the arena cannot scroll.
    const cups = view.cups || [];
    const cup = cups.length ? cups[Math.floor(Date.now() / CUP_TURN_MS) % cups.length] : null;
    $("main").innerHTML = view.race.kind === "rounds"
      ? `<div class="cups" data-testid="board-cup">${eventRanking(view, 8)}</div>`
      : cup ? `<div class="cups" data-testid="board-cup">${cupTable(view, cup, 8)}</div>`
        : `<div class="idle">No official results yet</div>`;
  } else if (m === "pack") {
    $("main").innerHTML = packBoard(view);
  } else if (m === "podium") {
    const c = view.classification;
    const places = isPack(view) ? digits(view) : 2;
    $("main").innerHTML = `<div class="podium" data-testid="board-podium">${c.bib.slice(0, 3).map((bib, i) =>
      `<div class="step p${i + 1}"><div class="place">${c.rank[i]}</div>` +
      `<div class="who">${esc(view.skaters[bib].name)}</div><div class="t">${fmtTime(c.t[i], places)}</div>` +
      (c.sprint_points ? `<div class="pts">${c.sprint_points[i]} pts</div>` : "") + `</div>`).join("")}</div>`;
  } else if (m === "standings" && view.current_pair !== null) {
    const pair = view.pairs.find((p) => p.pair === view.current_pair);
    $("main").innerHTML = `<div class="lanes">${[["I", pair.inner], ["O", pair.outer]]
      .filter(([, b]) => b).map(([l, b]) => lane(view, b, l)).join("")}</div>`;
  } else {
    $("main").innerHTML = `<div class="idle">Next pair soon</div>`;
  }
  const c = view ? view.classification : { bib: [] };
  $("standings").innerHTML = m === "podium" || m === "pack" || m === "cups" ? "" : c.bib.slice(0, 3).map((bib, i) =>
    `<div class="row"><b>${c.rank[i]}</b> <span class="n">${esc(view.skaters[bib].short)}</span> <span class="t">${fmtTime(c.t[i])}</span></div>`).join("");
}

function tick(live) {
  const view = live.view;
  const run = view && !isStandings(view) &&
    (isPack(view) ? view.pack.run : view.on_ice[String(view.current_pair)]);
  for (const el of document.querySelectorAll(".clock[data-bib]")) {
    if (!run) { el.textContent = ""; continue; }
    const elapsed = live.raceElapsedUs(run);
    el.textContent = elapsed > 0 ? fmtTime(Math.floor(elapsed / 100000) * 100000, 1) : "0.0";
  }
  const alert = $("alert");
  const quiet = live.lastEventAt && Date.now() - live.lastEventAt > STALE_MS;
  const problem = live.status === "connecting" ? "Connecting…"
    : live.status !== "live" ? "Reconnecting…" : (quiet && run ? "No timing data" : "");
  alert.hidden = !problem;
  alert.textContent = problem;
  requestAnimationFrame(() => tick(live));
}

const live = new LiveRace(await pickRace(), {
  onView: render,
  onStatus: (s) => { live.status = s; },
});
window.icetime = live;
await live.start();
requestAnimationFrame(() => tick(live));
setInterval(() => { if (isStandings(live.view)) render(live.view); }, CUP_TURN_MS);
