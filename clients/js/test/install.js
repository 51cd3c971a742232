// Installs the library the way a user does, from `npm pack`'s tarball, into
// test/installed (the tests import it from there), with `ws` beside it.
import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));
const root = fileURLToPath(new URL("..", import.meta.url));
const target = `${here}installed`;
rmSync(target, { recursive: true, force: true });
mkdirSync(target, { recursive: true });
writeFileSync(`${target}/package.json`, JSON.stringify({ name: "an-application", private: true, type: "module" }));
const npm = process.platform === "win32" ? "npm.cmd" : "npm";
const packed = JSON.parse(execFileSync(npm, ["pack", "--json", "--pack-destination", target], { cwd: root }).toString());
const tarball = `${target}/${packed[0].filename}`;
execFileSync(npm, ["install", "--no-audit", "--no-fund", "--offline", tarball, `${root}node_modules/ws`], {
  cwd: target,
  stdio: "inherit",
});
console.log(`installed ${packed[0].filename} (${packed[0].size} bytes packed) into test/installed`);
