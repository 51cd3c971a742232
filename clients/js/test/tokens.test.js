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

test("getToken is asked for every connection, and the token's user is the session's", async (t) => {
  const proxy = await startProxy(() => server.port);
  t.after(() => proxy.close());
  let asked = 0;
  const rc = new Roomcast(proxy.url, {
    WebSocket,
    ...fast,
    getToken: async () => {
      asked += 1;
      return token("ann");
    },
  });
  t.after(() => rc.close());
  const welcome = await rc.connected();
  assert.equal(welcome.user, "ann");
  assert.equal(asked, 1);
  proxy.cut();
  await next(rc, "welcome");
  assert.equal(asked, 2, "a fresh token for the new connection");
});

test("a token is refreshed before it expires, on the same connection", async (t) => {
  let asked = 0;
  const rc = new Roomcast(server.url, {
    WebSocket,
    ...fast,
    getToken: () => {
      asked += 1;
      return token("bob", 3);
    },
  });
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
  assert.ok(asked >= 2, `getToken asked ${asked} times`);
  await room.publish("still here");
  assert.equal(rc.welcome?.id, welcome.id, "the same session");
  assert.deepEqual(states, [], "never disconnected");
});

test("unauthorized closes the client: an error event, state closed, no reconnect", async () => {
  let asked = 0;
  const bad = token("eve").replace(/.$/, (c) => (c === "A" ? "B" : "A"));
  const rc = new Roomcast(server.url, {
    WebSocket,
    ...fast,
    getToken: () => {
      asked += 1;
      return bad;
    },
  });
  const error = /** @type {any} */ (await next(rc, "error"));
  assert.equal(error.code, "unauthorized");
  await until(rc, "state", () => rc.state === "closed", "state closed");
  await assert.rejects(rc.connected(), (e) => /** @type {any} */ (e).code === "unauthorized");
  await new Promise((resolve) => setTimeout(resolve, 500));
  assert.equal(asked, 1, "no second attempt");
});

test("an expired token with getToken: a fresh one, and connected", async (t) => {
  let asked = 0;
  const rc = new Roomcast(server.url, {
    WebSocket,
    ...fast,
    getToken: () => {
      asked += 1;
      return asked === 1 ? token("cat", -10) : token("cat");
    },
  });
  t.after(() => rc.close());
  const error = /** @type {any} */ (await next(rc, "error"));
  assert.equal(error.code, "token_expired");
  const welcome = await rc.connected();
  assert.equal(welcome.user, "cat");
  assert.equal(asked, 2);
});

test("an expired token without getToken closes the client", async () => {
  const rc = new Roomcast(server.url, { WebSocket, ...fast, token: token("dan", -10) });
  const error = /** @type {any} */ (await next(rc, "error"));
  assert.equal(error.code, "token_expired");
  await until(rc, "state", () => rc.state === "closed", "state closed");
});
