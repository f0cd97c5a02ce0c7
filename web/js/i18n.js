// Page texts in the reader's language: web/lang/<code>.json maps each English text to
// its translation (en.json lists every text). The language is ?lang=<code>, else the
// browser's first supported one, else English. A text without a translation stays English.
export const LANGUAGES = ["en", "nl", "de"];

function pick() {
  const asked = new URLSearchParams(location.search).get("lang");
  const wanted = [asked, ...(navigator.languages || [navigator.language])].filter(Boolean);
  for (const w of wanted) {
    const code = w.toLowerCase().split("-")[0];
    if (LANGUAGES.includes(code)) return code;
  }
  return "en";
}

export const lang = pick();
let texts = {};
if (lang !== "en") {
  texts = await fetch(`/static/lang/${lang}.json`).then((r) => r.json()).catch(() => ({}));
}
document.documentElement.lang = lang;

// One text, translated; {name} placeholders filled from vars.
export function t(text, vars = {}) {
  return (texts[text] ?? text).replace(/\{(\w+)\}/g, (m, k) => (k in vars ? vars[k] : m));
}

// Every element marked data-i18n (its English text) or data-i18n-label (an aria-label or
// a title), translated in place.
export function translatePage(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) {
    if (!el.dataset.i18n) el.dataset.i18n = el.textContent.trim();
    el.textContent = t(el.dataset.i18n);
  }
  for (const el of root.querySelectorAll("[data-i18n-label]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nLabel));
  }
  for (const el of root.querySelectorAll("[data-i18n-title]")) {
    el.title = t(el.dataset.i18nTitle);
  }
}

// The time of day, hours and minutes, as the reader writes it (ms: a Date.now() value).
export function timeOfDay(ms = Date.now()) {
  return new Date(ms).toLocaleTimeString(lang, { hour: "2-digit", minute: "2-digit" });
}

// A rank as a place: 1st, 2nd, 23rd (English), 1e (Dutch), 1. (German).
export function ordinal(n) {
  if (lang === "nl") return `${n}e`;
  if (lang === "de") return `${n}.`;
  return n + (n % 100 >= 11 && n % 100 <= 13 ? "th" : { 1: "st", 2: "nd", 3: "rd" }[n % 10] || "th");
}
