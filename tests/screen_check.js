// Run inside a page by tests/test_screens.py: what on this screen would not go on air.
// Returns a list of problems (strings); empty when the screen is fine.
//   fixed: the screen never scrolls (board, overlay): nothing may reach below the viewport.
//   colours: judge the contrast too.
// Checks: the page scrolling sideways; any element reaching past the viewport; any box whose
// content is wider (or, on a fixed screen, taller) than the box (clipped or spilling text, an
// ellipsis); text whose contrast with what is behind it is below WCAG AA (4.5:1, 3:1 for
// large text); text with nothing behind it on a transparent page (the overlay over video);
// a value left blank ("–"); a select too narrow for its choice; a state that says something
// is wrong in the colour of a good one (green); two ranked times shown alike that are not
// alike (a tie in hundredths decided by thousandths must show them); chart labels touching
// a point, a line, another label, or the chart's edge.
//   problems: the texts (every language) that say the data or the link is not good.
//   whole: a selector of tables whose every cell must be in sight (the desk's reads and
//     audit): no cell hidden past the edge of a box that scrolls sideways, and no word
//     broken in the middle across two lines.
([fixed, colours, problems, whole]) => {
  const out = [];
  const W = innerWidth, H = innerHeight;
  // What Chromium leaves for a select's arrow: an auto-width select is this much wider
  // than its longest option's text (measured: 20.8 px at 15 px).
  const SELECT_ARROW = 20;
  const label = (el) => {
    const id = el.dataset.testid || el.id;
    const cls = typeof el.className === "string" && el.className ? "." + el.className.trim().split(/\s+/).join(".") : "";
    return `${el.tagName.toLowerCase()}${id ? "#" + id : ""}${cls} "${(el.textContent || "").trim().slice(0, 40)}"`;
  };
  const de = document.documentElement;
  if (de.scrollWidth > W + 1) out.push(`page scrolls sideways: ${de.scrollWidth} px wide in ${W}`);
  if (fixed && de.scrollHeight > H + 1) out.push(`page scrolls down: ${de.scrollHeight} px tall in ${H}`);

  const shown = (el, cs) => cs.display !== "none" && cs.visibility !== "hidden" && el.getClientRects().length > 0;
  // Inside a box that scrolls on purpose (the monitor's grid, a story list): judged by that box.
  const scroller = (cs) => /(auto|scroll)/.test(cs.overflowX) || /(auto|scroll)/.test(cs.overflowY);
  const inScroller = (el) => {
    for (let p = el.parentElement; p; p = p.parentElement) {
      if (p === document.body || p === de) return false;
      if (scroller(getComputedStyle(p))) return true;
    }
    return false;
  };

  // Colours: rgb(a) strings to [r, g, b, a]; what shows behind an element, composited.
  const rgba = (s) => {
    const m = s.match(/rgba?\(([^)]+)\)/);
    if (!m) return [0, 0, 0, 0];
    const v = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
    return [v[0], v[1], v[2], v.length > 3 ? v[3] : 1];
  };
  const over = (top, under) => {
    const a = top[3] + under[3] * (1 - top[3]);
    if (!a) return [0, 0, 0, 0];
    return [0, 1, 2].map((i) => (top[i] * top[3] + under[i] * under[3] * (1 - top[3])) / a).concat([a]);
  };
  const seen = new Map();
  const behind = (el) => {
    if (seen.has(el)) return seen.get(el);
    const layers = [];
    for (let p = el; p; p = p.parentElement) {
      const c = rgba(getComputedStyle(p).backgroundColor);
      if (c[3] > 0) layers.push(c);
      if (c[3] >= 1) break;
    }
    let bg = [0, 0, 0, 0];
    for (const c of layers.reverse()) bg = over(c, bg);
    seen.set(el, bg);
    return bg;
  };
  const lum = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
  };
  const ratio = (a, b) => { const x = lum(a), y = lum(b); return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05); };

  for (const el of document.body.querySelectorAll("*")) {
    if (el.closest("svg") && el.tagName.toLowerCase() !== "svg") continue;
    const cs = getComputedStyle(el);
    if (!shown(el, cs)) continue;
    const r = el.getBoundingClientRect();
    const nested = inScroller(el);
    if (!nested && r.width && (r.right > W + 1 || r.left < -1)) out.push(`past the viewport's side (${Math.round(r.left)}..${Math.round(r.right)} of ${W}): ${label(el)}`);
    if (fixed && r.height && (r.bottom > H + 1 || r.top < -1)) out.push(`outside the viewport (${Math.round(r.top)}..${Math.round(r.bottom)} of ${H}): ${label(el)}`);
    if (cs.display !== "inline" && !scroller(cs) && el.clientWidth) {
      if (el.scrollWidth > el.clientWidth + 1) out.push(`content wider than its box (${el.scrollWidth} > ${el.clientWidth}${cs.textOverflow === "ellipsis" ? ", ellipsis" : ""}): ${label(el)}`);
      else if ((fixed || cs.overflowY !== "visible") && el.scrollHeight > el.clientHeight + 2) out.push(`content taller than its box (${el.scrollHeight} > ${el.clientHeight}): ${label(el)}`);
    }
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!colours || !own || el.tagName === "svg" || parseFloat(cs.opacity) === 0) continue;
    const bg = behind(el);
    if (bg[3] < 0.5) { out.push(`text with nothing behind it: ${label(el)}`); continue; }
    const solid = over(bg, [0, 0, 0, 1]);
    const fg = over(rgba(cs.color), solid);
    const px = parseFloat(cs.fontSize), bold = Number(cs.fontWeight) >= 700;
    const need = px >= 24 || (bold && px >= 18.66) ? 3 : 4.5;
    const got = ratio(fg, solid);
    if (got < need) out.push(`contrast ${got.toFixed(2)} < ${need}: ${label(el)} (${cs.color} on ${bg.map(Math.round)})`);
  }
  // A name or a time that is made to fit (web/js/fit.js) is never blank.
  for (const el of document.querySelectorAll("[data-fit]")) {
    if (el.getClientRects().length && !el.textContent.trim() && el.dataset.full !== undefined) {
      out.push(`blank where a text was fitted: ${label(el)}`);
    }
  }
  // A name cell that holds a name shows one (a trial found every name of the fans'
  // classification hidden at 375 px: both the full and the short name were hidden).
  for (const el of document.querySelectorAll(".who, .name")) {
    if (el.getClientRects().length && el.textContent.trim() && !el.innerText.trim()) {
      out.push(`a name is there but none is shown: ${label(el)}`);
    }
  }
  // A chart's texts: clear of its points, its lines and each other (a pixel apart at
  // least), and inside the chart.
  const meets = (a, b, pad = 0) => a.left - pad < b.right && b.left < a.right + pad && a.top - pad < b.bottom && b.top < a.bottom + pad;
  const crosses = ([x1, y1, x2, y2], r) => {
    let lo = 0, hi = 1;
    const dx = x2 - x1, dy = y2 - y1;
    for (const [p, q] of [[-dx, x1 - r.left], [dx, r.right - x1], [-dy, y1 - r.top], [dy, r.bottom - y1]]) {
      if (p === 0) { if (q < 0) return false; continue; }
      const u = q / p;
      if (p < 0) { if (u > hi) return false; lo = Math.max(lo, u); } else { if (u < lo) return false; hi = Math.min(hi, u); }
    }
    return true;
  };
  for (const svg of document.querySelectorAll("svg")) {
    if (!svg.getClientRects().length) continue;
    const box = svg.getBoundingClientRect();
    const dots = [...svg.querySelectorAll("circle")].map((c) => c.getBoundingClientRect());
    const segments = [];
    for (const ln of svg.querySelectorAll("polyline, line")) {
      const m = ln.getScreenCTM();
      const pts = ln.tagName === "line"
        ? [[ln.x1.baseVal.value, ln.y1.baseVal.value], [ln.x2.baseVal.value, ln.y2.baseVal.value]]
        : [...ln.points].map((p) => [p.x, p.y]);
      const on = pts.map(([x, y]) => [m.a * x + m.c * y + m.e, m.b * x + m.d * y + m.f]);
      for (let i = 1; i < on.length; i++) segments.push([...on[i - 1], ...on[i]]);
    }
    const texts = [...svg.querySelectorAll("text")].filter((t) => t.textContent.trim())
      .map((t) => [t, t.getBoundingClientRect()]).filter(([, r]) => r.width);
    texts.forEach(([t, a], i) => {
      if (a.left < box.left - 1 || a.right > box.right + 1 || a.top < box.top - 1 || a.bottom > box.bottom + 1) {
        out.push(`chart text past the chart's edge: ${label(t)}`);
      }
      if (dots.some((b) => meets(a, b, 1))) out.push(`chart label over a point: ${label(t)}`);
      const grown = { left: a.left - 1, right: a.right + 1, top: a.top - 1, bottom: a.bottom + 1 };
      if (segments.some((sg) => crosses(sg, grown))) out.push(`chart text touching a line: ${label(t)}`);
      for (const [u, b] of texts.slice(i + 1)) {
        if (meets(a, b, 1)) out.push(`chart texts touching each other: ${label(t)} and ${label(u)}`);
      }
    });
  }
  // A value left blank: a figure shown as a dash ("latency –").
  for (const el of document.body.querySelectorAll("*")) {
    const own = [...el.childNodes].filter((n) => n.nodeType === 3).map((n) => n.textContent).join("").trim();
    if (own && /(^|\s)[–—-]$/.test(own) && el.getClientRects().length) out.push(`a value left blank: ${label(el)}`);
  }
  // A state that says something is wrong must not look right: no problem text in green
  // (as text, or on a green ground).
  const green = (c) => {
    const [r, g, b] = c.map((v) => v / 255);
    const max = Math.max(r, g, b), min = Math.min(r, g, b);
    return max === g && max - min > 0.15 && g - Math.max(r, b) > 0.08;
  };
  const bad = (problems || []).map((p) => new RegExp(p.split(/\{\w+\}/).map((x) => x.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join(".+?"), "i"));
  for (const el of document.body.querySelectorAll("*")) {
    const text = el.textContent.trim();
    if (!text || !el.getClientRects().length || el.children.length || !bad.some((re) => re.test(text))) continue;
    const cs = getComputedStyle(el), bg = over(behind(el), [0, 0, 0, 1]);
    if (green(bg) || green(rgba(cs.color))) out.push(`a problem shown in the colour of a good state: ${label(el)}`);
  }
  // Ranked times (data-t, µs) shown alike must be alike: the thousandths that decide a
  // tie in hundredths are shown (DOMAIN.md 1.4).
  const shownAs = new Map();
  for (const el of document.querySelectorAll("[data-t]")) {
    if (!el.getClientRects().length || !el.textContent.trim()) continue;
    const key = el.textContent.trim();
    if (!shownAs.has(key)) shownAs.set(key, new Set());
    shownAs.get(key).add(el.dataset.t);
  }
  for (const [text, values] of shownAs) {
    if (values.size > 1) out.push(`different times shown alike: ${text} is ${[...values].map((v) => (v / 1e6).toFixed(3)).join(" and ")}`);
  }
  // A select shows its choice whole (a trial found the live page's Race select showing
  // "Women 1000 m · Divisi"): its text fits between the paddings and the arrow.
  const pen = document.createElement("canvas").getContext("2d");
  for (const sel of document.querySelectorAll("select")) {
    const cs = getComputedStyle(sel);
    if (!shown(sel, cs) || sel.selectedIndex < 0) continue;
    pen.font = `${cs.fontStyle} ${cs.fontWeight} ${cs.fontSize} ${cs.fontFamily}`;
    const text = sel.options[sel.selectedIndex].text;
    const room = sel.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight) - SELECT_ARROW;
    if (pen.measureText(text).width > room + 1) out.push(`select cuts its choice (${Math.round(pen.measureText(text).width)} px of text in ${Math.round(room)}): ${label(sel)} "${text}"`);
  }
  if (whole) wholeCells(whole, out, label, scroller);
  return out;

  // A cell past the visible edge of the box that scrolls it sideways is cut off for
  // whoever reads the panel (a trial found the desk's Passage and Flags columns so); a
  // word split over two lines ("appli / ed") is misread. A break at a hyphen is fine.
  function wholeCells(tables, out, label, scroller) {
    for (const cell of [...document.querySelectorAll(tables)].flatMap((t) => [...t.querySelectorAll("td, th")])) {
      if (!cell.getClientRects().length) continue;
      const r = cell.getBoundingClientRect();
      for (let p = cell.parentElement; p && p !== document.body; p = p.parentElement) {
        if (!scroller(getComputedStyle(p))) continue;
        const box = p.getBoundingClientRect();
        const right = box.left + p.clientLeft + p.clientWidth;
        if (r.right > right + 1 || r.left < box.left - 1) out.push(`cell cut at its panel's side (${Math.round(r.left)}..${Math.round(r.right)} in ${Math.round(box.left)}..${Math.round(right)}): ${label(cell)}`);
        break;
      }
      const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
      for (let n = walker.nextNode(); n; n = walker.nextNode()) {
        for (const m of n.textContent.matchAll(/[^\s\-\u2013\u2014/·]+/g)) {
          const range = document.createRange();
          range.setStart(n, m.index);
          range.setEnd(n, m.index + m[0].length);
          const lines = new Set([...range.getClientRects()].filter((q) => q.width > 0).map((q) => Math.round(q.top)));
          if (lines.size > 1) out.push(`word broken across lines "${m[0]}": ${label(cell)}`);
        }
      }
    }
  }
}
