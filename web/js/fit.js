// Text that must fit its box whole: a name, a time. First the font shrinks (down to
// MIN_SCALE of its size); a name then falls back to the start list's short name
// (data-short, the family name whole) at full size, shrinking again if need be. Text is
// never cut: a box that still overflows stays so, and the browser check reports it.
const MIN_SCALE = 0.6;
const STEP = 0.05;

const over = (el) => el.scrollWidth > el.clientWidth + 1;

function shrink(el) {
  let scale = 1;
  el.style.fontSize = "";
  const base = parseFloat(getComputedStyle(el).fontSize);
  while (over(el) && scale > MIN_SCALE + 1e-9) {
    scale -= STEP;
    el.style.fontSize = `${base * scale}px`;
  }
  return !over(el);
}

// Every [data-fit] element under root; call after rendering and on resize.
export function fit(root = document) {
  for (const el of root.querySelectorAll("[data-fit]")) {
    if (!el.clientWidth) continue;
    // New text since the last fit (a page that sets textContent anew): that is the full one.
    const now = el.textContent;
    if (el.dataset.full === undefined || (now !== el.dataset.full && now !== el.dataset.short)) {
      el.dataset.full = now;
    }
    if (el.textContent !== el.dataset.full) el.textContent = el.dataset.full;
    if (shrink(el) || !el.dataset.short) continue;
    el.textContent = el.dataset.short;
    shrink(el);
  }
}

// Refit whenever the window changes size.
export function fitOnResize(root = document) {
  addEventListener("resize", () => fit(root));
}
