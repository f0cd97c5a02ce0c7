// A live connection to one race: snapshot, ordered deltas, exact resume, server clock,
// an optional display delay, and a watchdog for connections that die silently.
// onStatus gets "connecting", "live", "reconnecting" (the WebSocket is lost) or "stale"
// (the node has lost its storage: what is shown may be out of date; docs/protocol.md).
import { applyEvent } from "./view.js";

const HEARTBEAT_MS = 5000;  // a clock sync this often doubles as a heartbeat
const DEAD_MS = 9000;       // nothing at all for this long: the connection is dead
const UNAVAILABLE_RETRY_MS = 1000;  // a subscribe refused while storage is away: ask again

function cmpOffset(a, b) {
  const [am, as] = a.split("-").map(Number), [bm, bs] = b.split("-").map(Number);
  return am - bm || as - bs;
}

// Where the WebSocket is (/api/config): a URL; a path on this page's host (behind a
// load balancer: wss:// when the page came over https); else the node's WebSocket port.
function wsUrl(cfg) {
  const url = cfg.ws_url || "";
  if (url.startsWith("/")) return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${url}`;
  return url || `ws://${location.hostname}:${cfg.ws_port || 8081}/`;
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
    this.lastMessageAt = 0;  // any message, heartbeats included
    this.lastEventAt = 0;    // race data: a snapshot or an event
    this.delayMs = 0;        // show everything this much later (to stay behind a TV stream)
    this.pending = [];       // received, not shown yet: [{at, msg}]
    this.flushTimer = null;
    this.backoff = 500;
    this.stale = false;      // the server said its storage is away
    this.subscribed = false; // a snapshot or resume came on this connection
    this.opened = false;     // a connection has opened once
    this.unreachable = false; // a connection failed or was found dead; none open since
    this.connectingSince = 0;
    this.stats = { snapshots: 0, events: 0, resumes: 0, reconnects: 0, duplicates: 0 };
  }

  async start() {
    const cfg = await fetch("/api/config").then((r) => r.json()).catch(() => ({}));
    this.url = wsUrl(cfg);
    this.connect();
    setInterval(() => this.heartbeat(), HEARTBEAT_MS);
    // Back on the network: reconnect now rather than at the end of a backoff.
    addEventListener("online", () => { if (!this.ws || this.ws.readyState !== 1) this.reconnect(); });
  }

  serverNowUs() { return (Date.now() + this.clockOffsetMs) * 1000; }

  // Race time of a pair on the ice, by the server's clock (a replay's rate included),
  // as shown: a display delay holds the clock back too.
  raceElapsedUs(run) {
    return (this.serverNowUs() - this.delayMs * 1000 - run.clock_origin_us) * (run.rate || 1);
  }

  // A phone that loses its network often gets no close at all: the socket just goes
  // quiet. The heartbeat's reply proves it alive; without one the link is replaced.
  // A hung server (a stopped process) accepts the TCP connection but never answers the
  // WebSocket handshake: a connection still opening after DEAD_MS is given up too, and
  // the page says the server is unreachable rather than "connecting" for ever.
  heartbeat() {
    const ws = this.ws;
    if (ws && ws.readyState === 1 && Date.now() - this.lastMessageAt > DEAD_MS) {
      this.reconnect();
      return;
    }
    if (ws && ws.readyState === 0 && Date.now() - this.connectingSince > DEAD_MS) {
      this.unreachable = true;
      this.reconnect();
      return;
    }
    this.sync();
  }

  // Replace a connection found dead: from then until a new one opens, the server is
  // unreachable (red on every page), not merely connecting.
  reconnect() {
    if (this.opened) this.unreachable = true;
    const old = this.ws;
    if (old) {
      old.onclose = old.onmessage = old.onopen = null;
      try { old.close(); } catch { /* already gone */ }
    }
    clearTimeout(this.retryTimer);
    this.stats.reconnects++;
    this.connect();
  }

  setDelay(seconds) {
    this.delayMs = Math.max(0, seconds * 1000);
    this.flush();
  }

  sync() {
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify({ op: "time", c: performance.now() }));
  }

  connect() {
    const ws = (this.ws = new WebSocket(this.url));
    this.connectingSince = Date.now();
    this.onStatus(this.unreachable ? "reconnecting" : "connecting");
    ws.onopen = () => {
      this.opened = true;
      this.unreachable = false;
      this.backoff = 500;
      this.lastMessageAt = Date.now();
      for (let i = 0; i < 3; i++) setTimeout(() => this.sync(), i * 150);
      this.subscribed = false;
      this.subscribe();
    };
    ws.onmessage = (m) => this.handle(JSON.parse(m.data));
    ws.onclose = () => {
      this.unreachable = true;
      this.onStatus("reconnecting");
      this.stats.reconnects++;
      this.retryTimer = setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, 5000);
    };
  }

  // Follow the race on the open connection: resume where the stream stands, if known.
  subscribe() {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1) return;
    const sub = { op: "subscribe", race: this.race, protocol: 2 };
    if (this.epoch && this.offset) Object.assign(sub, { epoch: this.epoch, offset: this.offset });
    ws.send(JSON.stringify(sub));
  }

  // Subscribe again after ms, if still on the same connection (not followed yet).
  resubscribeIn(ms) {
    const ws = this.ws;
    clearTimeout(this.resubscribeTimer);
    this.resubscribeTimer = setTimeout(() => {
      if (ws === this.ws && !this.subscribed) this.subscribe();
    }, ms);
  }

  // {"type":"status","stale":...}: the node lost its storage, or has it back (the
  // events missed meanwhile follow by themselves).
  storageStatus(msg) {
    this.stale = !!msg.stale;
    if (this.stale) this.onStatus("stale");
    else if (this.subscribed) this.onStatus("live");
    else this.subscribe();
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
    if (msg.type === "status") {
      this.storageStatus(msg);
      return;
    }
    if (msg.type === "snapshot") {
      this.stats.snapshots++;
      this.subscribed = true;
      this.stale = false;
      this.onStatus("live");
    } else if (msg.type === "resumed") {
      this.stats.resumes++;
      this.subscribed = true;
      this.stale = false;
      this.onStatus("live");
      return;
    } else if (msg.type === "event") {
      if (this.offset && cmpOffset(msg.offset, this.offset) <= 0) { this.stats.duplicates++; return; }
      this.stats.events++;
    } else {
      // A page opened before its race's start list is loaded: ask again now and then.
      // Storage away ("unavailable"): the data is stale; ask again soon.
      if (msg.type === "error" && msg.race === this.race) {
        if (msg.code === "unknown_race") this.resubscribeIn(3000);
        if (msg.code === "unavailable") {
          this.stale = true;
          this.onStatus("stale");
          this.resubscribeIn(UNAVAILABLE_RETRY_MS);
        }
      }
      return;
    }
    // Where the stream stands moves at once (a resume asks from here); what the page
    // shows follows after the display delay.
    this.epoch = msg.epoch;
    this.offset = msg.offset;
    this.lastEventAt = Date.now();
    this.pending.push({ at: Date.now(), msg });
    this.flush();
  }

  flush() {
    clearTimeout(this.flushTimer);
    const due = Date.now() - this.delayMs;
    let changed = false;
    while (this.pending.length && this.pending[0].at <= due) {
      const { msg } = this.pending.shift();
      if (msg.type === "snapshot") {
        this.view = msg.view;
      } else {
        this.view = applyEvent(this.view, msg.event);
        this.onEvent(msg.event, msg);
      }
      changed = true;
    }
    if (this.pending.length) {
      this.flushTimer = setTimeout(() => this.flush(), this.pending[0].at - due);
    }
    if (changed) this.onView(this.view);
  }
}

// The race a page shows: ?race=<id>, else the newest race, waiting for a start list
// if there is none yet (onWait is called while waiting).
export async function pickRace(onWait = () => {}) {
  const q = new URLSearchParams(location.search).get("race");
  if (q) return q;
  for (;;) {
    const all = await fetch("/api/races").then((r) => r.json()).catch(() => []);
    const races = all.filter((r) => r.kind !== "standings");  // a race, not the standings
    if (races.length) return races[races.length - 1].id;
    onWait();
    await new Promise((r) => setTimeout(r, 2000));
  }
}
