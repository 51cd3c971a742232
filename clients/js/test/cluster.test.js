// A cluster node killed under a client: the next connection lands on
// another node, and the application sees every message once, in order,
// with no reset (the room lives in Redis, not in the node).
import assert from "node:assert/strict";
import { test } from "node:test";

import { Roomcast, WebSocket, rawClient, startProxy, startRedis, startServer, until } from "./support.js";

const clusterEnv = (/** @type {string} */ redis) => ({
  ROOMCAST_CLUSTER__REDIS: redis,
  ROOMCAST_CLUSTER__PREFIX: "js",
  ROOMCAST_CLUSTER__NODE_TIMEOUT: "1s",
});

/**
 * A Redis, one node on it, and a client (through a proxy when `proxied`)
 * in `name`, recording its messages' bodies; all stopped with the test.
 * @param {import("node:test").TestContext} t
 * @param {string} name
 * @param {boolean} proxied
 */
async function oneNode(t, name, proxied) {
  const redis = await startRedis();
  t.after(() => redis.stop());
  const node = await startServer(clusterEnv(redis.url));
  t.after(() => node.stop());
  const proxy = await startProxy(() => node.port);
  t.after(() => proxy.close());
  const rc = new Roomcast(proxied ? proxy.url : node.url, { WebSocket, reconnect: { minDelay: 50, maxDelay: 300 } });
  t.after(() => rc.close());
  const room = rc.room(name);
  /** @type {unknown[]} */
  const seen = [];
  room.on("message", (m) => seen.push(m.body));
  await room.join();
  return { redis, node, proxy, rc, room, seen };
}

test("a node killed: the client reconnects to another node and misses nothing", async (t) => {
  const redis = await startRedis();
  t.after(() => redis.stop());
  const cluster = clusterEnv(redis.url);
  const [a, b] = [await startServer(cluster), await startServer(cluster)];
  t.after(() => a.stop());
  t.after(() => b.stop());
  // The balancer in front: node a while it lives, then node b.
  let alive = a;
  const proxy = await startProxy(() => alive.port);
  t.after(() => proxy.close());
  const rc = new Roomcast(proxy.url, { WebSocket, reconnect: { minDelay: 50, maxDelay: 300 } });
  t.after(() => rc.close());
  const room = rc.room("failover");
  /** @type {(number | string)[]} */
  const seen = [];
  room.on("message", (m) => seen.push(/** @type {number} */ (m.body)));
  room.on("reset", (r) => seen.push(`reset:${r.reason}`));
  await room.join();
  const first = rc.welcome?.id;

  const publisher = await rawClient(b.url);
  t.after(() => publisher.close());
  publisher.send({ type: "join", room: "failover" });
  await publisher.expect("joined");
  const total = 300;
  for (let i = 1; i <= total; i++) {
    publisher.send({ type: "publish", room: "failover", body: i, ref: i });
    if (i === 100) {
      await until(room, "message", () => seen.length >= 50, "messages through node a");
      alive = b;
      await a.stop("SIGKILL");
    }
    await new Promise((resolve) => setTimeout(resolve, 3));
  }
  await until(room, "message", () => seen.at(-1) === total, `message ${total}`);
  assert.notEqual(rc.welcome?.id, first, "a new session, on node b");
  assert.deepEqual(
    seen,
    Array.from({ length: total }, (_, i) => i + 1),
  );
});

test("a publish answered unavailable (Redis down) is sent again and resolves with its one seq", async (t) => {
  const { redis, node, room, seen } = await oneNode(t, "outage", false);
  const port = redis.port;
  await redis.stop();
  // The node answers `unavailable` until Redis is back: the first answer
  // comes from the node without Redis.
  const raw = await rawClient(node.url);
  t.after(() => raw.close());
  for (;;) {
    raw.send({ type: "rooms", ref: 1 });
    const answer = await raw.next();
    if (answer.type === "error" && answer.code === "unavailable") break;
  }
  const publishing = room.publish("through the outage");
  const again = await startRedis(port);
  t.after(() => again.stop());
  const { seq } = await publishing;
  assert.equal(typeof seq, "number");
  await until(room, "message", () => seen.includes("through the outage"), "the message");
  assert.deepEqual(seen, ["through the outage"], "once");
});

test("a rejoin answered unavailable is tried again, and what waited for it goes once", async (t) => {
  const { redis, proxy, rc, room, seen } = await oneNode(t, "rejoin", true);
  const port = redis.port;
  await redis.stop();
  // A new connection while Redis is gone: its rejoin is answered unavailable.
  proxy.cut();
  await until(rc, "state", () => rc.state === "connected", "connected again");
  const publishing = room.publish("after the rejoin");
  const again = await startRedis(port);
  t.after(() => again.stop());
  await until(room, "joined", () => room.joined, "joined again");
  await publishing;
  await until(room, "message", () => seen.length > 0, "the message");
  assert.deepEqual(seen, ["after the rejoin"]);
  assert.ok([...room.members.keys()].includes(/** @type {string} */ (rc.welcome?.id)), "in its own member list");
});
