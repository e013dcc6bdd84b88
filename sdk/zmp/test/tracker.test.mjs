// Unit tests of the core against a fake zmp (nativeStorage, tokens, events) and a fake gateway.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createTracker, uuid, backoff, retryAfter, ZcdpError } from "../dist/index.js";
import { fakeZmp, fakeGateway, waitFor, storedQueue, UUID, EventName } from "./fake.mjs";

const HOUR = 3600e3;

function setup({ zmp = fakeZmp(), gw = fakeGateway(), ...options } = {}) {
  const errors = [];
  const t = createTracker({
    host: "https://gw.example/",
    writeKey: "wk-public",
    zmp,
    flushAt: 1000,
    flushIntervalMs: HOUR,
    onError: (e) => errors.push(e),
    fetch: gw.fetch,
    ...options,
  });
  return { t, zmp, gw, errors };
}

test("events carry a UUID each, the time, the anonymous id, the screen and the launch's context; batches carry sent_at", async () => {
  const zmp = fakeZmp({ routeParams: { utm_source: "zalo_oa", utm_campaign: "tet-2027", affiliate_id: "aff-9", other: "x" } });
  const { t, gw } = setup({ zmp, context: { app_version: "2.3.1" } });
  const before = Date.now();
  const a = t.page("/home", { page_title: "Trang chủ" });
  const b = t.track("product_viewed", { product_id: "cf-suada", price: 35000 });
  assert.equal(await t.flush(), 0);
  const [batch] = gw.batches();
  assert.equal(gw.batches().length, 1);
  assert.equal(batch.url, "https://gw.example/v1/batch");
  assert.equal(batch.method, "POST");
  assert.equal(batch.headers.authorization, "Bearer wk-public");
  assert.equal(batch.headers["content-type"], "application/json");
  assert.equal(batch.headers["x-zcdp-session"], undefined);
  assert.ok(batch.body.sent_at >= before && batch.body.sent_at <= Date.now());
  const [p, v] = batch.body.events;
  assert.deepEqual([p.event_id, v.event_id], [a, b]);
  assert.match(a, UUID);
  assert.notEqual(a, b);
  assert.equal(p.type, "page_viewed");
  assert.deepEqual(p.properties, { page_title: "Trang chủ" });
  assert.ok(p.event_time >= before && p.event_time <= batch.body.sent_at);
  assert.deepEqual(p.user, { anonymous_id: t.anonymousId });
  assert.match(t.anonymousId, UUID);
  assert.equal(zmp.data.get("zcdp:aid"), t.anonymousId, "the anonymous id is kept in nativeStorage");
  assert.deepEqual(v.context, {
    library: "zcdp-zmp/0.1.0",
    utm_source: "zalo_oa",
    utm_campaign: "tet-2027",
    affiliate_id: "aff-9",
    platform: "android",
    zalo_version: "24.10.1",
    locale: "vi",
    app_version: "2.3.1",
    screen: "/home",
  });
  assert.deepEqual(v.properties, { product_id: "cf-suada", price: 35000 });
  assert.equal(storedQueue(zmp).length, 0, "sent events leave the stored queue");
  t.close();
});

test("the anonymous id survives a restart; reset() makes a new one", async () => {
  const zmp = fakeZmp();
  const { t } = setup({ zmp });
  const id = t.anonymousId;
  t.close();
  const { t: again } = setup({ zmp: fakeZmp({ data: zmp.data }) });
  assert.equal(again.anonymousId, id);
  again.reset();
  assert.notEqual(again.anonymousId, id);
  assert.match(again.anonymousId, UUID);
  again.close();
});

test("a getSystemInfo that answers a Promise fills the context too; long deep-link values are cut to the gateway's bounds", async () => {
  const long = "ư".repeat(300); // 2 bytes each in UTF-8
  const zmp = fakeZmp({ system: Promise.resolve({ platform: "iOS", zaloVersion: "1", language: "en" }), routeParams: { utm_source: long, affiliate_id: long } });
  const { t, gw } = setup({ zmp });
  await new Promise((r) => setTimeout(r, 0));
  t.track("search", { query: "trà" });
  await t.flush();
  const [e] = gw.delivered();
  assert.equal(e.context.platform, "iOS");
  assert.equal(Buffer.byteLength(e.context.utm_source), 256);
  assert.equal(Buffer.byteLength(e.context.affiliate_id), 128);
  t.close();
});

test("uuid() makes version-4 UUIDs from crypto.getRandomValues, without repeats", () => {
  const seen = new Set();
  for (let i = 0; i < 10000; i++) {
    const u = uuid();
    assert.match(u, UUID);
    seen.add(u);
  }
  assert.equal(seen.size, 10000);
});

test("flushAt: the count sends without a flush() call", async () => {
  const { t, gw } = setup({ flushAt: 3 });
  t.track("search", { query: "a" });
  t.track("search", { query: "b" });
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(gw.batches().length, 0);
  t.track("search", { query: "c" });
  await waitFor(() => gw.batches().length === 1, 2000, "the batch of three");
  assert.equal(gw.batches()[0].body.events.length, 3);
  t.close();
});

test("flushIntervalMs: what waits is sent on time", async () => {
  const { t, gw } = setup({ flushIntervalMs: 100 });
  const start = Date.now();
  t.track("search", { query: "a" });
  await waitFor(() => gw.batches().length === 1, 2000, "the timed batch");
  assert.ok(Date.now() - start >= 90);
  t.close();
});

test("batches stay within the gateway's limits: 1,000 events and 500 KB; an event over 32 KB is dropped and reported", async () => {
  const { t, gw, errors } = setup({ maxQueuedEvents: 5000 });
  for (let i = 0; i < 1500; i++) t.track("search", { query: "q" + i });
  await t.flush();
  assert.deepEqual(gw.batches().map((b) => b.body.events.length), [1000, 500]);
  const blob = "x".repeat(30 * 1024);
  for (let i = 0; i < 30; i++) t.track("product_viewed", { product_id: "p" + i, note: blob });
  await t.flush();
  const big = gw.batches().slice(2);
  assert.ok(big.length >= 2);
  for (const b of big) assert.ok(Buffer.byteLength(b.raw) <= 500 * 1024, `a batch of ${Buffer.byteLength(b.raw)} bytes`);
  assert.equal(big.reduce((n, b) => n + b.body.events.length, 0), 30);
  const tooBig = t.track("product_viewed", { product_id: "p", note: "x".repeat(33 * 1024) });
  await t.flush();
  assert.equal(gw.delivered().filter((e) => e.event_id === tooBig).length, 0);
  assert.deepEqual(errors.map((e) => [e.kind, e.code, e.event_id]), [["dropped", "event_too_large", tooBig]]);
  t.close();
});

test("the queue is capped: the oldest events are dropped and counted", async () => {
  const gw = fakeGateway(() => "network");
  const { t, zmp, errors } = setup({ gw, maxQueuedEvents: 5 });
  const ids = [];
  for (let i = 0; i < 8; i++) ids.push(t.track("search", { query: "q" + i }));
  await null; // the queue is written once per turn
  assert.deepEqual(storedQueue(zmp).map((e) => e.event_id), ids.slice(3));
  const dropped = errors.filter((e) => e.code === "queue_full");
  assert.equal(dropped.reduce((n, e) => n + e.count, 0), 3);
  assert.ok(dropped.every((e) => e.kind === "dropped"));
  t.close();
});

test("the queue in nativeStorage survives a restart and is delivered once, by event id", async () => {
  const zmp = fakeZmp();
  let up = false;
  const gw = fakeGateway(() => (up ? undefined : "network"));
  const { t } = setup({ zmp, gw });
  const ids = [t.page("/home"), t.track("search", { query: "a" }), t.track("product_viewed", { product_id: "p1" })];
  assert.equal(await t.flush(), 3, "the gateway is down: three wait");
  assert.deepEqual(storedQueue(zmp).map((e) => e.event_id), ids);
  t.close(); // the app is killed
  up = true;
  const { t: again } = setup({ zmp: fakeZmp({ data: zmp.data }), gw });
  await waitFor(() => gw.delivered().length === 3, 3000, "the stored events");
  assert.deepEqual(gw.delivered().map((e) => e.event_id), ids);
  assert.equal(await again.flush(), 0);
  assert.equal(gw.delivered().length, 3, "each exactly once");
  assert.deepEqual(storedQueue(zmp), []);
  again.close();
});

test("AppPaused flushes at once (with keepalive); so do AppClose, pagehide, visibilitychange to hidden and NetworkChanged", async () => {
  const zmp = fakeZmp();
  const gw = fakeGateway();
  const g = globalThis;
  const docListeners = {};
  const winListeners = {};
  g.document = { visibilityState: "visible", addEventListener: (n, f) => (docListeners[n] = f), removeEventListener: (n) => delete docListeners[n] };
  g.addEventListener = (n, f) => (winListeners[n] = f);
  g.removeEventListener = (n) => delete winListeners[n];
  try {
    const { t } = setup({ zmp, gw });
    t.track("search", { query: "a" });
    zmp.emit(EventName.AppPaused);
    await waitFor(() => gw.batches().length === 1, 2000, "the batch on AppPaused");
    assert.equal(gw.batches()[0].keepalive, true);
    t.track("search", { query: "b" });
    winListeners.pagehide();
    await waitFor(() => gw.batches().length === 2, 2000, "the batch on pagehide");
    t.track("search", { query: "c" });
    docListeners.visibilitychange();
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(gw.batches().length, 2, "still visible: nothing sent");
    g.document.visibilityState = "hidden";
    docListeners.visibilitychange();
    await waitFor(() => gw.batches().length === 3, 2000, "the batch on visibilitychange");
    t.track("search", { query: "d" });
    zmp.emit(EventName.AppClose);
    await waitFor(() => gw.batches().length === 4, 2000, "the batch on AppClose");
    t.track("search", { query: "e" });
    zmp.emit(EventName.NetworkChanged, { isConnected: true });
    await waitFor(() => gw.batches().length === 5, 2000, "the batch on NetworkChanged");
    t.close();
    assert.deepEqual(zmp.listeners.get(EventName.AppPaused), []);
    assert.equal(docListeners.visibilitychange, undefined);
    assert.equal(winListeners.pagehide, undefined);
  } finally {
    delete g.document;
    delete g.addEventListener;
    delete g.removeEventListener;
  }
});

test("503 with Retry-After: nothing is sent before it, then the same events again", async () => {
  let fail = 1;
  const gw = fakeGateway((req) =>
    req.path === "/v1/batch" && fail-- > 0 ? { status: 503, headers: { "retry-after": "1" }, body: { error: "kafka_unavailable", message: "…" } } : undefined,
  );
  const { t, errors } = setup({ gw });
  const id = t.track("search", { query: "a" });
  assert.equal(await t.flush(), 1);
  assert.equal(await t.flush(), 1, "an explicit flush inside Retry-After sends nothing");
  assert.equal(gw.batches().length, 1);
  await waitFor(() => gw.delivered().length === 1, 4000, "the retry");
  const [first, second] = gw.batches();
  assert.ok(second.at - first.at >= 1000, `retried after ${second.at - first.at} ms`);
  assert.deepEqual(second.body.events.map((e) => e.event_id), [id]);
  assert.ok(second.body.sent_at > first.body.sent_at, "sent_at is the time of each send");
  assert.deepEqual(errors.map((e) => [e.kind, e.code, e.status, e.delay]), [["retry", "kafka_unavailable", 503, 1000]]);
  t.close();
});

test("429 and network errors are retried with back-off; a 400, 401 or 413 never is", async () => {
  const answers = ["network", { status: 429, body: { error: "rate_limited" } }];
  const gw = fakeGateway((req) => (req.path === "/v1/batch" ? answers.shift() : undefined));
  const { t, errors } = setup({ gw });
  const id = t.track("search", { query: "a" });
  await t.flush();
  await waitFor(() => gw.delivered().length === 1, 8000, "delivery after two retries");
  assert.equal(gw.batches().length, 3);
  assert.deepEqual(errors.map((e) => e.code), ["network_error", "rate_limited"]);
  const [a, b, c] = gw.batches();
  assert.ok(c.at - b.at >= 900, "the second retry waits longer (1–2 s)");
  assert.deepEqual(c.body.events.map((e) => e.event_id), [id]);
  t.close();

  for (const status of [400, 401, 413]) {
    const gw = fakeGateway((req) => (req.path === "/v1/batch" ? { status, body: { error: "nope" } } : undefined));
    const { t, zmp, errors } = setup({ gw });
    t.track("search", { query: "a" });
    assert.equal(await t.flush(), 0);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(gw.batches().length, 1, `${status} is not retried`);
    assert.deepEqual(errors.map((e) => [e.kind, e.code, e.status, e.count]), [["dropped", "nope", status, 1]]);
    assert.deepEqual(storedQueue(zmp), []);
    t.close();
  }
});

test("back-off doubles from 1 s to 60 s with jitter; Retry-After is read in seconds or as a date", () => {
  for (let n = 1; n < 12; n++) {
    const top = Math.min(60000, 1000 * 2 ** (n - 1));
    for (let i = 0; i < 50; i++) {
      const d = backoff(n);
      assert.ok(d >= top / 2 && d <= top, `${d} for attempt ${n}`);
    }
  }
  assert.equal(retryAfter("7"), 7000);
  assert.equal(retryAfter(null), undefined);
  assert.equal(retryAfter("soon"), undefined);
  const d = retryAfter(new Date(Date.now() + 5000).toUTCString());
  assert.ok(d > 3000 && d <= 5000);
});

test("per-event rejections in a 200 are dropped and reported; the others are done", async () => {
  const gw = fakeGateway((req) =>
    req.path === "/v1/batch"
      ? { body: { accepted: 1, rejected: [{ index: 1, event_id: req.body.events[1].event_id, code: "invalid_value", reason: "price: money is whole VND" }] } }
      : undefined,
  );
  const { t, zmp, errors } = setup({ gw });
  t.track("search", { query: "a" });
  const bad = t.track("product_viewed", { product_id: "p", price: 1.5 });
  assert.equal(await t.flush(), 0);
  assert.deepEqual(storedQueue(zmp), []);
  assert.deepEqual(errors, [{ kind: "rejected", code: "invalid_value", message: "price: money is whole VND", status: 200, event_id: bad, type: "product_viewed" }]);
  assert.equal(gw.batches().length, 1);
  t.close();
});

test("signIn: getAccessToken → POST /v1/session; then events name the user under the session; identify and consent wait for it", async () => {
  const { t, gw, zmp } = setup();
  const early = t.track("search", { query: "a" });
  const consent = t.consent("profile", true, "2026-09");
  const identify = t.identify({ name: "Lan" });
  await t.flush();
  assert.deepEqual(gw.delivered().map((e) => e.event_id), [early], "identify and consent wait for a session");
  assert.deepEqual(storedQueue(zmp).map((e) => e.event_id), [consent, identify]);
  const signed = await t.signIn();
  assert.equal(signed.zaloId, "lan");
  assert.match(signed.expiresAt, /^\d{4}-\d\d-\d\dT/);
  const open = gw.requests.find((r) => r.path === "/v1/session");
  assert.deepEqual(open.body, { access_token: "tok-lan" });
  assert.equal(open.headers.authorization, "Bearer wk-public");
  const later = t.track("product_viewed", { product_id: "p1" });
  await t.flush();
  const [, second] = gw.batches();
  assert.equal(second.headers["x-zcdp-session"], "sess-lan-1");
  assert.deepEqual(second.body.events.map((e) => [e.event_id, e.user.zalo_id, e.user.anonymous_id]), [
    [consent, "lan", t.anonymousId],
    [identify, "lan", t.anonymousId],
    [later, "lan", t.anonymousId],
  ]);
  assert.deepEqual(second.body.events[0].properties, { purpose: "profile", granted: true, policy_version: "2026-09" });
  assert.deepEqual(second.body.events[1].properties, { traits: { name: "Lan" } });
  t.close();
});

test("the session is kept across a restart and opened again before it ends; a refused session is opened again", async () => {
  let n = 0;
  const gw = fakeGateway((req) => {
    if (req.path !== "/v1/session") return;
    n++;
    // The first session ends in 3 s: the SDK renews it within the last fifth of its life.
    const ttl = n === 1 ? 3000 : 3600e3;
    return { body: { session: "s" + n, zalo_id: "lan", expires_at: new Date(Date.now() + ttl).toISOString() } };
  });
  const zmp = fakeZmp();
  const { t } = setup({ zmp, gw });
  await t.signIn();
  t.track("search", { query: "a" });
  await t.flush();
  assert.equal(gw.batches()[0].headers["x-zcdp-session"], "s1");
  t.close();
  const { t: again } = setup({ zmp: fakeZmp({ data: zmp.data }), gw });
  again.track("search", { query: "b" });
  await again.flush();
  assert.equal(gw.batches()[1].headers["x-zcdp-session"], "s1", "kept in nativeStorage");
  await new Promise((r) => setTimeout(r, 2500));
  again.track("search", { query: "c" });
  await again.flush();
  assert.equal(n, 2, "renewed before it ended");
  assert.equal(gw.batches()[2].headers["x-zcdp-session"], "s2");
  assert.equal(gw.batches()[2].body.events[0].user.zalo_id, "lan");
  again.close();

  // The gateway refuses a session (its secret changed): one new session, the batch sent again.
  let refuse = 1;
  const gw2 = fakeGateway((req) =>
    req.path === "/v1/batch" && req.headers["x-zcdp-session"] && refuse-- > 0 ? { status: 401, body: { error: "invalid_session" } } : undefined,
  );
  const { t: third, errors } = setup({ gw: gw2 });
  await third.signIn();
  const id = third.track("search", { query: "d" });
  assert.equal(await third.flush(), 0);
  assert.deepEqual(gw2.batches().map((b) => b.headers["x-zcdp-session"]), ["sess-lan-1", "sess-lan-2"]);
  assert.deepEqual(gw2.delivered().map((e) => e.event_id), [id]);
  assert.deepEqual(errors, []);
  third.close();
});

test("sharePhone: consent first, then getPhoneNumber + getAccessToken → POST /v1/users/phone under the session; no_consent is retried while the consent is on its way", async () => {
  let refusals = 1;
  const gw = fakeGateway((req) =>
    req.path === "/v1/users/phone" && refusals-- > 0
      ? { status: 403, body: { accepted: 0, rejected: [{ index: 0, event_id: req.body.event_id, code: "no_consent", reason: "no consent to purpose phone" }] } }
      : undefined,
  );
  const { t, zmp } = setup({ gw });
  await t.signIn();
  await t.sharePhone({ policyVersion: "2026-09" });
  const paths = gw.requests.map((r) => r.path);
  assert.deepEqual(paths, ["/v1/session", "/v1/batch", "/v1/users/phone", "/v1/users/phone"]);
  const [, consent, ask, again] = gw.requests;
  assert.deepEqual(consent.body.events.map((e) => [e.type, e.properties.purpose, e.user.zalo_id]), [["consent_changed", "phone", "lan"]]);
  assert.equal(ask.headers["x-zcdp-session"], "sess-lan-1");
  assert.deepEqual(Object.keys(ask.body).sort(), ["access_token", "code", "event_id"]);
  assert.equal(ask.body.access_token, "tok-lan");
  assert.equal(ask.body.code, "ph-84912345678");
  assert.match(ask.body.event_id, UUID);
  assert.equal(again.body.event_id, ask.body.event_id, "the same identify id on a retry");
  assert.equal(zmp.calls.phone, 1);

  // Zalo refuses the token: a ZcdpError with the gateway's code, no retry.
  const gw2 = fakeGateway((req) => (req.path === "/v1/users/phone" ? { status: 400, body: { error: "phone_token_refused", message: "refused" } } : undefined));
  const { t: t2 } = setup({ gw: gw2 });
  await t2.signIn();
  await assert.rejects(t2.sharePhone(), (e) => e instanceof ZcdpError && e.code === "phone_token_refused" && e.status === 400);
  assert.equal(gw2.requests.filter((r) => r.path === "/v1/users/phone").length, 1);
  t.close();
  t2.close();
});

test("sharePhone without a session signs in first; a user who refuses the phone permission gets the rejection", async () => {
  const { t, gw } = setup();
  await t.sharePhone();
  assert.deepEqual(gw.requests.map((r) => r.path), ["/v1/session", "/v1/users/phone"]);
  t.close();
  const zmp = fakeZmp();
  zmp.getPhoneNumber = async () => {
    throw Object.assign(new Error("User denied"), { code: -1401 });
  };
  const { t: t2, gw: gw2 } = setup({ zmp });
  await assert.rejects(t2.sharePhone(), /User denied/);
  assert.equal(gw2.requests.length, 0);
  t2.close();
});

test("me() and recommendations() read /v1/me/… under the session; without one they say session_required", async () => {
  const { t, gw } = setup();
  await assert.rejects(t.me(), (e) => e instanceof ZcdpError && e.code === "session_required");
  await t.signIn();
  const me = await t.me();
  assert.equal(me.user_key, "lan");
  const recs = await t.recommendations({ limit: 3 });
  assert.deepEqual(recs.items, []);
  const reads = gw.requests.filter((r) => r.path.startsWith("/v1/me"));
  assert.deepEqual(reads.map((r) => [r.method, r.path, r.headers["x-zcdp-session"]]), [
    ["GET", "/v1/me/profile", "sess-lan-1"],
    ["GET", "/v1/me/recommendations?limit=3", "sess-lan-1"],
  ]);
  t.close();
});

test("reset(): no session, no user id, a new anonymous id; the user's unsent identify cannot follow", async () => {
  const { t, gw, errors } = setup();
  await t.signIn();
  t.track("search", { query: "a" });
  await t.flush();
  const before = t.anonymousId;
  t.reset();
  const after = t.track("search", { query: "b" });
  await t.flush();
  const last = gw.batches().at(-1);
  assert.equal(last.headers["x-zcdp-session"], undefined);
  assert.deepEqual(last.body.events.map((e) => e.user), [{ anonymous_id: t.anonymousId }]);
  assert.notEqual(t.anonymousId, before);
  assert.equal(last.body.events[0].event_id, after);
  assert.deepEqual(errors, []);
  t.close();
});

test("reset() while a send is in flight: what is tracked after it never goes under the old user's session; their unsent identify is dropped", async () => {
  let release;
  const held = new Promise((r) => (release = r));
  let first = true;
  const gw = fakeGateway(async (req) => {
    if (req.path === "/v1/batch" && first) {
      first = false;
      await held;
    }
    return undefined;
  });
  const { t, errors } = setup({ gw });
  await t.signIn();
  t.identify({ name: "Lan" });
  t.track("search", { query: "lan's" });
  const flushing = t.flush();
  await waitFor(() => gw.batches().length === 1, 2000, "the first send");
  t.reset();
  t.identify({ name: "Minh" }); // the next person: waits for their own sign-in
  const after = t.track("search", { query: "minh's" });
  release();
  await flushing;
  await t.flush();
  const sent = gw.batches().slice(1);
  const minh = sent.flatMap((b) => b.body.events.map((e) => [b.headers["x-zcdp-session"], e]));
  assert.ok(minh.some(([, e]) => e.event_id === after), "the search after reset() is sent");
  for (const [session, e] of minh) {
    assert.equal(session, undefined, `${e.type} after reset() went under the old session`);
    assert.equal(e.user.zalo_id, undefined, `${e.type} after reset() names the old user`);
  }
  assert.ok(!minh.some(([, e]) => e.type === "identify"), "an identify without a session is not sent");
  assert.deepEqual(errors.filter((e) => e.code === "reset").map((e) => e.count), [1], "the old user's unsent identify is dropped; the new user's waits for their sign-in");
  t.close();
});

test("a 200 that is not the gateway's answer (a captive portal's page) is retried, not taken as delivered", async () => {
  let portal = 1;
  const gw = fakeGateway((req) => (req.path === "/v1/batch" && portal-- > 0 ? { status: 200, body: "<html>login</html>" } : undefined));
  const { t, errors } = setup({ gw });
  const id = t.track("search", { query: "a" });
  assert.equal(await t.flush(), 1, "still queued");
  await waitFor(() => gw.delivered().some((e) => e.event_id === id && gw.batches().length === 2), 5000, "the retry");
  assert.equal(errors[0].kind, "retry");
  t.close();
});

test("Retry-After: 0 waits a second instead of retrying at once", async () => {
  let busy = 1;
  const gw = fakeGateway((req) =>
    req.path === "/v1/batch" && busy-- > 0 ? { status: 429, headers: { "retry-after": "0" }, body: { error: "rate_limited" } } : undefined,
  );
  const { t, errors } = setup({ gw });
  t.track("search", { query: "a" });
  await t.flush();
  await waitFor(() => gw.delivered().length === 1, 4000, "the retry");
  const [a, b] = gw.batches();
  assert.ok(b.at - a.at >= 1000, `retried after ${b.at - a.at} ms`);
  assert.equal(errors[0].delay, 1000);
  t.close();
});

test("nothing personal is logged: no console output at all, and onError carries no traits, phone or token", async () => {
  const logged = [];
  const saved = {};
  for (const k of ["log", "info", "warn", "error", "debug", "trace"]) {
    saved[k] = console[k];
    console[k] = (...a) => logged.push(a);
  }
  try {
    const gw = fakeGateway((req) => {
      if (req.path === "/v1/batch" && req.body.events.some((e) => e.type === "identify"))
        return { body: { accepted: 0, rejected: [{ index: 0, event_id: req.body.events[0].event_id, code: "no_consent", reason: "traits need consent to purpose profile" }] } };
      if (req.path === "/v1/users/phone") return { status: 400, body: { error: "phone_token_refused", message: "Zalo refused the token" } };
    });
    const { t, errors } = setup({ gw });
    await t.signIn();
    t.identify({ name: "Nguyễn Thị Lan", email: "lan@example.vn", birthday: "1994-03-08" });
    t.track("product_viewed", { product_id: "p", note: "x".repeat(40000) });
    await t.flush();
    await t.sharePhone().catch(() => {});
    t.close();
    assert.deepEqual(logged, []);
    const said = JSON.stringify(errors);
    for (const secret of ["Nguyễn", "lan@example", "1994-03-08", "ph-84912345678", "tok-lan", "sess-lan", "wk-public", "xxxx"]) assert.ok(!said.includes(secret), `${secret} in ${said}`);
    assert.ok(errors.length >= 2);
  } finally {
    Object.assign(console, saved);
  }
});

test("a nativeStorage that fails is replaced by memory, and said once", async () => {
  const zmp = fakeZmp();
  zmp.nativeStorage.setItem = () => {
    throw new Error("quota");
  };
  const { t, gw, errors } = setup({ zmp });
  t.track("search", { query: "a" });
  t.track("search", { query: "b" });
  assert.equal(await t.flush(), 0);
  assert.equal(gw.delivered().length, 2);
  assert.deepEqual(errors.map((e) => [e.kind, e.code]), [["storage", "storage_failed"]]);
  t.close();
});

test("without nativeStorage (zmp-sdk before 2.43) the tracker runs from memory", async () => {
  const zmp = fakeZmp();
  delete zmp.nativeStorage;
  const { t, gw } = setup({ zmp });
  t.page("/");
  assert.equal(await t.flush(), 0);
  assert.equal(gw.delivered().length, 1);
  t.close();
});
