//! The processors through the real binary: a `zcdp process` member killed with SIGKILL (no
//! flush, no commit) and restarted gives the outputs of an uninterrupted run; `zcdp up` turns an
//! abandoned cart into a trigger within seconds of its timeout; a standalone member serves its
//! metrics and liveness.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use processors::ProcessArgs;
use processors::runtime::testing::read;
use schemas::derived::{CartTrigger, Profile, Session, UserInterests};
use schemas::kafka::{EmbeddedCluster, Kafka, KafkaArgs};
use schemas::testing::eventually;
use support::Zcdp;

async fn cluster() -> (Arc<EmbeddedCluster>, Kafka) {
    let cluster = Arc::new(EmbeddedCluster::start(1).unwrap());
    let kafka = Kafka::embedded(cluster.clone(), 6);
    kafka.ensure_catalogue().await.unwrap();
    (cluster, kafka)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_killed_mid_stream_and_restarted_changes_no_output() {
    let (_c2, kafka) = cluster().await;
    support::kill_flow::killed_member_changes_no_output(&kafka, Some("killable")).await;
}

/// `zcdp up --cart-timeout 5s --session-gap 5s`: the shopper who leaves a cart gets a trigger
/// within seconds of the timeout, the one who orders gets none, and both get their session and
/// interests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_turns_an_abandoned_cart_into_a_trigger_within_seconds() {
    let data = tempfile::tempdir().unwrap();
    let zcdp = Zcdp::start(&[
        "up",
        "--http",
        "127.0.0.1:0",
        "--cart-timeout",
        "5s",
        "--session-gap",
        "5s",
        "--data-dir",
        data.path().to_str().unwrap(),
    ]);
    let kafka =
        Kafka::external(&KafkaArgs { brokers: Some(zcdp.bootstrap.clone()), partitions: 6, replication_factor: 1, ..KafkaArgs::default() })
            .unwrap();
    let client = reqwest::Client::new();
    let write_key = zcdp.key("write").to_string();
    let post = |events: Vec<Value>| {
        let client = client.clone();
        let url = format!("http://{}/v1/batch", zcdp.http);
        let write_key = write_key.clone();
        async move {
            let r = client.post(url).bearer_auth(write_key).json(&json!({"events": events})).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["rejected"], json!([]), "{body}");
        }
    };
    let ev = |user: &str, kind: &str, props: Value| json!({"event_id": uuid::Uuid::new_v4().to_string(), "type": kind, "user": {"zalo_id": user}, "context": {"screen": "/p"}, "properties": props});
    let posted = Instant::now();
    post(vec![
        ev("leaver", "product_viewed", json!({"product_id": "cf-suada", "category": "coffee", "price": 35000, "dwell_ms": 9000})),
        ev("leaver", "cart_item_added", json!({"cart_id": "c-leaver", "product_id": "cf-suada", "category": "coffee", "quantity": 2, "price": 35000})),
        ev("buyer", "cart_item_added", json!({"cart_id": "c-buyer", "product_id": "tea-dao", "category": "fruit-tea", "quantity": 1, "price": 49000})),
        ev("buyer", "order_placed", json!({"order_id": "o-1", "cart_id": "c-buyer", "total": 49000, "items": [{"product_id": "tea-dao", "quantity": 1, "price": 49000}]})),
    ])
    .await;

    let trigger = eventually(Duration::from_secs(30), "the leaver's cart trigger", || async {
        read::<CartTrigger>(&kafka).await.into_iter().find(|(k, _)| k == "leaver").map(|(_, t)| t)
    })
    .await;
    let waited = posted.elapsed();
    assert!(waited >= Duration::from_secs(5) && waited < Duration::from_secs(12), "trigger after {waited:?} for a 5 s timeout");
    assert_eq!(trigger.value, 70_000);
    assert_eq!(trigger.last_viewed_product.map(|p| p.product_id), Some("cf-suada".into()));

    // The buyer's session closes after the same wait: by then a trigger would be out too.
    eventually(Duration::from_secs(30), "both sessions", || async {
        let s = read::<Session>(&kafka).await;
        (s.iter().any(|(k, _)| k == "buyer") && s.iter().any(|(k, _)| k == "leaver")).then_some(())
    })
    .await;
    let (status, _) = zcdp.terminate();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_publishes_sessions_interests_and_profiles_for_the_demo_shoppers() {
    let data = tempfile::tempdir().unwrap();
    let zcdp = Zcdp::start(&[
        "up",
        "--demo",
        "--demo-rate",
        "300",
        "--http",
        "127.0.0.1:0",
        "--session-gap",
        "3s",
        "--cart-timeout",
        "3s",
        "--data-dir",
        data.path().to_str().unwrap(),
    ]);
    let kafka =
        Kafka::external(&KafkaArgs { brokers: Some(zcdp.bootstrap.clone()), partitions: 6, replication_factor: 1, ..KafkaArgs::default() })
            .unwrap();
    eventually(Duration::from_secs(60), "sessions, interests, triggers and profiles from demo traffic", || async {
        let (s, i, t) = (read::<Session>(&kafka).await, read::<UserInterests>(&kafka).await, read::<CartTrigger>(&kafka).await);
        let p = read::<Profile>(&kafka).await;
        (!s.is_empty() && !i.is_empty() && !t.is_empty() && !p.is_empty()).then_some(())
    })
    .await;
    // The demo's shoppers all arrived minutes ago: new customers, keyed by app and user key.
    for (key, p) in read::<Profile>(&kafka).await {
        assert_eq!(key, schemas::topics::app_user_key(&p.app_id, &p.user_key));
        assert!(p.first_seen <= p.last_seen && p.sessions >= 1 && p.active_days >= 1, "{p:?}");
        assert_eq!(p.lifecycle, "new", "{p:?}");
    }
    let metrics = reqwest::get(format!("http://{}/metrics", zcdp.http)).await.unwrap().text().await.unwrap();
    for m in [
        "zcdp_process_records_total",
        "zcdp_process_lag_records",
        "zcdp_process_timers_pending",
        "zcdp_process_store_keys",
        "zcdp_process_restore_records_total",
    ] {
        assert!(metrics.contains(m), "{m} missing from /metrics");
    }
    let (status, _) = zcdp.terminate();
    assert!(status.success());
}

/// `zcdp process` on its own serves its metrics and liveness, so an operator (or Prometheus)
/// sees lag, restore progress, timers and store sizes of every member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_member_serves_metrics_and_health() {
    let (_cluster, kafka) = cluster().await;
    // The embedded cluster has no CreateTopics API: make the changelogs as an operator would.
    let topology = processors::topology(&ProcessArgs::default()).unwrap();
    processors::runtime::ensure_changelogs(&kafka, "cdp", &topology, 6).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let mut member =
        Zcdp::spawn(&["process", "--brokers", &kafka.bootstrap, "--partitions", "6", "--http", "127.0.0.1:0", "--data-dir", data_dir]);
    let line = member.wait_line("metrics on http://");
    let addr = line.split("metrics on http://").nth(1).unwrap().split('/').next().unwrap().to_string();
    let client = reqwest::Client::new();
    let metrics = eventually(Duration::from_secs(60), "the member reports its tasks", || async {
        let text = client.get(format!("http://{addr}/metrics")).send().await.ok()?.text().await.ok()?;
        text.contains("zcdp_process_tasks{state=\"running\"} 6").then_some(text)
    })
    .await;
    assert!(metrics.contains("zcdp_process_tasks{state=\"restoring\"} 0"), "restore progress is reported");
    let health = client.get(format!("http://{addr}/healthz")).send().await.unwrap();
    assert!(health.status().is_success());
}
