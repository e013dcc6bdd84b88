/**
 * The types of events, properties, context and answers, derived from the catalogue
 * (`catalog.ts`), which a test holds equal to `docs/openapi.json`.
 */
import type { CATALOG, CONTEXT_KEYS, ITEM, PURPOSES, TRAITS, USER_KEYS } from "./catalog.js";

type Catalog = typeof CATALOG;

/** Every event type of the contract. */
export type EventType = keyof Catalog;

/** The types `track()` sends: not identify and consent (their own methods), not the OA events
 * (Zalo's webhook says them; the gateway refuses them from the Mini App). */
export type TrackType = Exclude<EventType, "identify" | "consent_changed" | "oa_followed" | "oa_unfollowed" | "oa_interacted">;

/** A consent purpose. */
export type Purpose = (typeof PURPOSES)[number];

/** A JSON value: what a custom property may hold. */
export type Json = string | number | boolean | null | Json[] | { [key: string]: Json };

type Simplify<T> = { [K in keyof T]: T[K] } & {};

type KindOf<K> = K extends `${infer B}!` ? B : K;
type ValueOf<K> = KindOf<K> extends "text"
  ? string
  : KindOf<K> extends "int" | "money"
    ? number
    : KindOf<K> extends "bool"
      ? boolean
      : KindOf<K> extends "items"
        ? Item[]
        : KindOf<K> extends "traits"
          ? Traits
          : KindOf<K> extends "purpose"
            ? Purpose
            : string;

type Fields<D> = Simplify<
  { -readonly [K in keyof D as D[K] extends `${string}!` ? K : never]: ValueOf<D[K]> } & {
    -readonly [K in keyof D as D[K] extends `${string}!` ? never : K]?: ValueOf<D[K]>;
  }
>;

/** A cart or order line. Money is whole VND (dong): `35000`, never `35000.5` or `"35000"`. */
export type Item = Fields<typeof ITEM>;

/** identify's profile traits (stored only under the user's consent to purpose `profile`). */
export type Traits = Fields<typeof TRAITS> & { [custom: string]: unknown } & { /** Refused from the write key: use sharePhone(). */ phone?: never };

/** The properties each event type takes, by type. Keys the contract does not name are allowed
 * (the gateway keeps them in `properties.custom`). */
export type EventProperties = { [T in EventType]: Fields<Catalog[T]> };

/** Custom properties beside the contract's. */
export type CustomProperties = { [custom: string]: unknown };

export type ContextKey = (typeof CONTEXT_KEYS)[number];
/** Where the event happened: only these members are kept by the gateway. */
export type Context = { [K in ContextKey]?: string };

export type User = { [K in (typeof USER_KEYS)[number]]?: string };

/** One event as sent. */
export interface ZcdpEvent {
  event_id: string;
  type: EventType;
  event_time: number;
  user: User;
  context: Context;
  properties: Record<string, unknown>;
}

/** What the SDK reports to `onError`. Nothing personal: ids, codes, counts and the gateway's
 * reason sentence. */
export interface ZcdpErrorInfo {
  /** `rejected`: the gateway refused one event (its `code`); `dropped`: the SDK dropped events
   * (`queue_full`, `event_too_large`, or a batch answered with a 4xx it must not retry);
   * `retry`: a send failed and is retried after `delay` ms; `storage`: nativeStorage failed. */
  kind: "rejected" | "dropped" | "retry" | "storage";
  code: string;
  message?: string;
  status?: number;
  event_id?: string;
  type?: string;
  count?: number;
  delay?: number;
}

/** A consent decision, as `me()` returns it. */
export interface Consent {
  purpose: string;
  granted: boolean;
  changed_at: number;
  policy_version: string | null;
}

/** `GET /v1/me/profile`: what the user may see of their own profile. */
export interface MyProfile {
  user_key: string;
  name: string | null;
  consents: Consent[];
  points_balance: number;
  orders: number;
  vouchers_claimed: number;
  vouchers_used: number;
  oa_following: boolean;
  first_seen: number;
  last_seen: number;
}

export interface Recommendation {
  product_id: string;
  score: number;
  reason: "interest" | "trending";
}

/** `GET /v1/me/recommendations`. */
export interface Recommendations {
  user: string;
  personalised: boolean;
  items: Recommendation[];
}
