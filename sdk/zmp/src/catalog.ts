/**
 * The event catalogue: every event type of the gateway's contract with its properties, the one
 * source the SDK's TypeScript types are derived from (`types.ts`). `test/contract.test.mjs`
 * compares it with `docs/openapi.json` (the gateway's machine-readable contract) and fails when an
 * event type, a property, its kind or whether a type requires it exists on one side only.
 *
 * Kinds: `text` (a string), `int` (a whole number), `money` (whole VND), `bool`, `items` (cart or
 * order lines), `traits` (identify's profile traits), `phone`, `purpose` (a consent purpose).
 * A trailing `!` marks a property the type requires.
 *
 * Not in the core bundle: the tracker imports only the types derived from it.
 */
/** A cart or order line: `!` required. */
export const ITEM = { product_id: "text!", product_name: "text", category: "text", quantity: "int!", price: "money!" } as const;

/** A line added to or removed from a cart: the cart, and the line. */
const CART_LINE = { cart_id: "text!", ...ITEM } as const;

export const CATALOG = {
  page_viewed: { page_title: "text" },
  product_viewed: { product_id: "text!", product_name: "text", category: "text", price: "money", dwell_ms: "int" },
  product_clicked: { product_id: "text!", list_id: "text" },
  search: { query: "text!", results_count: "int" },
  product_shared: { product_id: "text!", share_channel: "text" },
  cart_item_added: CART_LINE,
  cart_item_removed: CART_LINE,
  cart_item_updated: { cart_id: "text!", product_id: "text!", quantity: "int!" },
  cart_viewed: { cart_id: "text!", items: "items", cart_value: "money" },
  checkout_started: { cart_id: "text!", items: "items", cart_value: "money" },
  order_placed: {
    order_id: "text!",
    total: "money!",
    items: "items!",
    cart_id: "text",
    shipping_fee: "money",
    discount: "money",
    payment_method: "text",
    voucher_code: "text",
    points_used: "int",
  },
  order_paid: { order_id: "text!", total: "money!", payment_method: "text" },
  order_status_changed: { order_id: "text!", status: "text!" },
  order_cancelled: { order_id: "text!", reason: "text" },
  order_refunded: { order_id: "text!", refund_amount: "money", reason: "text" },
  consent_changed: { purpose: "purpose!", granted: "bool!", policy_version: "text" },
  // `traits` or `phone` is required (either); a phone from the write key is always refused
  // (`phone_not_verified`): the SDK sends traits only and gets the phone through sharePhone().
  identify: { traits: "traits", phone: "phone" },
  oa_followed: { oa_id: "text" },
  oa_unfollowed: { oa_id: "text" },
  oa_interacted: { oa_id: "text", interaction: "text" },
  minigame_played: { game_id: "text!", result: "text", reward: "text" },
  voucher_claimed: { voucher_code: "text!" },
  points_earned: { points: "int!", order_id: "text", reason: "text" },
  points_redeemed: { points: "int!", order_id: "text", reason: "text" },
  review_submitted: { product_id: "text!", rating: "int!" },
  referral_completed: { referral_code: "text!" },
} as const;

/** The members of `context` the gateway keeps (others are ignored). */
export const CONTEXT_KEYS = [
  "screen",
  "utm_source",
  "utm_medium",
  "utm_campaign",
  "utm_content",
  "affiliate_id",
  "referrer",
  "app_version",
  "zalo_version",
  "platform",
  "os_version",
  "device_model",
  "locale",
  "library",
] as const;

/** The members of `user`. */
export const USER_KEYS = ["zalo_id", "anonymous_id", "oa_user_id"] as const;

/** identify's traits the SDK sends (the contract's `phone` trait is refused from the write key). */
export const TRAITS = { name: "text", gender: "text", birthday: "text", email: "text", city: "text" } as const;

/** The consent purposes. */
export const PURPOSES = ["analytics", "personalization", "profile", "phone", "marketing"] as const;

/** The gateway's limits (docs/http-api.md, *Answers*). */
export const LIMITS = { eventBytes: 32 * 1024, batchBytes: 500 * 1024, batchEvents: 1000 } as const;
