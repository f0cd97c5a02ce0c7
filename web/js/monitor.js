// The commentator's monitor: every skater x passage, stories, feed health, and
// keyboard shortcuts to pin and compare skaters. Dense on purpose: it is read up close.
import { LiveRace, pickRace } from "./live.js";
import { t, timeOfDay, translatePage } from "./i18n.js";
import { esc, fmtFinal, fmtRanked, fmtTime, fmtGap, lapTime, passageTimes, restartNotes, statusStories } from "./view.js";
import { allCups, isStandings } from "./standings.js";
import { isMarathon, mountMonitor } from "./marathon.js";
import { badge, behind, breakawayText, finalTime, isPack, lapsToGo, pointsOf, subtitle } from "./pack.js";

const $ = (id) => document.getElementById(id);
const HEALTH_POLL_MS = 2000;
const DECODER_QUIET_US = 5_000_000;  // no STATUS for 5 s: the decoder is not talking
const LATENCY_WINDOW = 50;           // events the latency median is taken over
const STALE_MS = 10000;

// What the commentator chose; kept per race across reloads.
const prefs = { pinned: [], compare: [], order: "start" };
let selected = null;
let live = null;
let lastTimingAt = 0;  // server time (µs) the last passage, finish or split arrived
const latencies = [];

const prefsKey = () => `icetime.monitor.${live.race}`;
function loadPrefs() {
  try { Object.assign(prefs, JSON.parse(localStorage.getItem(prefsKey())) || {}); } catch { /* fresh */ }
}
function savePrefs() { localStorage.setItem(prefsKey(), JSON.stringify(prefs)); }

function startOrder(view) {
  if (isPack(view)) return view.pack.order;  // a pack race: the running order
  return view.pairs.flatMap((p) => [p.inner, p.outer]).filter(Boolean);
}

// Pinned skaters first (in the order pinned), then start order or the classification.
function rowOrder(view) {
  let base = startOrder(view);
  if (prefs.order === "classification") {
    const ranked = view.classification.bib;
    base = ranked.concat(base.filter((b) => !ranked.includes(b)));
  }
  const pinned = prefs.pinned.filter((b) => view.skaters[b]);
  return pinned.concat(base.filter((b) => !pinned.includes(b)));
}

// The fastest time and lap at each passage so far, for the purple cells.
function bests(view) {
  const out = view.race.passages.map(() => ({ t: Infinity, lap_time: Infinity }));
  for (const res of Object.values(view.results)) {
    res.passages.forEach((p, k) => {
      if (!p) return;
      out[k].t = Math.min(out[k].t, p.t);
      if (k && lapTime(p) !== null) out[k].lap_time = Math.min(out[k].lap_time, p.lap_time);
    });
  }
  return out;
}

function gapClass(gap) { return gap === null || gap === undefined ? "" : gap > 0 ? "slower" : "faster"; }

// Every team member by bib (team events), once per render.
function teamMembers(view) {
  return view.teams ? Object.assign({}, ...Object.values(view.teams).map((t) => t.members)) : {};
}

// A team event's passage: who crossed, and when (the team pursuit's three skaters).
function crossedBy(members, p) {
  if (!p.skaters) return "";
  return Object.entries(p.skaters).map(([bib, t]) => `${members[bib] ? members[bib].short : bib} ${fmtTime(t)}`).join(" · ");
}

function cell(p, best, members, others) {
  if (!p) return `<td class="cell empty"></td>`;
  const lt = lapTime(p);
  const lap = p.k ? `<span class="lap${lt === best.lap_time ? " best-lap" : ""}">${fmtTime(lt)}</span>` : `<span class="lap"></span>`;
  const who = crossedBy(members, p);
  return `<td class="cell${p.t === best.t ? " best" : ""}" data-m="${p.m}"${who ? ` title="${esc(who)}"` : ""}>` +
    `<div class="t" data-t="${p.t}">${fmtRanked(p.t, others)}</div><div class="sub">${lap}` +
    `<span class="rk">${p.rank}</span><span class="gap ${gapClass(p.gap_leader)}">${p.gap_leader === null ? "" : fmtGap(p.gap_leader)}</span></div></td>`;
}

// A team pursuit's skaters under the team's name: the three who counted at its latest
// line (the team's time is the third's), and each one who did not, with the last line
// she counted at ("out after 800 m": she dropped, or is behind the three).
function teamLine(view, bib, members) {
  const team = view.race.kind === "team_pursuit" && view.teams && view.teams[bib];
  if (!team) return "";
  const done = view.results[bib].passages.filter(Boolean);
  const latest = done.length ? done[done.length - 1] : null;
  const lastAt = {};
  for (const p of done) for (const m of Object.keys(p.skaters || {})) lastAt[m] = p.m;
  const bits = team.skaters.map((m) => {
    const name = esc(members[m] ? members[m].short : m);
    if (!latest) return `<span class="member">${name}</span>`;
    if (latest.skaters && m in latest.skaters) return `<span class="member counted">${name}</span>`;
    if (lastAt[m] === undefined) return `<span class="member">${name}</span>`;
    return `<span class="member out">${name} ${esc(t("out after {m} m", { m: lastAt[m] }))}</span>`;
  });
  return `<div class="members" data-testid="members-${esc(bib)}">${bits.join(" · ")}</div>`;
}

function flags(list) { return list.map((f) => `<span class="flag flag-${esc(f)}">${esc(f)}</span>`).join(""); }

function row(view, bib, best, pairOf, members) {
  const sk = view.skaters[bib], res = view.results[bib];
  const c = view.classification, at = c.bib.indexOf(bib);
  const [pair, lane] = pairOf[bib];
  const onIce = view.on_ice[String(pair)] && !res.final && !res.status;
  const last = [...res.passages].reverse().find(Boolean);
  const classes = [prefs.pinned.includes(bib) && "pinned", selected === bib && "selected",
    prefs.compare.includes(bib) && "compared", onIce && "on-ice"].filter(Boolean).join(" ");
  const final = res.status ? `<span class="code">${esc(res.status)}</span>`
    : res.final ? `<span class="t" data-t="${res.final.t}">${fmtFinal(view, res.final.t)}</span> <span class="rk">${at >= 0 ? c.rank[at] : ""}</span>` +
      (at > 0 ? ` <span class="gap slower">${fmtGap(c.behind[at])}</span>` : "") + flags(res.final.flags) : "";
  const projected = !res.final && last && last.projected ? fmtTime(last.projected) : "";
  return `<tr data-bib="${esc(bib)}" class="${classes}" aria-selected="${selected === bib}">` +
    `<td class="pr">${esc(pair)}<span class="lane lane-${lane}">${lane}</span></td>` +
    `<td class="who"><span class="name">${esc(sk.name)}</span> <span class="nation">${esc(sk.nation)}</span>${teamLine(view, bib, members)}</td>` +
    `<td class="num ref">${fmtTime(sk.pb)}</td><td class="num ref">${fmtTime(sk.sb)}</td>` +
    view.race.passages.map((m, k) => cell(res.passages[k], best[k], members, passageTimes(view, k))).join("") +
    `<td class="final" data-testid="final-${esc(bib)}">${final}</td><td class="num proj">${projected}</td></tr>`;
}

function compareTable(view) {
  const [a, b] = prefs.compare;
  // The key stays a key in every language: the sentence is split around it.
  const key = (text) => esc(text).replace("{key}", "<kbd>c</kbd>");
  if (!a) return `<p class="hint">${key(t("Select a skater and press {key}; then a second one."))}</p>`;
  if (!b) return `<p class="hint">${key(t("{name} vs …: press {key} on another skater.", { name: view.skaters[a].short }))}</p>`;
  const ra = view.results[a], rb = view.results[b];
  const rows = view.race.passages.map((m, k) => {
    const pa = ra.passages[k], pb = rb.passages[k];
    const d = pa && pb ? pa.t - pb.t : null;
    const dl = pa && pb && k && lapTime(pa) !== null && lapTime(pb) !== null ? pa.lap_time - pb.lap_time : null;
    const label = isPack(view) ? t("lap {n}", { n: k + 1 }) : `${m} m`;
    return `<tr data-m="${m}"><td>${label}</td><td class="num">${pa ? fmtTime(pa.t) : ""}</td>` +
      `<td class="num">${pb ? fmtTime(pb.t) : ""}</td><td class="num gap diff ${gapClass(d)}">${d === null ? "" : fmtGap(d)}</td>` +
      `<td class="num gap ${gapClass(dl)}">${dl === null ? "" : fmtGap(dl)}</td></tr>`;
  }).join("");
  return `<table class="cmp"><thead><tr><th></th><th class="num">${esc(view.skaters[a].short)}</th>` +
    `<th class="num">${esc(view.skaters[b].short)}</th><th class="num">${esc(t("Diff"))}</th><th class="num">${esc(t("Lap"))}</th></tr></thead><tbody>${rows}</tbody></table>`;
}

// A pack race's cell: the lap time, the place across the line and the gap to the first.
function packCell(p, best) {
  if (!p) return `<td class="cell empty"></td>`;
  return `<td class="cell" data-lap="${p.lap_number}"><div class="t${p.k && lapTime(p) === best.lap_time ? " best-lap" : ""}">${p.k ? fmtTime(lapTime(p)) : fmtTime(p.t)}</div>` +
    `<div class="sub"><span class="rk">${p.position}</span><span class="gap ${p.gap_leader ? "slower" : "faster"}">${p.gap_leader ? fmtGap(p.gap_leader) : ""}</span></div></td>`;
}

function packRow(view, bib, best) {
  const sk = view.skaters[bib], res = view.results[bib];
  const pts = pointsOf(view, bib);
  const classes = [prefs.pinned.includes(bib) && "pinned", selected === bib && "selected",
    prefs.compare.includes(bib) && "compared", view.pack.run && !res.final && "on-ice"].filter(Boolean).join(" ");
  const final = res.final ? `<span class="t" data-t="${res.final.t}">${finalTime(view, bib)}</span>` : "";
  return `<tr data-bib="${esc(bib)}" class="${classes}" aria-selected="${selected === bib}">` +
    `<td class="pr">${view.pack.order.indexOf(bib) + 1}</td>` +
    `<td class="who"><span class="name">${esc(sk.name)}</span> <span class="nation">${esc(subtitle(view, bib))}</span></td>` +
    `<td class="num">${view.pack.crossings[bib]}</td><td class="num behind">${badge(view, bib) || behind(view, bib)}</td>` +
    (pts !== null ? `<td class="num pts">${pts}</td>` : "") +
    view.race.passages.map((m, k) => packCell(res.passages[k], best[k])).join("") +
    `<td class="final" data-testid="final-${esc(bib)}">${final}</td></tr>`;
}

function renderPack(view) {
  const pack = view.pack;
  $("records").textContent = breakawayText(view) ? `${t("Breakaway")} ${breakawayText(view)}` : "";
  $("pair").textContent = lapsToGo(pack);
  const best = bests(view);
  const pts = pack.sprint_points !== null;
  $("grid-head").innerHTML = `<tr><th>${esc(t("Pos"))}</th><th>${esc(t("Skater"))}</th><th class="num">${esc(t("Laps"))}</th><th class="num">${esc(t("Behind"))}</th>` +
    (pts ? `<th class="num">${esc(t("Pts"))}</th>` : "") +
    view.race.passages.map((m, k) => `<th class="num${view.race.sprint_laps && view.race.sprint_laps.includes(k + 1) ? " sprint" : ""}">${k + 1}</th>`).join("") +
    `<th>${esc(t("Final"))}</th></tr>`;
  $("grid-body").innerHTML = rowOrder(view).map((bib) => packRow(view, bib, best)).join("");
  $("grid").classList.add("pack");
}

// A marathon's list and search, once a marathon's view has come (its draw, one per frame).
let marathonDraw = null;

function render(view) {
  if (!view) return;
  drawHealth();
  $("race").textContent = view.race.name;
  document.title = `icetime · monitor · ${view.race.name}`;
  if (isMarathon(view)) {
    marathonDraw ??= mountMonitor(document.querySelector("main"), live);
    marathonDraw(view);
    return;
  }
  $("records").textContent = Object.entries(view.race.records || {})
    .map(([k, t]) => `${k} ${fmtTime(t)}`).join(" · ");
  if (isStandings(view)) {
    $("grid-head").innerHTML = "";
    $("grid-body").innerHTML = `<tr><td>${allCups(view)}</td></tr>`;
    return;
  }
  $("compare").innerHTML = compareTable(view);
  $("stories").innerHTML = statusStories(view, t).reverse().map((line) =>
    `<li class="hot" data-testid="status-story">${esc(line)}</li>`).join("") + [...(view.stories || [])].reverse().map((line) =>
    `<li class="${/New leader|record|fastest|lead|Sprint|Bell|Photo|stopped/.test(line) ? "hot" : ""}">${esc(line)}</li>`).join("");
  if (isPack(view)) { renderPack(view); return; }
  $("pair").textContent = view.current_pair !== null ? `${t("pair")} ${view.current_pair}` : "";
  const pairOf = {};
  for (const p of view.pairs) {
    if (p.inner) pairOf[p.inner] = [p.pair, "I"];
    if (p.outer) pairOf[p.outer] = [p.pair, "O"];
  }
  const best = bests(view);
  $("grid-head").innerHTML = `<tr><th>${esc(t("Pr"))}</th><th>${esc(t("Skater"))}</th><th class="num">${esc(t("PB"))}</th><th class="num">${esc(t("SB"))}</th>` +
    view.race.passages.map((m) => `<th class="num">${m} m</th>`).join("") +
    `<th>${esc(t("Final"))}</th><th class="num">${esc(t("Proj."))}</th></tr>`;
  const members = teamMembers(view);
  $("grid-body").innerHTML = rowOrder(view).map((bib) => row(view, bib, best, pairOf, members)).join("");
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : null;
}

function onEvent(ev, msg) {
  if (ev.type === "passage" || ev.type === "finish" || ev.type === "split") lastTimingAt = live.serverNowUs();
  const from = ev.hops && (ev.hops.source_us ?? ev.hops.ingest_us);
  if (from && msg.broadcast_us) {
    latencies.push((msg.broadcast_us - from) / 1000);
    if (latencies.length > LATENCY_WINDOW) latencies.shift();
  }
}

function ago(us) {
  if (us === null || us === undefined) return t("never");
  const s = Math.max(0, us) / 1e6;
  return s < 60 ? t("{n} s ago", { n: s.toFixed(s < 10 ? 1 : 0) }) : t("{n} min ago", { n: Math.floor(s / 60) });
}

// When the newest passage in the view was read (µs, the server's clock): its input is a
// raw stream id, "<ms>-<n>", stamped by ingest on receipt, whatever the feed (JSON over
// HTTP or TCP, a decoder link, a manual time). Null before any.
function lastPassingUs(view) {
  let newest = null;
  for (const res of Object.values((view && view.results) || {})) {
    for (const p of res.passages || []) {
      const ms = p && p.input ? Number(String(p.input).split("-")[0]) : NaN;
      if (ms && (newest === null || ms > newest)) newest = ms;
    }
  }
  return newest === null ? null : newest * 1000;
}

function decoderChip(d, h) {
  const seen = d.status && d.status.last_seen_us;
  const quiet = !seen || h.server_us - seen > DECODER_QUIET_US;
  const ok = d.connected && !quiet;
  const st = d.status || {};
  const bits = [d.connected ? (quiet ? t("quiet") : t("up")) : t("down"),
    st.noise !== undefined && `${t("noise")} ${st.noise}`,
    st.temperature !== undefined && `${(st.temperature / 10).toFixed(1)} °C`,
    st.gps !== undefined && `GPS ${st.gps ? t("ok") : t("none")}`,
    `${t("last passing")} ${ago(d.last_passing_us && h.server_us - d.last_passing_us)}`,
    d.clock_offset_us ? `${t("offset")} ${(d.clock_offset_us / 1000).toFixed(1)} ms` : null,
    d.damaged ? t("{n} damaged", { n: d.damaged }) : null].filter(Boolean);
  return `<span class="chip ${ok ? "ok" : "bad"}" data-testid="decoder-${esc(d.id)}">` +
    `<b>${esc(d.id)}</b> ${esc(d.point)} · ${esc(bits.join(" · "))}</span>`;
}

// Latency: this page's own events (source send to broadcast frame) when it has seen
// some, else the node's latest events (the health's), so a page opened between two
// passages shows it too.
function latencyChip(h) {
  const own = median(latencies);
  const node = h && h.latency && h.latency.median_ms !== null ? h.latency : null;
  const med = own !== null ? own : node ? node.median_ms : null;
  const last = latencies.length ? latencies[latencies.length - 1] : node ? node.last_ms : null;
  const text = med === null ? t("latency: no event yet")
    : `${t("latency")} ${med.toFixed(1)} ms (${t("last")} ${last.toFixed(1)} ms)`;
  return `<span class="chip" data-testid="latency">${esc(text)}</span>`;
}

let health;  // the last /api/health answer: undefined before the first, null when it failed

async function pollHealth() {
  try { health = await fetch("/api/health").then((r) => r.json()); } catch { health = null; }
  drawHealth();
}

// The feed health chips, from the last health answer and the view (drawn on both).
function drawHealth() {
  const h = health;
  const parts = [];
  if (h === null) {
    parts.push(`<span class="chip bad">${esc(t("health unavailable"))}</span>`);
  } else if (h) {
    for (const d of h.decoders || []) parts.push(decoderChip(d, h));
    const ing = h.ingest || {}, sc = h.scoring || {};
    parts.push(`<span class="chip" data-testid="feed-counts">${esc(t("inputs {a} · duplicates {d} · rejected {r} · unknown transponders {u}",
      { a: ing.accepted || 0, d: ing.duplicate || 0, r: ing.rejected || 0, u: sc.unknown_transponder || 0 }))}</span>`);
    // What restarted (as the desk's health line says it), in amber: results were rebuilt
    // from the inputs, nothing is lost, but the commentator should know it happened.
    for (const note of restartNotes(h, clockOfDay, t)) {
      parts.push(`<span class="chip warn" data-testid="restarted">${esc(note)}</span>`);
    }
  }
  parts.push(latencyChip(h));
  // The newest passing from any source (a decoder, a mat's JSON feed, a replay), not only
  // the race's passages: reads arriving for another race, or refused, still show the
  // feed is alive. Where it came from when the health names it.
  const any = (h && h.last_passing) || null;
  const viewUs = lastPassingUs(live.view);
  const at = Math.max(viewUs || 0, lastTimingAt, (any && any.at_us) || 0);
  const from = any && any.at_us === at ? ` · ${any.source} (${any.point})` : "";
  const last = at ? ago(live.serverNowUs() - at) + from : t("none yet");
  parts.push(`<span class="chip" data-testid="last-passing">${esc(t("last passing"))} ${esc(last)}</span>`);
  const html = parts.join("");
  if ($("health").innerHTML !== html) $("health").innerHTML = html;
}

// Unix µs as the time of day, HH:MM:SS (the desk's form: a restart's second matters).
function clockOfDay(us) {
  return new Date(us / 1000).toTimeString().slice(0, 8);
}

function tick() {
  const view = live.view;
  const run = view && !isStandings(view) && !isMarathon(view) && (isPack(view) ? view.pack.run
    : view.current_pair !== null && view.on_ice[String(view.current_pair)]);
  const elapsed = run ? live.raceElapsedUs(run) : null;
  const clock = run ? fmtTime(Math.max(0, Math.floor(elapsed / 100000) * 100000), 1) : "";
  // Only when it changes: a write of the same text still costs a layout and a paint.
  if ($("clock").textContent !== clock) $("clock").textContent = clock;
  const tod = timeOfDay(live.serverNowUs() / 1000);
  if ($("tod").textContent !== tod) $("tod").textContent = tod;
  // Live, but a race running and no data for a while: stale, and it looks it.
  const quiet = Boolean(live.lastEventAt && Date.now() - live.lastEventAt > STALE_MS && run) && live.status === "live";
  const st = $("status");
  if (st.hasAttribute("data-quiet") !== quiet) {
    st.toggleAttribute("data-quiet", quiet);
    st.textContent = quiet ? t("no data") : t(live.status);
  }
  requestAnimationFrame(tick);
}

function move(step) {
  const order = rowOrder(live.view);
  const i = order.indexOf(selected);
  selected = order[Math.max(0, Math.min(order.length - 1, i < 0 ? 0 : i + step))];
}

function toggle(list, bib, max) {
  const i = list.indexOf(bib);
  if (i >= 0) list.splice(i, 1);
  else { list.push(bib); if (max && list.length > max) list.shift(); }
}

function onKey(e) {
  if (!live.view || e.ctrlKey || e.metaKey || e.altKey) return;
  const k = e.key;
  if (k === "ArrowDown" || k === "j") move(1);
  else if (k === "ArrowUp" || k === "k") move(-1);
  else if (k === "p" && selected) toggle(prefs.pinned, selected);
  else if (k === "c" && selected) toggle(prefs.compare, selected, 2);
  else if (k === "s") prefs.order = prefs.order === "start" ? "classification" : "start";
  else if (k === "Escape") { prefs.compare = []; selected = null; }
  else return;
  e.preventDefault();
  savePrefs();
  render(live.view);
  const el = selected && document.querySelector(`#grid-body tr[data-bib="${CSS.escape(selected)}"]`);
  if (el) el.scrollIntoView({ block: "nearest" });
}

live = new LiveRace(await pickRace(() => { $("race").textContent = t("waiting for a start list…"); }), {
  onView: render,
  onEvent,
  onStatus: (s) => {
    live.status = s;
    $("status").textContent = s === "reconnecting" ? t("Server unreachable: reconnecting…")
      : s === "stale" ? t("Data stale: reconnecting to storage…") : t(s);
    $("status").dataset.state = s;
  },
});
window.icetime = live;
loadPrefs();
translatePage();
document.addEventListener("keydown", onKey);
$("grid-body").addEventListener("click", (e) => {
  const tr = e.target.closest("tr[data-bib]");
  if (!tr) return;
  selected = tr.dataset.bib;
  render(live.view);
});
await live.start();
pollHealth();
setInterval(pollHealth, HEALTH_POLL_MS);
requestAnimationFrame(tick);
