// The live distance page: the pair on the ice with a running clock, every passage
// with rank and gaps, the classification and the story lines.
import { LiveRace, pickRace } from "./live.js";
import { esc, fmtTime, fmtGap } from "./view.js";

const $ = (id) => document.getElementById(id);
const STALE_MS = 15000;

function laneRows(view, bib, lane) {
  const sk = view.skaters[bib];
  const res = view.results[bib];
  const rows = view.race.passages.map((m, k) => {
    const p = res.passages[k];
    if (!p) return `<tr class="pending"><td>${m} m</td><td colspan="5"></td></tr>`;
    const lead = p.gap_leader === null ? "" : fmtGap(p.gap_leader);
    return `<tr data-m="${m}"><td>${m} m</td><td class="num t">${fmtTime(p.t)}</td>` +
      `<td class="num">${k ? fmtTime(p.lap) : ""}</td><td class="num rank">${p.rank}</td>` +
      `<td class="num gap ${p.gap_leader > 0 ? "slower" : "faster"}">${lead}</td>` +
      `<td class="num">${p.projected ? "→ " + fmtTime(p.projected) : ""}</td></tr>`;
  }).join("");
  const status = res.status ? `<span class="code">${res.status}</span>` : "";
  const final = res.final ? `<span class="final" data-testid="final-${bib}">${fmtTime(res.final.t)}</span>` +
    res.final.flags.map((f) => ` <span class="flag">${f}</span>`).join("") : "";
  return `<div class="lane lane-${lane}" data-bib="${bib}" data-testid="lane-${lane}">
    <div class="who"><span class="band" aria-label="${lane === "I" ? "inner lane" : "outer lane"}">${lane}</span>
      <span class="name">${esc(sk.name)}</span> <span class="nation">${esc(sk.nation)}</span></div>
    <div class="clock" data-bib="${bib}" data-testid="clock-${lane}">${final || status || ""}</div>
    <table class="splits"><thead><tr><th></th><th class="num">Time</th><th class="num">Lap</th><th class="num">Rank</th><th class="num">Leader</th><th class="num">Projected</th></tr></thead><tbody>${rows}</tbody></table>
  </div>`;
}

function render(view, live) {
  if (!view) return;
  $("race-name").textContent = view.race.name;
  document.title = `icetime · ${view.race.name}`;
  const pairNo = view.current_pair;
  const pair = view.pairs.find((p) => p.pair === pairNo);
  $("pair-label").textContent = pair ? `· pair ${pair.pair}` : "";
  $("lanes").innerHTML = pair
    ? [["I", pair.inner], ["O", pair.outer]].filter(([, b]) => b).map(([l, b]) => laneRows(view, b, l)).join("")
    : `<p class="idle">No pair has started yet.</p>`;
  const c = view.classification;
  $("cls-body").innerHTML = c.bib.map((bib, i) => {
    const sk = view.skaters[bib], fin = view.results[bib].final;
    return `<tr data-bib="${bib}"><td class="num">${c.rank[i]}</td><td>${esc(sk.name)}</td><td class="nation">${esc(sk.nation)}</td>` +
      `<td class="num t">${fmtTime(c.t[i])}</td><td class="num">${i ? fmtGap(c.behind[i]) : ""}</td>` +
      `<td>${(fin?.flags || []).map((f) => `<span class="flag">${f}</span>`).join(" ")}</td></tr>`;
  }).join("");
}

function tickClocks(live) {
  const view = live.view;
  if (view && view.current_pair !== null) {
    const run = view.on_ice[String(view.current_pair)];
    for (const el of document.querySelectorAll(".clock[data-bib]")) {
      const res = view.results[el.dataset.bib];
      if (!run || res.final || res.status) continue;
      const elapsed = live.raceElapsedUs(run);
      el.textContent = elapsed > 0 ? fmtTime(Math.floor(elapsed / 100000) * 100000, 1) : "0.0";
    }
  }
  const since = Date.now() - live.lastMessageAt;
  if (live.lastMessageAt && since > STALE_MS && $("status").dataset.state === "live") {
    $("status").textContent = `no data for ${Math.round(since / 1000)} s`;
  }
  requestAnimationFrame(() => tickClocks(live));
}

function addStories(ev) {
  for (const line of ev.stories || []) {
    const li = document.createElement("li");
    li.textContent = line;
    $("stories").prepend(li);
  }
  while ($("stories").children.length > 30) $("stories").lastChild.remove();
}

const race = await pickRace(() => { $("race-name").textContent = "waiting for a start list…"; });
const live = new LiveRace(race, {
  onView: (v) => render(v, live),
  onEvent: addStories,
  onStatus: (s) => { $("status").textContent = s; $("status").dataset.state = s; },
});
window.icetime = live;  // for the browser tests and the curious
await live.start();
requestAnimationFrame(() => tickClocks(live));
