// The home page: every race, with a link to each screen.
import { esc, raceHref } from "./view.js";

const races = await fetch("/api/races").then((r) => r.json()).catch(() => null);
const ul = document.getElementById("races");
ul.innerHTML = races === null ? `<li class="idle">The server did not answer; reload to try again.</li>`
  : !races.length ? `<li class="idle">No start list yet.</li>`
  : races.map((r) => `<li><b>${esc(r.name)}</b> <span class="links">` +
    ["live", "monitor", "board", "overlay"].map((p) => `<a href="${raceHref(p, r.id)}">${p}</a>`).join(" · ") +
    `</span></li>`).join("");
