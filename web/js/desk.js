// The officials' desk (docs/desk.md): the chief referee's and the timing operator's page,
// served by ingest. Every input goes to /feed?wait=1 and its effect (applied, or refused
// and why) is shown at once; the race, the reads and the audit log are polled from
// /api/desk/*. Keyboard first: ↑ ↓ pick a skater, one letter picks a decision, Enter sends.
import { esc, fmtTime, restartNotes } from "./view.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 400;
const READS_SHOWN = 100;
const TOKEN_KEY = "icetime-desk-token";

// Key -> what it decides. `bib`: needs the selected skater; `time`: asks for a time.
const ACTIONS = {
  q: { action: "dq", label: "DQ", bib: true },
  s: { action: "dns", label: "DNS", bib: true },
  f: { action: "dnf", label: "DNF", bib: true },
  p: { action: "pen", label: "PEN", bib: true },
  y: { action: "yc", label: "Yellow card", bib: true },
  r: { action: "rc", label: "Red card", bib: true },
  a: { action: "adv", label: "ADV", bib: true },
  n: { action: "reinstate", label: "Reinstate", bib: true },
  t: { type: "finish_time", label: "Photo-finish time", bib: true, time: true },
  m: { action: "manual_time", label: "Manual time", bib: true, time: true, passage: true },
  b: { action: "manual_time", label: "Assign read", bib: true, time: true, passage: true, read: true },
  v: { action: "void", label: "Void read", voidRead: true },
  h: { action: "reassign", label: "Reassign chip", bib: true, chip: true },
  x: { action: "restart", label: "Restart pair", restart: true },
  c: { type: "call", label: "Call pair", call: true },
  o: { action: "official", label: "Declare official" },
  u: { action: "void", label: "Undo", undo: true },
};

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "", role: "", source: "", inputs: [],
  race: new URLSearchParams(location.search).get("race") || "", races: [], view: null,
  eventsAfter: "", readsAfter: "", auditAfter: "", auditFirst: "", auditOlder: false, passages: new Map(), chips: {}, health: null, reads: [], audit: [],
  // Reads of other races (their skaters' chips; /api/desk/reads?race=): held apart, so
  // they never push this race's out, and shown only when asked for (`showOthers`).
  others: [], otherIds: new Set(), dropped: 0, showOthers: false,
  selected: null, read: null, pending: null, polls: 0, timer: null, polling: false, again: false,
};

// ------------------------------------------------------------------ talking to ingest
async function api(path, opts = {}) {
  const headers = { Authorization: `Bearer ${state.token}`, ...(opts.headers || {}) };
  const resp = await fetch(path, { ...opts, headers });
  if (resp.status === 401) {
    signOut("The token was refused (rotated?): sign in again.");
    throw new Error("signed out");
  }
  const type = resp.headers.get("Content-Type") || "";
  const body = type.includes("json") ? await resp.json() : await resp.text();
  return { status: resp.status, body };
}

// A key per intended action: the same key twice (a double Enter) is stored once.
function idempotencyKey() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return "desk-" + Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

// "1:16.412", "76.412", "76" -> µs; null if it is not a time.
export function parseTime(text) {
  const m = /^\s*(?:(\d+):)?(\d+)(?:[.,](\d{1,6}))?\s*$/.exec(text || "");
  if (!m) return null;
  const whole = Number(m[1] || 0) * 60 + Number(m[2]);
  return whole * 1e6 + Number((m[3] || "").padEnd(6, "0"));
}

// ------------------------------------------------------------------ sign in and out
async function signIn(token) {
  state.token = token;
  let who;
  try {
    who = await api("/api/whoami");
  } catch {
    return;
  }
  if (!["referee", "admin"].includes(who.body.role)) {
    $("login-error").textContent = `role '${who.body.role}' may not open the desk: sign in with a referee's token`;
    state.token = "";
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  Object.assign(state, { role: who.body.role, source: who.body.source, inputs: who.body.inputs });
  $("login").hidden = true;
  $("desk").hidden = false;
  $("who").textContent = `${state.source} · ${state.role}`;
  $("sl-role").textContent = state.inputs.includes("startlist") ? ""
    : `This token's role (${state.role}) cannot load start lists: a loader's or admin's can.`;
  $("conn").textContent = "connecting";
  await loadRaces();
  poll();
}

function signOut(why) {
  clearTimeout(state.timer);
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = "";
  $("desk").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = why || "";
  $("conn").textContent = "signed out";
}

// ------------------------------------------------------------------ polling
async function loadRaces() {
  const { body } = await api("/api/desk/races");
  state.races = body;
  if (!state.race && body.length) {
    state.race = (body.find((r) => r.current_pair !== null) || body[0]).id;
  }
  $("race").innerHTML = body.map((r) => `<option value="${esc(r.id)}"${r.id === state.race ? " selected" : ""}>` +
    `${esc(r.name)}</option>`).join("");
}

function chooseRace(id) {
  Object.assign(state, { race: id, view: null, eventsAfter: "", passages: new Map(), selected: null,
    readsAfter: "", reads: [], others: [], otherIds: new Set(), dropped: 0, read: null });
  history.replaceState(null, "", `/desk?race=${encodeURIComponent(id)}`);
  poll();
}

async function pollRace() {
  if (!state.race) return;
  const after = state.eventsAfter ? `&after=${encodeURIComponent(state.eventsAfter)}` : "";
  const race = state.race;
  const { status, body } = await api(`/api/desk/race?race=${encodeURIComponent(race)}${after}`);
  if (status !== 200 || race !== state.race) return;  // another race was chosen meanwhile
  state.view = body.view;
  state.chips = body.chips || {};
  state.health = body.health || null;
  state.passages = passagesByInput(body.view);
  state.eventsAfter = body.last || state.eventsAfter;
}

// Each passage of the view by the input that made it (the row's own `input`: a revision
// after a late read keeps each passage's read, where an event's input would not).
export function passagesByInput(view) {
  const out = new Map();
  const last = view.race.passages ? view.race.passages.length - 1 : -1;
  for (const [bib, res] of Object.entries(view.results || {})) {
    for (const row of res.passages) {
      if (row && row.input) {
        out.set(row.input, { bib, m: row.m, t: row.t, finish: row.k === last, missing: row.missing || [] });
      }
    }
  }
  return out;
}

// The race's reads and, apart, other races'. A read not judged yet comes again with its
// verdict (and, judged, may turn out this race's): it replaces the one held. The reads
// after `last` are all sent again, so the order holds.
async function pollReads() {
  const race = state.race;
  if (!race) return;
  const after = state.readsAfter ? `&after=${encodeURIComponent(state.readsAfter)}` : "";
  const { status, body } = await api(`/api/desk/reads?race=${encodeURIComponent(race)}${after}`);
  if (status !== 200 || race !== state.race) return;  // another race was chosen meanwhile
  const again = new Set(body.reads.map((r) => r.input));
  state.reads = state.reads.filter((r) => !again.has(r.input));
  state.others = state.others.filter((r) => !again.has(r.input));
  for (const r of body.reads) {
    (r.other ? state.others : state.reads).push(r);
    if (r.other) state.otherIds.add(r.input);
    else state.otherIds.delete(r.input);
  }
  if (!state.readsAfter) state.dropped = body.dropped || 0;
  state.reads = state.reads.slice(-READS_SHOWN);
  state.others = state.others.slice(-READS_SHOWN);
  state.readsAfter = body.last || state.readsAfter;
}

// Raw stream ids ("1700000000000-3") in the log's order.
const byInput = (a, b) => {
  const [am, as] = a.input.split("-").map(Number), [bm, bs] = b.input.split("-").map(Number);
  return am - bm || as - bs;
};

// The reads on the panel, oldest first: the race's, and other races' when asked for.
function shownReads() {
  return state.showOthers && state.others.length ? [...state.reads, ...state.others].sort(byInput) : state.reads;
}

// The audit log: the first answer is its newest entries (the gun keyed a moment ago
// shows at once, however long the log); then what came after, and older entries on
// demand (the button under the log, or scrolling to its end).
async function pollAudit() {
  const after = state.auditAfter ? `?after=${encodeURIComponent(state.auditAfter)}` : "";
  const { body } = await api(`/api/desk/audit${after}`);
  state.audit = state.audit.concat(body.entries);
  state.auditAfter = body.last || state.auditAfter;
  if (!after) {
    state.auditFirst = body.first;
    state.auditOlder = body.older;
  }
}

async function loadOlderAudit() {
  if (!state.auditOlder || state.auditLoading || !state.auditFirst) return;
  state.auditLoading = true;
  $("audit-older").disabled = true;
  try {
    const { body } = await api(`/api/desk/audit?before=${encodeURIComponent(state.auditFirst)}`);
    state.audit = body.entries.concat(state.audit);
    state.auditFirst = body.first;
    state.auditOlder = body.older;
    render();
  } finally {
    state.auditLoading = false;
    $("audit-older").disabled = false;
  }
}

// One poll at a time: two in flight would ask from the same place and add twice what
// they got. A poll asked for meanwhile (an action's effect) runs right after.
async function poll() {
  clearTimeout(state.timer);
  if (!state.token) return;
  if (state.polling) {
    state.again = true;
    return;
  }
  state.polling = true;
  state.again = false;
  try {
    if (++state.polls % 25 === 0) await loadRaces();
    await pollRace();
    await pollReads();
    await pollAudit();
    $("conn").textContent = "live";
    $("conn").dataset.state = "live";
    render();
  } catch (e) {
    if (!state.token) return;
    $("conn").textContent = "no answer";
    $("conn").dataset.state = "down";
  } finally {
    state.polling = false;
  }
  state.timer = setTimeout(poll, state.again ? 0 : POLL_MS);
}

// ------------------------------------------------------------------ the race
function name(bib) {
  const sk = state.view && state.view.skaters[bib];
  return sk ? sk.name : bib;
}

// Rows in start order: [bib, pair, lane] (pack races: the start order, no pair).
function rows(view) {
  if (view.pairs) {
    return view.pairs.flatMap((p) => [[p.inner, p.pair, "I"], [p.outer, p.pair, "O"]])
      .filter(([bib]) => bib !== null);
  }
  return (view.start_order || Object.keys(view.results)).map((b) => [b, null, ""]);
}

function nextPair(view) {
  if (!view.pairs) return null;
  const skated = (b) => {
    const r = b === null ? null : view.results[b];
    return r && (r.final || r.status || r.passages.some(Boolean));
  };
  return view.pairs.find((p) => !view.on_ice[String(p.pair)] && !skated(p.inner) && !skated(p.outer)
    && p.pair > (view.current_pair || 0)) || null;
}

function renderIce(view) {
  const onIce = Object.keys(view.on_ice || {}).map(Number);
  const pairOf = (n) => (view.pairs || []).find((p) => p.pair === n);
  const who = (p) => p ? `${esc(p.inner ?? "–")} ${esc(name(p.inner))} / ${esc(p.outer ?? "–")} ${esc(name(p.outer))}` : "";
  $("on-ice").innerHTML = onIce.length
    ? onIce.map((n) => `<div class="pair-line">Pair <b>${n}</b>: ${who(pairOf(n))}</div>`).join("")
    : `<div class="idle">Nobody on the ice${view.current_pair ? ` (last pair ${view.current_pair})` : ""}</div>`;
  const next = nextPair(view);
  $("next").innerHTML = next ? `Next: pair <b>${next.pair}</b>: ${who(next)} <kbd>c</kbd> calls it` : "";
}

function renderResults(view) {
  const list = rows(view);
  if (!state.selected || !list.some(([b]) => b === state.selected)) state.selected = list.length ? list[0][0] : null;
  $("results-body").innerHTML = list.map(([bib, pair, lane]) => {
    const res = view.results[bib];
    const last = [...res.passages].reverse().find(Boolean);
    const sel = bib === state.selected;
    return `<tr data-bib="${esc(bib)}" data-testid="row-${esc(bib)}" class="${sel ? "selected" : ""}" aria-selected="${sel}">` +
      `<td>${pair === null ? "" : `${esc(pair)} <span class="lane">${esc(lane)}</span>`}</td>` +
      `<td>${esc(bib)}</td><td>${esc(name(bib))}</td>` +
      `<td class="num">${last ? `${esc(last.m)} m ${fmtTime(last.t, 3)}` : ""}</td>` +
      `<td class="num" data-label="final" data-testid="final-${esc(bib)}">${res.final ? `${fmtTime(res.final.t, 3)} <small>${esc(res.final.origin)}</small>` : ""}</td>` +
      `<td data-testid="status-${esc(bib)}">${res.status ? `<span class="code">${esc(res.status)}</span>` : ""}</td></tr>`;
  }).join("");
}

function clockTime(t) {
  // A decoder's time: on a clock of the day when it is one (µs since 1970), else as is.
  return t > 1e15 ? new Date(t / 1000).toISOString().slice(11, 23) : fmtTime(t, 3);
}

function received(us) {
  if (typeof us !== "number") return "";
  const d = new Date(us / 1000);
  return d.toTimeString().slice(0, 8) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

// Whose each transponder is: the start lists' (so the other ankle's chip, which never
// makes a passage, is known too), then what the reads that made passages say (a chip
// reassigned on the desk).
function transponderBibs() {
  const out = new Map(Object.entries(state.chips || {}));
  for (const r of state.reads) {
    const p = state.passages.get(r.input);
    if (p) out.set(String(r.transponder), p.bib);
  }
  return out;
}

// The engine's loop dwell (services/scoring/race.py, docs/time.md "Loop dwell"): a chip
// read again sooner than LEAVE_US after its previous read is the same visit to the loop
// field; a visit of over DWELL_US is a skater lying there. Judged from the reads, not the
// view's `in_field` (who lies there now): her reads stay `in field` once she got up, and
// after her finish as before it.
const LEAVE_US = 3e6;
const DWELL_US = 2e6;

// The inputs of the reads made during a dwell but its first (by skater, loop and decoder).
export function dwellReads(reads, bibs) {
  const visits = [];
  const open = new Map();
  for (const r of [...reads].sort((a, b) => a.t - b.t)) {
    const bib = bibs.get(String(r.transponder));
    if (!bib) continue;
    const key = `${bib}\u0000${r.point}\u0000${r.source}`;
    let v = open.get(key);
    if (!v || r.t - v.last >= LEAVE_US) {
      v = { first: r.t, last: r.t, inputs: [] };
      open.set(key, v);
      visits.push(v);
    }
    v.last = r.t;
    v.inputs.push(r.input);
  }
  // A visit's first read is her reaching the line (a passage, or one the race had no use
  // for: an official time instead, a skater done): the rest are her lying there.
  return new Set(visits.filter((v) => v.last - v.first > DWELL_US).flatMap((v) => v.inputs.slice(1)));
}

// Within this long (µs) after a read that made a passage, a read of the same skater's
// chip (the same one, or her other ankle's) at the same loop is a re-read.
const REREAD_US = 5e6;

// What became of a read, as flags: [name, explanation].
export function readFlags(r, ctx) {
  if (r.other) {
    return [["other race", `${r.bib ? `bib ${r.bib}'s chip` : "a chip"}: a skater of another race (her race's desk shows what became of it)`]];
  }
  const flags = [];
  const held = (ctx.view?.held || []).find((h) => h.input === r.input);
  const p = state.passages.get(r.input);
  const voided = !p && ctx.voided?.has(r.input);
  // A spare chip's read, unknown when it came, is a passage once the chip is given to
  // a skater (h): the passage says whose, no longer "unknown".
  if (r.refused && !p) flags.push(["unknown", r.refused]);
  if (held) flags.push(["held", held.reason]);
  if (voided) flags.push(["voided", "voided by an official (u, or undo in the audit log, brings it back)"]);
  if (p && p.missing.length) flags.push(["missing", `passages missed before it: ${p.missing.join(", ")} m`]);
  if (p || r.refused || held || voided) return flags;
  if (!r.judged) return [["pending", "scoring has not judged it yet"]];
  const bib = ctx.bibs.get(String(r.transponder));
  if (bib && ctx.dwell.has(r.input)) {
    flags.push(["in field", `${bib}'s chip lay in the loop field`]);
  } else if (bib && state.reads.some((o) => o !== r && ctx.bibs.get(String(o.transponder)) === bib && o.point === r.point &&
      state.passages.has(o.input) && r.t - o.t >= 0 && r.t - o.t < REREAD_US)) {
    flags.push(["re-read", `a second read of ${bib}'s passage`]);
  } else {
    flags.push(["no passage", "a skater not on the ice, or a read the race did not take"]);
  }
  return flags;
}

function renderReads() {
  const bibs = transponderBibs();
  const ctx = { view: state.view, bibs, dwell: dwellReads(state.reads, bibs), voided: undone() };
  const shown = shownReads();
  if (state.read && !shown.some((r) => r.input === state.read)) state.read = null;
  renderOthers();
  $("reads-body").innerHTML = [...shown].reverse().map((r) => {
    const p = state.passages.get(r.input);
    const given = p ? `${esc(p.bib)} ${esc(name(p.bib))} · ${p.finish ? "finish" : `${esc(p.m)} m`} ${fmtTime(p.t, 3)}`
      : `<span class="idle">${r.other ? `another race${r.bib ? ` · bib ${esc(r.bib)}` : ""}` : "none"}</span>`;
    const flags = readFlags(r, ctx).map(([f, why]) => `<span class="flag" data-flag="${esc(f)}" title="${esc(why)}">${esc(f)}</span>`).join(" ");
    const sel = r.input === state.read;
    return `<tr data-input="${esc(r.input)}" class="${sel ? "selected" : ""}" aria-selected="${sel}"><td>${received(r.rx_us)}</td><td>${esc(r.source)}</td>` +
      `<td>${esc(r.point)}</td><td>${esc(r.transponder)}</td><td class="num">${clockTime(r.t)}</td><td>${given}</td><td>${flags}</td></tr>`;
  }).join("");
}

// How many reads of other races there are, and the toggle that shows them.
function renderOthers() {
  const n = state.otherIds.size + state.dropped;
  $("reads-others").hidden = n === 0;
  const reads = n === 1 ? "read" : "reads";
  $("reads-others-text").textContent = state.showOthers
    ? `${n} ${reads} of other races' skaters shown, flagged other race`
    : `${n} ${reads} of other races' skaters hidden`;
  $("reads-others-toggle").textContent = state.showOthers ? "hide them" : "show them";
  $("reads-others-toggle").setAttribute("aria-pressed", String(state.showOthers));
}

// Reads newest first, as shown; `delta` +1 moves to an older one (down the list), -1 to
// a newer one. With none selected either key selects the newest: the read an official
// is after is nearly always the one that just came in, and starting from the oldest
// once prefilled a chip worn by another skater of the pair.
function moveRead(delta) {
  const list = [...shownReads()].reverse().map((r) => r.input);
  if (!list.length) return;
  const i = state.read === null ? 0
    : Math.max(0, Math.min(list.length - 1, list.indexOf(state.read) + delta));
  state.read = list[i];
  renderReads();
}

// A read's race time (µs): its time against the nearest read from the same decoder that
// made a passage (same clock, same run); null when there is none to go by.
export function readRaceTime(r) {
  let best = null;
  for (const o of state.reads) {
    const p = state.passages.get(o.input);
    if (!p || o.source !== r.source) continue;
    if (best === null || Math.abs(o.t - r.t) < Math.abs(best[0].t - r.t)) best = [o, p];
  }
  return best ? best[1].t + (r.t - best[0].t) : null;
}

// ------------------------------------------------------------------ the audit log
function describe(e) {
  const f = e.input_fields || {};
  const bits = [e.type === "decision" ? (f.action || "").toUpperCase() : e.type];
  if (f.bib !== undefined) bits.push(`bib ${f.bib}`);
  if (f.pair !== undefined) bits.push(`pair ${f.pair}`);
  if (f.transponder !== undefined && e.type === "decision") bits.push(`chip ${f.transponder}`);
  // The passage a time is for (a manual time without `m` is the finish).
  if (f.m !== undefined) bits.push(`${f.m} m`);
  else if (f.action === "manual_time" || e.type === "finish_time") bits.push("finish");
  if (f.time_us !== undefined) bits.push(fmtTime(f.time_us, 3));
  if (f.target !== undefined) bits.push(`of ${describeTarget(f.target)}`);
  if (f.reason !== undefined) bits.push(`(${f.reason})`);
  return bits.join(" ");
}

function describeTarget(id) {
  const t = state.audit.find((e) => e.input === id);
  if (t) return describe(t);
  const r = state.reads.concat(state.others).find((x) => x.input === id);
  return r ? `read ${r.transponder} at ${r.point} ${clockTime(r.t)}` : id;
}

function inRace(e) {
  const race = (e.input_fields || {}).race;
  // A refused read (unknown transponder) is shown on the Reads panel, not here.
  return e.type !== "passing" && (race === undefined || race === state.race);
}

// The inputs voided, as scoring counts them: a void that is voided (undone) voids
// nothing, and each void comes after what it names, so the latest void decides.
function undone() {
  const out = new Set();
  for (const e of [...state.audit].reverse()) {
    const f = e.input_fields || {};
    if (e.verdict === "applied" && f.action === "void" && !out.has(e.input)) out.add(f.target);
  }
  return out;
}

function undoable(e, voided) {
  const f = e.input_fields || {};
  return e.verdict === "applied" && !voided.has(e.input) && f.race === state.race &&
    (e.type === "decision" || e.type === "finish_time" || e.type === "gun");
}

// An undo: a void of an input of the audit log (a decision, a photo time, a gun), not of
// a read. `u` passes over them, so pressing it again undoes the decision before.
function isUndo(e) {
  const f = e.input_fields || {};
  return f.action === "void" && state.audit.some((t) => t.input === f.target && t.type !== "passing");
}

function renderAudit() {
  const voided = undone();
  $("audit-body").innerHTML = state.audit.filter(inRace).reverse().map((e) => {
    const effect = e.verdict === "applied" ? (voided.has(e.input) ? "applied · undone" : "applied")
      : `refused: ${e.reason || ""}`;
    const undo = undoable(e, voided) ? `<button type="button" data-undo="${esc(e.input)}">undo</button>` : "";
    return `<tr data-input="${esc(e.input)}" class="${esc(e.verdict)}"><td>${received(e.rx_us)}</td>` +
      `<td>${esc(e.source)}</td><td>${esc(describe(e))}</td><td data-testid="effect-cell">${esc(effect)}</td><td>${undo}</td></tr>`;
  }).join("");
  $("audit-older").hidden = !state.auditOlder;
}

function render() {
  const view = state.view;
  if (view) {
    $("race-name").textContent = view.race.name;
    $("official").textContent = view.race.official ? "official" : "provisional";
    $("official").dataset.state = view.race.official ? "official" : "provisional";
    renderIce(view);
    renderResults(view);
  }
  renderReads();
  renderAudit();
  const line = healthLine(state.health, clockOfDay);
  $("health").hidden = !line;
  if ($("health").textContent !== line) $("health").textContent = line;
}

// The health line: what restarted, so the officials see it where they look (not only in
// the supervisor's log). "" when nothing did. `clock` formats Unix µs as HH:MM:SS.
export function healthLine(health, clock) {
  return restartNotes(health, clock).join(" · ");
}

function clockOfDay(us) {
  return new Date(us / 1000).toTimeString().slice(0, 8);
}

// ------------------------------------------------------------------ decisions
function showEffect(text, kind) {
  $("effect").textContent = text;
  $("effect").dataset.state = kind;
}

function open(key, target) {
  const spec = ACTIONS[key];
  const view = state.view;
  if (!view) return;
  const pending = { spec, key: idempotencyKey(), bib: null, pair: null, target: null };
  let label = spec.label;
  const read = shownReads().find((x) => x.input === state.read);
  if ((spec.read || spec.voidRead) && !read) return showEffect("select a read first ([ ])", "refused");
  if (spec.voidRead) {
    pending.target = read.input;
    label += `: ${read.transponder} at ${read.point} ${clockTime(read.t)}`;
  }
  if (spec.bib) {
    if (!state.selected) return showEffect("select a skater first (↑ ↓)", "refused");
    pending.bib = state.selected;
    label += ` · ${state.selected} ${name(state.selected)}`;
  }
  if (spec.restart) {
    const row = rows(view).find(([b]) => b === state.selected);
    pending.pair = row ? row[1] : view.current_pair;
    label += ` ${pending.pair ?? ""}`;
  }
  if (spec.call) {
    const next = nextPair(view);
    if (!next) return showEffect("no pair left to call", "refused");
    pending.pair = next.pair;
    label += ` ${next.pair}`;
  }
  if (spec.undo) {
    const voided = undone();
    const entry = target ? state.audit.find((e) => e.input === target)
      : [...state.audit].reverse().find((e) => undoable(e, voided) && e.type !== "gun" && !isUndo(e));
    if (!entry) return showEffect("nothing to undo in this race", "refused");
    pending.target = entry.input;
    label += `: ${describe(entry)}`;
  }
  if (spec.read) label += ` · read ${read.transponder} ${clockTime(read.t)}`;
  state.pending = pending;
  $("action-label").textContent = label;
  $("time-field").hidden = !spec.time;
  $("chip-field").hidden = !spec.chip;
  // A reassign takes the selected read's chip (the read that shows the swap), if any.
  $("action-chip").value = spec.chip && read ? read.transponder : "";
  $("m-field").hidden = !(spec.passage && view.race.passages);
  if (spec.passage && view.race.passages) fillPassages(view, pending.bib);
  $("action-time").value = "";
  if (spec.read) {
    const t = readRaceTime(read);
    $("action-time").value = t === null ? "" : fmtTime(t, 3);
  }
  $("action-reason").value = "";
  $("action").hidden = false;
  (spec.time ? $("action-time") : spec.chip ? $("action-chip") : $("action-reason")).focus();
}

// The passage choice of a manual time: every passage, the skater's first missing one
// (else the finish) chosen. A pack race times its finish only (scoring refuses a
// manual time for another line): the finish is its one choice.
function fillPassages(view, bib) {
  const ms = view.pack ? view.race.passages.slice(-1) : view.race.passages;
  const res = view.pack ? null : view.results[bib];
  const gap = res ? ms.findIndex((_, k) => !res.passages[k] && res.passages.slice(k + 1).some(Boolean)) : -1;
  const chosen = gap >= 0 ? gap : ms.length - 1;
  $("action-m").innerHTML = ms.map((m, k) => `<option value="${esc(m)}"${k === chosen ? " selected" : ""}>` +
    `${k === ms.length - 1 ? `finish (${esc(m)} m)` : `${esc(m)} m`}</option>`).join("");
}

function close() {
  state.pending = null;
  $("action").hidden = true;
  document.activeElement?.blur();
}

function input(p) {
  const { spec } = p;
  const race = state.race;
  const reason = $("action-reason").value.trim();
  let time_us;
  if (spec.time) {
    time_us = parseTime($("action-time").value);
    if (!time_us) throw new Error("a time such as 1:15.123");
  }
  if (spec.type === "finish_time") return { type: "finish_time", race, bib: p.bib, time_us, origin: "photo" };
  if (spec.type === "call") return { type: "call", race, pair: p.pair };
  const d = { type: "decision", race, action: spec.action };
  if (p.bib !== null) d.bib = p.bib;
  if (spec.restart && p.pair !== null) d.pair = p.pair;
  if (p.target) d.target = p.target;
  if (time_us) d.time_us = time_us;
  if (spec.chip) {
    d.transponder = $("action-chip").value.trim();
    if (!d.transponder) throw new Error("the chip's transponder number");
  }
  const ms = state.view?.race.passages;
  if (spec.passage && ms && Number($("action-m").value) !== ms[ms.length - 1]) d.m = Number($("action-m").value);
  if (reason) d.reason = reason;
  return d;
}

async function send(e) {
  e.preventDefault();
  const p = state.pending;
  if (!p) return;
  let body;
  try {
    body = input(p);
  } catch (err) {
    return showEffect(`not sent: ${err.message}`, "refused");
  }
  const label = $("action-label").textContent;
  showEffect(`${label}: sending…`, "pending");
  let reply;
  try {
    reply = (await api("/feed?wait=1", {
      method: "POST", body: JSON.stringify(body),
      headers: { "Content-Type": "application/json", "Idempotency-Key": p.key },
    })).body;
  } catch {
    return showEffect(`${label}: no answer from ingest; press Enter to send again`, "pending");
  }
  if (reply.ok) {
    showEffect(`${label}: applied${reply.duplicate ? " (already sent)" : ""}`, "applied");
    close();
  } else if (reply.verdict === "pending") {
    showEffect(`${label}: stored, not judged yet: ${reply.error}`, "pending");
    close();
  } else {
    // Scoring's refusal already says so ("refused by scoring: …"); ingest's does not.
    const why = reply.verdict === "refused" ? reply.error : `refused: ${reply.error}`;
    showEffect(`${label}: ${why}`, "refused");
    close();
  }
  poll();
}

function move(delta) {
  if (!state.view) return;
  const list = rows(state.view).map(([b]) => b);
  const i = Math.max(0, Math.min(list.length - 1, list.indexOf(state.selected) + delta));
  state.selected = list[i];
  renderResults(state.view);
}

function onKey(e) {
  if (e.ctrlKey || e.metaKey || e.altKey || $("desk").hidden) return;
  const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(e.target.tagName);
  if (e.key === "Escape") {
    close();
    return;
  }
  if (typing) return;
  if (e.key === "ArrowDown" || e.key === "j") move(1);
  else if (e.key === "ArrowUp" || e.key === "k") move(-1);
  else if (e.key === "]") moveRead(1);
  else if (e.key === "[") moveRead(-1);
  else if (ACTIONS[e.key]) open(e.key);
  else return;
  e.preventDefault();
}

// ------------------------------------------------------------------ exports
async function exportAudit(format) {
  const resp = await fetch(`/api/desk/audit?format=${format}`, { headers: { Authorization: `Bearer ${state.token}` } });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(await resp.blob());
  a.download = `icetime-audit.${format}`;
  document.body.append(a);
  a.click();
  a.remove();
}

// ------------------------------------------------------------------ start lists
// The line of ``text`` where the value at a start-list ``path`` ("races[0].pairs[3].outer")
// begins; null when it cannot be found.
export function lineOf(text, path) {
  const want = [...path.matchAll(/([A-Za-z_]\w*)|\[(\d+)\]/g)].map((m) => (m[2] !== undefined ? Number(m[2]) : m[1]));
  let i = 0;
  const ws = () => { while (i < text.length && /\s/.test(text[i])) i++; };
  const str = () => {
    let j = i + 1;
    while (j < text.length && text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
    const s = JSON.parse(text.slice(i, j + 1));
    i = j + 1;
    return s;
  };
  const items = (close, each) => {
    i++;
    ws();
    if (text[i] === close) { i++; return -1; }
    for (let n = 0; ; n++) {
      const found = each(n);
      if (found !== undefined) return found;
      ws();
      if (text[i] !== ",") { i++; return -1; }
      i++;
    }
  };
  const skip = () => {
    ws();
    const c = text[i];
    if (c === '"') str();
    else if (c === "{") items("}", () => { ws(); str(); ws(); i++; skip(); });
    else if (c === "[") items("]", () => { skip(); });
    else while (i < text.length && !/[,\]}\s]/.test(text[i])) i++;
  };
  const find = (depth) => {
    ws();
    if (depth === want.length) return i;
    const w = want[depth];
    if (text[i] === "{" && typeof w === "string") {
      return items("}", () => {
        ws();
        const k = str();
        ws();
        i++;
        if (k === w) return find(depth + 1);
        skip();
        return undefined;
      });
    }
    if (text[i] === "[" && typeof w === "number") {
      return items("]", (n) => (n === w ? find(depth + 1) : (skip(), undefined)));
    }
    return -1;
  };
  try {
    const at = find(0);
    return at < 0 ? null : text.slice(0, at).split("\n").length;
  } catch {
    return null;
  }
}

function parseErrorLine(text, message) {
  const lc = /line (\d+)/.exec(message);
  if (lc) return Number(lc[1]);
  const pos = /position (\d+)/.exec(message);
  return pos ? text.slice(0, Number(pos[1])).split("\n").length : null;
}

function showLoadErrors(list) {
  $("sl-errors").innerHTML = list.map(([line, msg]) =>
    `<li class="${line === 0 ? "ok" : "error"}">${line ? `<b>line ${line}</b>: ` : ""}${esc(msg)}</li>`).join("");
}

async function loadStartList(file) {
  const text = await file.text();
  let doc;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    return showLoadErrors([[parseErrorLine(text, err.message), `not JSON: ${err.message}`]]);
  }
  // A fixture (a start list and a race script) holds its start list under "startlist".
  const prefix = doc && doc.startlist && doc.script ? "startlist." : "";
  const body = prefix ? JSON.stringify(doc.startlist) : text;
  showLoadErrors([[null, `${file.name}: loading…`]]);
  const { body: reply } = await api("/api/startlist?wait=1", {
    method: "POST", body, headers: { "Content-Type": "application/json", "Idempotency-Key": idempotencyKey() },
  });
  if (reply.ok) {
    const races = (prefix ? doc.startlist : doc).races || [];
    showLoadErrors([[0, `${file.name}: loaded (${races.length} races)${reply.duplicate ? ", already loaded" : ""}`]]);
    await loadRaces();
    return;
  }
  const path = /((?:[A-Za-z_]\w*)(?:\[\d+\])(?:\.[A-Za-z_]\w*|\[\d+\])*)/.exec(reply.error || "");
  showLoadErrors([[path ? lineOf(text, prefix + path[1]) : null, reply.error]]);
}

// ------------------------------------------------------------------ wiring
$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  $("login-error").textContent = "";
  signIn($("token").value.trim());
});
$("race").addEventListener("change", (e) => chooseRace(e.target.value));
$("action").addEventListener("submit", send);
$("action-cancel").addEventListener("click", close);
$("results-body").addEventListener("click", (e) => {
  const tr = e.target.closest("tr[data-bib]");
  if (tr) { state.selected = tr.dataset.bib; renderResults(state.view); }
});
$("reads-body").addEventListener("click", (e) => {
  const tr = e.target.closest("tr[data-input]");
  if (tr) { state.read = tr.dataset.input; renderReads(); }
});
$("reads-others-toggle").addEventListener("click", () => {
  state.showOthers = !state.showOthers;
  renderReads();
});
$("audit-body").addEventListener("click", (e) => {
  const b = e.target.closest("button[data-undo]");
  if (b) open("u", b.dataset.undo);
});
$("audit-older").addEventListener("click", () => loadOlderAudit());
// Scrolled to the end of the log: the older entries follow.
document.querySelector("section.audit").addEventListener("scroll", (e) => {
  const el = e.currentTarget;
  if (el.scrollTop + el.clientHeight >= el.scrollHeight - 40) loadOlderAudit();
});
$("export-csv").addEventListener("click", () => exportAudit("csv"));
$("export-json").addEventListener("click", () => exportAudit("json"));
$("sl-file").addEventListener("change", (e) => { if (e.target.files[0]) loadStartList(e.target.files[0]); });
document.addEventListener("keydown", onKey);
if (state.token) signIn(state.token);
