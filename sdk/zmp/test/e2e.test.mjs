// End to end: the SDK, in Node with a fake `zmp`, against a real `zcdp up` and its Zalo
// simulator. Skipped unless ZCDP_BIN names a zcdp binary (./scripts/test sets it).
//
// Between the SDK and the gateway sits a small counting proxy of this test: it records the event
// ids of every batch the gateway answered 200 (so a repeat would show), can be stopped and
// started again on the same port (the gateway, as the Mini App sees it, is down: connections are
// refused), and can answer a 503 with Retry-After. The embedded Kafka cluster of `zcdp up` is
// ephemeral, so stopping `zcdp up` itself would lose the profile the test reads: the second test
// does that on a real broker (tansu, which ./scripts/test provides as ZCDP_TEST_TANSU), whose
// topics outlive the process.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { connect } from "node:net";
import { createInterface } from "node:readline";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createTracker } from "../dist/index.js";
import { fakeZmp, storedQueue, waitFor } from "./fake.mjs";

const BIN = process.env.ZCDP_BIN;
const TANSU = process.env.ZCDP_TEST_TANSU;

/** Five product views while the gateway is away: after two failed sends they wait in the fake
 * nativeStorage. Their event ids. */
async function queueWhileAway(tracker, zmp, errors) {
  const offline = [];
  for (let i = 0; i < 5; i++) offline.push(tracker.track("product_viewed", { product_id: `offline-${i}`, price: 10000 }));
  assert.ok((await tracker.flush()) >= 5, "the events wait");
  await waitFor(() => errors.filter((e) => e.kind === "retry" && e.code === "network_error").length >= 2, 30e3, "two failed sends");
  const waiting = storedQueue(zmp).map((e) => e.event_id);
  for (const id of offline) assert.ok(waiting.includes(id), "each waits in nativeStorage");
  return offline;
}

/** Starts `zcdp up` on a free port and reads what it prints: the HTTP address, the simulator's
 * address and the keys (`<kind> key for app <app>: <key>`). */
async function startZcdp(flags = [], given = undefined) {
  const dir = given ?? mkdtempSync(join(tmpdir(), "zcdp-sdk-e2e-"));
  const child = spawn(BIN, ["up", "--http", "127.0.0.1:0", "--data-dir", dir, ...flags], {
    env: { ...process.env, ZCDP_LOG: "warn" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const up = { child, dir, keys: {} };
  const lines = createInterface({ input: child.stdout });
  const running = new Promise((resolve, reject) => {
    child.on("exit", (code) => reject(new Error(`zcdp up exited (${code}) before it was running`)));
    lines.on("line", (line) => {
      let m;
      if ((m = /HTTP API on (http:\/\/\S+)/.exec(line))) up.http = m[1];
      if ((m = /Zalo simulator on (http:\/\/\S+)/.exec(line))) up.sim = m[1];
      if ((m = /^(write|secret|admin) key for app (\S+): (\S+)$/.exec(line))) {
        up.app = m[2];
        up.keys[m[1]] = m[3];
      }
      if (line.startsWith("zcdp: running")) resolve();
    });
  });
  let timer;
  const deadline = new Promise((_, reject) => (timer = setTimeout(() => reject(new Error("zcdp up was not running within 120 s")), 120e3)));
  try {
    await Promise.race([running, deadline]);
  } catch (e) {
    child.kill("SIGKILL");
    throw e;
  } finally {
    clearTimeout(timer);
  }
  assert.ok(up.http && up.sim && up.keys.write && up.keys.secret, `zcdp printed its address, simulator and keys: ${JSON.stringify({ ...up, child: undefined })}`);
  await waitFor(async () => (await fetch(up.http + "/readyz").catch(() => ({}))).status === 200, 60e3, "GET /readyz 200");
  up.stop = async ({ keep = false } = {}) => {
    if (child.exitCode === null) {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      const killer = setTimeout(() => child.kill("SIGKILL"), 30e3);
      await exited;
      clearTimeout(killer);
    }
    if (!keep) rmSync(dir, { recursive: true, force: true });
  };
  return up;
}

/** The counting proxy in front of the gateway. */
async function startProxy(target) {
  let to = target;
  const batches = []; // { at, status, ids }
  const faults = []; // { status, retryAfter }
  const paths = []; // [path, status] of every request forwarded
  const server = createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const body = Buffer.concat(chunks);
    const isBatch = req.url === "/v1/batch";
    const ids = isBatch ? JSON.parse(body).events.map((e) => e.event_id) : [];
    const fault = isBatch && faults.shift();
    if (fault) {
      batches.push({ at: Date.now(), status: fault.status, ids });
      res.writeHead(fault.status, { "content-type": "application/json", "retry-after": String(fault.retryAfter) });
      res.end(JSON.stringify({ error: "kafka_unavailable", message: "injected by the test" }));
      return;
    }
    const headers = {};
    for (const h of ["authorization", "content-type", "x-zcdp-session"]) if (req.headers[h]) headers[h] = req.headers[h];
    let r;
    try {
      r = await fetch(to + req.url, { method: req.method, headers, body: req.method === "GET" ? undefined : body });
    } catch {
      // The gateway behind is down: so is the connection, as the Mini App would see it.
      req.socket.destroy();
      return;
    }
    const text = await r.text();
    if (isBatch) batches.push({ at: Date.now(), status: r.status, ids });
    paths.push([req.url, r.status]);
    const out = { "content-type": "application/json" };
    if (r.headers.get("retry-after")) out["retry-after"] = r.headers.get("retry-after");
    res.writeHead(r.status, out);
    res.end(text);
  });
  const listen = (port) => new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
  await listen(0);
  const port = server.address().port;
  return {
    url: `http://127.0.0.1:${port}`,
    batches,
    faults,
    paths,
    /** Every delivered event id with the number of 200 answers that carried it. */
    delivered() {
      const n = new Map();
      for (const b of batches) if (b.status === 200) for (const id of b.ids) n.set(id, (n.get(id) || 0) + 1);
      return n;
    },
    stop: () =>
      new Promise((resolve) => {
        server.close(resolve);
        server.closeAllConnections();
      }),
    start: () => listen(port),
    /** Forwards to another gateway address (zcdp started again). */
    setTarget: (url) => (to = url),
  };
}

/** A tansu broker on a free port, its data in a fresh SQLite file. */
async function startTansu() {
  const dir = mkdtempSync(join(tmpdir(), "zcdp-sdk-tansu-"));
  const port = await new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
  const addr = `127.0.0.1:${port}`;
  const url = `tcp://${addr}`;
  const child = spawn(TANSU, ["broker", "--listener-url", url, "--advertised-listener-url", url, "--storage-engine", "sqlite://tansu.db"], {
    cwd: dir,
    env: { ...process.env, RUST_LOG: "warn" },
    stdio: "ignore",
  });
  const open = () => new Promise((resolve) => connect(port, "127.0.0.1").on("connect", function () { this.end(); resolve(true); }).on("error", () => resolve(false)));
  await waitFor(open, 30e3, `tansu listening on ${addr}`);
  return {
    addr,
    stop() {
      child.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

test("the SDK against zcdp up: a shopper's session ends up in the profile; the queue waits out a stopped gateway; Retry-After is honoured", { skip: !BIN && "set ZCDP_BIN to a zcdp binary to run it", timeout: 600e3 }, async (t) => {
  const zcdp = await startZcdp();
  const proxy = await startProxy(zcdp.http);
  const errors = [];
  let tracker;
  try {
    const secret = { authorization: `Bearer ${zcdp.keys.secret}`, "content-type": "application/json" };
    // A Zalo user, as the simulator knows her: the access and phone tokens zmp-sdk would give.
    const zaloId = `50${Date.now()}${Math.floor(Math.random() * 1e4)}`;
    const phone = `849${String(Math.floor(Math.random() * 1e8)).padStart(8, "0")}`;
    const user = await (await fetch(`${zcdp.sim}/sim/users`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ zalo_id: zaloId, phone }) })).json();
    assert.ok(user.access_token && user.phone_token, JSON.stringify(Object.keys(user)));
    const zmp = fakeZmp({ accessToken: user.access_token, phoneToken: user.phone_token, routeParams: { utm_source: "zalo_oa", utm_campaign: "tet-2027" } });
    tracker = createTracker({ host: proxy.url, writeKey: zcdp.keys.write, zmp, flushIntervalMs: 300, onError: (e) => errors.push(e) });

    // 1. The shopper: sign in, consent, traits, views, a cart, the phone; the order from the
    // shop's server with the secret key.
    const signed = await tracker.signIn();
    assert.equal(signed.zaloId, zaloId);
    tracker.consent("profile", true, "2026-09");
    tracker.identify({ name: "Nguyễn Thị Lan", city: "Đà Nẵng" });
    tracker.page("/home", { page_title: "Trang chủ" });
    tracker.page("/product/cf-suada");
    tracker.track("product_viewed", { product_id: "cf-suada", category: "coffee", price: 35000 });
    tracker.page("/product/tea-dao");
    tracker.track("product_viewed", { product_id: "tea-dao", category: "tea", price: 40000 });
    tracker.track("cart_item_added", { cart_id: `cart-${zaloId}`, product_id: "cf-suada", quantity: 2, price: 35000 });
    await tracker.sharePhone({ policyVersion: "2026-09" });
    const exchanges = proxy.paths.filter(([path]) => path === "/v1/users/phone").map(([, status]) => status);
    assert.equal(exchanges.at(-1), 200);
    t.diagnostic(`phone exchange answers: ${exchanges.join(", ")}`);
    const order = {
      sent_at: new Date().toISOString(),
      events: [
        {
          event_id: crypto.randomUUID(),
          type: "order_placed",
          user: { zalo_id: zaloId },
          properties: { order_id: `ord-${zaloId}`, cart_id: `cart-${zaloId}`, total: 70000, items: [{ product_id: "cf-suada", quantity: 2, price: 35000 }] },
        },
      ],
    };
    const placed = await fetch(`${zcdp.http}/v1/batch`, { method: "POST", headers: secret, body: JSON.stringify(order) });
    assert.deepEqual(await placed.json(), { accepted: 1, rejected: [] });
    assert.equal(await tracker.flush(), 0);

    const profile = () => fetch(`${zcdp.http}/v1/users/${zaloId}/profile`, { headers: secret }).then((r) => (r.status === 200 ? r.json() : undefined));
    const p = await waitFor(
      async () => {
        const p = await profile();
        return p && p.product_views === 2 && p.cart_adds === 1 && p.orders === 1 && p.phone_verified === true && p.name ? p : undefined;
      },
      90e3,
      "the shopper's profile",
    );
    assert.equal(p.zalo_id, zaloId);
    assert.equal(p.phone, phone);
    assert.equal(p.name, "Nguyễn Thị Lan");
    assert.equal(p.revenue, 70000);
    assert.equal(p.first_touch?.utm_source, "zalo_oa");
    assert.equal(p.first_touch?.utm_campaign, "tet-2027");
    assert.ok(p.anonymous_ids?.includes(tracker.anonymousId), `the device's anonymous id is linked: ${JSON.stringify(p.anonymous_ids)}`);
    t.diagnostic(`profile: ${p.product_views} product views, ${p.cart_adds} cart add, ${p.orders} order, phone verified, name and first touch set`);
    const consents = Object.fromEntries(p.consents.map((c) => [c.purpose, c.granted]));
    assert.deepEqual(consents, { profile: true, phone: true });

    // The user's own reads, under the session.
    const me = await tracker.me();
    assert.equal(me.name, "Nguyễn Thị Lan");
    assert.equal(me.orders, 1);
    assert.equal(JSON.stringify(me).includes(phone), false, "no phone in what the user reads of themselves");
    const recs = await tracker.recommendations({ limit: 5 });
    assert.equal(recs.user, zaloId);
    assert.ok(Array.isArray(recs.items) && recs.items.length <= 5);

    // 2. The gateway stops: events wait in the (fake) nativeStorage, then arrive once.
    await proxy.stop();
    const offline = await queueWhileAway(tracker, zmp, errors);
    const down = Date.now();
    await proxy.start();
    await waitFor(() => offline.every((id) => proxy.delivered().has(id)), 120e3, "the queued events after the gateway came back");
    t.diagnostic(`gateway back: the 5 queued events arrived ${Date.now() - down} ms later, after ${errors.filter((e) => e.code === "network_error").length} failed sends`);
    assert.equal(await tracker.flush(), 0);
    // The proxy counts a batch delivered when Kafka's 200 passes it, a moment before the tracker
    // reads that answer and rewrites its stored queue.
    await waitFor(() => storedQueue(zmp).length === 0, 10e3, "the delivered events gone from nativeStorage");
    assert.deepEqual(storedQueue(zmp), []);
    await waitFor(async () => (await profile())?.product_views === 7, 60e3, "7 product views in the profile");

    // 3. A 503 with Retry-After: 2 — the SDK waits at least that long before sending again.
    proxy.faults.push({ status: 503, retryAfter: 2 });
    const late = tracker.track("search", { query: "trà sữa", results_count: 3 });
    await tracker.flush();
    await waitFor(() => proxy.delivered().has(late), 30e3, "the event after the 503");
    const tries = proxy.batches.filter((b) => b.ids.includes(late));
    assert.deepEqual(tries.map((b) => b.status), [503, 200]);
    assert.ok(tries[1].at - tries[0].at >= 2000, `resent after ${tries[1].at - tries[0].at} ms`);
    t.diagnostic(`503 with Retry-After: 2 → resent after ${tries[1].at - tries[0].at} ms`);

    // Every event arrived exactly once, none was rejected.
    for (const [id, n] of proxy.delivered()) assert.equal(n, 1, `event ${id} arrived ${n} times`);
    t.diagnostic(`${proxy.delivered().size} events, each delivered exactly once (${proxy.batches.length} batches)`);
    assert.deepEqual(errors.filter((e) => e.kind !== "retry"), []);
  } finally {
    tracker?.close();
    await proxy.stop().catch(() => {});
    await zcdp.stop();
  }
});

test("zcdp itself stopped and started again, on a real broker that keeps its topics: the events wait in nativeStorage and arrive exactly once", { skip: (!BIN || !TANSU) && "set ZCDP_BIN and ZCDP_TEST_TANSU (a tansu broker) to run it", timeout: 600e3 }, async (t) => {
  const broker = await startTansu();
  const dir = mkdtempSync(join(tmpdir(), "zcdp-sdk-e2e-"));
  const flags = ["--brokers", broker.addr, "--partitions", "3", "--replication-factor", "1"];
  let zcdp = await startZcdp(flags, dir);
  const proxy = await startProxy(zcdp.http);
  const errors = [];
  let tracker;
  try {
    const secret = () => ({ authorization: `Bearer ${zcdp.keys.secret}` });
    const zaloId = `51${Date.now()}${Math.floor(Math.random() * 1e4)}`;
    const user = await (await fetch(`${zcdp.sim}/sim/users`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ zalo_id: zaloId }) })).json();
    const zmp = fakeZmp({ accessToken: user.access_token, phoneToken: user.phone_token });
    tracker = createTracker({ host: proxy.url, writeKey: zcdp.keys.write, zmp, flushIntervalMs: 300, onError: (e) => errors.push(e) });
    const views = async () => {
      const r = await fetch(`${zcdp.http}/v1/users/${zaloId}/profile`, { headers: secret() }).catch(() => undefined);
      return r?.status === 200 ? (await r.json()).product_views : undefined;
    };
    await tracker.signIn();
    tracker.track("product_viewed", { product_id: "before", price: 10000 });
    assert.equal(await tracker.flush(), 0);
    await waitFor(async () => (await views()) === 1, 90e3, "the first view in the profile");

    // zcdp stops (SIGTERM): the gateway is gone; the shopper goes on browsing.
    const write = zcdp.keys.write;
    await zcdp.stop({ keep: true });
    const offline = await queueWhileAway(tracker, zmp, errors);

    // zcdp starts again on the same broker and data dir (the same keys and session secret).
    zcdp = await startZcdp(flags, dir);
    assert.equal(zcdp.keys.write, write, "the same keys after the restart");
    proxy.setTarget(zcdp.http);
    const down = Date.now();
    await waitFor(() => offline.every((id) => proxy.delivered().has(id)), 120e3, "the queued events after zcdp came back");
    t.diagnostic(`zcdp back: the 5 queued events arrived ${Date.now() - down} ms after it was running again`);
    // The proxy counts a batch delivered when Kafka's 200 passes it, a moment before the tracker
    // reads that answer and rewrites its stored queue.
    await waitFor(() => storedQueue(zmp).length === 0, 10e3, "the delivered events gone from nativeStorage");
    assert.deepEqual(storedQueue(zmp), []);
    await waitFor(async () => (await views()) === 6, 120e3, "6 product views in the profile");
    for (const [id, n] of proxy.delivered()) assert.equal(n, 1, `event ${id} arrived ${n} times`);
    assert.deepEqual(errors.filter((e) => e.kind !== "retry"), []);
  } finally {
    tracker?.close();
    await proxy.stop().catch(() => {});
    await zcdp.stop();
    broker.stop();
  }
});
