// The SDK's event catalogue (the source of its TypeScript types) against the gateway's contract,
// docs/openapi.json: an event type, a property, a context or user member, a line or trait field,
// a property's kind, or which types require a property, on one side only fails here.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { CATALOG, CONTEXT_KEYS, USER_KEYS, ITEM, TRAITS, PURPOSES, LIMITS } from "../dist/catalog.js";

const doc = JSON.parse(readFileSync(new URL("../../../docs/openapi.json", import.meta.url), "utf8"));
const schemas = doc.components.schemas;
const sorted = (xs) => [...xs].sort();
const kind = (k) => k.replace(/!$/, "");
const required = (k) => k.endsWith("!");

/** The SDK kinds an OpenAPI property schema allows. */
function kindsOf(p) {
  const types = [p.type].flat().filter((t) => t !== "null");
  if (types.includes("array")) return ["items"];
  if (types.includes("object")) return ["traits"];
  if (types.includes("boolean") && types.length === 1) return ["bool"];
  if (types.includes("integer")) return ["int", "money"];
  if (p.enum) return ["purpose"];
  if (types.includes("string")) return ["text", "phone"];
  return [];
}

test("the event types are the contract's", () => {
  assert.deepEqual(sorted(Object.keys(CATALOG)), sorted(schemas.EventType.enum));
});

test("every property of the catalogue is in the contract, of the same kind, and the other way round", () => {
  const contract = schemas.Properties.properties;
  const ours = new Map();
  for (const [type, props] of Object.entries(CATALOG))
    for (const [name, k] of Object.entries(props)) {
      const seen = ours.get(name);
      assert.ok(!seen || seen === kind(k), `${name} is ${seen} in one type and ${kind(k)} in ${type}`);
      ours.set(name, kind(k));
    }
  assert.deepEqual(sorted(ours.keys()), sorted(Object.keys(contract)));
  for (const [name, k] of ours) assert.ok(kindsOf(contract[name]).includes(k), `${name}: ${k} vs ${JSON.stringify(contract[name].type)}`);
  // Money is whole VND: the contract says so in each money property's description.
  for (const [name, k] of ours) {
    const vnd = /Whole VND/.test(contract[name].description || "");
    if (k === "money" || vnd) assert.ok(k === "money" && vnd, `${name}: money on one side only`);
  }
});

test("which types require each property is the contract's", () => {
  const contract = schemas.Properties.properties;
  const types = Object.keys(CATALOG);
  const topic = { cart: types.filter((t) => t.startsWith("cart_") || t === "checkout_started"), order: types.filter((t) => t.startsWith("order_")) };
  for (const [name, p] of Object.entries(contract)) {
    const text = p.description || "";
    let want = [];
    // "Required by a, b (at least 1) and c (…)." or "Required by every cart event."
    const by = /Required by (.*?)\.(\s|$)/.exec(text);
    if (by) {
      const list = by[1].replace(/\([^)]*\)/g, "");
      const every = /every (cart|order) event/.exec(list);
      want = every ? topic[every[1]] : list.split(/,|\band\b/).map((s) => s.trim()).filter(Boolean);
    }
    const own = /^(\w+): required\./.exec(text);
    if (own) want = [own[1]];
    if (name === "items") want = ["order_placed"]; // "order_placed needs at least one"
    const ours = types.filter((t) => CATALOG[t][name] && required(CATALOG[t][name]));
    assert.deepEqual(sorted(ours), sorted(want), `the types requiring ${name}`);
  }
  assert.match(contract.items.description, /order_placed needs at least one/);
});

test("context and user members, cart lines, traits and purposes are the contract's", () => {
  assert.deepEqual(sorted(CONTEXT_KEYS), sorted(Object.keys(schemas.Context.properties)));
  assert.deepEqual(sorted(USER_KEYS), sorted(Object.keys(schemas.User.properties)));
  assert.deepEqual(sorted(Object.keys(ITEM)), sorted(Object.keys(schemas.Item.properties)));
  assert.deepEqual(sorted(Object.keys(ITEM).filter((k) => required(ITEM[k]))), sorted(schemas.Item.required));
  // The contract's `phone` trait is the one the write key may not send (phone_not_verified).
  const traits = schemas.Properties.properties.traits.properties;
  assert.deepEqual(sorted([...Object.keys(TRAITS), "phone"]), sorted(Object.keys(traits)));
  assert.deepEqual(sorted(PURPOSES), sorted(schemas.Properties.properties.purpose.enum.filter((p) => p !== null)));
});

test("the SDK's limits are the gateway's", () => {
  assert.equal(schemas.Batch.properties.events.maxItems, LIMITS.batchEvents);
  const answers = doc.paths["/v1/batch"].post.responses;
  const tooLarge = JSON.stringify(answers["413"]);
  assert.match(tooLarge, /32 KB/);
  assert.match(tooLarge, /500 KB/);
  assert.equal(LIMITS.eventBytes, 32 * 1024);
  assert.equal(LIMITS.batchBytes, 500 * 1024);
});
