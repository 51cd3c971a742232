// Across reconnects: each message once, in order, with `reset` exactly
// when messages could not be recovered; a half-open connection noticed by
// the app-level ping; publishes made while disconnected sent once after.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Roomcast, WebSocket, next, rawClient, startProxy, startServer, until } from "./support.js";

const fast = { reconnect: { minDelay: 50, maxDelay: 200 }, ping: { interval: 300, timeout: 300 } };

/**
 * What the application saw of a room: message seqs and resets, in order.
 * @param {any} room
 */
function record(room) {
  /** @type {(number | string)[]} */
  const seen = [];
  room.on("message", (/** @type {any} */ m) => seen.push(m.seq));
  room.on("reset", (/** @type {any} */ r) => seen.push(`reset:${r.reason}`));
  return seen;
}

/**
 * Publishes `count` messages to `room` from a bare client, one every `gap` ms.
 * @param {string} url
 * @param {string} room
 * @param {number} count
 */
async function publisher(url, room, count, gap = 2) {
  const raw = await rawClient(url);
  raw.send({ type: "join", room });
  await raw.expect("joined");
  for (let i = 1; i <= count; i++) {
    raw.send({ type: "publish", room, body: i, ref: i });
    await new Promise((resolve) => setTimeout(resolve, gap));
  }
  // The last ok: everything is published.
  for (;;) {
    const frame = await raw.next();
    if (frame.type === "error") throw new Error(`the publisher got ${JSON.stringify(frame)}`);
    if (frame.type === "ok" && frame.ref === count) break;
  }
  raw.close();
}

/**
 * A server, a proxy in front of it and a client through the proxy, all
 * stopped when the test ends.
 * @param {import("node:test").TestContext} t
 * @param {Record<string, string>} env
 */
async function setup(t, env = {}) {
  const server = await startServer(env);
  t.after(() => server.stop());
  const proxy = await startProxy(() => server.port);
  t.after(() => proxy.close());
  const rc = new Roomcast(proxy.url, { WebSocket, ...fast });
  t.after(() => rc.close());
  return { server, proxy, rc };
}

/** @param {number} count */
const oneTo = (count) => Array.from({ length: count }, (_, i) => i + 1);

test("connections cut again and again: every message once, in order, no reset", async (t) => {
  const { server, proxy, rc } = await setup(t);
  const room = rc.room("cut");
  const seen = record(room);
  await room.join();
  const publishing = publisher(server.url, "cut", 400);
  let cuts = 0;
  const cutting = setInterval(() => {
    if (proxy.open > 0) {
      proxy.cut();
      cuts += 1;
    }
  }, 150);
  t.after(() => clearInterval(cutting));
  await publishing;
  clearInterval(cutting);
  await until(room, "message", () => seen.at(-1) === 400, "message 400");
  assert.ok(cuts >= 3, `the connection was cut ${cuts} times`);
  assert.deepEqual(seen, oneTo(400));
});

test("a connection that goes silent is noticed by ping and recovered", async (t) => {
  const { server, proxy, rc } = await setup(t, { ROOMCAST_HEARTBEAT__TIMEOUT: "60s", ROOMCAST_HEARTBEAT__INTERVAL: "30s" });
  const room = rc.room("silent");
  const seen = record(room);
  await room.join();
  /** @type {string[]} */
  const states = [];
  rc.on("state", (s) => states.push(s));
  proxy.silence();
  await publisher(server.url, "silent", 20);
  // The server sees nothing wrong (its heartbeat is a minute): only the
  // client's ping can tell.
  await until(room, "message", () => seen.length === 20, "the 20 messages after the silence");
  assert.deepEqual(seen, oneTo(20));
  assert.ok(states.includes("disconnected"), `states: ${states}`);
});

test("a server restart: reset (restarted) once, then the new room's messages", async (t) => {
  const first = await startServer();
  t.after(() => first.stop());
  const port = first.port;
  const rc = new Roomcast(first.url, { WebSocket, ...fast });
  t.after(() => rc.close());
  const room = rc.room("restart");
  const seen = record(room);
  await room.join();
  await publisher(first.url, "restart", 3);
  await until(room, "message", () => seen.length === 3, "3 messages");
  await first.stop("SIGKILL");
  const second = await startServer({ ROOMCAST_SERVER__PORT: String(port) });
  t.after(() => second.stop());
  const joined = await next(room, "joined");
  assert.equal(/** @type {any} */ (joined).recovered, false);
  await publisher(second.url, "restart", 2);
  await until(room, "message", () => seen.length === 6, "the new room's messages");
  assert.deepEqual(seen, [1, 2, 3, "reset:restarted", 1, 2]);
});

test("messages gone from history: reset (lost), then what was kept, once", async (t) => {
  const { server, proxy, rc } = await setup(t, { ROOMCAST_ROOMS__HISTORY: "5" });
  const room = rc.room("lost");
  const seen = record(room);
  await room.join();
  await publisher(server.url, "lost", 2);
  await until(room, "message", () => seen.length === 2, "2 messages");
  proxy.refuse();
  proxy.cut();
  await until(rc, "state", () => rc.state !== "connected", "the drop");
  await publisher(server.url, "lost", 10);
  proxy.refuse(false);
  await until(room, "message", () => seen.at(-1) === 12, "message 12");
  assert.deepEqual(seen, [1, 2, "reset:lost", 8, 9, 10, 11, 12]);
});

test("publishes made while disconnected wait, bounded, and appear once after the rejoin", async (t) => {
  const { proxy, rc } = await setup(t);
  const room = rc.room("offline");
  const seen = record(room);
  await room.join();
  proxy.refuse();
  proxy.cut();
  await until(rc, "state", () => rc.state !== "connected", "the drop");
  const waiting = oneTo(1000).map((i) => room.publish(i));
  const beyond = await room.publish(1001).catch((/** @type {any} */ e) => e);
  assert.equal(beyond.code, "disconnected", "the 1001st is refused at once");
  proxy.refuse(false);
  const acks = await Promise.all(waiting);
  assert.deepEqual(
    acks.map((a) => a.seq),
    oneTo(1000),
  );
  await until(room, "message", () => seen.length >= 1000, "the 1000 messages");
  assert.deepEqual(seen, oneTo(1000));
});

test("a publish whose connection dropped before its ok is sent again and appears once", async (t) => {
  const { server, proxy, rc } = await setup(t);
  const room = rc.room("inflight");
  const seen = record(room);
  await room.join();
  // Cut right after the frames leave: the server may have run them, and
  // the client cannot know.
  const sent = oneTo(50).map((i) => room.publish(i));
  proxy.cut();
  const acks = await Promise.all(sent);
  assert.deepEqual(
    acks.map((a) => a.seq),
    oneTo(50),
  );
  await until(room, "message", () => seen.length >= 50, "50 messages");
  const watch = await rawClient(server.url);
  watch.send({ type: "join", room: "inflight", history: 100 });
  const joined = await watch.expect("joined");
  assert.equal(joined.history.length, 50, "each publish once in the room");
  assert.deepEqual(seen, oneTo(50));
  watch.close();
});

test("members equal the server's after a rejoin, with changes made while away", async (t) => {
  const { server, proxy, rc } = await setup(t);
  const room = rc.room("away");
  await room.join();
  const stay = await rawClient(server.url);
  t.after(() => stay.close());
  stay.send({ type: "join", room: "away" });
  await stay.expect("joined");
  const leaver = await rawClient(server.url);
  leaver.send({ type: "join", room: "away" });
  await leaver.expect("joined");
  await until(room, "presence", () => room.members.size === 3, "three members");
  proxy.refuse();
  proxy.cut();
  await until(rc, "state", () => rc.state !== "connected", "the drop");
  leaver.close();
  const comer = await rawClient(server.url);
  t.after(() => comer.close());
  comer.send({ type: "join", room: "away" });
  await comer.expect("joined");
  proxy.refuse(false);
  await next(room, "joined");
  stay.send({ type: "members", room: "away", ref: "m" });
  const truth = (await stay.expect("members")).members.map((/** @type {any} */ m) => m.id).sort();
  assert.deepEqual([...room.members.keys()].sort(), truth);
  assert.equal(room.members.size, 3, "me, stay and comer");
});

test("a publish with no answer in publishTimeout rejects with timeout", async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const proxy = await startProxy(() => server.port);
  t.after(() => proxy.close());
  const rc = new Roomcast(proxy.url, { WebSocket, ...fast, publishTimeout: 300 });
  t.after(() => rc.close());
  await rc.room("slow").join();
  proxy.refuse();
  proxy.cut();
  await until(rc, "state", () => rc.state !== "connected", "the drop");
  const error = await rc
    .room("slow")
    .publish("never")
    .catch((/** @type {any} */ e) => e);
  assert.equal(error.code, "timeout");
});
