//! Realistic Mini App traffic for a Vietnamese coffee-and-tea shop: shoppers who arrive from an
//! OA message, an ad or an affiliate link, browse and search, add to a cart, and then order or
//! walk away. Used by `zcdp simulate`, `zcdp up --demo` and the benches.
//!
//! The generator is deterministic for a seed, so a bench run and its baseline see the same events.

use std::collections::VecDeque;

use chrono::{DateTime, SecondsFormat, Utc};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// (product id, name, category, price in VND)
pub const PRODUCTS: &[(&str, &str, &str, i64)] = &[
    ("cf-suada", "Cà phê sữa đá", "coffee", 35_000),
    ("cf-bacxiu", "Bạc xỉu", "coffee", 39_000),
    ("cf-coldbrew", "Cold brew cam sả", "coffee", 55_000),
    ("tea-tranchau", "Trà sữa trân châu", "milk-tea", 45_000),
    ("tea-dao", "Trà đào cam sả", "fruit-tea", 49_000),
    ("tea-vai", "Trà vải", "fruit-tea", 45_000),
    ("bk-banhmi", "Bánh mì que", "bakery", 15_000),
    ("bk-croissant", "Croissant bơ", "bakery", 32_000),
    ("bk-tiramisu", "Tiramisu", "bakery", 49_000),
    ("mc-ly", "Ly giữ nhiệt", "merch", 199_000),
    ("mc-tui", "Túi canvas", "merch", 129_000),
    ("bn-arabica", "Cà phê hạt Arabica 500g", "beans", 289_000),
    ("bn-robusta", "Robusta Đắk Lắk 1kg", "beans", 350_000),
];

const SEARCHES: &[&str] = &["trà sữa", "cà phê", "bánh", "ít đường", "cold brew", "quà tặng", "hạt cà phê"];
const SOURCES: &[(Option<&str>, Option<&str>, Option<&str>)] = &[
    (Some("zalo_oa"), Some("tet-2027"), None),
    (Some("zalo_ads"), Some("retarget-nov"), None),
    (Some("tiktok"), Some("koc-review"), Some("koc-linh")),
    (Some("facebook"), None, None),
    (None, None, None),
    (None, None, None),
];
const PAYMENTS: &[&str] = &["zalopay", "cod", "momo", "vnpay", "bank_transfer"];
const NAMES: &[&str] = &["Nguyễn Thị Lan", "Trần Văn Minh", "Lê Hoàng Anh", "Phạm Thu Hà", "Võ Quốc Bảo", "Đặng Mai Chi"];

/// What happened to the carts the generator made, so tests can check the pipeline's outputs.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub events: u64,
    pub visits: u64,
    pub carts: u64,
    pub orders: u64,
    pub abandoned: u64,
    /// Shoppers who came back and ordered after a message from the shop.
    pub returned: u64,
}

/// A shopper's id set. Some are known by Zalo id, some only by a device id.
#[derive(Debug, Clone)]
struct Shopper {
    zalo_id: Option<String>,
    anonymous_id: String,
    oa_user_id: Option<String>,
    consented: bool,
    identified: bool,
    /// The verified phone, normalised (84…), once identified.
    phone: Option<String>,
    name: Option<String>,
}

pub struct Shoppers {
    rng: StdRng,
    app_seed: u64,
    shoppers: Vec<Shopper>,
    /// Visits in progress, each a queue of events still to send.
    visits: Vec<VecDeque<Value>>,
    concurrency: usize,
    pub tally: Tally,
}

impl Shoppers {
    /// `users` distinct shoppers; about `concurrency` visits interleave at any time.
    pub fn new(seed: u64, users: usize, concurrency: usize) -> Shoppers {
        let mut rng = StdRng::seed_from_u64(seed);
        let shoppers = (0..users.max(1))
            .map(|i| {
                let known = rng.random_bool(0.75);
                Shopper {
                    zalo_id: known.then(|| format!("{}", 5_000_000_000_000_000_000u64 + seed % 1000 * 1_000_000 + i as u64)),
                    anonymous_id: format!("dev-{seed}-{i:06}"),
                    oa_user_id: (known && rng.random_bool(0.5)).then(|| format!("{}", 8_000_000_000_000_000_000u64 + i as u64)),
                    consented: rng.random_bool(0.7),
                    identified: false,
                    phone: None,
                    name: None,
                }
            })
            .collect();
        Shoppers { rng, app_seed: seed, shoppers, visits: Vec::new(), concurrency: concurrency.max(1), tally: Tally::default() }
    }

    /// The next event, from a random visit in progress (starting new visits as needed).
    pub fn next_event(&mut self, now: DateTime<Utc>) -> Value {
        loop {
            while self.visits.len() < self.concurrency {
                let v = self.new_visit(now);
                self.visits.push(v);
            }
            let i = self.rng.random_range(0..self.visits.len());
            if let Some(mut e) = self.visits[i].pop_front() {
                e["event_time"] = json!(now.to_rfc3339_opts(SecondsFormat::Millis, true));
                self.tally.events += 1;
                return e;
            }
            self.visits.swap_remove(i);
        }
    }

    /// A batch of `n` events as the HTTP API takes it.
    pub fn batch(&mut self, n: usize, now: DateTime<Utc>) -> Value {
        let events: Vec<Value> = (0..n).map(|_| self.next_event(now)).collect();
        json!({"sent_at": now.to_rfc3339_opts(SecondsFormat::Millis, true), "events": events})
    }

    fn event_id(&mut self) -> String {
        uuid::Builder::from_random_bytes(self.rng.random()).into_uuid().to_string()
    }

    /// What Zalo knows of a shopper, for the Zalo simulator: their phone (84…) and name, once
    /// the generator has made them.
    pub fn zalo_facts(&self, zalo_id: &str) -> (Option<String>, Option<String>) {
        match self.shoppers.iter().find(|s| s.zalo_id.as_deref() == Some(zalo_id)) {
            Some(s) => (s.phone.clone(), s.name.clone()),
            None => (None, None),
        }
    }

    /// A message from the shop reached `to` (an OA user id or a phone, as Zalo was given it):
    /// the shopper comes back and orders with probability `p`. True when they will.
    pub fn message_received(&mut self, to: &str, p: f64) -> bool {
        let Some(idx) = self.shoppers.iter().position(|s| s.oa_user_id.as_deref() == Some(to) || s.phone.as_deref() == Some(to)) else {
            return false;
        };
        if !self.rng.random_bool(p.clamp(0.0, 1.0)) {
            return false;
        }
        self.tally.returned += 1;
        self.tally.orders += 1;
        let s = self.shoppers[idx].clone();
        let mut user = json!({"anonymous_id": s.anonymous_id});
        if let Some(z) = &s.zalo_id {
            user["zalo_id"] = json!(z);
        }
        if let Some(o) = &s.oa_user_id {
            user["oa_user_id"] = json!(o);
        }
        let ctx = json!({"screen": "/cart", "platform": "android", "app_version": "2.3.1", "locale": "vi-VN",
            "library": "zcdp-sim/1", "utm_source": "zalo_oa", "utm_campaign": "reminder"});
        let p = *PRODUCTS.choose(&mut self.rng).expect("products");
        let q = self.rng.random_range(1..=3);
        let items = json!([{"product_id": p.0, "product_name": p.1, "category": p.2, "quantity": q, "price": p.3}]);
        let total = q * p.3 + if q * p.3 >= 200_000 { 0 } else { 15_000 };
        let order_id = format!("ord-{}-{}", self.app_seed, self.tally.orders);
        let cart_id = format!("cart-{}-back-{}", self.app_seed, self.tally.returned);
        let mut visit = VecDeque::new();
        for (kind, props) in [
            ("page_viewed", json!({"page_title": "Giỏ hàng"})),
            (
                "cart_item_added",
                json!({"cart_id": cart_id, "product_id": p.0, "product_name": p.1, "category": p.2, "quantity": q, "price": p.3}),
            ),
            ("checkout_started", json!({"cart_id": cart_id, "items": items, "cart_value": q * p.3})),
            (
                "order_placed",
                json!({"order_id": order_id, "cart_id": cart_id, "items": items, "total": total, "payment_method": "zalopay"}),
            ),
            ("order_paid", json!({"order_id": order_id, "total": total, "payment_method": "zalopay"})),
        ] {
            let id = self.event_id();
            visit.push_back(json!({"event_id": id, "type": kind, "user": user, "context": ctx, "properties": props}));
        }
        self.visits.push(visit);
        true
    }

    fn new_visit(&mut self, _now: DateTime<Utc>) -> VecDeque<Value> {
        self.tally.visits += 1;
        let idx = self.rng.random_range(0..self.shoppers.len());
        let shopper = self.shoppers[idx].clone();
        let mut user = json!({"anonymous_id": shopper.anonymous_id});
        if let Some(z) = &shopper.zalo_id {
            user["zalo_id"] = json!(z);
        }
        if let Some(o) = &shopper.oa_user_id {
            user["oa_user_id"] = json!(o);
        }
        let (src, campaign, affiliate) = *SOURCES.choose(&mut self.rng).expect("sources");
        let platform = if self.rng.random_bool(0.6) { "android" } else { "ios" };
        let mut out = VecDeque::new();
        let mut push = |me: &mut Shoppers, kind: &str, screen: &str, props: Value| {
            let mut ctx =
                json!({"screen": screen, "platform": platform, "app_version": "2.3.1", "locale": "vi-VN", "library": "zcdp-sim/1"});
            if let Some(s) = src {
                ctx["utm_source"] = json!(s);
            }
            if let Some(c) = campaign {
                ctx["utm_campaign"] = json!(c);
            }
            if let Some(a) = affiliate {
                ctx["affiliate_id"] = json!(a);
            }
            let id = me.event_id();
            out.push_back(json!({"event_id": id, "type": kind, "user": user, "context": ctx, "properties": props}));
        };

        push(self, "page_viewed", "/home", json!({"page_title": "Trang chủ"}));
        if shopper.zalo_id.is_some() && !shopper.identified {
            self.shoppers[idx].identified = true;
            for purpose in ["analytics", "profile", "phone", "marketing"] {
                let granted = shopper.consented || purpose == "analytics";
                push(self, "consent_changed", "/consent", json!({"purpose": purpose, "granted": granted, "policy_version": "2026-09"}));
            }
            if shopper.consented {
                let name = *NAMES.choose(&mut self.rng).expect("names");
                let phone = format!("09{:08}", self.rng.random_range(0..100_000_000u32));
                self.shoppers[idx].phone = Some(format!("84{}", &phone[1..]));
                self.shoppers[idx].name = Some(name.to_string());
                let month = self.rng.random_range(1..=12);
                let day = self.rng.random_range(1..=28);
                let birthday = format!("{}-{month:02}-{day:02}", self.rng.random_range(1970..2006));
                let gender = if self.rng.random_bool(0.55) { "female" } else { "male" };
                push(
                    self,
                    "identify",
                    "/profile",
                    json!({"traits": {"name": name, "gender": gender, "birthday": birthday, "city": "Hồ Chí Minh"}, "phone": phone}),
                );
            }
            if shopper.oa_user_id.is_some() && self.rng.random_bool(0.4) {
                push(self, "oa_followed", "/home", json!({"oa_id": "oa-demo"}));
            }
        }
        if self.rng.random_bool(0.3) {
            let q = *SEARCHES.choose(&mut self.rng).expect("searches");
            let results = self.rng.random_range(0..20);
            push(self, "search", "/search", json!({"query": q, "results_count": results}));
        }
        // Shoppers stay within a favourite category most of the time.
        let fav = PRODUCTS.choose(&mut self.rng).expect("products").2;
        let mut viewed = Vec::new();
        for _ in 0..self.rng.random_range(1..=5) {
            let p = if self.rng.random_bool(0.7) {
                *PRODUCTS.iter().filter(|p| p.2 == fav).collect::<Vec<_>>().choose(&mut self.rng).expect("category")
            } else {
                PRODUCTS.choose(&mut self.rng).expect("products")
            };
            viewed.push(*p);
            let dwell = self.rng.random_range(800..40_000);
            push(
                self,
                "product_viewed",
                &format!("/product/{}", p.0),
                json!({"product_id": p.0, "product_name": p.1, "category": p.2, "price": p.3, "dwell_ms": dwell}),
            );
            if self.rng.random_bool(0.05) {
                push(self, "product_shared", &format!("/product/{}", p.0), json!({"product_id": p.0, "share_channel": "zalo_chat"}));
            }
        }
        if self.rng.random_bool(0.15) {
            push(self, "minigame_played", "/game", json!({"game_id": "lucky-wheel", "result": "voucher", "reward": "GIAM10"}));
            push(self, "voucher_claimed", "/game", json!({"voucher_code": "GIAM10"}));
        }
        if self.rng.random_bool(0.45) {
            self.tally.carts += 1;
            let cart_id = format!("cart-{}-{}", self.app_seed, self.tally.carts);
            let mut items: Vec<Value> = Vec::new();
            let lines = self.rng.random_range(1..=viewed.len().min(3));
            for p in viewed.iter().take(lines) {
                let q = self.rng.random_range(1..=3);
                push(
                    self,
                    "cart_item_added",
                    &format!("/product/{}", p.0),
                    json!({"cart_id": cart_id, "product_id": p.0, "product_name": p.1, "category": p.2, "quantity": q, "price": p.3}),
                );
                items.push(json!({"product_id": p.0, "product_name": p.1, "category": p.2, "quantity": q, "price": p.3}));
            }
            if items.len() > 1 && self.rng.random_bool(0.15) {
                let removed = items.pop().expect("two items");
                push(
                    self,
                    "cart_item_removed",
                    "/cart",
                    json!({"cart_id": cart_id, "product_id": removed["product_id"], "quantity": removed["quantity"], "price": removed["price"]}),
                );
            }
            let total: i64 = items.iter().map(|i| i["quantity"].as_i64().unwrap_or(0) * i["price"].as_i64().unwrap_or(0)).sum();
            push(self, "cart_viewed", "/cart", json!({"cart_id": cart_id, "items": items, "cart_value": total}));
            if self.rng.random_bool(0.55) {
                push(self, "checkout_started", "/checkout", json!({"cart_id": cart_id, "items": items, "cart_value": total}));
                if self.rng.random_bool(0.8) {
                    self.tally.orders += 1;
                    let order_id = format!("ord-{}-{}", self.app_seed, self.tally.orders);
                    let payment = *PAYMENTS.choose(&mut self.rng).expect("payments");
                    let voucher = self.rng.random_bool(0.2).then_some("GIAM10");
                    let discount = if voucher.is_some() { total / 10 } else { 0 };
                    let shipping = if total >= 200_000 { 0 } else { 15_000 };
                    let paid = total - discount + shipping;
                    push(
                        self,
                        "order_placed",
                        "/checkout",
                        json!({"order_id": order_id, "cart_id": cart_id, "items": items, "total": paid, "shipping_fee": shipping, "discount": discount, "payment_method": payment, "voucher_code": voucher}),
                    );
                    if payment != "cod" {
                        push(self, "order_paid", "/checkout", json!({"order_id": order_id, "total": paid, "payment_method": payment}));
                    }
                    push(self, "order_status_changed", "/orders", json!({"order_id": order_id, "status": "confirmed"}));
                    push(self, "points_earned", "/orders", json!({"points": paid / 1000, "order_id": order_id, "reason": "order"}));
                } else {
                    self.tally.abandoned += 1;
                }
            } else {
                self.tally.abandoned += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_is_deterministic_and_realistic() {
        let now = Utc::now();
        let mut a = Shoppers::new(7, 200, 20);
        let mut b = Shoppers::new(7, 200, 20);
        let ea: Vec<Value> = (0..2000).map(|_| a.next_event(now)).collect();
        let eb: Vec<Value> = (0..2000).map(|_| b.next_event(now)).collect();
        assert_eq!(ea, eb);
        let count = |t: &str| ea.iter().filter(|e| e["type"] == t).count();
        assert!(count("product_viewed") > count("cart_item_added"));
        assert!(count("cart_item_added") > count("order_placed"));
        assert!(count("order_placed") > 0 && count("identify") > 0 && count("search") > 0);
        assert!(a.tally.abandoned > 0);
    }
}

#[cfg(test)]
mod gateway_tests {
    use super::*;

    /// Every event the generator makes — visits, and shoppers coming back after a message —
    /// passes the gateway's validation.
    #[test]
    fn every_generated_event_is_valid_for_the_gateway() {
        let now = Utc::now();
        let mut s = Shoppers::new(3, 50, 10);
        let mut events: Vec<Value> = (0..3000).map(|_| s.next_event(now)).collect();
        let mut back = 0;
        for sh in s.shoppers.clone() {
            let to = sh.oa_user_id.or(sh.phone);
            if let Some(to) = to {
                back += usize::from(s.message_received(&to, 1.0));
            }
        }
        assert!(back > 0, "some shoppers came back");
        events.extend((0..back * 6).map(|_| s.next_event(now)));
        assert!(events.iter().any(|e| e["properties"]["order_id"].as_str().is_some_and(|_| e["context"]["utm_campaign"] == "reminder")));
        let receipt = ingest::validate::Receipt { app_id: "demo", received_at: now.timestamp_millis(), sent_at: None };
        for e in &events {
            let raw = e.to_string();
            if let Err(r) = ingest::validate::parse_event(&raw, &receipt) {
                panic!("the gateway rejects a generated event ({r:?}): {raw}");
            }
        }
    }
}
