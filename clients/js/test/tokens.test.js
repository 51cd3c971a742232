// Tokens: getToken for every connection and again before expiry (sent as
// `auth`, no reconnect); `unauthorized` closes the client; an expired
// token with getToken gets a fresh one and reconnects.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Roomcast, SECRET, WebSocket, next, startProxy, startServer, token, until } from "./support.js";

/** @type {Awaited<ReturnType<typeof startServer>>} */
let server;

before(async () => {
  server = await startServer({
    ROOMCAST_AUTH__MODE: "required",
    ROOMCAST_AUTH__HMAC_SECRET: SECRET,
    ROOMCAST_AUTH__LEEWAY: "0s",
  });
});
after(() => server.stop());

const fast = { reconnect: { minDelay: 50, maxDelay: 200 } };

/**
 * A client of `url` whose getToken answers `make(n)` for its n-th call
 * (from 1), counting the calls.
 * @param {string} url
 * @param {(n: number) => string} make
 */
function counting(url, make) {
  const calls = { asked: 0 };
  const rc = new Roomcast(url, {
    WebSocket,
    ...fast,
    getToken: () => {
      calls.asked += 1;
      return make(calls.asked);
    },
  });
  return { rc, calls };
}

test("getToken is asked for every connection, and the token's user is the session's", async (t) => {
  const proxy = await startProxy(() => server.port);
  t.after(() => proxy.close());
  const { rc, calls } = counting(proxy.url, () => token("ann"));
  t.after(() => rc.close());
  const welcome = await rc.connected();
  assert.equal(welcome.user, "ann");
  assert.equal(calls.asked, 1);
  proxy.cut();
  await next(rc, "welcome");
  assert.equal(calls.asked, 2, "a fresh token for the new connection");
});

test("a token is refreshed before it expires, on the same connection", async (t) => {
  const { rc, calls } = counting(server.url, () => token("bob", 3));
  t.after(() => rc.close());
  const welcome = await rc.connected();
  const expires = Date.now() + 3000;
  /** @type {string[]} */
  const states = [];
  rc.on("state", (s) => states.push(s));
  const room = rc.room("refresh");
  await room.join();
  // Past the first token's expiry (a rule about time: waiting for it is the test).
  await new Promise((resolve) => setTimeout(resolve, expires + 1500 - Date.now()));
  assert.ok(calls.asked >= 2, `getToken asked ${calls.asked} times`);
  await room.publish("still here");
  assert.equal(rc.welcome?.id, welcome.id, "the same session");
  assert.deepEqual(states, [], "never disconnected");
});

test("unauthorized closes the client: an error event, state closed, no reconnect", async () => {
  const bad = token("eve").replace(/.$/, (c) => (c === "A" ? "B" : "A"));
  const { rc, calls } = counting(server.url, () => bad);
  const error = /** @type {any} */ (await next(rc, "error"));
  assert.equal(error.code, "unauthorized");
  await until(rc, "state", () => rc.state === "closed", "state closed");
  await assert.rejects(rc.connected(), (e) => /** @type {any} */ (e).code === "unauthorized");
  await new Promise((resolve) => setTimeout(resolve, 500));
  assert.equal(calls.asked, 1, "no second attempt");
});

test("an expired token with getToken: a fresh one, and connected", async (t) => {
  const { rc, calls } = counting(server.url, (n) => (n === 1 ? token("cat", -10) : token("cat")));
  t.after(() => rc.close());
  const error = /** @type {any} */ (await next(rc, "error"));
  assert.equal(error.code, "token_expired");
  const welcome = await rc.connected();
  assert.equal(welcome.user, "cat");
  assert.equal(calls.asked, 2);
});

test("an expired token without getToken closes the client", async () => {
  const rc = new Roomcast(server.url, { WebSocket, ...fast, token: token("dan", -10) });
  const error = /** @type {any} */ (await next(rc, "error"));
  assert.equal(error.code, "token_expired");
  await until(rc, "state", () => rc.state === "closed", "state closed");
});
