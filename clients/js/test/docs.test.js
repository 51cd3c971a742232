// docs/client-js.md keeps true: its Node example runs verbatim against a
// real server (with the library installed as a user installs it), and the
// size it states is the size.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";

import { transform } from "esbuild";

import { rawClient, startServer } from "./support.js";

const docs = readFileSync(new URL("../../../docs/client-js.md", import.meta.url), "utf8");

/** @param {string} kind */
function example(kind) {
  const match = new RegExp(`<!-- example: ${kind} -->\\n\`\`\`js\\n([\\s\\S]*?)\`\`\``).exec(docs);
  assert.ok(match, `docs/client-js.md has a ${kind} example`);
  return match[1];
}

test("the Node example runs as the docs give it", async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const other = await rawClient(server.url);
  t.after(() => other.close());
  other.send({ type: "join", room: "lobby" });
  await other.expect("joined");
  const file = fileURLToPath(new URL("./installed/example.mjs", import.meta.url));
  writeFileSync(file, example("node"));
  const run = await promisify(execFile)(process.execPath, [file], {
    env: { ...process.env, CHAT_URL: server.url },
    timeout: 10000,
  });
  assert.equal(
    run.stdout,
    ["in the lobby: 2 members", 'bot: {"text":"hello"}', "published as #1", ""].join("\n"),
  );
  const seen = await other.expect("message");
  assert.deepEqual(seen.body, { text: "hello" });
});

test("the size the docs state is the size (minified, gzipped), within 10%", async () => {
  const code = readFileSync(new URL("../roomcast.js", import.meta.url), "utf8");
  const minified = await transform(code, { minify: true, format: "esm" });
  const size = gzipSync(minified.code, { level: 9 }).length;
  const stated = /([\d,]+) bytes minified and gzipped/.exec(docs);
  assert.ok(stated, "docs/client-js.md states the size");
  const figure = Number(stated[1].replace(/,/g, ""));
  assert.ok(Math.abs(size - figure) <= figure / 10, `docs say ${figure} bytes, it is ${size}: update the docs`);
});
