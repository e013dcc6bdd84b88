//! Sample records of every input type, for round-trip tests and benches.

use crate::event::*;

/// A fully populated envelope around `properties`; `$ty` is the topic's record struct.
macro_rules! envelope {
    ($ty:ident, $kind:expr, $n:expr, $properties:expr) => {{
        let n: u32 = $n;
        let t = 1_764_000_000_000 + i64::from(n) * 1000;
        $ty {
            event_id: format!("00000000-0000-4000-8000-{n:012}"),
            app_id: "demo".into(),
            kind: $kind,
            user: User {
                key: "zu_1001".into(),
                zalo_id: Some("zu_1001".into()),
                anonymous_id: Some("anon-7f3a".into()),
                oa_user_id: Some("oa_55501".into()),
            },
            event_time: t,
            sent_at: Some(t + 200),
            received_at: t + 450,
            corrected_time: t + 250,
            clock_skew_ms: 250,
            future_clamped: false,
            stale: false,
            context: Context {
                screen: Some("/product/sp-01".into()),
                utm_source: Some("zalo_oa".into()),
                utm_campaign: Some("tet-2027".into()),
                app_version: Some("1.4.2".into()),
                platform: Some("android".into()),
                locale: Some("vi-VN".into()),
                ..Context::default()
            },
            properties: $properties,
            trust: Trust::Session,
        }
    }};
}

fn item() -> Item {
    Item {
        product_id: "sp-01".into(),
        product_name: Some("Cà phê sữa đá".into()),
        category: Some("coffee".into()),
        quantity: 2,
        price: 35_000,
    }
}

/// One event of every type of the HTTP API, valid and fully populated where it matters.
pub fn sample_events() -> Vec<InputEvent> {
    let mut out = Vec::new();
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    for &kind in ViewType::ALL {
        let props = ViewProperties {
            product_id: Some("sp-01".into()),
            category: Some("coffee".into()),
            price: Some(35_000),
            dwell_ms: Some(5400),
            query: (kind == ViewType::Search).then(|| "trà sữa".into()),
            ..Default::default()
        };
        out.push(InputEvent::View(envelope!(ViewEvent, kind, next(), props)));
    }
    for &kind in CartType::ALL {
        let props = CartProperties {
            cart_id: "cart-9".into(),
            product_id: Some("sp-01".into()),
            quantity: Some(2),
            price: Some(35_000),
            items: vec![item()],
            ..Default::default()
        };
        out.push(InputEvent::Cart(envelope!(CartEvent, kind, next(), props)));
    }
    for &kind in OrderType::ALL {
        let props = OrderProperties {
            order_id: "ord-77".into(),
            cart_id: Some("cart-9".into()),
            items: vec![item()],
            total: Some(1_250_000),
            payment_method: Some("zalopay".into()),
            voucher_code: Some("TET10".into()),
            points_used: Some(100),
            ..Default::default()
        };
        out.push(InputEvent::Order(envelope!(OrderEvent, kind, next(), props)));
    }
    for &kind in IdentityType::ALL.iter().filter(|k| !k.is_internal()) {
        let props = IdentityProperties {
            traits: (kind == IdentityType::Identify).then(|| Traits {
                name: Some("Nguyễn Văn A".into()),
                birthday: Some("1990-02-14".into()),
                ..Default::default()
            }),
            phone: (kind == IdentityType::Identify).then(|| "84987654321".into()),
            purpose: (kind == IdentityType::ConsentChanged).then(|| "marketing".into()),
            granted: (kind == IdentityType::ConsentChanged).then_some(true),
            ..Default::default()
        };
        out.push(InputEvent::Identity(envelope!(IdentityEvent, kind, next(), props)));
    }
    for &kind in EngagementType::ALL {
        let props = EngagementProperties {
            points: Some(50),
            game_id: Some("lucky-wheel".into()),
            custom: [("spin".to_string(), "3".to_string())].into(),
            ..Default::default()
        };
        out.push(InputEvent::Engagement(envelope!(EngagementEvent, kind, next(), props)));
    }
    out
}

/// Reads every record of `topic` from its start up to its end as of the call. Blocking: call it
/// from `spawn_blocking` in async tests.
pub fn read_to_end(
    kafka: &crate::kafka::Kafka,
    topic: &str,
    within: std::time::Duration,
) -> anyhow::Result<Vec<rdkafka::message::OwnedMessage>> {
    kafka.read_to_end(topic, within)
}

/// Polls `check` until it returns `Some`, or fails after `within`: how tests wait for a condition
/// instead of sleeping.
pub async fn eventually<T, F, Fut>(within: std::time::Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_explained(within, what, move || {
        let checked = check();
        async move { checked.await.ok_or_else(String::new) }
    })
    .await
}

/// [`eventually`], where a check that fails says what it saw; the last such answer is part of the
/// time-out's message.
pub async fn eventually_explained<T, F, Fut>(within: std::time::Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let seen = match check().await {
            Ok(v) => return v,
            Err(seen) => seen,
        };
        if tokio::time::Instant::now() >= deadline {
            let seen = if seen.is_empty() { seen } else { format!(": {seen}") };
            panic!("timed out after {within:?} waiting for {what}{seen}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Builders of single input events for tests: a user, a time (epoch ms) and what they did.
pub mod build {
    use crate::event::*;

    fn user(key: &str) -> User {
        User { key: key.into(), zalo_id: Some(key.into()), anonymous_id: None, oa_user_id: None }
    }

    macro_rules! event {
        ($ty:ident, $kind:expr, $user:expr, $t:expr, $props:expr) => {
            $ty {
                event_id: uuid::Uuid::new_v4().to_string(),
                app_id: "demo".into(),
                kind: $kind,
                user: user($user),
                event_time: $t,
                sent_at: None,
                received_at: $t,
                corrected_time: $t,
                clock_skew_ms: 0,
                future_clamped: false,
                stale: false,
                context: Context { screen: Some("/s".into()), ..Context::default() },
                properties: $props,
                // A shop's history, as its server would vouch for it.
                trust: Trust::Server,
            }
        };
    }

    pub fn page(user_key: &str, t: i64) -> InputEvent {
        InputEvent::View(event!(ViewEvent, ViewType::PageViewed, user_key, t, ViewProperties::default()))
    }

    pub fn product_view(user_key: &str, t: i64, product: &str, category: &str, dwell_ms: i64) -> InputEvent {
        let p = ViewProperties {
            product_id: Some(product.into()),
            category: Some(category.into()),
            price: Some(35_000),
            dwell_ms: Some(dwell_ms),
            ..Default::default()
        };
        InputEvent::View(event!(ViewEvent, ViewType::ProductViewed, user_key, t, p))
    }

    pub fn cart_add(user_key: &str, t: i64, cart: &str, product: &str, quantity: i64, price: i64) -> InputEvent {
        let p = CartProperties {
            cart_id: cart.into(),
            product_id: Some(product.into()),
            category: Some("coffee".into()),
            quantity: Some(quantity),
            price: Some(price),
            ..Default::default()
        };
        InputEvent::Cart(event!(CartEvent, CartType::CartItemAdded, user_key, t, p))
    }

    pub fn order(user_key: &str, t: i64, order: &str, cart: Option<&str>, total: i64) -> InputEvent {
        let p = OrderProperties {
            order_id: order.into(),
            cart_id: cart.map(Into::into),
            total: Some(total),
            items: vec![Item { product_id: "p".into(), quantity: 1, price: total, ..Default::default() }],
            ..Default::default()
        };
        InputEvent::Order(event!(OrderEvent, OrderType::OrderPlaced, user_key, t, p))
    }

    /// A deterministic shop history: `users` shoppers, each with one to three sessions two hours
    /// apart (page views, product views, cart adds, some orders, some abandoned carts, a few
    /// client retries of the same event), sorted by time from `start`.
    pub fn shop_history(users: usize, seed: u64, start: i64) -> Vec<InputEvent> {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) | 1;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n.max(1)
        };
        let products = [("cf-1", "coffee"), ("cf-2", "coffee"), ("tea-1", "tea"), ("tea-2", "tea"), ("bk-1", "bakery"), ("mc-1", "merch")];
        let mut out = Vec::new();
        let mut id = 0u64;
        let mut next_id = move |e: InputEvent| {
            id += 1;
            with_id(e, &format!("00000000-0000-4000-8000-{:012x}", seed.wrapping_mul(1_000_000_007).wrapping_add(id) & 0xffff_ffff_ffff))
        };
        for u in 0..users {
            let user = format!("u{seed}-{u}");
            for s in 0..1 + rnd(3) {
                let mut t = start + u as i64 * 7_000 + s as i64 * 2 * 3600 * 1000;
                out.push(next_id(page(&user, t)));
                let mut viewed = Vec::new();
                for _ in 0..1 + rnd(4) {
                    t += 5_000 + rnd(60_000) as i64;
                    let (p, c) = products[rnd(products.len() as u64) as usize];
                    viewed.push(p);
                    out.push(next_id(product_view(&user, t, p, c, rnd(40_000) as i64)));
                }
                if rnd(2) == 0 {
                    let cart = format!("cart-{user}-{s}");
                    t += 10_000;
                    let add = next_id(cart_add(&user, t, &cart, viewed[0], 1 + rnd(3) as i64, 35_000));
                    if rnd(20) == 0 {
                        out.push(add.clone()); // a client retry: same event id
                    }
                    out.push(add);
                    if viewed.len() > 1 && rnd(2) == 0 {
                        t += 8_000;
                        out.push(next_id(cart_add(&user, t, &cart, viewed[1], 1, 45_000)));
                    }
                    if rnd(5) < 2 {
                        t += 30_000;
                        out.push(next_id(order(&user, t, &format!("ord-{user}-{s}"), Some(&cart), 120_000)));
                    }
                }
            }
        }
        out.sort_by_key(|e| e.time());
        out
    }

    /// The same event with another id (a distinct event) or the same (a client retry).
    pub fn with_id(mut e: InputEvent, id: &str) -> InputEvent {
        match &mut e {
            InputEvent::View(x) => x.event_id = id.into(),
            InputEvent::Cart(x) => x.event_id = id.into(),
            InputEvent::Order(x) => x.event_id = id.into(),
            InputEvent::Identity(x) => x.event_id = id.into(),
            InputEvent::Engagement(x) => x.event_id = id.into(),
            InputEvent::Message(x) => x.event_id = id.into(),
        }
        e
    }
}

/// Writes events to their topics, keyed by user, as the gateway does; waits for every ack.
pub async fn produce(kafka: &crate::kafka::Kafka, events: &[crate::event::InputEvent]) -> anyhow::Result<()> {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = kafka.producer_config().set("linger.ms", "5").create()?;
    let mut pending = std::collections::VecDeque::with_capacity(events.len());
    for e in events {
        let mut buf = Vec::new();
        crate::codec::encode_input_into(e, &mut buf)?;
        let mut record = FutureRecord::to(e.topic().name()).key(e.user().key.as_bytes()).payload(&buf);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push_back(delivery);
                    break;
                }
                // The producer's queue is full (a slower broker): wait for the oldest record's
                // acknowledgement, which makes room, and try again.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    match pending.pop_front() {
                        Some(oldest) => {
                            oldest.await?.map_err(|(e, _)| e)?;
                        }
                        None => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
                    }
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }
    for p in pending {
        p.await?.map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// Writes one event to a given partition of its topic (to move time forward on every task).
pub async fn produce_to_partition(kafka: &crate::kafka::Kafka, event: &crate::event::InputEvent, partition: i32) -> anyhow::Result<()> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = kafka.producer_config().create()?;
    let mut buf = Vec::new();
    crate::codec::encode_input_into(event, &mut buf)?;
    let record = FutureRecord::to(event.topic().name()).key(event.user().key.as_bytes()).payload(&buf).partition(partition);
    producer.send_result(record).map_err(|(e, _)| e)?.await?.map_err(|(e, _)| e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{eventually, eventually_explained};

    #[tokio::test]
    #[should_panic(expected = "timed out after 100ms waiting for the answer: saw 41")]
    async fn a_time_out_says_what_the_check_saw_last() {
        eventually_explained(Duration::from_millis(100), "the answer", || async { Err::<(), _>("saw 41".to_string()) }).await;
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after 100ms waiting for the answer")]
    async fn a_plain_check_times_out_with_what_it_waited_for() {
        eventually(Duration::from_millis(100), "the answer", || async { None::<()> }).await;
    }

    #[tokio::test]
    async fn a_check_that_passes_returns_its_value() {
        let mut tries = 0;
        let v = eventually(Duration::from_secs(5), "three tries", || {
            tries += 1;
            let t = tries;
            async move { (t >= 3).then_some(t) }
        })
        .await;
        assert_eq!(v, 3);
    }
}
