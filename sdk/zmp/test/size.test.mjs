// The core as a Mini App ships it stays small: under 5 KB minified + gzipped, with no React and
// no catalogue in it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { coreSize } from "../scripts/size.mjs";

test("the core is under 5 KB minified + gzipped", async () => {
  const { gzipped, code } = await coreSize();
  console.log(`zcdp-zmp core: ${gzipped} bytes minified + gzipped`);
  assert.ok(gzipped < 5 * 1024, `${gzipped} bytes`);
  const text = new TextDecoder().decode(code);
  assert.ok(!/react/i.test(text), "no React in the core");
  assert.ok(!text.includes("referral_completed"), "no catalogue in the core");
  assert.ok(!/console\./.test(text), "the core logs nothing");
});
