// The fans' live page, phone first: follow a skater (or the pair on the ice), their gap
// to the leader over the distance, the pair, the classification and the story, with a
// display delay to stay behind a TV stream. No polling: one WebSocket of small deltas.
import { LiveRace, pickRace } from "./live.js";
import { ordinal, t, timeOfDay, translatePage } from "./i18n.js";
import { esc, fmtFinal, fmtRanked, fmtTime, fmtGap, lapTime, passageTimes, statusStories } from "./view.js";
import { allCups, isStandings } from "./standings.js";
import { isMarathon, mountFans, tickWaveClocks } from "./marathon.js";
import { badge, behind, breakawayText, digits, finalTime, isPack, ptsText, lapsToGo, lastRow, place, pointsOf, pointsTable, subtitle, warned } from "./pack.js";

const $ = (id) => document.getElementById(id);
const STALE_MS = 15000;
const params = new URLSearchParams(location.search);
let follow = "";  // a bib, or "" for the pair on the ice

const gapOf = (p) => (p.gap_leader === undefined ? null : p.gap_leader);

function gapClass(gap) { return gap === null || gap === undefined ? "" : gap > 0 ? "slower" : "faster"; }

function laneRows(view, bib, lane) {
  const sk = view.skaters[bib];
  const res = view.results[bib];
  const rows = view.race.passages.map((m, k) => {
    const p = res.passages[k];
    if (!p) return `<tr class="pending"><td>${m} m</td><td colspan="5"></td></tr>`;
    const lead = p.gap_leader === null ? "" : fmtGap(p.gap_leader);
    return `<tr data-m="${m}"><td>${m} m</td><td class="num t" data-t="${p.t}">${fmtRanked(p.t, passageTimes(view, k))}</td>` +
      `<td class="num">${k ? fmtTime(lapTime(p)) : ""}</td><td class="num rank">${p.rank}</td>` +
      `<td class="num gap ${gapClass(p.gap_leader)}">${lead}</td>` +
      `<td class="num">${p.projected ? "→ " + fmtTime(p.projected) : ""}</td></tr>`;
  }).join("");
  const status = res.status ? `<span class="code">${esc(res.status)}</span>` : "";
  const final = res.final ? `<span class="final" data-testid="final-${esc(bib)}" data-t="${res.final.t}">${fmtFinal(view, res.final.t)}</span>` +
    res.final.flags.map((f) => ` <span class="flag">${esc(f)}</span>`).join("") : "";
  return `<div class="lane lane-${lane}" data-bib="${esc(bib)}" data-testid="lane-${lane}">
    <div class="who"><span class="band" aria-label="${esc(lane === "I" ? t("inner lane") : t("outer lane"))}">${lane}</span>
      <span class="name">${esc(sk.name)}</span> <span class="nation">${esc(sk.nation)}</span></div>
    <div class="clock" data-bib="${esc(bib)}" data-testid="clock-${lane}">${final || status || ""}</div>
    <table class="passages"><thead><tr><th></th>${[t("Time"), t("Lap"), t("Rank"), t("Leader"), t("Projected")].map((h) => `<th class="num">${esc(h)}</th>`).join("")}</tr></thead><tbody>${rows}</tbody></table>
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
    big = `<span class="final" data-testid="follow-final-${esc(bib)}" data-t="${res.final.t}">${fmtFinal(view, res.final.t)}</span>` +
      (at >= 0 ? ` <span class="rank">${ordinal(c.rank[at])}</span>` : "") +
      res.final.flags.map((f) => ` <span class="flag">${esc(f)}</span>`).join("");
  }
  const line = last && !res.final
    ? `<div class="lastp" data-testid="follow-last-${esc(bib)}">${last.m} m <b>${fmtRanked(last.t, passageTimes(view, last.k))}</b> · ${ordinal(last.rank)}` +
      (last.gap_leader !== null ? ` · <span class="gap ${gapClass(last.gap_leader)}">${fmtGap(last.gap_leader)}</span>` : "") + `</div>`
    : "";
  return `<div class="fcard" data-bib="${esc(bib)}"><div class="who"><span class="name">${esc(sk.name)}</span> ` +
    `<span class="nation">${esc(sk.nation)}</span></div><div class="big">${big}</div>${line}</div>`;
}

// The gap the whole page shows (card, lanes, chart): at each passage, to the leader of
// the moment (the provisional leader's time there when the skater passed). Ahead above
// the line, behind below it; none before anyone has finished. In a team event before any
// team has finished, the leader at a lap is the pair's team across first: that team is
// drawn on the leader's line (its passage names itself as leader_bib, with no gap).
function chart(view, bibs) {
  const series = bibs.map((bib, i) => ({
    bib,
    cls: bibs.length === 1 ? "s-follow" : `s-${view.pairs.some((p) => p.outer === bib) ? "O" : "I"}`,
    above: i === 0,
    pts: view.results[bib].passages.filter((p) => p && (gapOf(p) !== null || p.leader_bib === bib))
      .map((p) => ({ m: p.m, gap: gapOf(p) ?? 0, lead: gapOf(p) === null })),
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

const SVG_NS = "http://www.w3.org/2000/svg";

// A text's width and height in the chart's units, measured (an estimate while the chart
// is not laid out, e.g. hidden).
function measure(svg, text, cls) {
  const el = document.createElementNS(SVG_NS, "text");
  el.setAttribute("class", cls);
  el.textContent = text;
  svg.appendChild(el);
  const box = el.getBBox();
  el.remove();
  return box.width ? [box.width, box.height] : [text.length * 6.6, 13];
}

// Does the segment (x1,y1)-(x2,y2) reach into box [left, top, right, bottom]? (Liang-Barsky)
function crosses([x1, y1, x2, y2], [l, tp, r, b]) {
  let lo = 0, hi = 1;
  const dx = x2 - x1, dy = y2 - y1;
  for (const [p, q] of [[-dx, x1 - l], [dx, r - x1], [-dy, y1 - tp], [dy, b - y1]]) {
    if (p === 0) { if (q < 0) return false; continue; }
    const u = q / p;
    if (p < 0) { if (u > hi) return false; lo = Math.max(lo, u); } else { if (u < lo) return false; hi = Math.min(hi, u); }
  }
  return true;
}

// Labels placed clear of every point, line and other label, with a small margin: the
// first free spot around the point (above or below as preferred, then the sides and the
// corners), else none.
function labeller(svg, { dots, segments, bounds }) {
  const taken = [];
  const PAD = 2;
  const free = (bx) => {
    const g = [bx[0] - PAD, bx[1] - PAD, bx[2] + PAD, bx[3] + PAD];
    return bx[0] >= bounds[0] && bx[2] <= bounds[2] && bx[1] >= bounds[1] && bx[3] <= bounds[3] &&
      dots.every(([cx, cy]) => cx + 4 < g[0] || cx - 4 > g[2] || cy + 4 < g[1] || cy - 4 > g[3]) &&
      taken.every((o) => o[2] < g[0] || o[0] > g[2] || o[3] < g[1] || o[1] > g[3]) &&
      !segments.some((sg) => crosses(sg, g));
  };
  return {
    // Reserve a box (an axis label) so no label goes there.
    reserve(bx) { taken.push(bx); },
    place(px, py, text, cls, below) {
      const [w, h] = measure(svg, text, cls);
      const v = h / 2 + 6, side = w / 2 + 7;
      const dy = below ? [v, -v, v + 6, -(v + 6)] : [-v, v, -(v + 6), v + 6];
      const spots = [[0, dy[0]], [0, dy[1]], [-side, 0], [side, 0], [-side, dy[0]], [side, dy[0]],
        [-side, dy[1]], [side, dy[1]], [0, dy[2]], [0, dy[3]]];
      for (const [dx, dyy] of spots) {
        // Kept inside the chart sideways (the finish's label at the right edge).
        const cx = Math.min(Math.max(px + dx, bounds[0] + w / 2), bounds[2] - w / 2), cy = py + dyy;
        const bx = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2];
        if (free(bx)) { taken.push(bx); return [cx, cy]; }
      }
      return null;
    },
  };
}

function drawChart(view, series, refLabel, emptyNote) {
  const svg = $("chart");
  svg.innerHTML = "";
  const W = 340, H = 170, T = 14, B = 24;
  const dist = view.race.distance, passages = view.race.passages;
  // The right margin: half the finish's metres label, so it stays inside the chart.
  const R = Math.max(12, Math.ceil(measure(svg, String(Math.round(dist)), "axis")[0] / 2) + 4);
  const all = series.flatMap((s) => s.pts.map((p) => Math.abs(p.gap)));
  const span = Math.max(0.5, Math.ceil(Math.max(0, ...all) / 1e6 * 2) / 2) * 1e6;
  // The left margin as wide as the widest axis label (the leader's, in any language).
  // The gaps are seconds, and say so: "+1" alone read as places as well.
  const yLabels = [refLabel, `-${span / 1e6} s`, `+${span / 1e6} s`];
  const L = Math.ceil(Math.max(...yLabels.map((l) => measure(svg, l, "axis")[0]))) + 8;
  const x = (m) => L + (m / dist) * (W - L - R);
  const y = (gap) => T + ((span + gap) / (2 * span)) * (H - T - B);
  const out = [`<line class="zero" x1="${L}" x2="${W - R}" y1="${y(0)}" y2="${y(0)}"/>`,
    `<text class="axis" x="${L - 4}" y="${y(0) + 4}" text-anchor="end">${esc(refLabel)}</text>`,
    `<text class="axis" x="${L - 4}" y="${T + 4}" text-anchor="end" data-testid="axis-ahead">${yLabels[1]}</text>`,
    `<text class="axis" x="${L - 4}" y="${H - B + 4}" text-anchor="end" data-testid="axis-behind">${yLabels[2]}</text>`];
  // Metres under the axis: as many as fit apart, always the finish.
  const ticks = [];
  passages.forEach((m, k) => {
    const text = String(Math.round(m)), w = measure(svg, text, "axis")[0];
    const box = [x(m) - w / 2 - 3, x(m) + w / 2 + 3];
    if (k === passages.length - 1) {
      while (ticks.length && ticks[ticks.length - 1].box[1] > box[0]) ticks.pop();
    } else if (ticks.length && ticks[ticks.length - 1].box[1] > box[0]) return;
    ticks.push({ m, text, box });
  });
  for (const tk of ticks) out.push(`<text class="axis" x="${x(tk.m)}" y="${H - 6}" text-anchor="middle">${tk.text}</text>`);
  // One skater: a label at every passage (up to six). Several: only each line's latest.
  const single = series.length === 1;
  const dots = series.flatMap((s) => s.pts.map((p) => [x(p.m), y(p.gap)]));
  const segments = [[L, y(0), W - R, y(0)]];
  for (const s of series) {
    for (let j = 1; j < s.pts.length; j++) {
      segments.push([x(s.pts[j - 1].m), y(s.pts[j - 1].gap), x(s.pts[j].m), y(s.pts[j].gap)]);
    }
  }
  const labels = labeller(svg, { dots, segments, bounds: [L, 0, W, H - B + 2] });
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
      // The leading team's point is on the leader's line: the axis labels it.
      if (p.lead || !((single && s.pts.length <= 6) || j === s.pts.length - 1)) return;
      const text = fmtGap(p.gap);
      const at = labels.place(x(p.m), y(p.gap), text, "lbl", single ? p.gap > 0 : !s.above);
      if (at) {
        out.push(`<text class="lbl ${s.cls}" x="${at[0]}" y="${at[1]}" dominant-baseline="central" text-anchor="middle" data-testid="lbl-${esc(s.bib)}-${p.m}">${text}</text>`);
      }
    });
  });
  if (!all.length) {
    out.push(`<text class="axis note" x="${(L + W - R) / 2}" y="${y(0) - 10}" text-anchor="middle">${esc(emptyNote)}</text>`);
  }
  svg.innerHTML = out.join("");
  legend(view, series);
}

// Who is which line: a key in the line's colour and the skater's name, under the chart
// (HTML, so a long name wraps on a phone; the name in the page's ink, legible in both
// themes whatever the line's colour).
function legend(view, series) {
  $("chart-legend").innerHTML = series.map((s) => {
    const sk = view.skaters[s.bib] || {};
    return `<li class="${s.cls}" data-testid="legend-${esc(s.bib)}"><span class="key" aria-hidden="true"></span>` +
      `<span class="name">${esc(sk.short || sk.name || s.bib)}</span> <span class="nation">${esc(sk.nation || "")}</span></li>`;
  }).join("");
}

// ---------------------------------------------------------------- pack races
function packCard(view, bib) {
  const sk = view.skaters[bib], res = view.results[bib];
  const row = lastRow(view, bib);
  const big = badge(view, bib) || (res.final
    ? `<span class="final" data-testid="follow-final-${esc(bib)}" data-t="${res.final.t}">${finalTime(view, bib)}</span>`
    : `<span class="rank">${ordinal(view.pack.order.indexOf(bib) + 1)}</span>`);
  const pts = pointsOf(view, bib);
  const line = row ? `<div class="lastp" data-testid="follow-last-${esc(bib)}">${esc(t("lap {n}", { n: row.lap_number }))} ` +
    `<b>${fmtTime(lapTime(row))}</b> · ${esc(t("{place} across", { place: ordinal(row.position) }))}` +
    (behind(view, bib) ? ` · <span class="gap slower">${behind(view, bib)}</span>` : "") +
    (pts !== null ? ` · ${esc(ptsText(pts))}` : "") + `</div>` : "";
  return `<div class="fcard" data-bib="${esc(bib)}"><div class="who"><span class="name">${esc(sk.name)}</span> ` +
    `<span class="nation">${esc(sk.nation)}</span></div><div class="big">${big}</div>${line}</div>`;
}

function renderPack(view) {
  const pack = view.pack;
  const bibs = follow && view.skaters[follow] ? [follow] : pack.order.slice(0, 3);
  $("follow-title").textContent = follow ? t("Following {name}", { name: view.skaters[follow].short }) : t("The front");
  $("follow-card").innerHTML = (follow ? [follow] : pack.order.slice(0, 1)).map((b) => packCard(view, b)).join("");
  packChart(view, bibs);
  $("ice-title").innerHTML = `${esc(t("Order"))} <span class="clock pclock" data-bib="race" data-testid="race-clock"></span> <span data-testid="laps-to-go" class="ltg${pack.laps_to_go === 1 && pack.run ? " bell" : warned(pack) ? " warn" : ""}">${lapsToGo(pack)}</span>`;
  const away = breakawayText(view);
  const table = pointsTable(view);
  $("lanes").innerHTML = `<ol class="porder" data-testid="pack-order">${pack.order.map((bib) => {
    const sk = view.skaters[bib], pts = pointsOf(view, bib);
    return `<li tabindex="0" data-bib="${esc(bib)}" class="${bib === follow ? "followed" : ""}"><span class="pos">${place(view, bib)}</span>` +
      `<span class="name">${esc(sk.short)}</span> <span class="nation">${esc(subtitle(view, bib))}</span>` +
      `<span class="num">${badge(view, bib) || behind(view, bib)}</span>` +
      (pts !== null ? `<span class="num pts">${pts || ""}</span>` : "") + `</li>`;
  }).join("")}</ol>` +
    (away ? `<p class="away" data-testid="breakaway">${esc(t("Breakaway"))}: ${esc(away)}</p>` : "") +
    (table.length ? `<p class="points" data-testid="points-table">${esc(t("Sprint points"))}: ${table.map(([b, p]) =>
      `${esc(view.skaters[b].short)} ${p}`).join(" · ")}</p>` : "");
  const c = view.classification;
  $("cls-body").innerHTML = c.bib.map((bib, i) => {
    const sk = view.skaters[bib];
    return `<tr tabindex="0" data-bib="${esc(bib)}" class="${bib === follow ? "followed" : ""}"><td class="num">${c.rank[i]}</td>${whoCell(sk)}<td class="nation">${esc(sk.nation)}</td>` +
      `<td class="num t" data-t="${c.t[i]}">${fmtFinal(view, c.t[i], digits(view))}</td>` +
      `<td class="num">${c.sprint_points ? esc(ptsText(c.sprint_points[i])) : i ? fmtGap(c.behind[i]) : ""}</td><td></td></tr>`;
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
  sel.options[0].text = isPack(view) ? t("The front") : t("Pair on the ice");
  for (const bib of isPack(view) ? view.start_order : []) {
    const sk = view.skaters[bib];
    sel.add(new Option(`${sk.short} (${sk.nation})`, bib));
  }
  for (const p of isPack(view) ? [] : view.pairs) {
    for (const bib of [p.inner, p.outer].filter(Boolean)) {
      const sk = view.skaters[bib];
      sel.add(new Option(`${sk.short} (${sk.nation}) · ${t("pair")} ${p.pair}`, bib));
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
  // Between pairs and after the last one nobody is on the ice: the pages say so (as the
  // desk does) and show the pair that skated last.
  const onIce = Object.keys(view.on_ice).length > 0;
  $("follow-title").textContent = follow ? t("Following {name}", { name: view.skaters[follow].short })
    : onIce || !bibs.length ? t("Pair on the ice") : t("Last pair");
  $("follow-card").innerHTML = bibs.map((b) => card(view, b)).join("") ||
    `<p class="idle">${esc(t("No pair has started yet."))}</p>`;
  chart(view, bibs);
  const pair = view.pairs.find((p) => p.pair === view.current_pair);
  $("ice-state").textContent = onIce || !pair ? t("On the ice") : t("Nobody on the ice");
  $("pair-label").textContent = !pair ? "" : onIce ? `· ${t("pair")} ${pair.pair}`
    : `· ${t("last pair {n}", { n: pair.pair })}`;
  $("lanes").innerHTML = pair
    ? [["I", pair.inner], ["O", pair.outer]].filter(([, b]) => b).map(([l, b]) => laneRows(view, b, l)).join("")
    : `<p class="idle">${esc(t("No pair has started yet."))}</p>`;
  const c = view.classification;
  $("cls-body").innerHTML = c.bib.map((bib, i) => {
    const sk = view.skaters[bib], fin = view.results[bib].final;
    return `<tr tabindex="0" data-bib="${esc(bib)}" class="${bib === follow ? "followed" : ""}"><td class="num">${c.rank[i]}</td>${whoCell(sk)}<td class="nation">${esc(sk.nation)}</td>` +
      `<td class="num t" data-t="${c.t[i]}">${fmtFinal(view, c.t[i])}</td><td class="num">${i ? fmtGap(c.behind[i]) : ""}</td>` +
      `<td>${(fin?.flags || []).map((f) => `<span class="flag">${esc(f)}</span>`).join(" ")}</td></tr>`;
  }).join("") + sanctionRows(view);
  renderStories(view);
}

function renderStandings(view) {
  $("controls").querySelector("label:nth-child(2)").hidden = true;
  $("follow-title").textContent = view.race.name;
  $("follow-card").innerHTML = allCups(view);
  $("chart").innerHTML = "";
  $("chart-legend").innerHTML = "";
  $("chart-title").textContent = "";
  $("ice-title").textContent = view.counted ? t("Counted races") : "";
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

// Something on the ice: a pair of this distance, or the pack.
function running(view) {
  // A marathon's timing points are kilometres apart: minutes without a read are normal.
  if (!view || isStandings(view) || isMarathon(view)) return false;
  return Boolean(isPack(view) ? view.pack.run : Object.keys(view.on_ice).length);
}

function tickClocks(live) {
  const view = live.view;
  tickWaveClocks(live);
  if (view) {
    for (const el of document.querySelectorAll(".clock[data-bib]")) {
      const res = view.results[el.dataset.bib];
      const pair = !isPack(view) && view.pairs.find((p) => p.inner === el.dataset.bib || p.outer === el.dataset.bib);
      const run = isPack(view) ? view.pack.run : pair && view.on_ice[String(pair.pair)];
      if (res && (res.final || res.status)) continue;
      const elapsed = run ? live.raceElapsedUs(run) : 0;
      const text = !run ? "" : elapsed > 0 ? fmtTime(Math.floor(elapsed / 100000) * 100000, 1) : "0.0";
      // Only when it changes: a write of the same text still costs a layout and a paint.
      if (el.textContent !== text) el.textContent = text;
    }
  }
  const since = Date.now() - live.lastEventAt;
  const st = $("status");
  const state = st.dataset.state || "connecting";
  let text = state === "reconnecting" ? t("Server unreachable: reconnecting…")
    : state === "stale" ? t("Data stale: reconnecting to storage…") : t(state);
  // Live, but nothing has come for a while though a race is running: that is stale too,
  // and looks it (data-quiet: not the green of a live link).
  const quiet = live.lastEventAt && since > STALE_MS && state === "live" && running(view);
  if (quiet) text = t("no data for {n} s", { n: Math.round(since / 1000) });
  if (st.hasAttribute("data-quiet") !== Boolean(quiet)) st.toggleAttribute("data-quiet", Boolean(quiet));
  if (live.delayMs) text += " · " + t("{n} s behind", { n: live.delayMs / 1000 });
  const tod = timeOfDay(live.serverNowUs() / 1000);
  if ($("tod").textContent !== tod) $("tod").textContent = tod;
  if (st.textContent !== text) st.textContent = text;
  requestAnimationFrame(() => tickClocks(live));
}

// The race drop-down: every race, and races whose start list comes after the page
// opened too (asked again every RACES_POLL_MS; the races are few and the answer small).
const RACES_POLL_MS = 10000;

async function fillRaces(current) {
  const sel = $("race-select");
  const add = async () => {
    const races = await fetch("/api/races").then((r) => r.json()).catch(() => []);
    const have = new Set([...sel.options].map((o) => o.value));
    for (const r of races) if (!have.has(r.id)) sel.add(new Option(r.name, r.id));
    sel.value = current;
  };
  await add();
  setInterval(add, RACES_POLL_MS);
  sel.addEventListener("change", () => {
    location.assign(`/live?race=${encodeURIComponent(sel.value)}`);
  });
}

const race = await pickRace(() => { $("race-name").textContent = t("waiting for a start list…"); });
follow = params.get("bib") ?? localStorage.getItem(`icetime.follow.${race}`) ?? "";
const delay = Number(params.get("delay") ?? localStorage.getItem("icetime.delay") ?? 0) || 0;
const live = new LiveRace(race, {
  onView: render,
  onStatus: (s) => { $("status").dataset.state = s; live.status = s; },
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
