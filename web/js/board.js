// The arena video board: no interaction; it switches by itself between the pair on the
// ice, the standings between pairs, and the podium when the distance is done.
import { LiveRace, pickRace } from "./live.js";
import { fit } from "./fit.js";
import { ordinal, t, translatePage, timeOfDay } from "./i18n.js";
import { esc, fmtFinal, fmtRanked, fmtTime, fmtGap, passageTimes } from "./view.js";
import { cupTable, eventRanking, isStandings } from "./standings.js";
import { boardHtml, everyFrame, isMarathon } from "./marathon.js";
import { badge, behind, digits, isPack, ptsText, lapsToGo, place, pointsOf, pointsTable, warned } from "./pack.js";

// How many of the pack the board lists: what reads from the stands.
const ribbon = matchMedia("(min-aspect-ratio: 4/1)");
const packRows = () => (ribbon.matches ? 6 : 8);
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
  // A sanction outranks a time: a disqualified skater's time is no result.
  if (res.status) {
    clock = `<div class="clock status" data-testid="board-clock-${lane}"><span class="code">${esc(res.status)}</span></div>`;
  } else if (res.final) {
    const c = view.classification, at = c.bib.indexOf(bib);
    const gap = at > 0 ? `<span class="gap slower">${fmtGap(c.behind[at])}</span>` : "";
    clock = `<div class="clock final" data-testid="board-clock-${lane}" data-t="${res.final.t}">${fmtFinal(view, res.final.t)}</div>` +
      `<div class="under" data-testid="board-result-${lane}">${at >= 0 ? ordinal(c.rank[at]) : ""} ${gap} ` +
      `<span class="flags">${res.final.flags.map((f) => `<span>${esc(f)}</span>`).join("")}</span></div>`;
  }
  // Two short lines, so the gap is never the part that does not fit.
  const lastPassage = last && !res.final && !res.status
    ? `<div class="under" data-testid="board-passage-${lane}"><div>${last.m} m ${fmtRanked(last.t, passageTimes(view, last.k))}</div>` +
      `<div><span class="rank">${ordinal(last.rank)}</span> ` +
      (last.gap_leader !== null ? `<span class="gap ${last.gap_leader > 0 ? "slower" : "faster"}">${fmtGap(last.gap_leader)}</span>` : "") + `</div></div>`
    : "";
  return `<section class="lane ${lane}" data-testid="board-lane-${lane}">
    ${nameDiv(sk, "name")}<div class="nation">${esc(sk.nation)}</div>${clock}${lastPassage}</section>`;
}

// A name that fits its box: smaller, else the short name (web/js/fit.js), never cut.
function nameDiv(sk, cls) {
  return `<div class="${cls}" data-fit data-short="${esc(sk.short)}">${esc(sk.name)}</div>`;
}

// The pack on the ice: the order with gaps (or laps down), laps to go with the bell,
// and for a mass start the points so far and a breakaway's lead.
function packBoard(view) {
  const pack = view.pack;
  const rows = pack.order.slice(0, packRows()).map((bib) => {
    const sk = view.skaters[bib], pts = pointsOf(view, bib);
    return `<div class="prow" data-bib="${esc(bib)}"><span class="pos">${place(view, bib)}</span>` +
      `<span class="pname" data-fit>${esc(sk.short)}</span>` +
      `<span class="pgap">${badge(view, bib) || behind(view, bib)}</span>` +
      (pts !== null ? `<span class="ppts">${pts || ""}</span>` : "") + `</div>`;
  }).join("");
  const side = [`<div class="clock pclock" data-bib="pack" data-testid="board-clock"></div>`,
    `<div class="ltg${pack.laps_to_go === 1 ? " bell" : warned(pack) ? " warn" : ""}" data-testid="board-laps" data-fit>${lapsToGo(pack)}</div>`];
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

// Between pairs the board turns: the last pair's result, then the standings, in turn.
const TURN_MS = 8000;
const turn = () => Math.floor(Date.now() / TURN_MS) % 2;

function pairLanes(view, pair) {
  return `<div class="lanes">${[["I", pair.inner], ["O", pair.outer]]
    .filter(([, b]) => b).map(([l, b]) => lane(view, b, l)).join("")}</div>`;
}

// The whole classification as far as it fits the board (sanctioned skaters last).
function standingsPage(view, rows = ribbon.matches ? 3 : 10) {
  const c = view.classification, places = isPack(view) ? digits(view) : 2;
  const ranked = c.bib.slice(0, rows).map((bib, i) => {
    const sk = view.skaters[bib];
    return `<tr><td class="num pos">${c.rank[i]}</td><td class="who">${nameDiv(sk, "sname")}</td>` +
      `<td class="nation">${esc(sk.nation)}</td><td class="num t" data-t="${c.t[i]}">${fmtFinal(view, c.t[i], places)}</td>` +
      `<td class="num gap">${i ? fmtGap(c.behind[i]) : ""}</td></tr>`;
  });
  return `<table class="full" data-testid="board-standings-page"><tbody>${ranked.join("")}</tbody></table>`;
}

// Sanctions (DQ, penalties, cards) in one line: whose, and which.
function sanctions(view) {
  const list = Object.entries(view.results).filter(([, r]) => r.status)
    .map(([bib, r]) => `<span class="code">${esc(r.status)}</span> ${esc(view.skaters[bib].short)}`);
  return list.length ? `<div class="sanctions" data-testid="board-sanctions">${list.join(" ")}</div>` : "";
}

function podium(view) {
  const c = view.classification;
  const places = isPack(view) ? digits(view) : 2;
  return `<div class="podium" data-testid="board-podium">${c.bib.slice(0, 3).map((bib, i) => {
    const sk = view.skaters[bib];
    return `<div class="step p${i + 1}"><div class="place">${c.rank[i]}</div>` +
      `${nameDiv(sk, "who")}<div class="nation">${esc(sk.nation)}</div>` +
      `<div class="t" data-t="${c.t[i]}">${fmtFinal(view, c.t[i], places)}</div>` +
      (c.sprint_points ? `<div class="pts">${ptsText(c.sprint_points[i])}</div>`
        : `<div class="gap">${i ? fmtGap(c.behind[i]) : "&nbsp;"}</div>`) + `</div>`;
  }).join("")}</div>${sanctions(view)}`;
}

// A pack race before its start, or after a restart was called.
function packIdle(view) {
  const voided = view.voided || [];
  const last = voided[voided.length - 1];
  if (last && !view.pack.run) {
    return `<div class="idle" data-testid="board-idle">${esc(t("Restart"))}: ${esc(last.reason)}</div>`;
  }
  return `<div class="idle" data-testid="board-idle">${esc(lapsToGo(view.pack))}</div>`;
}

// Between pairs: who skates next.
function nextPair(view) {
  const next = view.pairs.find((p) => p.pair > (view.current_pair ?? 0) &&
    [p.inner, p.outer].filter(Boolean).some((b) => !view.results[b].final && !view.results[b].status));
  if (!next) return "";
  const names = [next.inner, next.outer].filter(Boolean).map((b) => esc(view.skaters[b].short)).join(" – ");
  return `${t("Next")}: ${t("pair")} ${next.pair} · ${names}`;
}

// A marathon: the top of the classification and the live count, drawn once a frame at
// most (events come by the hundred a second).
const marathon = everyFrame((view) => {
  $("board").dataset.mode = "marathon";
  $("race").textContent = view.race.name;
  $("official").hidden = true;
  $("main").innerHTML = boardHtml(view, packRows());
  $("standings").innerHTML = "";
  fit($("board"));
});

function render(view) {
  if (isMarathon(view)) { marathon(view); return; }
  const m = mode(view);
  $("board").dataset.mode = m;
  $("race").textContent = view ? view.race.name : "icetime";
  const official = view && !isStandings(view) && view.classification && view.classification.bib.length;
  $("official").hidden = !official;
  $("official").textContent = view && view.race.official ? t("Official") : t("Provisional");
  $("official").dataset.official = String(Boolean(view && view.race.official));
  if (m === "pair") {
    $("main").innerHTML = pairLanes(view, view.pairs.find((p) => p.pair === view.current_pair));
  } else if (m === "cups") {
    // One cup at a time, turning every few seconds: the arena cannot scroll.
    const cups = view.cups || [];
    const cup = cups.length ? cups[Math.floor(Date.now() / CUP_TURN_MS) % cups.length] : null;
    $("main").innerHTML = view.race.kind === "rounds"
      ? `<div class="cups" data-testid="board-cup">${eventRanking(view, 8)}</div>`
      : cup ? `<div class="cups" data-testid="board-cup">${cupTable(view, cup, 8)}</div>`
        : `<div class="idle">${t("No official results yet")}</div>`;
  } else if (m === "pack") {
    $("main").innerHTML = packBoard(view);
  } else if (m === "podium") {
    $("main").innerHTML = podium(view);
  } else if (m === "standings") {
    const pair = view.pairs.find((p) => p.pair === view.current_pair);
    $("main").innerHTML = pair && !turn() ? pairLanes(view, pair) : standingsPage(view) + sanctions(view);
  } else if (isPack(view)) {
    $("main").innerHTML = packIdle(view);
  } else {
    $("main").innerHTML = `<div class="idle">${esc(view ? nextPair(view) : t("Connecting…"))}</div>`;
  }
  const c = view ? view.classification : { bib: [] };
  const next = view && m === "standings" ? nextPair(view) : "";
  $("standings").innerHTML = next ? `<div class="next" data-fit data-testid="board-next">${esc(next)}</div>` : m !== "pair" ? "" : c.bib.slice(0, 3).map((bib, i) =>
    `<div class="row"><b>${c.rank[i]}</b> <span class="n" data-fit data-short="${esc(view.skaters[bib].short)}">` +
    `${esc(view.skaters[bib].short)}</span> <span class="t" data-t="${c.t[i]}">${fmtFinal(view, c.t[i])}</span></div>`).join("");
  fit($("board"));
}

function tick(live) {
  const view = live.view;
  const run = view && !isStandings(view) && !isMarathon(view) &&
    (isPack(view) ? view.pack.run : view.on_ice[String(view.current_pair)]);
  for (const el of document.querySelectorAll(".clock[data-bib]")) {
    const elapsed = run ? live.raceElapsedUs(run) : 0;
    const text = !run ? "" : elapsed > 0 ? fmtTime(Math.floor(elapsed / 100000) * 100000, 1) : "0.0";
    // Written only when it changes: a write, even of the same text, costs the page a
    // layout and a paint, 60 times a second.
    if (el.textContent !== text) el.textContent = text;
  }
  const alert = $("alert");
  const quiet = live.lastEventAt && Date.now() - live.lastEventAt > STALE_MS;
  const problem = live.status === "connecting" ? t("Connecting…")
    : live.status === "stale" ? t("Data stale: reconnecting to storage…")
    : live.status !== "live" ? t("Server unreachable: reconnecting…") : (quiet && run ? t("No timing data") : "");
  if (alert.hidden !== !problem || alert.textContent !== problem) {
    alert.hidden = !problem;
    alert.textContent = problem;
    fit($("board").querySelector("header"));
  }
  const tod = timeOfDay(live.serverNowUs() / 1000);
  if ($("tod").textContent !== tod) $("tod").textContent = tod;
  requestAnimationFrame(() => tick(live));
}

const live = new LiveRace(await pickRace(), {
  onView: render,
  onStatus: (s) => { live.status = s; },
});
window.icetime = live;
await live.start();
requestAnimationFrame(() => tick(live));
// The cups and the between-pairs pages turn by themselves: checked every second, drawn
// when a new page is due (a timer as long as a page would drift across the page
// boundaries on a busy machine and show one page twice in a row).
const PAGE_MS = Math.min(CUP_TURN_MS, TURN_MS);
let shownPage = Math.floor(Date.now() / PAGE_MS);
setInterval(() => {
  const page = Math.floor(Date.now() / PAGE_MS);
  if (page === shownPage) return;
  shownPage = page;
  if (isStandings(live.view) || $("board").dataset.mode === "standings") render(live.view);
}, 1000);
// A screen that changes shape (16:9 to a ribbon) is laid out anew.
addEventListener("resize", () => render(live.view));
translatePage();
