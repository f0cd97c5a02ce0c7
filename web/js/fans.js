// The fans' live page, phone first: follow a skater (or the pair on the ice), their gap
// to the leader over the distance, the pair, the classification and the story, with a
// display delay to stay behind a TV stream. No polling: one WebSocket of small deltas.
import { LiveRace, pickRace } from "./live.js";
import { t, timeOfDay, translatePage } from "./i18n.js";
import { esc, fmtTime, fmtGap, ordinal, statusStories } from "./view.js";
import { allCups, isStandings } from "./standings.js";
import { isMarathon, mountFans, tickWaveClocks } from "./marathon.js";
import { badge, behind, breakawayText, digits, finalTime, isPack, lapsToGo, lastRow, place, pointsOf, pointsTable, subtitle, warned } from "./pack.js";

const $ = (id) => document.getElementById(id);
const STALE_MS = 15000;
const params = new URLSearchParams(location.search);
let follow = "";  // a bib, or "" for the pair on the ice

function gapClass(gap) { return gap === null || gap === undefined ? "" : gap > 0 ? "slower" : "faster"; }

function laneRows(view, bib, lane) {
  const sk = view.skaters[bib];
  const res = view.results[bib];
  const rows = view.race.passages.map((m, k) => {
    const p = res.passages[k];
    if (!p) return `<tr class="pending"><td>${m} m</td><td colspan="5"></td></tr>`;
    const lead = p.gap_leader === null ? "" : fmtGap(p.gap_leader);
    return `<tr data-m="${m}"><td>${m} m</td><td class="num t">${fmtTime(p.t)}</td>` +
      `<td class="num">${k ? fmtTime(p.lap_time) : ""}</td><td class="num rank">${p.rank}</td>` +
      `<td class="num gap ${gapClass(p.gap_leader)}">${lead}</td>` +
      `<td class="num">${p.projected ? "→ " + fmtTime(p.projected) : ""}</td></tr>`;
  }).join("");
  const status = res.status ? `<span class="code">${esc(res.status)}</span>` : "";
  const final = res.final ? `<span class="final" data-testid="final-${esc(bib)}">${fmtTime(res.final.t)}</span>` +
    res.final.flags.map((f) => ` <span class="flag">${esc(f)}</span>`).join("") : "";
  return `<div class="lane lane-${lane}" data-bib="${esc(bib)}" data-testid="lane-${lane}">
    <div class="who"><span class="band" aria-label="${lane === "I" ? "inner lane" : "outer lane"}">${lane}</span>
      <span class="name">${esc(sk.name)}</span> <span class="nation">${esc(sk.nation)}</span></div>
    <div class="clock" data-bib="${esc(bib)}" data-testid="clock-${lane}">${final || status || ""}</div>
    <table class="passages"><thead><tr><th></th><th class="num">Time</th><th class="num">Lap</th><th class="num">Rank</th><th class="num">Leader</th><th class="num">Projected</th></tr></thead><tbody>${rows}</tbody></table>
  </div>`;
}

// The skaters the chart and card are about: the one followed, or the pair on the ice
// (or the last pair, between pairs).
function followed(view) {
  if (follow && view.skaters[follow]) return [follow];
  const pair = view.pairs.find((p) => p.pair === view.current_pair);
  return pair ? [pair.inner, pair.outer].filter(Boolean) : [];
}

function card(view, bib) {
  const sk = view.skaters[bib], res = view.results[bib];
  const last = [...res.passages].reverse().find(Boolean);
  const c = view.classification, at = c.bib.indexOf(bib);
  let big = `<span class="clock" data-bib="${esc(bib)}"></span>`;
  if (res.status) big = `<span class="code">${esc(res.status)}</span>`;
  else if (res.final) {
    big = `<span class="final" data-testid="follow-final-${esc(bib)}">${fmtTime(res.final.t)}</span>` +
      (at >= 0 ? ` <span class="rank">${ordinal(c.rank[at])}</span>` : "") +
      res.final.flags.map((f) => ` <span class="flag">${esc(f)}</span>`).join("");
  }
  const line = last && !res.final
    ? `<div class="lastp" data-testid="follow-last-${esc(bib)}">${last.m} m <b>${fmtTime(last.t)}</b> · ${ordinal(last.rank)}` +
      (last.gap_leader !== null ? ` · <span class="gap ${gapClass(last.gap_leader)}">${fmtGap(last.gap_leader)}</span>` : "") + `</div>`
    : "";
  return `<div class="fcard" data-bib="${esc(bib)}"><div class="who"><span class="name">${esc(sk.name)}</span> ` +
    `<span class="nation">${esc(sk.nation)}</span></div><div class="big">${big}</div>${line}</div>`;
}

// The gap the whole page shows (card, lanes, chart): at each passage, to the leader of
// the moment (the provisional leader's time there when the skater passed). Ahead above
// the line, behind below it; none before anyone has finished.
function chart(view, bibs) {
  const series = bibs.map((bib, i) => ({
    bib,
    cls: bibs.length === 1 ? "s-follow" : `s-${view.pairs.some((p) => p.outer === bib) ? "O" : "I"}`,
    above: i === 0,
    pts: view.results[bib].passages.filter((p) => p && p.gap_leader !== null && p.gap_leader !== undefined)
      .map((p) => ({ m: p.m, gap: p.gap_leader })),
  }));
  const passed = bibs.some((b) => view.results[b].passages.some(Boolean));
  drawChart(view, series, t("leader"), !view.classification.bib.length && !passed
    ? t("no finished skater to compare with yet")
    : passed ? t("no leader yet at these passages") : t("waiting for a passage"));
  $("chart-title").textContent = t("Gap to the leader at each passage");
}

// A pack race: how far behind the first across the line each skater was at every
// crossing (the followed one, else the front three).
function packChart(view, bibs) {
  const series = bibs.map((bib, i) => ({
    bib, cls: bibs.length === 1 ? "s-follow" : `s-${i}`, above: false,
    pts: view.results[bib].passages.filter(Boolean).map((p) => ({ m: p.m, gap: p.gap_leader })),
  }));
  drawChart(view, series, t("1st"), t("waiting for the first lap"));
  $("chart-title").textContent = t("Behind the first across the line, every lap");
}

function drawChart(view, series, refLabel, emptyNote) {
  const W = 340, H = 170, L = 40, R = 12, T = 14, B = 24;
  const dist = view.race.distance, passages = view.race.passages;
  const all = series.flatMap((s) => s.pts.map((p) => Math.abs(p.gap)));
  const span = Math.max(0.5, Math.ceil(Math.max(0, ...all) / 1e6 * 2) / 2) * 1e6;
  const x = (m) => L + (m / dist) * (W - L - R);
  const y = (gap) => T + ((span + gap) / (2 * span)) * (H - T - B);
  const out = [`<line class="zero" x1="${L}" x2="${W - R}" y1="${y(0)}" y2="${y(0)}"/>`,
    `<text class="axis" x="${L - 4}" y="${y(0) + 4}" text-anchor="end">${esc(refLabel.slice(0, 6))}</text>`,
    `<text class="axis" x="${L - 4}" y="${T + 4}" text-anchor="end">-${span / 1e6}</text>`,
    `<text class="axis" x="${L - 4}" y="${H - B + 4}" text-anchor="end">+${span / 1e6}</text>`];
  const every = Math.ceil(passages.length / 6);
  passages.forEach((m, k) => {
    if (k % every && k !== passages.length - 1) return;
    out.push(`<text class="axis" x="${x(m)}" y="${H - 6}" text-anchor="middle">${Math.round(m)}</text>`);
  });
  // One skater: a label at every passage (up to six). Several: only each line's latest.
  // Each label goes where it covers no point and no other label: above, below, left, right.
  const single = series.length === 1;
  const dots = series.flatMap((s) => s.pts.map((p) => [x(p.m), y(p.gap)]));
  const taken = [];
  const clear = (bx) => dots.every(([cx, cy]) => cx + 5 < bx[0] || cx - 5 > bx[2] || cy + 5 < bx[1] || cy - 5 > bx[3]) &&
    taken.every((o) => o[2] < bx[0] || o[0] > bx[2] || o[3] < bx[1] || o[1] > bx[3]) &&
    bx[0] >= L && bx[2] <= W && bx[1] >= 0 && bx[3] <= H - B + 4;
  const place = (px, py, text, prefer) => {
    // The box an 11 px bold label renders in: its line is about 14 px tall, not 11.
    const w = text.length * 6.6, h = 14;
    const spots = [[0, prefer], [0, -prefer], [-(w / 2 + 7), 0], [w / 2 + 7, 0], [-(w / 2 + 7), prefer], [-(w / 2 + 7), -prefer]];
    for (const [dx, dy] of spots) {
      const cx = px + dx, cy = py + dy;
      const bx = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2];
      if (clear(bx)) { taken.push(bx); return [cx, cy]; }
    }
    return null;
  };
  series.forEach((s) => {
    if (s.pts.length > 1) {
      out.push(`<polyline class="line ${s.cls}" points="${s.pts.map((p) => `${x(p.m)},${y(p.gap)}`).join(" ")}"/>`);
    }
    s.pts.forEach((p) => {
      out.push(`<circle class="pt ${s.cls}" cx="${x(p.m)}" cy="${y(p.gap)}" r="4" data-testid="pt-${esc(s.bib)}-${p.m}"><title>${p.m} m ${fmtGap(p.gap)}</title></circle>`);
    });
  });
  series.forEach((s) => {
    s.pts.forEach((p, j) => {
      if (!((single && s.pts.length <= 6) || j === s.pts.length - 1)) return;
      const text = fmtGap(p.gap);
      const at = place(x(p.m), y(p.gap), text, (single ? p.gap > 0 : !s.above) ? 13 : -12);
      if (at) {
        out.push(`<text class="lbl ${s.cls}" x="${at[0]}" y="${at[1] + 4}" text-anchor="middle" data-testid="lbl-${esc(s.bib)}-${p.m}">${text}</text>`);
      }
    });
  });
  if (!all.length) {
    out.push(`<text class="axis note" x="${W / 2}" y="${y(0) - 10}" text-anchor="middle">${emptyNote}</text>`);
  }
  $("chart").innerHTML = out.join("");
}

// ---------------------------------------------------------------- pack races
function packCard(view, bib) {
  const sk = view.skaters[bib], res = view.results[bib];
  const row = lastRow(view, bib);
  const big = badge(view, bib) || (res.final
    ? `<span class="final" data-testid="follow-final-${esc(bib)}">${finalTime(view, bib)}</span>`
    : `<span class="rank">${ordinal(view.pack.order.indexOf(bib) + 1)}</span>`);
  const pts = pointsOf(view, bib);
  const line = row ? `<div class="lastp" data-testid="follow-last-${esc(bib)}">lap ${row.lap_number} ` +
    `<b>${fmtTime(row.lap_time)}</b> · ${ordinal(row.position)} across` +
    (behind(view, bib) ? ` · <span class="gap slower">${behind(view, bib)}</span>` : "") +
    (pts !== null ? ` · ${pts} pts` : "") + `</div>` : "";
  return `<div class="fcard" data-bib="${esc(bib)}"><div class="who"><span class="name">${esc(sk.name)}</span> ` +
    `<span class="nation">${esc(sk.nation)}</span></div><div class="big">${big}</div>${line}</div>`;
}

function renderPack(view) {
  const pack = view.pack;
  const bibs = follow && view.skaters[follow] ? [follow] : pack.order.slice(0, 3);
  $("follow-title").textContent = follow ? `Following ${view.skaters[follow].short}` : "The front";
  $("follow-card").innerHTML = (follow ? [follow] : pack.order.slice(0, 1)).map((b) => packCard(view, b)).join("");
  packChart(view, bibs);
  $("ice-title").innerHTML = `Order <span class="clock pclock" data-bib="race" data-testid="race-clock"></span> <span data-testid="laps-to-go" class="ltg${pack.laps_to_go === 1 && pack.run ? " bell" : warned(pack) ? " warn" : ""}">${lapsToGo(pack)}</span>`;
  const away = breakawayText(view);
  const table = pointsTable(view);
  $("lanes").innerHTML = `<ol class="porder" data-testid="pack-order">${pack.order.map((bib) => {
    const sk = view.skaters[bib], pts = pointsOf(view, bib);
    return `<li tabindex="0" data-bib="${esc(bib)}" class="${bib === follow ? "followed" : ""}"><span class="pos">${place(view, bib)}</span>` +
      `<span class="name">${esc(sk.short)}</span> <span class="nation">${esc(subtitle(view, bib))}</span>` +
      `<span class="num">${badge(view, bib) || behind(view, bib)}</span>` +
      (pts !== null ? `<span class="num pts">${pts || ""}</span>` : "") + `</li>`;
  }).join("")}</ol>` +
    (away ? `<p class="away" data-testid="breakaway">Breakaway: ${esc(away)}</p>` : "") +
    (table.length ? `<p class="points" data-testid="points-table">Points: ${table.map(([b, p]) =>
      `${esc(view.skaters[b].short)} ${p}`).join(" · ")}</p>` : "");
  const c = view.classification;
  $("cls-body").innerHTML = c.bib.map((bib, i) => {
    const sk = view.skaters[bib];
    return `<tr tabindex="0" data-bib="${esc(bib)}" class="${bib === follow ? "followed" : ""}"><td class="num">${c.rank[i]}</td>${whoCell(sk)}<td class="nation">${esc(sk.nation)}</td>` +
      `<td class="num t">${fmtTime(c.t[i], digits(view))}</td>` +
      `<td class="num">${c.sprint_points ? c.sprint_points[i] + " pts" : i ? fmtGap(c.behind[i]) : ""}</td><td></td></tr>`;
  }).join("") + sanctionRows(view);
}

// A name in a table: whole, or on a narrow screen the start list's short name (the
// family name whole, "Rijpma-de Jong"); the stylesheet shows one of the two.
function whoCell(sk) {
  return `<td class="who"><span class="full">${esc(sk.name)}</span><span class="short">${esc(sk.short)}</span></td>`;
}

// Sanctioned skaters (DQ, DNF, penalties, cards) as rows under the classification.
function sanctionRows(view) {
  return Object.entries(view.results).filter(([, r]) => r.status).map(([bib, r]) => {
    const sk = view.skaters[bib];
    return `<tr tabindex="0" data-bib="${esc(bib)}" class="sanctioned${bib === follow ? " followed" : ""}"><td class="num"></td>${whoCell(sk)}` +
      `<td class="nation">${esc(sk.nation)}</td><td class="num"><span class="code">${esc(r.status)}</span></td><td></td><td></td></tr>`;
  }).join("");
}

function fillFollow(view) {
  const sel = $("follow");
  if (sel.options.length > 1) return;
  sel.options[0].text = isPack(view) ? "The front" : "Pair on the ice";
  for (const bib of isPack(view) ? view.start_order : []) {
    const sk = view.skaters[bib];
    sel.add(new Option(`${sk.short} (${sk.nation})`, bib));
  }
  for (const p of isPack(view) ? [] : view.pairs) {
    for (const bib of [p.inner, p.outer].filter(Boolean)) {
      const sk = view.skaters[bib];
      sel.add(new Option(`${sk.short} (${sk.nation}) · pair ${p.pair}`, bib));
    }
  }
  sel.value = follow;
}

function render(view) {
  if (!view) return;
  $("race-name").textContent = view.race.name;
  document.title = `icetime · ${view.race.name}`;
  if (isStandings(view)) { renderStandings(view); return; }
  if (isMarathon(view)) {
    // 10,000 skaters: a search box, not a list of names to pick from.
    $("controls").querySelector("label:nth-child(2)").hidden = true;
    marathonDraw ??= mountFans(document.querySelector("main"), live, race);
    marathonDraw(view);
    return;
  }
  fillFollow(view);
  if (isPack(view)) { renderPack(view); renderStories(view); return; }
  const bibs = followed(view);
  $("follow-title").textContent = follow ? `Following ${view.skaters[follow].short}` : "Pair on the ice";
  $("follow-card").innerHTML = bibs.map((b) => card(view, b)).join("") ||
    `<p class="idle">No pair has started yet.</p>`;
  chart(view, bibs);
  const pair = view.pairs.find((p) => p.pair === view.current_pair);
  $("pair-label").textContent = pair ? `· pair ${pair.pair}` : "";
  $("lanes").innerHTML = pair
    ? [["I", pair.inner], ["O", pair.outer]].filter(([, b]) => b).map(([l, b]) => laneRows(view, b, l)).join("")
    : `<p class="idle">No pair has started yet.</p>`;
  const c = view.classification;
  $("cls-body").innerHTML = c.bib.map((bib, i) => {
    const sk = view.skaters[bib], fin = view.results[bib].final;
    return `<tr tabindex="0" data-bib="${esc(bib)}" class="${bib === follow ? "followed" : ""}"><td class="num">${c.rank[i]}</td>${whoCell(sk)}<td class="nation">${esc(sk.nation)}</td>` +
      `<td class="num t">${fmtTime(c.t[i])}</td><td class="num">${i ? fmtGap(c.behind[i]) : ""}</td>` +
      `<td>${(fin?.flags || []).map((f) => `<span class="flag">${esc(f)}</span>`).join(" ")}</td></tr>`;
  }).join("") + sanctionRows(view);
  renderStories(view);
}

function renderStandings(view) {
  $("controls").querySelector("label:nth-child(2)").hidden = true;
  $("follow-title").textContent = view.race.name;
  $("follow-card").innerHTML = allCups(view);
  $("chart").innerHTML = "";
  $("chart-title").textContent = "";
  $("ice-title").textContent = view.counted ? "Counted races" : "";
  $("lanes").innerHTML = view.counted ? `<ul class="counted">${view.counted.map((r) =>
    `<li>${esc(r.name)} <span class="nation">${esc(r.cup)}</span></li>`).join("")}</ul>` : "";
}

function renderStories(view) {
  const official = statusStories(view, t);
  $("stories").innerHTML = official.reverse().map((line) => `<li class="hot">${esc(line)}</li>`).join("") +
    (view.stories || []).slice(-12).reverse().map((line) => `<li>${esc(line)}</li>`).join("");
}

// A marathon's page, once a marathon's view has come (its draw, one per frame).
let marathonDraw = null;

function tickClocks(live) {
  const view = live.view;
  tickWaveClocks(live);
  if (view) {
    for (const el of document.querySelectorAll(".clock[data-bib]")) {
      const res = view.results[el.dataset.bib];
      const pair = !isPack(view) && view.pairs.find((p) => p.inner === el.dataset.bib || p.outer === el.dataset.bib);
      const run = isPack(view) ? view.pack.run : pair && view.on_ice[String(pair.pair)];
      if (res && (res.final || res.status)) continue;
      if (!run) { el.textContent = ""; continue; }
      const elapsed = live.raceElapsedUs(run);
      el.textContent = elapsed > 0 ? fmtTime(Math.floor(elapsed / 100000) * 100000, 1) : "0.0";
    }
  }
  const since = Date.now() - live.lastEventAt;
  const st = $("status");
  const state = st.dataset.state || "connecting";
  let text = state === "reconnecting" ? t("Server unreachable: reconnecting…")
    : state === "stale" ? t("Data stale: reconnecting to storage…") : t(state);
  if (live.lastEventAt && since > STALE_MS && state === "live") text = t("no data for {n} s", { n: Math.round(since / 1000) });
  if (live.delayMs) text += " · " + t("{n} s behind", { n: live.delayMs / 1000 });
  const tod = timeOfDay(live.serverNowUs() / 1000);
  if ($("tod").textContent !== tod) $("tod").textContent = tod;
  if (st.textContent !== text) st.textContent = text;
  requestAnimationFrame(() => tickClocks(live));
}

async function fillRaces(current) {
  const races = await fetch("/api/races").then((r) => r.json()).catch(() => []);
  const sel = $("race-select");
  for (const r of races) sel.add(new Option(r.name, r.id));
  sel.value = current;
  sel.addEventListener("change", () => {
    location.assign(`/live?race=${encodeURIComponent(sel.value)}`);
  });
}

const race = await pickRace(() => { $("race-name").textContent = "waiting for a start list…"; });
follow = params.get("bib") ?? localStorage.getItem(`icetime.follow.${race}`) ?? "";
const delay = Number(params.get("delay") ?? localStorage.getItem("icetime.delay") ?? 0) || 0;
const live = new LiveRace(race, {
  onView: render,
  onStatus: (s) => { $("status").dataset.state = s; },
});
window.icetime = live;  // for the browser tests and the curious
live.setDelay(delay);
if (![...$("delay").options].some((o) => o.value === String(delay))) {
  $("delay").add(new Option(`${delay} s`, String(delay)));
}
$("delay").value = String(delay);
$("delay").addEventListener("change", () => {
  const s = Number($("delay").value);
  localStorage.setItem("icetime.delay", String(s));
  live.setDelay(s);
});
// Follow a skater ("" for the pair on the ice or the front), remembered per race.
function followSkater(bib) {
  follow = bib;
  $("follow").value = bib;
  localStorage.setItem(`icetime.follow.${race}`, bib);
  render(live.view);
}
$("follow").addEventListener("change", () => followSkater($("follow").value));
$("lanes").addEventListener("click", (e) => {
  const li = e.target.closest("li[data-bib]");
  if (li) followSkater(li.dataset.bib);
});
$("cls-body").addEventListener("click", (e) => {
  const tr = e.target.closest("tr[data-bib]");
  if (!tr) return;
  followSkater(tr.dataset.bib);
  scrollTo({ top: 0, behavior: "smooth" });
});
$("controls").addEventListener("submit", (e) => e.preventDefault());
// Keyboard: Enter or Space on a focused row follows that skater, as a tap does.
for (const id of ["cls-body", "lanes"]) {
  $(id).addEventListener("keydown", (e) => {
    if ((e.key === "Enter" || e.key === " ") && e.target.matches("[data-bib][tabindex]")) {
      e.preventDefault();
      e.target.click();
    }
  });
}
fillRaces(race);
translatePage();
await live.start();
requestAnimationFrame(() => tickClocks(live));
