// Broadcast overlay for an OBS or vMix browser source (transparent page). ?layout= picks
// what it shows: "third" (default) a lower third with the pair on the ice or the pack's
// front three, the running clock and the gap to the leader; "clock" only the race clock
// and the race, top right. Everything sits inside the 5 % graphics-safe margins.
import { LiveRace, pickRace } from "./live.js";
import { esc, fmtFinal, fmtRanked, fmtTime, fmtGap, passageTimes } from "./view.js";
import { fit } from "./fit.js";
import { t } from "./i18n.js";
import { badge, behind, breakawayText, finalTime, isPack, ptsText, lapsToGo, place, pointsOf } from "./pack.js";
import { countsHtml, fmtClock, isMarathon, rankAt } from "./marathon.js";

const $ = (id) => document.getElementById(id);
const STALE_MS = 10000;  // a race running and no event for this long: no timing data
const layout = new URLSearchParams(location.search).get("layout") === "clock" ? "clock" : "third";
document.body.dataset.layout = layout;

const nameCell = (sk) =>
  `<span class="name" data-fit data-short="${esc(sk.short)}">${esc(sk.name)}</span><span class="nation">${esc(sk.nation)}</span>`;

// A pack race: laps to go and the front three (with points in a mass start).
function renderPack(view) {
  const pack = view.pack;
  $("third").hidden = !pack.run && !view.classification.bib.length;
  const away = breakawayText(view);
  $("title").textContent = `${view.race.name} · ${lapsToGo(pack)}${away ? " · " + away : ""}`;
  // The running order while racing; the classification once it is done.
  const front = pack.run ? pack.order : view.classification.bib;
  $("rows").innerHTML = front.slice(0, 3).map((bib) => {
    const sk = view.skaters[bib], pts = pointsOf(view, bib);
    return `<div class="row pack" data-testid="overlay-${esc(bib)}"><span class="band pos">${place(view, bib)}</span>` +
      nameCell(sk) + `<span class="rank">${pts !== null ? ptsText(pts) : ""}</span><span class="t"${tAttr(view, bib)}>${finalTime(view, bib)}</span>` +
      `<span class="gap slower">${badge(view, bib) || behind(view, bib)}</span></div>`;
  }).join("");
}

// A marathon: the front three at the furthest timing point reached so far (their time
// there and the gap to the first), and the live counts. Costs three rows, not the field.
function latestPoint(view) {
  for (let k = view.order.length - 1; k >= 0; k--) if (view.order[k].length) return k;
  return -1;
}

function renderMarathon(view) {
  const k = latestPoint(view);
  $("third").hidden = k < 0;
  if (k < 0) return;
  const course = view.race.course, point = k === course.length - 1 ? t("Finish") : course[k].point;
  $("title").textContent = `${view.race.name} · ${point}`;
  const front = view.order[k].slice(0, 3), first = view.results[front[0]].t[k];
  $("rows").innerHTML = front.map((bib) => {
    const sk = view.skaters[bib], tk = view.results[bib].t[k];
    return `<div class="row" data-testid="overlay-${esc(bib)}"><span class="band pos">${rankAt(view, bib, k)}</span>` +
      nameCell(sk) + `<span class="rank">${esc(sk.wave !== undefined ? "W" + sk.wave : "")}</span>` +
      `<span class="t">${fmtClock(tk)}</span><span class="gap slower">${tk > first ? "+" + fmtClock(tk - first) : ""}</span></div>`;
  }).join("") + `<div class="mcounts" data-testid="overlay-counts">${countsHtml(view, true)}</div>`;
}

// One lane of a pair: a sanction replaces rank, time and gap at once.
function laneRow(view, lane, bib) {
  const sk = view.skaters[bib], res = view.results[bib];
  const last = [...res.passages].reverse().find(Boolean);
  const c = view.classification, at = c.bib.indexOf(bib);
  let rank = last ? "#" + last.rank : "", time = last ? `${last.m} m ${fmtRanked(last.t, passageTimes(view, last.k))}` : "";
  let g = last && last.gap_leader !== null ? last.gap_leader : null;
  let ranked = "";
  if (res.final) {
    rank = at >= 0 ? "#" + c.rank[at] : ""; time = fmtFinal(view, res.final.t); g = at > 0 ? c.behind[at] : null;
    ranked = ` data-t="${res.final.t}"`;
  }
  const gap = res.status ? `<span class="code">${esc(res.status)}</span>`
    : g === null ? "" : `<span class="${g > 0 ? "slower" : "faster"}">${fmtGap(g)}</span>`;
  if (res.status) { rank = ""; time = ""; }
  return `<div class="row" data-testid="overlay-${lane}"><span class="band ${lane}"></span>` + nameCell(sk) +
    `<span class="rank">${rank}</span><span class="t"${ranked}>${time}</span><span class="gap">${gap}</span></div>`;
}

// A final time's raw value, for the screen check (times shown alike must be alike).
const tAttr = (view, bib) => (view.results[bib].final ? ` data-t="${view.results[bib].final.t}"` : "");

function render(view) {
  // No lower third for the standings.
  if (view && view.race.kind === "standings") { $("third").hidden = true; return; }
  if (isMarathon(view)) renderMarathon(view);
  else if (isPack(view)) renderPack(view);
  else {
    const pair = view && view.pairs.find((p) => p.pair === view.current_pair);
    $("third").hidden = !pair;
    if (pair) {
      $("title").textContent = `${view.race.name} · ${t("pair")} ${pair.pair}`;
      $("rows").innerHTML = [["I", pair.inner], ["O", pair.outer]].filter(([, b]) => b)
        .map(([lane, bib]) => laneRow(view, lane, bib)).join("");
    }
  }
  $("bug-race").textContent = view ? view.race.name : "";
  fit($("third"));
}

// A marathon's clock is its first wave's, from its gun, while skaters are out.
function marathonRun(view) {
  const c = view.counts;
  if (c.started && c.started <= c.finished + c.status) return null;
  const first = Object.values(view.waves).sort((a, b) => a.wave - b.wave).find((w) => w.run);
  return first ? first.run : null;
}

function running(view) {
  if (!view || view.race.kind === "standings") return null;
  if (isMarathon(view)) return marathonRun(view);
  return isPack(view) ? view.pack.run : view.on_ice[String(view.current_pair)] || null;
}

function tick() {
  const run = running(live.view);
  const text = !run ? "" : isMarathon(live.view) ? fmtClock(live.raceElapsedUs(run))
    : fmtTime(Math.max(0, Math.floor(live.raceElapsedUs(run) / 100000) * 100000), 1);
  let wider = false;
  for (const el of document.querySelectorAll(".rclock")) {
    if (el.textContent === text) continue;
    wider ||= el.textContent.length !== text.length;
    el.textContent = text;
  }
  // The clock shares the head with the title: a clock that appears or grows a digit
  // narrows the title's box after it was fitted (a phone opening the overlay mid-race).
  if (wider) fit($("third"));
  $("bug").hidden = layout !== "clock" || !run;
  // The link down, storage away, or a race running with no data coming: a red mark.
  const down = live.status && live.status !== "live";
  // A marathon's timing points are kilometres apart: minutes without a read are normal.
  const quiet = run && !isMarathon(live.view) && live.lastEventAt &&
    Date.now() - live.lastEventAt > STALE_MS;
  const why = live.status === "stale" ? t("Data stale") : down ? t("Server unreachable")
    : quiet ? t("No timing data") : "";
  $("offline").hidden = !why;
  if (why && $("offline").textContent !== why) $("offline").textContent = why;
  requestAnimationFrame(tick);
}

const live = new LiveRace(await pickRace(), {
  onView: render,
  onStatus: (s) => { live.status = s; },
});
window.icetime = live;
if (layout === "clock") $("third").classList.add("off");
$("offline").textContent = t("Server unreachable");
addEventListener("resize", () => fit($("third")));
await live.start();
requestAnimationFrame(tick);
