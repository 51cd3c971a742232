// What the tests share: a real roomcast process, a TCP proxy that can cut
// or silence connections, tokens, a raw protocol client, and waiting for
// events without sleeping.
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync } from "node:fs";
import net from "node:net";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

import WebSocket from "ws";

export { WebSocket };

/** The library as a user installs it (`npm pack`'s tarball, test/install.js). */
const installed = new URL("./installed/node_modules/roomcast-client/roomcast.js", import.meta.url);
if (!existsSync(installed) && process.env.CI) throw new Error("run `npm test` (its pretest installs the packed library)");
export const { Roomcast, RoomcastError } = await import(existsSync(installed) ? installed.href : "../roomcast.js");

/** The roomcast binary: RC_BIN, or the workspace's debug build. */
const binary = process.env.RC_BIN ?? fileURLToPath(new URL("../../../target/debug/roomcast", import.meta.url));

export const SECRET = "a-test-secret-of-at-least-32-bytes!!";

/**
 * Starts `roomcast serve` on a free port with short heartbeats and `env`
 * (`ROOMCAST_*` settings); resolves once it listens.
 * @param {Record<string, string>} env
 */
export async function startServer(env = {}) {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith("ROOMCAST_")));
  const child = spawn(binary, ["serve"], {
    env: {
      ...clean,
      ROOMCAST_SERVER__PORT: env.ROOMCAST_SERVER__PORT ?? "0",
      ROOMCAST_SERVER__WORKERS: "2",
      ROOMCAST_HEARTBEAT__INTERVAL: "1s",
      ROOMCAST_HEARTBEAT__TIMEOUT: "3s",
      // The tests' own publishers go as fast as they can.
      ROOMCAST_LIMITS__MESSAGES_PER_SECOND: "100000",
      ROOMCAST_LIMITS__BURST: "100000",
      RUST_LOG: "warn",
      ...env,
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = createInterface({ input: /** @type {any} */ (child.stdout) });
  const port = await new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`roomcast exited (${code}) before listening`)));
    lines.on("line", (line) => {
      const match = /^listening on http:\/\/[^:]+:(\d+)/.exec(line);
      if (match) resolve(Number(match[1]));
    });
  });
  return {
    port,
    url: `ws://127.0.0.1:${port}`,
    child,
    /** Stops it (SIGKILL: a crash; SIGTERM: a graceful stop) and waits. */
    async stop(signal = "SIGTERM") {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill(signal);
      await exited;
    },
  };
}

/**
 * A TCP proxy to `target()` (a port, asked for each new connection):
 * `cut()` resets every connection through it, `silence()` makes them go
 * quiet in both directions without closing (a half-open connection).
 * @param {() => number} target
 */
export async function startProxy(target) {
  /** @type {Set<{ client: net.Socket, upstream: net.Socket, silent: boolean }>} */
  const links = new Set();
  let refusing = false;
  const server = net.createServer((client) => {
    if (refusing) return client.destroy();
    const upstream = net.connect(target(), "127.0.0.1");
    const link = { client, upstream, silent: false };
    links.add(link);
    client.on("data", (data) => link.silent || upstream.write(data));
    upstream.on("data", (data) => link.silent || client.write(data));
    const end = () => {
      links.delete(link);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(undefined)));
  const port = /** @type {net.AddressInfo} */ (server.address()).port;
  return {
    url: `ws://127.0.0.1:${port}`,
    /** Connections open through it now. */
    get open() {
      return links.size;
    },
    cut() {
      for (const link of links) {
        link.client.resetAndDestroy();
        link.upstream.destroy();
      }
      links.clear();
    },
    silence() {
      for (const link of links) link.silent = true;
    },
    /** New connections are refused (true) or let through again. */
    refuse(on = true) {
      refusing = on;
    },
    close() {
      this.cut();
      server.close();
    },
  };
}

/**
 * An HS256 token for `sub` living `ttl` seconds, with `claims`.
 * @param {string} sub
 * @param {number} ttl
 * @param {Record<string, unknown>} claims
 */
export function token(sub, ttl = 3600, claims = {}) {
  const part = (/** @type {unknown} */ value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const head = part({ alg: "HS256", typ: "JWT" });
  const body = part({ sub, exp: Math.floor(Date.now() / 1000) + ttl, ...claims });
  const signature = createHmac("sha256", SECRET).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${signature}`;
}

/** How long a test waits for what must happen. */
export const DEADLINE = 10000;

/**
 * Resolves when `check()` holds, checked after each of `emitter`'s `type`
 * events (and now); fails after DEADLINE with `what`.
 * @param {{ on: (type: any, fn: (v: any) => void) => () => void }} emitter
 * @param {string} type
 * @param {() => boolean} check
 * @param {string} what
 */
export function until(emitter, type, check, what) {
  if (check()) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`timed out waiting for ${what}`));
    }, DEADLINE);
    const stop = emitter.on(type, () => {
      if (check()) {
        clearTimeout(timer);
        stop();
        resolve(undefined);
      }
    });
  });
}

/**
 * The next `type` event of `emitter`.
 * @param {{ on: (type: any, fn: (v: any) => void) => () => void }} emitter
 * @param {string} type
 */
export function next(emitter, type) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for a ${type} event`)), DEADLINE);
    const stop = emitter.on(type, (event) => {
      clearTimeout(timer);
      stop();
      resolve(event);
    });
  });
}

/**
 * A bare protocol client (no library): for publishing from outside and
 * reading what the server says.
 * @param {string} url
 */
export async function rawClient(url) {
  const socket = new WebSocket(`${url}/ws`);
  /** @type {any[]} */
  const frames = [];
  /** @type {((frame: any) => void)[]} */
  const waiting = [];
  socket.on("message", (data) => {
    const frame = JSON.parse(String(data));
    const waiter = waiting.shift();
    if (waiter) waiter(frame);
    else frames.push(frame);
  });
  await new Promise((resolve, reject) => socket.once("open", resolve).once("error", reject));
  const client = {
    socket,
    /** @param {Record<string, unknown>} frame */
    send(frame) {
      socket.send(JSON.stringify(frame));
    },
    /** @returns {Promise<any>} */
    next() {
      const frame = frames.shift();
      if (frame) return Promise.resolve(frame);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("no frame from the server")), DEADLINE);
        waiting.push((frame) => {
          clearTimeout(timer);
          resolve(frame);
        });
      });
    },
    /** The next frame of `type`. @param {string} type */
    async expect(type) {
      for (;;) {
        const frame = await client.next();
        if (frame.type === type) return frame;
      }
    },
    close() {
      socket.terminate();
    },
  };
  await client.expect("welcome");
  return client;
}

/**
 * A redis-server of the test's own on a free port; resolves once it is
 * ready (its log says so).
 */
export async function startRedis(port = 0) {
  if (port === 0) {
    const free = net.createServer();
    await new Promise((resolve) => free.listen(0, "127.0.0.1", () => resolve(undefined)));
    port = /** @type {net.AddressInfo} */ (free.address()).port;
    await new Promise((resolve) => free.close(resolve));
  }
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = createInterface({ input: /** @type {any} */ (child.stdout) });
  await new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`redis-server exited (${code})`)));
    lines.on("line", (line) => line.includes("Ready to accept connections") && resolve(undefined));
  });
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    /** Kills it (its data is gone) and waits. */
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGKILL");
      await exited;
    },
  };
}
