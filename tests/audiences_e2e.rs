//! Segments end to end: simulated shoppers through `zcdp up`, then `zcdp audiences export` of a
//! shipped segment, checked against the same segment recomputed here from the raw input topics.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use processors::runtime::task::INPUTS;
use processors::runtime::testing::wait_progress;
use schemas::event::{InputEvent, OrderType, PURPOSE_MARKETING, ViewType};
use schemas::kafka::{Kafka, KafkaArgs};
use schemas::testing::read_to_end;
use support::Zcdp;

fn zcdp(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_zcdp")).args(args).env("ZCDP_LOG", "warn").output().expect("run zcdp");
    assert!(out.status.success() || args.contains(&"no_such_segment"), "zcdp {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// `viewed_no_order_7d` from the raw events: marketing consent granted (the latest decision by
/// event time), a product viewed in the 7 days before the user's last event, and no order in them.
fn recompute(events: &[InputEvent]) -> BTreeSet<String> {
    #[derive(Default)]
    struct U {
        last: i64,
        consent: Option<(i64, bool)>,
        last_view: Option<i64>,
        last_order: Option<i64>,
    }
    let mut users: BTreeMap<String, U> = BTreeMap::new();
    for e in events {
        let u = users.entry(e.user().key.clone()).or_default();
        let t = e.time();
        u.last = u.last.max(t);
        match e {
            InputEvent::View(v) if v.kind == ViewType::ProductViewed => u.last_view = u.last_view.max(Some(t)),
            InputEvent::Order(o) if o.kind == OrderType::OrderPlaced => u.last_order = u.last_order.max(Some(t)),
            InputEvent::Order(o) => assert_ne!(o.kind, OrderType::OrderCancelled, "the check does not handle cancellations"),
            InputEvent::Identity(i) if i.properties.purpose.as_deref() == Some(PURPOSE_MARKETING) => {
                if let Some(g) = i.properties.granted
                    && u.consent.is_none_or(|(at, _)| at <= t)
                {
                    u.consent = Some((t, g));
                }
            }
            _ => {}
        }
    }
    const WEEK: i64 = 7 * 24 * 3600 * 1000;
    users
        .into_iter()
        .filter(|(_, u)| {
            u.consent.is_some_and(|(_, g)| g)
                && u.last_view.is_some_and(|v| u.last - v < WEEK)
                && u.last_order.is_none_or(|o| u.last - o >= WEEK)
        })
        .map(|(k, _)| k)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_segment_equals_the_segment_recomputed_from_the_raw_topics() {
    let data = tempfile::tempdir().unwrap();
    let exports = data.path().join("exports");
    let up = Zcdp::start(&[
        "up",
        "--http",
        "127.0.0.1:0",
        "--data-dir",
        data.path().to_str().unwrap(),
        "--export-dir",
        exports.to_str().unwrap(),
    ]);
    let target = format!("http://{}", up.http);
    zcdp(&[
        "simulate",
        "--target",
        &target,
        "--write-key",
        up.key("write"),
        // The shop's server records the shoppers' consents (no Zalo simulator here for sessions).
        "--secret-key",
        up.key("secret"),
        "--rate",
        "1500",
        "--events",
        "4000",
        "--users",
        "300",
        "--seed",
        "7",
    ]);
    let kafka =
        Kafka::external(&KafkaArgs { brokers: Some(up.bootstrap.clone()), partitions: 6, replication_factor: 1, ..KafkaArgs::default() })
            .unwrap();
    // Everything processed and committed: the audience records of a commit are written before it.
    wait_progress(&kafka, "zcdp-cdp", 1.0, Duration::from_secs(120)).await;

    let out = zcdp(&["audiences", "export", "viewed_no_order_7d", "--format", "csv", "--brokers", &up.bootstrap]);
    let csv = String::from_utf8(out.stdout).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("user_key,zalo_id,oa_user_id,phone_sha256,phone_sha256_e164,since"));
    let exported: BTreeSet<String> = lines.map(|l| l.split(',').next().unwrap().to_string()).collect();

    let events: Vec<InputEvent> = {
        let kafka = kafka.clone();
        tokio::task::spawn_blocking(move || {
            let mut all = Vec::new();
            for t in INPUTS {
                for m in read_to_end(&kafka, t.name(), Duration::from_secs(60)).unwrap() {
                    use rdkafka::Message;
                    all.push(schemas::codec::decode_input(t, m.payload().unwrap()).unwrap());
                }
            }
            all
        })
        .await
        .unwrap()
    };
    let expected = recompute(&events);
    assert!(expected.len() >= 10, "too few members to check anything: {}", expected.len());
    assert_eq!(exported, expected, "exported vs recomputed from {} events", events.len());

    // The Zalo-id export lists the members that have one; an unknown segment is refused by name.
    let zalo =
        String::from_utf8(zcdp(&["audiences", "export", "viewed_no_order_7d", "--format", "zalo", "--brokers", &up.bootstrap]).stdout)
            .unwrap();
    assert!(zalo.lines().count() <= expected.len() && zalo.lines().all(|l| expected.contains(l)), "{zalo}");

    // The export dir catches up with the same members, each logged once as an add.
    let dir = exports.join("demo").join("viewed_no_order_7d");
    schemas::testing::eventually(Duration::from_secs(30), "the export dir's members", || async {
        let members = std::fs::read_to_string(dir.join("members.csv")).ok()?;
        let set: BTreeSet<String> = members.lines().skip(1).map(|l| l.split(',').next().unwrap().to_string()).collect();
        (set == expected).then_some(())
    })
    .await;
    let changes = std::fs::read_to_string(dir.join("changes.csv")).unwrap();
    let adds: BTreeSet<String> =
        changes.lines().skip(1).filter(|l| l.split(',').nth(1) == Some("add")).map(|l| l.split(',').nth(2).unwrap().to_string()).collect();
    assert!(expected.is_subset(&adds), "every member was logged as added");
    assert_eq!(std::fs::read_to_string(dir.join("zalo_ids.txt")).unwrap(), zalo);

    let bad = zcdp(&["audiences", "export", "no_such_segment", "--brokers", &up.bootstrap]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("viewed_no_order_7d"), "the error lists the defined segments");
    let (status, _) = up.terminate();
    assert!(status.success());
}
