// Broadcast overlay: a lower third with the pair on the ice and the gap to the leader.
import { LiveRace, pickRace } from "./live.js";
import { esc, fmtTime, fmtGap } from "./view.js";
import { badge, behind, breakawayText, finalTime, isPack, lapsToGo, place, pointsOf } from "./pack.js";

// A pack race: laps to go and the front three (with points in a mass start).
function renderPack(view) {
  const pack = view.pack;
  $("third").hidden = !pack.run && !view.classification.bib.length;
  const away = breakawayText(view);
  $("title").textContent = `${view.race.name} · ${lapsToGo(pack)}${away ? " · " + away : ""}`;
  $("rows").innerHTML = pack.order.slice(0, 3).map((bib) => {
    const sk = view.skaters[bib], pts = pointsOf(view, bib);
    return `<div class="row" data-testid="overlay-${esc(bib)}"><span class="band pos">${place(view, bib)}</span>` +
      `<span class="name">${esc(sk.name)} <span class="nation">${esc(sk.nation)}</span></span>` +
      `<span class="rank">${pts !== null ? pts + " pts" : ""}</span><span class="t">${finalTime(view, bib)}</span>` +
      `<span class="gap slower">${badge(view, bib) || behind(view, bib)}</span></div>`;
  }).join("");
}

const $ = (id) => document.getElementById(id);

function render(view) {
  if (view && view.race.kind === "standings") { $("third").hidden = true; return; }
  if (isPack(view)) { renderPack(view); return; }
  const pair = view && view.pairs.find((p) => p.pair === view.current_pair);
  $("third").hidden = !pair;
  if (!pair) return;
  $("title").textContent = `${view.race.name} · pair ${pair.pair}`;
  $("rows").innerHTML = [["I", pair.inner], ["O", pair.outer]].filter(([, b]) => b).map(([lane, bib]) => {
    const sk = view.skaters[bib], res = view.results[bib];
    const last = [...res.passages].reverse().find(Boolean);
    const t = res.final ? fmtTime(res.final.t) : last ? `${last.m} m ${fmtTime(last.t)}` : "";
    const g = last && last.gap_leader !== null ? last.gap_leader : null;
    return `<div class="row" data-testid="overlay-${lane}"><span class="band ${lane}"></span>` +
      `<span class="name">${esc(sk.name)} <span class="nation">${esc(sk.nation)}</span></span>` +
      `<span class="rank">${last ? "#" + last.rank : ""}</span><span class="t">${t}</span>` +
      `<span class="gap ${g > 0 ? "slower" : "faster"}">${g === null ? "" : fmtGap(g)}</span></div>`;
  }).join("");
}

const live = new LiveRace(await pickRace(), { onView: render });
window.icetime = live;
await live.start();
