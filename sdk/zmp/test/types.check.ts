// Compile-time checks of the typed API (tsc -p tsconfig.test.json, run by the build): each
// `@ts-expect-error` line must fail to type-check, every other line must pass.
import { createTracker, type EventProperties, type Item } from "../src/index.js";
import { createPageViewHook } from "../src/react.js";

const t = createTracker({ host: "http://gw", writeKey: "k", zmp: {} });

t.page("/home");
t.page("/home", { page_title: "Trang chủ" });
t.track("product_viewed", { product_id: "cf-suada", price: 35000, category: "coffee" });
t.track("search", { query: "trà", results_count: 3 });
t.track("cart_item_added", { cart_id: "c1", product_id: "p1", quantity: 1, price: 35000 });
t.track("order_placed", { order_id: "o1", total: 70000, items: [{ product_id: "p1", quantity: 2, price: 35000 }] });
t.track("review_submitted", { product_id: "p1", rating: 5 });
t.track("product_viewed", { product_id: "p1", my_custom: { any: ["json"] } });
const line: Item = { product_id: "p1", product_name: "Cà phê", quantity: 1, price: 1 };
t.track("checkout_started", { cart_id: "c1", items: [line] });
const props: EventProperties["order_paid"] = { order_id: "o1", total: 1 };
t.track("order_paid", props);
t.identify({ name: "Lan", city: "Đà Nẵng", custom_trait: 1 });
t.consent("profile", true, "2026-09");

// @ts-expect-error product_id is required
t.track("product_viewed", { price: 35000 });
// @ts-expect-error money is a number, never a string
t.track("product_viewed", { product_id: "p1", price: "35000" });
// @ts-expect-error the lines of an order need a quantity and a price
t.track("order_placed", { order_id: "o1", total: 1, items: [{ product_id: "p1" }] });
// @ts-expect-error identify has its own method
t.track("identify", { traits: {} });
// @ts-expect-error OA events come from Zalo, not the Mini App
t.track("oa_followed", { oa_id: "x" });
// @ts-expect-error not an event type
t.track("product_liked", {});
// @ts-expect-error not a consent purpose
t.consent("everything", true, "v1");

const usePageViews = createPageViewHook(t, { useLocation: () => ({ pathname: "/" }), useEffect: (f) => f() });
usePageViews();
