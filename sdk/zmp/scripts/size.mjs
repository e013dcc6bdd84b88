// The core's size as shipped to a Mini App: src/index.ts bundled and minified by esbuild, then
// gzipped (level 9, as a CDN or the Zalo packager would).
import { gzipSync } from "node:zlib";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const root = fileURLToPath(new URL("..", import.meta.url));

/** { minified, gzipped, code } of the core bundle. */
export async function coreSize() {
  const out = await esbuild.build({
    absWorkingDir: root,
    entryPoints: ["src/index.ts"],
    bundle: true,
    minify: true,
    format: "esm",
    target: "es2020",
    write: false,
    logLevel: "silent",
  });
  const code = out.outputFiles[0].contents;
  return { minified: code.length, gzipped: gzipSync(code, { level: 9 }).length, code };
}
