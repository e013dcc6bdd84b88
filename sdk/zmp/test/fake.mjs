// A fake zmp-sdk (nativeStorage, tokens, events) and a fake gateway (a fetch that records each
// request and answers as a handler says), for the unit tests.

// The values of zmp-sdk 2.51's EventName.
export const EventName = { AppPaused: "h5.event.paused", AppResumed: "h5.event.resumed", AppClose: "h5.event.action.close", NetworkChanged: "h5.event.connection.changed" };

/** A fake `zmp` whose nativeStorage is `data` (a Map, shared between trackers to play a restart). */
export function fakeZmp({ data = new Map(), accessToken = "tok-lan", phoneToken = "ph-84912345678", routeParams = {}, system } = {}) {
  const listeners = new Map();
  const calls = { access: 0, phone: 0 };
  return {
    data,
    calls,
    listeners,
    nativeStorage: {
      getItem: (k) => (data.has(k) ? data.get(k) : null),
      setItem: (k, v) => void data.set(k, String(v)),
      removeItem: (k) => void data.delete(k),
    },
    getAccessToken: async () => {
      calls.access++;
      return typeof accessToken == "function" ? accessToken() : accessToken;
    },
    getPhoneNumber: async () => {
      calls.phone++;
      return { token: phoneToken };
    },
    getRouteParams: () => routeParams,
    getSystemInfo: () => system ?? { platform: "android", zaloVersion: "24.10.1", language: "vi" },
    EventName,
    events: {
      on: (n, f) => listeners.set(n, [...(listeners.get(n) || []), f]),
      off: (n, f) => listeners.set(n, (listeners.get(n) || []).filter((g) => g !== f)),
    },
    emit(n, ...args) {
      for (const f of listeners.get(n) || []) f(...args);
    },
  };
}

/** The queue the tracker keeps in the fake nativeStorage. */
export const storedQueue = (zmp) => JSON.parse(zmp.data.get("zcdp:q") || "[]");

/**
 * A fake gateway. `handler(req)` answers `{status, body, headers}`, or "network" for a refused
 * connection; by default: a 200 accepting every event, sessions for `tok-*` tokens.
 */
export function fakeGateway(handler = () => undefined) {
  const requests = [];
  let sessions = 0;
  const fallback = (req) => {
    if (req.path === "/v1/batch") return { body: { accepted: req.body.events.length, rejected: [] } };
    if (req.path === "/v1/session") {
      sessions++;
      const user = req.body.access_token.replace(/^tok-/, "");
      return { body: { session: `sess-${user}-${sessions}`, zalo_id: user, expires_at: new Date(Date.now() + 3600e3).toISOString().replace(/\.\d+Z$/, "Z") } };
    }
    if (req.path === "/v1/users/phone") return { body: { accepted: 1, rejected: [] } };
    if (req.path === "/v1/me/profile") return { body: { user_key: "lan", name: "Lan", consents: [], points_balance: 0, orders: 0, vouchers_claimed: 0, vouchers_used: 0, oa_following: false, first_seen: 1, last_seen: 2 } };
    if (req.path.startsWith("/v1/me/recommendations")) return { body: { user: "lan", personalised: false, items: [] } };
    return { status: 404, body: { error: "not_found" } };
  };
  async function fetch(url, init = {}) {
    const u = new URL(url);
    const headers = Object.fromEntries(Object.entries(init.headers || {}).map(([k, v]) => [k.toLowerCase(), v]));
    const req = {
      url,
      path: u.pathname + u.search,
      method: init.method || "GET",
      headers,
      raw: init.body,
      body: init.body ? JSON.parse(init.body) : undefined,
      keepalive: !!init.keepalive,
      at: Date.now(),
    };
    requests.push(req);
    const res = (await handler(req)) ?? fallback(req);
    if (res === "network") throw new TypeError("fetch failed");
    req.status = res.status ?? 200;
    return new Response(JSON.stringify(res.body ?? {}), { status: req.status, headers: res.headers });
  }
  return {
    fetch,
    requests,
    batches: () => requests.filter((r) => r.path === "/v1/batch"),
    delivered: () => requests.filter((r) => r.path === "/v1/batch" && r.status === 200).flatMap((r) => r.body.events),
  };
}

/** Waits until `cond()` is truthy, polling, for at most `ms`: its value, or a failure. */
export async function waitFor(cond, ms = 5000, what = "the condition") {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
