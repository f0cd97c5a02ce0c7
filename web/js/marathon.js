// Marathons (thousands of skaters, timing points along a course): what the fans' page,
// the board and the monitor show instead of pairs or a pack. Built for 10,000 skaters:
// nothing here walks the field per event. Drawing is coalesced to one per frame; the
// long list is virtualised (only the rows in sight are in the DOM); a skater is found
// by a scan of a search index built once per snapshot; a rank is a binary search in the
// point's order (view.order[k], fastest first, kept by the fold).
import { ordinal, t } from "./i18n.js";
import { esc } from "./view.js";

export const isMarathon = (view) => Boolean(view && view.race.kind === "marathon");

// A marathon time, truncated: 3:07:45 (hours), 7:45 (minutes), never rounded up.
export function fmtClock(us) {
  if (us === null || us === undefined) return "";
  const s = Math.floor(Math.max(0, us) / 1e6);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

// The furthest timing point (index) a result has a time at; -1 for none.
export function furthest(res) {
  if (!res) return -1;
  for (let k = res.t.length - 1; k >= 0; k--) if (res.t[k] !== null) return k;
  return -1;
}

// Rank of a skater at point k: skaters strictly faster there, plus one (null: no time
// there, or a status). A binary search in the point's order: O(log n).
export function rankAt(view, bib, k) {
  const res = view.results[bib];
  if (!res || res.status || res.t[k] === null) return null;
  const order = view.order[k], mine = res.t[k];
  let lo = 0, hi = order.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (view.results[order[mid]].t[k] < mine) lo = mid + 1; else hi = mid;
  }
  return lo + 1;
}

// The classification, first `limit` places: finishers by time, then the others by the
// furthest point reached and their time there (as the engine's classification()).
// Equal times at the same point share a place. [{bib, k, t, place}]
export function classification(view, limit = Infinity) {
  const out = [];
  for (let k = view.order.length - 1; k >= 0 && out.length < limit; k--) {
    let prev = null;
    for (const bib of view.order[k]) {
      const res = view.results[bib];
      if (furthest(res) !== k) continue;
      const tk = res.t[k];
      const place = prev && prev.t === tk ? prev.place : out.length + 1;
      prev = { bib, k, t: tk, place };
      out.push(prev);
      if (out.length >= limit) break;
    }
  }
  return out;
}

// Search: names, clubs and nations folded (case, accents: "muller" finds "Müller").
const fold = (s) => String(s).normalize("NFD").replace(/[\u0300-\u036f]/g, "").toLowerCase();
const indexes = new WeakMap();

function searchIndex(view) {
  let idx = indexes.get(view.skaters);
  if (!idx) {
    idx = Object.values(view.skaters).map((s) => ({
      bib: s.bib, name: fold(s.name), words: ` ${fold(s.name)} ${fold(s.club)} ${fold(s.nation)}`,
    }));
    indexes.set(view.skaters, idx);
  }
  return idx;
}

// Up to `limit` skaters for a query: the bib itself first, then the skaters whose name
// starts with it, then the others where every word of the query starts a word of the
// name, club or nation, or the bib ("de vries 41", "sabine muller", "giethoorn"). One scan.
export function search(view, query, limit = 20) {
  const raw = query.trim(), q = fold(raw);
  if (!q) return [];
  const exact = view.skaters[raw] ? [raw] : [];
  const terms = q.split(/\s+/);
  const first = [], rest = [];
  for (const e of searchIndex(view)) {
    if (e.bib === raw || !terms.every((w) => e.words.includes(" " + w) || e.bib.startsWith(w))) continue;
    if (e.name.startsWith(q)) first.push(e.bib); else if (rest.length < limit) rest.push(e.bib);
    if (first.length >= limit) break;
  }
  return [...exact, ...first, ...rest].slice(0, limit);
}

// A virtualised list: a scroll box whose inner height is rows × rowPx, holding only the
// rows in sight (plus a few). draw() is cheap: a slice of the items, never the whole.
export class VirtualList {
  constructor(box, rowPx, renderRow, overscan = 8) {
    this.box = box;
    this.rowPx = rowPx;
    this.renderRow = renderRow;
    this.overscan = overscan;
    this.items = [];
    box.classList.add("vlist");
    box.innerHTML = `<div class="vspace"></div><div class="vrows" role="list"></div>`;
    this.space = box.firstElementChild;
    this.rows = box.lastElementChild;
    box.addEventListener("scroll", () => this.draw(), { passive: true });
  }

  setItems(items) {
    this.items = items;
    this.space.style.height = `${items.length * this.rowPx}px`;
    this.draw();
  }

  draw() {
    const top = this.box.scrollTop, height = this.box.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / this.rowPx) - this.overscan);
    const last = Math.min(this.items.length, Math.ceil((top + height) / this.rowPx) + this.overscan);
    this.rows.style.transform = `translateY(${first * this.rowPx}px)`;
    this.rows.innerHTML = this.items.slice(first, last).map((it, i) => this.renderRow(it, first + i)).join("");
  }
}

// Draw at most once a frame, with the newest view.
export function everyFrame(draw) {
  let pending = false, latest = null;
  return (view) => {
    latest = view;
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; draw(latest); });
  };
}

const km = (m) => `${(m / 1000).toLocaleString("en", { maximumFractionDigits: 1 })} km`;

// The live count: waves started, skaters started, past each point, finished, out.
export function countsHtml(view, compact = false) {
  const c = view.counts, course = view.race.course;
  const waves = Object.keys(view.waves).length;
  const cells = [[t("Waves"), `${c.waves}/${waves}`], [t("Started"), c.started.toLocaleString("en")]];
  if (!compact) {
    for (let k = 1; k < course.length - 1; k++) cells.push([esc(course[k].point), c.passed[k].toLocaleString("en")]);
  }
  cells.push([t("Finished"), c.finished.toLocaleString("en")]);
  if (c.status) cells.push([t("Out"), c.status.toLocaleString("en")]);
  return cells.map(([label, n]) =>
    `<span class="mcount"><span class="mlabel">${label}</span> <b>${n}</b></span>`).join("");
}

function where(view, row) {
  const course = view.race.course;
  return row.k === course.length - 1 ? t("Finish") : `${esc(course[row.k].point)}`;
}

// One classification row (fans' leaders, the board, the monitor's list).
function rowHtml(view, row, { club = false, tag = "li" } = {}) {
  const sk = view.skaters[row.bib];
  return `<${tag} class="mrow" data-bib="${esc(row.bib)}" tabindex="0" role="listitem">` +
    `<span class="mpos">${row.place}</span><span class="mbib">${esc(row.bib)}</span>` +
    `<span class="mname">${esc(sk.name)}</span><span class="mnat">${esc(sk.nation)}</span>` +
    (club ? `<span class="mclub">${esc(sk.club)}</span>` : "") +
    `<span class="mwhere">${where(view, row)}</span><span class="mtime">${fmtClock(row.t)}</span></${tag}>`;
}

// A skater's card: who, her wave's running clock, and every timing point with her
// time and rank there (a point with no read is a visible gap).
export function skaterCard(view, bib) {
  const sk = view.skaters[bib];
  if (!sk) return `<p class="idle">${t("No skater with bib {bib}", { bib: esc(bib) })}</p>`;
  const res = view.results[bib], wave = view.waves[String(sk.wave)];
  const last = furthest(res);
  const rows = view.race.course.map((p, k) => {
    const tk = res ? res.t[k] : null, rank = rankAt(view, bib, k);
    const gap = tk === null && k < last;
    // The metres last: a phone hides the last column, and the rank matters more.
    return `<tr class="${k === last ? "mlast" : ""}${gap ? " mgap" : ""}"><td>${esc(p.point)}</td>` +
      `<td class="num">${tk === null ? (gap ? t("no read") : "") : fmtClock(tk)}</td>` +
      `<td class="num">${rank ? ordinal(rank) : ""}</td><td class="num">${km(p.m)}</td></tr>`;
  }).join("");
  const state = res && res.status ? `<span class="code">${esc(res.status)}</span>`
    : last === view.race.course.length - 1 ? `<span class="mdone">${t("Finished")} ${fmtClock(res.t[last])}</span>`
      : wave && wave.run ? `<span class="mclock" data-wave="${esc(sk.wave)}"></span>` : `<span class="idle">${t("Not started")}</span>`;
  return `<div class="mcard" data-testid="marathon-card-${esc(bib)}"><div class="who"><span class="name">${esc(sk.name)}</span>` +
    ` <span class="nation">${esc(sk.nation)} · ${t("bib")} ${esc(bib)} · ${esc(sk.club)} · ${esc(wave ? wave.name || `${t("Wave")} ${sk.wave}` : "")}</span></div>` +
    `<div class="mstate">${state}</div>` +
    `<table class="passages"><thead><tr><th>${t("Point")}</th><th class="num">${t("Time")}</th><th class="num">#</th><th class="num">km</th></tr></thead><tbody>${rows}</tbody></table></div>`;
}

// Running clocks of the waves (the followed skater's card): her wave's gun to now.
export function tickWaveClocks(live) {
  const view = live.view;
  if (!isMarathon(view)) return;
  for (const el of document.querySelectorAll(".mclock[data-wave]")) {
    const wave = view.waves[el.dataset.wave];
    const text = wave && wave.run ? fmtClock(live.raceElapsedUs(wave.run)) : "";
    if (el.textContent !== text) el.textContent = text;
  }
}

// ------------------------------------------------------------------ fans' page
// Find a skater by name or bib; follow her passages live (?bib= or remembered per race).
export function mountFans(main, live, race) {
  const params = new URLSearchParams(location.search);
  let follow = params.get("bib") ?? localStorage.getItem(`icetime.follow.${race}`) ?? "";
  main.classList.add("marathon");
  main.innerHTML = `
  <section class="mfind" aria-labelledby="mfind-title">
    <h2 id="mfind-title">${t("Find a skater")}</h2>
    <input type="search" id="msearch" data-testid="marathon-search" autocomplete="off"
      placeholder="${esc(t("Name, club or bib"))}" aria-label="${esc(t("Name, club or bib"))}">
    <ul id="mhits" class="mhits" data-testid="marathon-hits" role="list"></ul>
  </section>
  <section class="mfollow" aria-labelledby="mfollow-title">
    <h2 id="mfollow-title">${t("Following")}</h2>
    <div id="mcard" data-testid="marathon-follow" aria-live="polite"></div>
  </section>
  <section class="mcounts-box" aria-labelledby="mcounts-title">
    <h2 id="mcounts-title">${t("On the course")}</h2>
    <div id="mcounts" class="mcounts" data-testid="marathon-counts"></div>
  </section>
  <section class="mtop-box" aria-labelledby="mtop-title">
    <h2 id="mtop-title">${t("Classification")}</h2>
    <ol id="mtop" class="mtop" data-testid="marathon-top"></ol>
  </section>`;
  const $ = (id) => main.querySelector(`#${id}`);
  const hits = () => {
    const view = live.view;
    const found = view ? search(view, $("msearch").value) : [];
    $("mhits").innerHTML = found.map((bib) => {
      const sk = view.skaters[bib];
      return `<li tabindex="0" data-bib="${esc(bib)}" class="mhit"><span class="mbib">${esc(bib)}</span> ` +
        `<span class="name">${esc(sk.name)}</span> <span class="nation">${esc(sk.nation)} · ${esc(sk.club)}</span></li>`;
    }).join("");
  };
  const draw = (view) => {
    if (!view) return;
    $("mcard").innerHTML = follow ? skaterCard(view, follow) : `<p class="idle">${t("Type a name or a bib above")}</p>`;
    $("mfollow-title").textContent = follow && view.skaters[follow] ? `${t("Following")} ${view.skaters[follow].short}` : t("Following");
    $("mcounts").innerHTML = countsHtml(view);
    $("mtop").innerHTML = classification(view, 10).map((row) => rowHtml(view, row)).join("");
  };
  const choose = (bib) => {
    follow = bib;
    localStorage.setItem(`icetime.follow.${race}`, bib);
    $("msearch").value = "";
    $("mhits").innerHTML = "";
    draw(live.view);
  };
  $("msearch").addEventListener("input", hits);
  $("msearch").addEventListener("keydown", (e) => {
    const first = $("mhits").querySelector("[data-bib]");
    if (e.key === "Enter" && first) { e.preventDefault(); choose(first.dataset.bib); }
  });
  for (const id of ["mhits", "mtop"]) {
    $(id).addEventListener("click", (e) => {
      const li = e.target.closest("[data-bib]");
      if (li) choose(li.dataset.bib);
    });
    $(id).addEventListener("keydown", (e) => {
      const li = e.target.closest("[data-bib]");
      if (li && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); choose(li.dataset.bib); }
    });
  }
  return everyFrame(draw);
}

// ------------------------------------------------------------------ board
// The arena: the top of the classification and the live count, nothing that scrolls.
export function boardHtml(view, rows) {
  return `<div class="mboard" data-testid="board-marathon">` +
    `<div class="mcounts" data-testid="board-counts">${countsHtml(view, true)}</div>` +
    `<ol class="mtop">${classification(view, rows).map((row) => rowHtml(view, row)).join("")}</ol></div>`;
}

// ------------------------------------------------------------------ monitor
const LIST_EVERY_MS = 250;
// Every skater in one virtualised list (classification order), a search that jumps to
// a skater, and her card beside the list.
export function mountMonitor(main, live) {
  let selected = null;
  main.classList.add("marathon");
  main.innerHTML = `
  <section class="mlist-box" aria-label="${esc(t("Classification"))}">
    <div class="mbar"><div id="mcounts" class="mcounts" data-testid="marathon-counts"></div>
    <input type="search" id="msearch" data-testid="marathon-search" autocomplete="off"
      placeholder="${esc(t("Name, club or bib"))}" aria-label="${esc(t("Name, club or bib"))}"></div>
    <div id="mlist" class="mlist" data-testid="marathon-list" tabindex="0"></div>
  </section>
  <aside><section><h2>${t("Skater")}</h2><div id="mcard" data-testid="marathon-follow"></div></section></aside>`;
  const $ = (id) => main.querySelector(`#${id}`);
  const list = new VirtualList($("mlist"), 28, (row) => rowHtml(live.view, row, { club: true, tag: "div" })
    .replace('class="mrow"', `class="mrow${row.bib === selected ? " selected" : ""}"`));
  let listAt = 0, later = null;
  const draw = (view) => {
    if (!view) return;
    $("mcounts").innerHTML = countsHtml(view);
    // The whole classification is one pass over the passages: a few times a second is
    // enough for a list nobody reads faster (and the last change is drawn after it).
    const wait = LIST_EVERY_MS - (performance.now() - listAt);
    if (wait <= 0 || !list.items.length) {
      listAt = performance.now();
      list.setItems(classification(view));
    } else if (!later) {
      later = setTimeout(() => { later = null; schedule(live.view); }, wait);
    }
    $("mcard").innerHTML = selected ? skaterCard(view, selected) : "";
  };
  const schedule = everyFrame(draw);
  const pick = (bib) => {
    selected = bib;
    const at = list.items.findIndex((r) => r.bib === bib);
    if (at >= 0) $("mlist").scrollTop = at * list.rowPx - $("mlist").clientHeight / 2;
    list.draw();
    $("mcard").innerHTML = skaterCard(live.view, bib);
  };
  $("msearch").addEventListener("input", () => {
    const found = live.view ? search(live.view, $("msearch").value, 1) : [];
    if (found.length) pick(found[0]);
  });
  $("mlist").addEventListener("click", (e) => {
    const row = e.target.closest("[data-bib]");
    if (row) pick(row.dataset.bib);
  });
  return schedule;
}
