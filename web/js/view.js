// The client-side fold: how a race view follows the event stream.
// Mirrors icetime/view.py; tests/test_fold.py folds every fixture with both (this one in
// Chromium) and checks each against the engine's view.
// Story lines a view keeps (the engine keeps the same number).
export const STORY_LOG_MAX = 50;

export function applyEvent(view, ev) {
  if (ev.type === "revision") return structuredClone(ev.view);
  // A refused input changed nothing (the desk shows it; the fold ignores it).
  if (!view || ev.type === "refused") return view;
  if (ev.type === "wave_start") {
    view.waves[String(ev.wave)].run = ev.run;
    view.counts = ev.counts;
    return view;
  }
  if (ev.type === "course_passage") return coursePassage(view, ev);
  // A pack race's gun carries the race-wide state whole; a crossing, what it changed.
  if (ev.type === "start") view.pack = ev.pack;
  else if (ev.pack) packChange(view.pack, ev.bib, ev.pack, view.start_order);
  if (ev.type === "pair_start") {
    view.current_pair = ev.pair;
    view.on_ice[String(ev.pair)] = {
      pair: ev.pair, attempt: ev.attempt, clock_origin_us: ev.clock_origin_us, rate: ev.rate,
    };
  } else if (ev.type === "split") {
    const result = view.results[ev.bib];
    result.splits = result.splits.filter((s) => s.m !== ev.split.m).concat([ev.split])
      .sort((a, b) => a.m - b.m);
  } else if (ev.type === "passage" || ev.type === "finish") {
    if (ev.stories.length) view.stories = view.stories.concat(ev.stories).slice(-STORY_LOG_MAX);
    const result = view.results[ev.bib];
    result.passages[ev.row.k] = ev.row;
    if (ev.type === "finish") {
      result.final = ev.final;
      // A pack finish whose official time put her ahead of finishers before her.
      for (const [bib, row] of Object.entries(ev.finish_rows || {})) {
        view.results[bib].passages[row.k] = row;
      }
      // A mass start's final sprint points she took from them.
      for (const [bib, points] of Object.entries(ev.sprint_points_moved || {})) {
        view.pack.sprint_points[bib] = points;
      }
      if (ev.ranked) ranked(view.classification, ev.bib, ev.ranked);
      else view.classification = ev.classification;
      if (ev.pair_done) delete view.on_ice[String(ev.pair)];
    }
  }
  return view;
}

// Pack state fields a crossing's event carries whole (they do not grow with the field).
const PACK_WHOLE = ["run", "laps_to_go", "bell", "sprints", "breakaway", "attempt", "in_field",
  "warning", "late_exchange"];

// A crossing by bib: her move in the order, her crossings, sprint points and (relays)
// active skater and exchanges; who stopped; the small fields whole.
function packChange(pack, bib, change, startOrder) {
  pack.order.splice(change.move.from, 1);
  pack.order.splice(change.move.to, 0, bib);
  pack.crossings[bib] = change.crossings;
  if (pack.sprint_points !== null) pack.sprint_points[bib] = change.sprint_points;
  for (const field of PACK_WHOLE) if (field in change) pack[field] = change[field];
  if ("active" in change) {
    pack.active[bib] = change.active;
    pack.exchanges[bib] = change.exchanges;
  }
  const at = pack.stopped.indexOf(bib);
  if (at >= 0) pack.stopped.splice(at, 1); // crossing again: she is going
  if (change.now_stopped.length) {
    // The stopped are listed in start order.
    const place = new Map(startOrder.map((b, i) => [b, i]));
    pack.stopped = pack.stopped.concat(change.now_stopped)
      .sort((a, b) => place.get(a) - place.get(b));
  }
}

// A finisher's place in the classification: inserted at ranked.at; the ranked.tied rows
// right behind her keep their rank, every other row behind her goes down one; at the
// head, everyone's behind is measured from her.
function ranked(cls, bib, r) {
  for (const col of ["bib", "rank", "t", "behind", "sprint_points"]) {
    if (col in cls) cls[col].splice(r.at, 0, col === "bib" ? bib : r[col]);
  }
  for (let j = r.at + 1 + r.tied; j < cls.rank.length; j++) cls.rank[j] += 1;
  if (r.at === 0) cls.behind = cls.t.map((t) => t - r.t);
}

// A marathon passage: the skater's passage at the point, and her place in that point's
// order (ev.at, after taking out an earlier passage of hers there). One splice: the
// cost does not grow with the field beyond a memmove.
function coursePassage(view, ev) {
  const k = ev.row.k;
  let result = view.results[ev.bib];
  if (!result) {
    result = view.results[ev.bib] = {
      t: new Array(view.race.course.length).fill(null), status: null, manual: [],
    };
  }
  if (ev.at !== null) {
    const order = view.order[k];
    if (result.t[k] !== null) order.splice(order.indexOf(ev.bib), 1);
    order.splice(ev.at, 0, ev.bib);
  }
  result.t[k] = ev.row.t;
  view.counts = ev.counts;
  return view;
}

// Times are integer microseconds; shown truncated (never rounded) to hundredths.
// A passage's lap time (µs), or null after a missed passage: the time since the last
// one recorded spans two laps, which nobody reads as a lap time (docs/results.md).
export function lapTime(p) { return p.missing && p.missing.length ? null : p.lap_time; }

export function fmtTime(us, digits = 2) {
  if (us === null || us === undefined) return "";
  if (us < 0) return "-" + fmtTime(-us, digits);
  const unit = 10 ** (6 - digits);
  const ticks = Math.floor(us / unit);
  const frac = String(ticks % 10 ** digits).padStart(digits, "0");
  const whole = Math.floor(ticks / 10 ** digits);
  const m = Math.floor(whole / 60), s = whole % 60;
  return m ? `${m}:${String(s).padStart(2, "0")}.${frac}` : `${s}.${frac}`;
}

// A time that ranks a skater (a final time, a classification time), truncated to
// hundredths; to thousandths where they decide the rank: when another ranked time
// (``others``, µs) is equal to the hundredth but not to the thousandth (DOMAIN.md 1.4).
export function fmtRanked(us, others, digits = 2) {
  if (us === null || us === undefined) return "";
  const h = Math.floor(us / 10000);
  const tied = digits < 3 && others.some((o) => o !== us && o !== null && o !== undefined &&
    Math.floor(o / 10000) === h);
  return fmtTime(us, tied ? 3 : digits);
}

// A final time of this race, against the classification's times.
export function fmtFinal(view, us, digits = 2) {
  return fmtRanked(us, view.classification ? view.classification.t : [], digits);
}

// Every skater's time at passage k (µs; undefined where she has none): what ranks her there.
export function passageTimes(view, k) {
  return Object.values(view.results).map((r) => r.passages[k] && r.passages[k].t);
}

// A gap under one hundredth that is not zero is shown in thousandths ("+0.006"):
// thousandths decided it (same rule as icetime/timefmt.py format_diff).
export function fmtGap(us) {
  if (us === null || us === undefined) return "";
  const a = Math.abs(us);
  return (us >= 0 ? "+" : "-") + fmtTime(a, a > 0 && a < 10000 ? 3 : 2);
}

// Any value from a start list or an input, made safe to put into HTML: text, and
// attribute values in either kind of quotes (data-*, title, class). Every value a page
// puts into markup goes through here; CSP (no inline script) is the second line.
const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;", "`": "&#96;" };
export function esc(s) {
  return String(s ?? "").replace(/[&<>"'`]/g, (c) => ESCAPES[c]);
}

// A link to a page about one race: the id as a URL parameter, escaped for an attribute.
export function raceHref(page, race) {
  return esc(`/${page}?race=${encodeURIComponent(race)}`);
}

// What the story feed does not say by itself: a restart called (each voided attempt) and
// the results declared official; story lines, newest last, for every page to show.
export function statusStories(view, t) {
  const lines = (view.voided || []).map((v) => `${t("Restart")} (${t("attempt")} ${v.attempt}): ${v.reason}`);
  if (view.race.official) lines.push(t("Results official"));
  return lines;
}

// What restarted, from a /api/health answer, one text each (the desk's health line, the
// monitor's chips), so a crash and rebuild show where the officials and the commentator
// look, not only in the supervisor's log: scoring's last rebuild after a restart, and each
// service the supervisor restarted. [] when nothing did (a first start is no restart).
// `clock` formats Unix µs as the time of day; `tr(text, vars)` translates a text and
// fills its {placeholders} (default: English).
export function restartNotes(health, clock, tr = fill) {
  if (!health) return [];
  const notes = [];
  const sc = health.scoring || {};
  const rb = sc.last_rebuild;
  if (sc.rebuilds > 0 && rb) {
    const inputs = rb.inputs === 1 ? tr("1 input") : tr("{n} inputs", { n: rb.inputs });
    const text = rb.source === "checkpoint"
      ? "scoring restarted {at} (rebuilt from checkpoint, {inputs}, {s} s)"
      : "scoring restarted {at} (rebuilt from the start, {inputs}, {s} s)";
    notes.push(tr(text, { at: clock(rb.at_us), inputs, s: rb.seconds.toFixed(1) }));
  }
  for (const [name, r] of Object.entries(health.service_restarts || {}).sort()) {
    notes.push(tr("{name} restarted by the supervisor {n}× (last {at}, exit code {code})",
      { name, n: r.restarts, at: clock(r.at_us), code: r.exit_code }));
  }
  return notes;
}

function fill(text, vars = {}) {
  return text.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? vars[k] : m));
}
