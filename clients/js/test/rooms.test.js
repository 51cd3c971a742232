// The library against a real roomcast: joining, publishing with acks,
// members, errors.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { DEADLINE, Roomcast, RoomcastError, WebSocket, next, rawClient, startServer, until } from "./support.js";

/** @type {Awaited<ReturnType<typeof startServer>>} */
let server;

before(async () => {
  server = await startServer({ ROOMCAST_LIMITS__MAX_MEMBERS_PER_ROOM: "2" });
});
after(() => server.stop());

/** @param {Record<string, unknown>} options */
function client(options = {}) {
  return new Roomcast(server.url, { WebSocket, ...options });
}

test("a publisher gets its own message once, then its ok with the same seq", async () => {
  const rc = client({ nick: "ann" });
  const welcome = await rc.connected();
  assert.match(welcome.server, /^roomcast\//);
  const room = rc.room("acks");
  /** @type {any[]} */
  const seen = [];
  room.on("message", (m) => seen.push(m));
  await room.join();
  const { seq } = await room.publish({ text: "hi" });
  assert.equal(seen.length, 1, "the message came before its ok");
  assert.equal(seen[0].seq, seq);
  assert.deepEqual(seen[0].body, { text: "hi" });
  assert.equal(seen[0].nick, "ann");
  rc.close();
});

test("history: a join hands the last N messages once, in order", async () => {
  const writer = client();
  const room = writer.room("history");
  await room.join();
  for (let i = 1; i <= 5; i++) await room.publish(i);
  const reader = client();
  const theirs = reader.room("history", { history: 3 });
  /** @type {number[]} */
  const bodies = [];
  theirs.on("message", (m) => bodies.push(/** @type {number} */ (m.body)));
  const joined = await theirs.join();
  assert.deepEqual(bodies, [3, 4, 5]);
  assert.equal(joined.seq, 5);
  await room.publish(6);
  await until(theirs, "message", () => bodies.length === 4, "message 6");
  assert.deepEqual(bodies, [3, 4, 5, 6]);
  writer.close();
  reader.close();
});

test("a first join without history shows none, and still knows where the room is", async () => {
  const writer = client();
  await writer.room("quiet").join();
  await writer.room("quiet").publish("before");
  const reader = client();
  const room = reader.room("quiet");
  /** @type {unknown[]} */
  const bodies = [];
  room.on("message", (m) => bodies.push(m.body));
  const joined = await room.join();
  assert.deepEqual(bodies, [], "history 0 shows nothing");
  assert.equal(joined.seq, 1, "the room's seq, from the message asked for underneath");
  writer.close();
  reader.close();
});

test("members equal the server's after the join, then follow presence", async () => {
  const a = client({ nick: "a" });
  const roomA = a.room("members");
  await roomA.join();
  const b = client({ nick: "b" });
  const roomB = b.room("members");
  await roomB.join();
  const raw = await rawClient(server.url);
  raw.send({ type: "join", room: "members" });
  // Three is one more than the room takes: the raw join is refused.
  assert.equal((await raw.next()).code, "room_full");
  await until(roomA, "presence", () => roomA.members.size === 2, "b in a's list");
  assert.deepEqual([...roomB.members.values()].map((m) => m.nick).sort(), ["a", "b"]);
  b.close();
  await until(roomA, "presence", () => roomA.members.size === 1, "b gone from a's list");
  assert.deepEqual([...roomA.members.values()].map((m) => m.nick), ["a"]);
  raw.close();
  a.close();
});

test("a refused join rejects with the protocol's code and is not joined again on reconnect", async () => {
  const first = client();
  await first.room("full").join();
  const second = client();
  await second.room("full").join();
  const third = client();
  const refused = await third.room("full").join().catch((error) => error);
  assert.ok(refused instanceof RoomcastError, `${refused}`);
  assert.equal(refused.code, "room_full");
  // A reconnect: the refused room is not tried again.
  /** @type {string[]} */
  const sent = [];
  const original = WebSocket.prototype.send;
  third._socket.close();
  await next(third, "welcome");
  const socket = third._socket;
  socket.send = function (/** @type {string} */ data) {
    sent.push(JSON.parse(data).type);
    return original.call(this, data);
  };
  await third.rooms();
  assert.ok(!sent.includes("join"), `sent ${sent}`);
  for (const rc of [first, second, third]) rc.close();
});

test("errors carry the protocol's code: publish to a room not joined", async () => {
  const rc = client();
  await rc.connected();
  const error = await rc
    .room("nowhere")
    .publish("x")
    .catch((/** @type {unknown} */ e) => e);
  assert.ok(error instanceof RoomcastError);
  assert.equal(error.code, "not_member");
  const missing = await rc.direct("12345", "x").catch((/** @type {unknown} */ e) => e);
  assert.equal(/** @type {RoomcastError} */ (missing).code, "not_found");
  rc.close();
});

test("direct reaches the other client with who sent it", async () => {
  const a = client({ nick: "sender" });
  const b = client();
  const welcome = await b.connected();
  await a.connected();
  const got = next(b, "direct");
  await a.direct(welcome.id, { hello: 1 });
  const direct = /** @type {any} */ (await got);
  assert.deepEqual(direct.body, { hello: 1 });
  assert.equal(direct.nick, "sender");
  a.close();
  b.close();
});

test("close() settles everything: state closed, no reconnect", async () => {
  const rc = client();
  await rc.connected();
  /** @type {string[]} */
  const states = [];
  rc.on("state", (s) => states.push(s));
  rc.close();
  assert.deepEqual(states, ["closed"]);
  await assert.rejects(rc.room("x").publish(1), (e) => /** @type {any} */ (e).code === "closed");
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(rc.state, "closed");
  void DEADLINE;
});
