/**
 * zcdp-zmp: the zcdp tracker for Zalo Mini Apps. No runtime dependency: zmp-sdk's APIs are passed
 * in (`import * as zmp from "zmp-sdk/apis"`), so the same code runs in a Mini App and in Node.
 */
import type {
  Context,
  CustomProperties,
  EventProperties,
  MyProfile,
  Purpose,
  Recommendations,
  Traits,
  TrackType,
  ZcdpErrorInfo,
  ZcdpEvent,
} from "./types.js";

export type * from "./types.js";

/** zmp-sdk's synchronous `nativeStorage` (SDK ≥ 2.43), or anything with the same three calls. */
export interface StorageLike {
  getItem(key: string): string | null | undefined;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** The parts of zmp-sdk (`import * as zmp from "zmp-sdk/apis"`) the tracker uses; each optional. */
export interface ZmpLike {
  nativeStorage?: StorageLike;
  getAccessToken?: (options?: object) => Promise<string>;
  getPhoneNumber?: (options?: object) => Promise<{ token?: string }>;
  getRouteParams?: () => Record<string, unknown> | undefined | null;
  getSystemInfo?: (options?: object) => unknown;
  events?: { on(name: string, listener: (...args: unknown[]) => void): void; off?(name: string, listener: (...args: unknown[]) => void): void };
  EventName?: Record<string, string>;
}

export interface TrackerOptions {
  /** The gateway, e.g. `https://cdp.example.vn`. */
  host: string;
  /** The app's public write key. */
  writeKey: string;
  /** zmp-sdk's APIs: `import * as zmp from "zmp-sdk/apis"`. */
  zmp: ZmpLike;
  /** Send when this many events wait (default 20). */
  flushAt?: number;
  /** Send what waits at least this often, in ms (default 5000). */
  flushIntervalMs?: number;
  /** Events kept while the gateway cannot be reached (default 1000); the oldest go first. */
  maxQueuedEvents?: number;
  /** Told of rejected and dropped events and of retries; never given personal data. */
  onError?: (info: ZcdpErrorInfo) => void;
  /** Context sent with every event, e.g. `{ app_version: "2.3.1" }`. */
  context?: Context;
  /** Where the queue, the anonymous id and the session are kept (default `zmp.nativeStorage`,
   * else memory). */
  storage?: StorageLike;
  /** The fetch to use (default the global one). */
  fetch?: typeof fetch;
}

/** An error of `signIn()`, `sharePhone()`, `me()`, `recommendations()`: the gateway's code
 * (`invalid_access_token`, `no_consent`, `session_required`, …) and HTTP status (0: network). */
export class ZcdpError extends Error {
  constructor(
    public code: string,
    public status = 0,
    message?: string,
  ) {
    super(message || code);
    this.name = "ZcdpError";
  }
}

export interface Tracker {
  /** A page (screen) view: `page_viewed` with `context.screen`. Returns the event id. */
  page(screen: string, properties?: EventProperties["page_viewed"] & CustomProperties): string;
  /** An event of the contract, typed by its type. Returns the event id (the dedup key). */
  track<T extends TrackType>(type: T, properties: EventProperties[T] & CustomProperties): string;
  /** Profile traits (`identify`); sent under the user's session once `signIn()` has opened one,
   * and stored by zcdp only with the user's consent to purpose `profile`. */
  identify(traits: Traits): string;
  /** The user's consent decision (`consent_changed`), sent under their session. */
  consent(purpose: Purpose, granted: boolean, policyVersion: string): string;
  /** Zalo's access token → `POST /v1/session`: events from now on name the user, verified. */
  signIn(): Promise<{ zaloId: string; expiresAt: string }>;
  /** Only in response to a user's tap: `getPhoneNumber()` + `getAccessToken()` →
   * `POST /v1/users/phone`. With `policyVersion`, records consent to purpose `phone` first. */
  sharePhone(options?: { policyVersion?: string }): Promise<void>;
  /** The signed-in user's own profile (`GET /v1/me/profile`). */
  me(): Promise<MyProfile>;
  /** Products for the signed-in user (`GET /v1/me/recommendations`). */
  recommendations(options?: { limit?: number }): Promise<Recommendations>;
  /** Sends what waits now; resolves to the number of events still queued. */
  flush(): Promise<number>;
  /** Forgets the user: a new anonymous id, no session. Queued events keep their user. */
  reset(): void;
  /** Stops timers and listeners (the queue stays in storage). */
  close(): void;
  /** The anonymous id, kept in nativeStorage. */
  readonly anonymousId: string;
}

interface Session {
  t: string;
  z: string;
  /** Local expiry, epoch ms. */
  e: number;
  /** Local time it was opened. */
  o: number;
  x: string;
}

interface Queued extends ZcdpEvent {
  /** Bytes of its JSON. */
  b?: number;
}

const VERSION = "0.1.0";
const PREFIX = "zcdp:";
const MAX_EVENT = 32 * 1024 - 512; // room for the zalo_id filled in at send time
const MAX_BATCH = 500 * 1000;
const MAX_BATCH_EVENTS = 1000;
const MAX_QUEUE_BYTES = 1024 * 1024;
const KEEPALIVE_BYTES = 60 * 1000;
const BOUNDS: Record<string, number> = { affiliate_id: 128, referrer: 1024 };
const ROUTE_KEYS = ["utm_source", "utm_medium", "utm_campaign", "utm_content", "affiliate_id", "referrer"];

const now = () => Date.now();
const utf8 = (s: string) => new TextEncoder().encode(s).length;

/** A random (v4) UUID from crypto.getRandomValues. */
export function uuid(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 15) | 64;
  b[8] = (b[8] & 63) | 128;
  let h = "";
  for (let i = 0; i < 16; i++) h += (i == 4 || i == 6 || i == 8 || i == 10 ? "-" : "") + (b[i] + 256).toString(16).slice(1);
  return h;
}

/** At most `max` bytes of UTF-8 of `s`, cut between characters. */
function cut(s: string, max: number): string {
  while (utf8(s) > max) s = s.slice(0, -1);
  // Not half of a surrogate pair.
  return /[\ud800-\udbff]$/.test(s) ? s.slice(0, -1) : s;
}

/** The delay before retry `n` (1, 2, …): 1 s doubling, at most 60 s, with jitter (50–100 %). */
export function backoff(n: number): number {
  return Math.min(60000, 1000 * 2 ** (n - 1)) * (0.5 + Math.random() / 2);
}

/** `Retry-After` (seconds or an HTTP date) in ms, or undefined. */
export function retryAfter(v: string | null | undefined): number | undefined {
  if (!v) return;
  const ms = /^\d+$/.test(v.trim()) ? +v * 1000 : Date.parse(v) - now();
  return ms >= 0 ? Math.min(ms, 3600000) : ms == ms ? 0 : undefined;
}

export function createTracker(options: TrackerOptions): Tracker {
  const { zmp, writeKey, onError } = options;
  const host = options.host.replace(/\/+$/, "");
  const flushAt = options.flushAt || 20;
  const interval = options.flushIntervalMs || 5000;
  const maxQueued = options.maxQueuedEvents || 1000;
  const doFetch = options.fetch || ((...a: Parameters<typeof fetch>) => fetch(...a));
  const report = (i: ZcdpErrorInfo) => {
    try {
      onError?.(i);
    } catch {}
  };

  // Storage: nativeStorage, falling back to memory when it is missing or fails.
  const mem: Record<string, string> = {};
  let store = options.storage || zmp.nativeStorage;
  const get = (k: string) => {
    try {
      if (store) return store.getItem(PREFIX + k) ?? undefined;
    } catch {}
    return mem[k];
  };
  const set = (k: string, v?: string) => {
    if (v == null) delete mem[k];
    else mem[k] = v;
    try {
      if (store) v == null ? store.removeItem(PREFIX + k) : store.setItem(PREFIX + k, v);
    } catch (e) {
      store = undefined;
      report({ kind: "storage", code: "storage_failed", message: "nativeStorage failed; keeping the queue in memory" });
      if (v != null) mem[k] = v;
    }
  };
  const load = <T>(k: string): T | undefined => {
    try {
      const v = get(k);
      return v ? JSON.parse(v) : undefined;
    } catch {}
  };

  let anonymousId = get("aid") || uuid();
  set("aid", anonymousId);
  let zaloId: string | undefined = get("uid");
  let session = load<Session>("s");
  let queue: Queued[] = load<Queued[]>("q") || [];
  const consents: Record<string, boolean> = {};
  let screen: string | undefined;

  // Context: the app's, where the app was opened from (utm / affiliate), the device's.
  const context: Context = { library: "zcdp-zmp/" + VERSION };
  const put = (k: string, v: unknown) => {
    if (v != null && v !== "") (context as Record<string, string>)[k] = cut(String(v), BOUNDS[k] || 256);
  };
  try {
    const p = zmp.getRouteParams?.() || {};
    for (const k of ROUTE_KEYS) put(k, p[k]);
  } catch {}
  const system = (s: any) => {
    if (s && typeof s == "object") {
      put("platform", s.platform);
      put("zalo_version", s.zaloVersion);
      put("locale", s.language);
    }
  };
  try {
    const s: any = zmp.getSystemInfo?.();
    s && typeof s.then == "function" ? s.then(system, () => {}) : system(s);
  } catch {}
  for (const [k, v] of Object.entries(options.context || {})) put(k, v);

  // Sending.
  let timer: ReturnType<typeof setTimeout> | undefined;
  let due = 0;
  let attempts = 0;
  let waitUntil = 0;
  let hardWait = false;
  let running: Promise<number> | undefined;
  let closed = false;
  /** Bumped by reset(): a send or a sign-in begun before it must not act for the next user. */
  let epoch = 0;

  // The queue is written once per turn of the event loop, however many events a turn tracks.
  let saving = false;
  const save = () => {
    if (!saving) {
      saving = true;
      Promise.resolve().then(() => {
        saving = false;
        set("q", JSON.stringify(queue));
      });
    }
  };
  const schedule = (ms: number) => {
    if (closed || (timer && due <= now() + ms)) return;
    clearTimeout(timer);
    due = now() + ms;
    timer = setTimeout(() => {
      timer = undefined;
      send(false);
    }, ms);
    (timer as any)?.unref?.();
  };

  function enqueue(type: ZcdpEvent["type"], properties: object, extra?: Context): string {
    const user: ZcdpEvent["user"] = { anonymous_id: anonymousId };
    if (zaloId) user.zalo_id = zaloId;
    const e: Queued = {
      event_id: uuid(),
      type,
      event_time: now(),
      user,
      context: { ...context, ...(screen ? { screen } : {}), ...extra },
      properties: { ...properties },
    };
    const b = utf8(JSON.stringify(e));
    if (b > MAX_EVENT) {
      report({ kind: "dropped", code: "event_too_large", event_id: e.event_id, type, message: `event is ${b} bytes; the limit is 32 KB` });
      return e.event_id;
    }
    e.b = b;
    queue.push(e);
    let bytes = queue.reduce((s, q) => s + (q.b || 0), 0);
    let dropped = 0;
    while (queue.length > maxQueued || bytes > MAX_QUEUE_BYTES) {
      bytes -= queue.shift()!.b || 0;
      dropped++;
    }
    if (dropped) report({ kind: "dropped", code: "queue_full", count: dropped, message: `the queue is full: the ${dropped} oldest events were dropped` });
    save();
    queue.length >= flushAt || bytes >= KEEPALIVE_BYTES ? schedule(0) : schedule(interval);
    return e.event_id;
  }

  const needsSession = (e: ZcdpEvent) => e.type == "identify" || e.type == "consent_changed";

  /** The next batch: events to send under the session (naming its user or no one), or without;
   * identify and consent wait in the queue while there is no session. */
  function pick(s: Session | undefined): { events: Queued[]; withSession: boolean; body: string } {
    const mode = (e: ZcdpEvent) => (s && (!e.user.zalo_id || e.user.zalo_id == s.z) ? 1 : needsSession(e) && !s ? 0 : 2);
    const events: Queued[] = [];
    const parts: string[] = [];
    let m = 0;
    let bytes = 40;
    for (const e of queue) {
      const em = mode(e);
      if (!em || (m && em != m)) continue;
      if (em == 1 && needsSession(e)) e.user.zalo_id = s!.z;
      const j = JSON.stringify({ ...e, b: undefined });
      bytes += utf8(j) + 1;
      if (events.length && (bytes > MAX_BATCH || events.length >= MAX_BATCH_EVENTS)) break;
      m = em;
      events.push(e);
      parts.push(j);
    }
    return { events, withSession: m == 1, body: parts.join(",") };
  }

  async function request(method: string, path: string, body?: string, s?: Session, keepalive?: boolean) {
    const headers: Record<string, string> = { authorization: "Bearer " + writeKey };
    if (body) headers["content-type"] = "application/json";
    if (s) headers["x-zcdp-session"] = s.t;
    const abort = typeof AbortController == "function" ? new AbortController() : undefined;
    const t = setTimeout(() => abort?.abort(), 30000);
    (t as any)?.unref?.();
    try {
      const r = await doFetch(host + path, { method, headers, body, signal: abort?.signal, ...(keepalive ? { keepalive } : {}) });
      let json: any;
      try {
        json = await r.json();
      } catch {}
      return { status: r.status, json: json || {}, after: retryAfter(r.headers.get("retry-after")) };
    } catch (e) {
      return { status: 0, json: { error: "network_error", message: "the gateway could not be reached" }, after: undefined };
    } finally {
      clearTimeout(t);
    }
  }

  /** Opens a session with Zalo's access token. */
  async function open(): Promise<Session> {
    if (!zmp.getAccessToken) throw new ZcdpError("no_zmp_sdk", 0, "zmp.getAccessToken is missing");
    const ep = epoch;
    const token = await zmp.getAccessToken({});
    const r = await request("POST", "/v1/session", JSON.stringify({ access_token: token }));
    if (r.status != 200) throw new ZcdpError(r.json.error || "session_failed", r.status, r.json.message);
    if (ep != epoch) throw new ZcdpError("reset", 0, "reset() during sign-in");
    const o = now();
    let left = Date.parse(r.json.expires_at) - o;
    // A device clock far off: assume the gateway's default hour (a 401 renews it anyway).
    if (!(left > 0 && left <= 86400000)) left = 3600000;
    session = { t: r.json.session, z: r.json.zalo_id, e: o + left, o, x: r.json.expires_at };
    zaloId = session.z;
    set("s", JSON.stringify(session));
    set("uid", zaloId);
    return session;
  }

  let opening: Promise<Session> | undefined;
  let failedAt = -Infinity;
  const renew = () =>
    (opening ||= open()
      .catch((e) => {
        failedAt = now();
        throw e;
      })
      .finally(() => (opening = undefined)));

  const drop = () => {
    session = undefined;
    set("s");
  };

  /** The session to use now: opened again when it ends within a fifth of its life (at most 5
   * minutes) or was refused, for a user who signed in on this device. */
  async function current(): Promise<Session | undefined> {
    const s = session;
    if (!s && !zaloId) return;
    // After a failed attempt, the next waits a minute: each costs the gateway a call to Zalo.
    if ((!s || now() > s.e - Math.min(300000, (s.e - s.o) / 5)) && now() - failedAt > 60000) {
      try {
        return await renew();
      } catch {}
    }
    if (session && now() >= session.e) drop();
    return session;
  }

  function remove(events: ZcdpEvent[]) {
    const ids = new Set(events.map((e) => e.event_id));
    queue = queue.filter((e) => !ids.has(e.event_id));
    save();
  }

  async function run(explicit: boolean, keepalive?: boolean): Promise<number> {
    if (now() < waitUntil && (hardWait || !explicit)) {
      schedule(waitUntil - now());
      return queue.length;
    }
    const ep = epoch;
    let s = queue.length ? await current() : session;
    let renewed = false;
    for (;;) {
      // After a reset() the old user's session is not used for what follows: start again.
      if (ep != epoch) {
        schedule(0);
        return queue.length;
      }
      const batch = pick(s);
      if (!batch.events.length) break;
      const body = `{"sent_at":${now()},"events":[${batch.body}]}`;
      const r = await request("POST", "/v1/batch", body, batch.withSession ? s : undefined, keepalive && utf8(body) < KEEPALIVE_BYTES);
      // A 200 without the gateway's answer (a captive portal, a proxy) is not a delivery.
      if (r.status == 200 && typeof r.json.accepted == "number") {
        attempts = 0;
        waitUntil = 0;
        remove(batch.events);
        for (const x of r.json.rejected || []) {
          const e = batch.events[x.index];
          report({ kind: "rejected", code: x.code, message: x.reason, status: 200, event_id: x.event_id, type: e?.type });
        }
        continue;
      }
      if (r.status == 401 && r.json.error == "invalid_session" && batch.withSession && !renewed) {
        renewed = true;
        drop();
        s = await current();
        continue;
      }
      if (!r.status || r.status == 200 || r.status == 408 || r.status == 429 || r.status >= 500) {
        attempts++;
        // Retry-After as asked, but never a busy loop on `0` or a date in the past.
        const delay = r.after != null ? Math.max(r.after, 1000) : backoff(attempts);
        hardWait = r.after != null;
        waitUntil = now() + delay;
        report({ kind: "retry", code: r.json.error || "http_" + r.status, status: r.status, count: batch.events.length, delay });
        schedule(delay);
        return queue.length;
      }
      // Any other answer (400, 401, 403, 413): the batch will never be taken; drop it.
      remove(batch.events);
      report({ kind: "dropped", code: r.json.error || "http_" + r.status, status: r.status, count: batch.events.length, message: r.json.message });
    }
    if (queue.length && !closed) schedule(interval);
    return queue.length;
  }

  function send(explicit: boolean, keepalive?: boolean): Promise<number> {
    if (!running) {
      clearTimeout(timer);
      timer = undefined;
      running = run(explicit, keepalive).finally(() => (running = undefined));
    }
    return running;
  }

  /** Sends what waits now, after any send under way (which may have missed the latest events). */
  const flushNow = (): Promise<number> => (running || Promise.resolve()).then(() => send(true), () => send(true));

  // Flush when the app goes to the background or closes: Zalo's AppPaused and AppClose, and the
  // page events where the webview has them.
  const onPause = () => void send(true, true);
  const onHidden = () => (globalThis as any).document?.visibilityState == "hidden" && onPause();
  const onNetwork = () => void send(true);
  const names = zmp.EventName || {};
  const listen: [string | undefined, () => void][] = [
    [names.AppPaused, onPause],
    [names.AppClose, onPause],
    [names.NetworkChanged, onNetwork],
  ];
  for (const [n, f] of listen) n && zmp.events?.on(n, f);
  const g = globalThis as any;
  g.addEventListener?.("pagehide", onPause);
  g.document?.addEventListener?.("visibilitychange", onHidden);
  if (queue.length) schedule(0);

  async function read<T>(path: string): Promise<T> {
    for (let i = 0; ; i++) {
      const s = await current();
      if (!s) throw new ZcdpError("session_required", 401, "call signIn() first");
      const r = await request("GET", path, undefined, s);
      if (r.status == 200) return r.json as T;
      if (r.json.error != "invalid_session" || i) throw new ZcdpError(r.json.error || "http_" + r.status, r.status, r.json.message);
      drop();
    }
  }

  function consent(purpose: Purpose, granted: boolean, policyVersion: string): string {
    consents[purpose] = granted;
    return enqueue("consent_changed", { purpose, granted, policy_version: policyVersion });
  }

  const sleep = (ms: number) => new Promise((f) => setTimeout(f, ms));

  return {
    get anonymousId() {
      return anonymousId;
    },
    page(name, properties) {
      screen = cut(name, 256);
      return enqueue("page_viewed", properties || {});
    },
    track(type, properties) {
      return enqueue(type, properties);
    },
    identify(traits) {
      return enqueue("identify", { traits });
    },
    consent,
    async signIn() {
      const s = await renew();
      schedule(0);
      return { zaloId: s.z, expiresAt: s.x };
    },
    async sharePhone(opts) {
      if (!zmp.getPhoneNumber || !zmp.getAccessToken) throw new ZcdpError("no_zmp_sdk", 0, "zmp.getPhoneNumber is missing");
      // Zalo asks the user; a refusal rejects here.
      const { token: code } = await zmp.getPhoneNumber({});
      if (!code) throw new ZcdpError("no_phone_token", 0, "getPhoneNumber() gave no token");
      if (!(await current())) await renew();
      if (opts?.policyVersion) consent("phone", true, opts.policyVersion);
      // The consent must reach the gateway first.
      await flushNow();
      const event_id = uuid();
      for (let i = 1; ; i++) {
        const s = await current();
        const access_token = await zmp.getAccessToken({});
        const r = await request("POST", "/v1/users/phone", JSON.stringify({ access_token, code, event_id }), s);
        if (r.status == 200) return;
        const why = r.json.rejected?.[0]?.code || r.json.error || "http_" + r.status;
        // The gateway learns of a consent a moment after it is sent; a network error or a 429 /
        // 5xx is retried a few times: the user is waiting.
        if (why == "invalid_session") drop();
        const again = (why == "no_consent" && consents.phone) || !r.status || r.status == 429 || r.status >= 500 || why == "invalid_session";
        // The user is waiting: a long Retry-After is theirs to retry later, not a frozen tap.
        if (!again || i >= 6 || (r.after ?? 0) > 5000) throw new ZcdpError(why, r.status, r.json.rejected?.[0]?.reason || r.json.message);
        await sleep(r.after ?? 250 * 2 ** i);
      }
    },
    me: () => read<MyProfile>("/v1/me/profile"),
    recommendations: (o) => read<Recommendations>("/v1/me/recommendations?limit=" + (o?.limit ?? 10)),
    flush: flushNow,
    reset() {
      epoch++;
      anonymousId = uuid();
      set("aid", anonymousId);
      zaloId = undefined;
      set("uid");
      drop();
      for (const k in consents) delete consents[k];
      // The user's identify and consent can no longer be sent under their session (and must
      // never go under the next user's).
      const before = queue.length;
      queue = queue.filter((e) => !needsSession(e));
      if (queue.length < before) {
        report({ kind: "dropped", code: "reset", count: before - queue.length });
        save();
      }
    },
    close() {
      closed = true;
      clearTimeout(timer);
      for (const [n, f] of listen) n && zmp.events?.off?.(n, f);
      g.removeEventListener?.("pagehide", onPause);
      g.document?.removeEventListener?.("visibilitychange", onHidden);
    },
  };
}
