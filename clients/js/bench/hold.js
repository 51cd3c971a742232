// One Node process holding many library connections in many rooms while
// messages flow: what an application server (or a load generator) built on
// roomcast-client sees. Every message must reach every member once, in
// order, even when (--cut MS) every connection is cut again and again.
//
//   node bench/hold.js [--clients 1000] [--rooms 100] [--rate 10] [--seconds 20] [--cut 0] [--history 100]
//
// RC_BIN names the roomcast binary (default: the repository's release
// build). Prints one JSON line of results.
import { performance } from "node:perf_hooks";

import { Roomcast, WebSocket, startProxy, startServer } from "../test/support.js";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith("--") ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []),
);
const clients = Number(args.clients ?? 1000);
const rooms = Number(args.rooms ?? 100);
const rate = Number(args.rate ?? 10); // messages per second per room
const seconds = Number(args.seconds ?? 20);
const cutEvery = Number(args.cut ?? 0);
// rooms.history: how long an absence can be recovered (messages per room).
const history = args.history ?? "100";

const server = await startServer({
  ROOMCAST_HEARTBEAT__INTERVAL: "15s",
  ROOMCAST_HEARTBEAT__TIMEOUT: "45s",
  ROOMCAST_ROOMS__HISTORY: history,
});
const proxy = await startProxy(() => server.port);
const names = Array.from({ length: rooms }, (_, i) => `bench-${i}`);
/** Per member: the last seq seen, and counts. */
const stats = { received: 0, duplicates: 0, gaps: 0, resets: 0, latencies: /** @type {number[]} */ ([]) };

const members = [];
for (let i = 0; i < clients; i++) {
  const rc = new Roomcast(proxy.url, { WebSocket, reconnect: { minDelay: 100, maxDelay: 2000 } });
  const room = rc.room(names[i % rooms]);
  let last = 0;
  room.on("message", (m) => {
    stats.received += 1;
    if (m.seq <= last) stats.duplicates += 1;
    else if (m.seq !== last + 1 && last !== 0) stats.gaps += 1;
    last = Math.max(last, m.seq);
    stats.latencies.push(Date.now() - m.ts);
  });
  room.on("reset", () => (stats.resets += 1));
  members.push({ rc, room });
}
const started = performance.now();
await Promise.all(members.map(({ room }) => room.join()));
const joinedIn = performance.now() - started;

// One publisher per room, straight to the server (not through the proxy).
const publishers = await Promise.all(
  names.map(async (name) => {
    const rc = new Roomcast(server.url, { WebSocket });
    const room = rc.room(name);
    await room.join();
    return { rc, room };
  }),
);
const cpuBefore = process.cpuUsage();
const memory = process.memoryUsage().rss;
let published = 0;
const ticker = setInterval(() => {
  for (const { room } of publishers) {
    room.publish({ n: published }).catch(() => {});
    published += 1;
  }
}, 1000 / rate);
const cutter = cutEvery > 0 ? setInterval(() => proxy.cut(), cutEvery) : undefined;
await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
clearInterval(ticker);
if (cutter) clearInterval(cutter);
// Everything published arrives (each member of each room: 10 per room).
const expected = published * (clients / rooms);
const deadline = Date.now() + 30000;
while (stats.received < expected && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
const cpu = process.cpuUsage(cpuBefore);
stats.latencies.sort((a, b) => a - b);
const at = (/** @type {number} */ q) => stats.latencies[Math.min(stats.latencies.length - 1, Math.floor(q * stats.latencies.length))];
console.log(
  JSON.stringify({
    clients,
    rooms,
    rate_per_room: rate,
    seconds,
    cut_every_ms: cutEvery,
    history: Number(history),
    joined_in_ms: Math.round(joinedIn),
    published,
    expected,
    received: stats.received,
    lost: expected - stats.received,
    duplicates: stats.duplicates,
    gaps: stats.gaps,
    resets: stats.resets,
    latency_p50_ms: at(0.5),
    latency_p99_ms: at(0.99),
    node_rss_mib: Math.round(process.memoryUsage().rss / 1048576),
    node_rss_at_start_mib: Math.round(memory / 1048576),
    node_cpu_s: Number(((cpu.user + cpu.system) / 1e6).toFixed(2)),
  }),
);
for (const { rc } of [...members, ...publishers]) rc.close();
proxy.close();
await server.stop();
