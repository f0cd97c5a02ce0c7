// A live connection to one race: snapshot, ordered deltas, exact resume, server clock.
import { applyEvent } from "./view.js";

function cmpOffset(a, b) {
  const [am, as] = a.split("-").map(Number), [bm, bs] = b.split("-").map(Number);
  return am - bm || as - bs;
}

export class LiveRace {
  constructor(race, { onView, onStatus, onEvent } = {}) {
    this.race = race;
    this.onView = onView || (() => {});
    this.onStatus = onStatus || (() => {});
    this.onEvent = onEvent || (() => {});
    this.view = null;
    this.epoch = null;
    this.offset = null;
    this.clockOffsetMs = 0;  // server time - local time
    this.bestRtt = Infinity;
    this.lastMessageAt = 0;
    this.backoff = 500;
    this.stats = { snapshots: 0, events: 0, resumes: 0, reconnects: 0, duplicates: 0 };
  }

  async start() {
    const cfg = await fetch("/api/config").then((r) => r.json()).catch(() => ({}));
    this.url = cfg.ws_url || `ws://${location.hostname}:${cfg.ws_port || 8081}/`;
    this.connect();
    setInterval(() => this.sync(), 10000);
  }

  serverNowUs() { return (Date.now() + this.clockOffsetMs) * 1000; }

  // Race time of a pair on the ice, by the server's clock (a replay's rate included).
  raceElapsedUs(run) { return (this.serverNowUs() - run.clock_origin_us) * (run.rate || 1); }

  sync() {
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify({ op: "time", c: performance.now() }));
  }

  connect() {
    const ws = (this.ws = new WebSocket(this.url));
    this.onStatus("connecting");
    ws.onopen = () => {
      this.backoff = 500;
      for (let i = 0; i < 3; i++) setTimeout(() => this.sync(), i * 150);
      const sub = { op: "subscribe", race: this.race };
      if (this.epoch && this.offset) Object.assign(sub, { epoch: this.epoch, offset: this.offset });
      ws.send(JSON.stringify(sub));
    };
    ws.onmessage = (m) => this.handle(JSON.parse(m.data));
    ws.onclose = () => {
      this.onStatus("reconnecting");
      this.stats.reconnects++;
      setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, 5000);
    };
  }

  handle(msg) {
    this.lastMessageAt = Date.now();
    if (msg.type === "time") {
      const now = performance.now(), rtt = now - msg.c;
      if (rtt <= this.bestRtt * 1.5) {
        this.bestRtt = Math.min(rtt, this.bestRtt);
        this.clockOffsetMs = msg.s / 1000 - (Date.now() - rtt / 2);
      }
      return;
    }
    if (msg.type === "snapshot") {
      this.stats.snapshots++;
      this.view = msg.view;
      this.epoch = msg.epoch;
      this.offset = msg.offset;
      this.onStatus("live");
    } else if (msg.type === "resumed") {
      this.stats.resumes++;
      this.onStatus("live");
      return;
    } else if (msg.type === "event") {
      if (this.offset && cmpOffset(msg.offset, this.offset) <= 0) { this.stats.duplicates++; return; }
      this.stats.events++;
      this.view = applyEvent(this.view, msg.event);
      this.epoch = msg.epoch;
      this.offset = msg.offset;
      this.onEvent(msg.event, msg);
    } else {
      return;
    }
    this.onView(this.view);
  }
}

// The race a page shows: ?race=<id>, else the newest race, waiting for a start list
// if there is none yet (onWait is called while waiting).
export async function pickRace(onWait = () => {}) {
  const q = new URLSearchParams(location.search).get("race");
  if (q) return q;
  for (;;) {
    const races = await fetch("/api/races").then((r) => r.json()).catch(() => []);
    if (races.length) return races[races.length - 1].id;
    onWait();
    await new Promise((r) => setTimeout(r, 2000));
  }
}
