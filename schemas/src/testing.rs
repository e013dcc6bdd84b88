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
    for &kind in IdentityType::ALL {
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
    use rdkafka::Message;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use std::collections::HashMap;

    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", format!("zcdp-test-reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), within)?;
    let partitions: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, within)?;
        if high > low {
            remaining.insert(p, high);
        }
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let deadline = std::time::Instant::now() + within;
    let mut out = Vec::new();
    while !remaining.is_empty() {
        anyhow::ensure!(std::time::Instant::now() < deadline, "{topic}: not read to its end within {within:?}; left: {remaining:?}");
        match consumer.poll(std::time::Duration::from_millis(100)) {
            Some(Ok(m)) => {
                if remaining.get(&m.partition()).is_some_and(|high| m.offset() + 1 >= *high) {
                    remaining.remove(&m.partition());
                }
                out.push(m.detach());
            }
            Some(Err(e)) => anyhow::bail!("reading {topic}: {e}"),
            None => {}
        }
    }
    Ok(out)
}

/// Polls `check` until it returns `Some`, or fails after `within`: how tests wait for a condition
/// instead of sleeping.
pub async fn eventually<T, F, Fut>(within: std::time::Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
