// Broadcast overlay: a lower third with the pair on the ice and the gap to the leader.
import { LiveRace, pickRace } from "./live.js";
import { esc, fmtTime, fmtGap } from "./view.js";

const $ = (id) => document.getElementById(id);

function render(view) {
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
