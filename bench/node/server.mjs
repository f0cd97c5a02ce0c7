// The same broadcast as icetime's fan-out, by a Node.js `ws` server, for
// bench/fanout_scale.py: every client that sends a subscribe gets the race's
// snapshot, then every frame the bench feeds in, as a text message.
//
// Usage: node server.mjs  (listens on 127.0.0.1, an ephemeral port)
// stdout: "listening <port>" once bound.
// stdin, one line each: "S <snapshot frame>" sets the snapshot; "F <frame>" sends
// the frame to every subscribed client (ws's documented broadcast loop: the text
// encoded once, one `send` per open client; compression off, as on icetime's node).
// Keepalive as on icetime's node (the `websockets` default): every client is pinged
// every 20 s and one that has not answered the last ping is closed (ws's documented
// heartbeat).
import { createInterface } from "node:readline";
import { WebSocketServer, WebSocket } from "ws";

const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, perMessageDeflate: false,
                                  backlog: 4096, maxPayload: 64 * 1024 });
const subscribed = new Set();
let snapshot = "";
const PING_MS = 20_000;

const heartbeat = setInterval(() => {
  for (const ws of wss.clients) {
    if (ws.isAlive === false) { ws.terminate(); continue; }
    ws.isAlive = false;
    ws.ping();
  }
}, PING_MS);

wss.on("listening", () => {
  process.stdout.write(`listening ${wss.address().port}\n`);
});

wss.on("connection", (ws) => {
  ws.isAlive = true;
  ws.on("pong", () => { ws.isAlive = true; });
  ws.on("message", (data, isBinary) => {
    if (isBinary) return;
    let msg;
    try { msg = JSON.parse(data); } catch { return; }
    if (msg.op === "subscribe") {
      ws.send(snapshot);
      subscribed.add(ws);
    }
  });
  ws.on("close", () => subscribed.delete(ws));
  ws.on("error", () => subscribed.delete(ws));
});

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
lines.on("line", (line) => {
  const body = line.slice(2);
  if (line.startsWith("S ")) {
    snapshot = body;
  } else if (line.startsWith("F ")) {
    const data = Buffer.from(body);  // encoded once for every client
    for (const ws of subscribed) {
      if (ws.readyState === WebSocket.OPEN) ws.send(data, { binary: false });
    }
  }
});
lines.on("close", () => {
  clearInterval(heartbeat);
  for (const ws of wss.clients) ws.terminate();
  wss.close(() => process.exit(0));
});
