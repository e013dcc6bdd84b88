// Builds the package: tsc for dist/*.js and *.d.ts, a type check of the typed API
// (test/types.check.ts), and the core's minified bundle, whose gzipped size it prints.
import { spawnSync } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { coreSize } from "./size.mjs";

const root = fileURLToPath(new URL("..", import.meta.url));
const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");

function run(args) {
  const r = spawnSync(process.execPath, [tsc, ...args], { cwd: root, stdio: "inherit" });
  if (r.status !== 0) {
    console.error(`build: tsc ${args.join(" ")} failed`);
    process.exit(1);
  }
}

rmSync(new URL("../dist", import.meta.url), { recursive: true, force: true });
run(["-p", "tsconfig.json"]);
run(["-p", "tsconfig.test.json"]);
const { minified, gzipped, code } = await coreSize();
writeFileSync(new URL("../dist/zcdp-zmp.min.js", import.meta.url), code);
console.log(`zcdp-zmp core: ${gzipped} bytes minified + gzipped (${minified} bytes minified)`);
