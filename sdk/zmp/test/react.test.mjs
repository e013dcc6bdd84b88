// The page-view helper of zcdp-zmp/react, with stand-ins for React's hooks.
import { test } from "node:test";
import assert from "node:assert/strict";
import { pageViews, createPageViewHook } from "../dist/react.js";

function fakeTracker() {
  const pages = [];
  return { pages, page: (screen, props) => (pages.push([screen, props]), `id-${pages.length}`) };
}

test("one page view per change of screen; the query string is left out", () => {
  const t = fakeTracker();
  const on = pageViews(t);
  on({ pathname: "/", search: "" });
  on({ pathname: "/", search: "" }); // a re-render
  on({ pathname: "/product/cf-suada", search: "?phone=0987654321" });
  on({ pathname: "/product/cf-suada", search: "?ref=x" });
  on({ pathname: "/" });
  assert.deepEqual(t.pages, [["/", undefined], ["/product/cf-suada", undefined], ["/", undefined]]);
});

test("screen and title can be named by the app", () => {
  const t = fakeTracker();
  const on = pageViews(t, { screen: (l) => l.pathname.replace(/\/product\/.*/, "/product/:id"), title: (l) => (l.pathname === "/" ? "Trang chủ" : undefined) });
  on({ pathname: "/" });
  on({ pathname: "/product/a" });
  on({ pathname: "/product/b" });
  assert.deepEqual(t.pages, [["/", { page_title: "Trang chủ" }], ["/product/:id", undefined]]);
});

test("the hook reads the location and sends from an effect keyed on it", () => {
  const t = fakeTracker();
  let location = { pathname: "/", search: "" };
  const effects = [];
  const use = createPageViewHook(t, { useLocation: () => location, useEffect: (f, deps) => effects.push([f, deps]) });
  use();
  assert.equal(t.pages.length, 0, "nothing during render");
  effects.shift()[0]();
  location = { pathname: "/cart", search: "" };
  use();
  const [f, deps] = effects.shift();
  assert.deepEqual(deps, ["/cart", ""]);
  f();
  assert.deepEqual(t.pages.map((p) => p[0]), ["/", "/cart"]);
});
