//! `zcdp up` flows run by `up_e2e` on the embedded cluster and by `real_broker_e2e` against a
//! real broker (`extra` adds `--brokers …`).

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use schemas::kafka::{Kafka, KafkaArgs};
use schemas::testing::{eventually, read_to_end};
use schemas::topics::Topic;

use super::Zcdp;

fn kafka_at(bootstrap: &str) -> Kafka {
    Kafka::external(&KafkaArgs { brokers: Some(bootstrap.into()), partitions: 6, replication_factor: 1, ..KafkaArgs::default() }).unwrap()
}

async fn count(kafka: &Kafka, topic: Topic) -> usize {
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || read_to_end(&kafka, topic.name(), Duration::from_secs(20)).map(|v| v.len()).unwrap_or(0))
        .await
        .unwrap()
}

/// A stock Confluent client, knowing nothing of zcdp but the printed bootstrap address and the
/// gateway's registry URL, reads what was posted, with the fields as posted.
pub async fn stock_client_reads_posted_events(extra: &[&str]) {
    let python = super::stock_client_python();
    let data = tempfile::tempdir().unwrap();
    let mut args = vec!["up", "--http", "127.0.0.1:0", "--data-dir", data.path().to_str().unwrap()];
    args.extend_from_slice(extra);
    let zcdp = Zcdp::start(&args);
    let events: Vec<Value> = (0..5)
        .map(|i| {
            json!({"event_id": uuid::Uuid::new_v4().to_string(), "type": "product_viewed", "event_time": "2026-11-23T09:30:00+07:00",
            "user": {"zalo_id": format!("50123456789012345{i:02}")}, "context": {"screen": "/p", "utm_campaign": "tet"},
            "properties": {"product_id": format!("sp-{i}"), "category": "coffee", "price": 35000 + i, "dwell_ms": 1000 * i}})
        })
        .collect();
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/batch", zcdp.http))
        .bearer_auth(zcdp.key("write"))
        .json(&json!({"sent_at": "2026-11-23T09:30:01+07:00", "events": events}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let out = tokio::task::spawn_blocking({
        let (bootstrap, http) = (zcdp.bootstrap.clone(), zcdp.http.clone());
        move || {
            Command::new(python)
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/stock-client.py"))
                .args(["--bootstrap", &bootstrap, "--registry", &format!("http://{http}"), "--topic", "zmp.views.v1", "--count", "5"])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(out.status.success(), "stock client failed: {}", String::from_utf8_lossy(&out.stderr));
    let read: Vec<Value> = String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(read.len(), 5);
    for posted in &events {
        let got = read.iter().find(|r| r["value"]["event_id"] == posted["event_id"]).expect("posted event read back");
        let v = &got["value"];
        assert_eq!(got["key"], posted["user"]["zalo_id"]);
        assert_eq!(v["type"], json!("product_viewed"));
        assert_eq!(v["user"]["zalo_id"], posted["user"]["zalo_id"]);
        assert_eq!(v["context"]["utm_campaign"], json!("tet"));
        for f in ["product_id", "category", "price", "dwell_ms"] {
            assert_eq!(v["properties"][f], posted["properties"][f], "{f}");
        }
    }
    let (status, _) = zcdp.terminate();
    assert!(status.success());
}

/// `zcdp up --demo`: shoppers' traffic reaches every input topic; SIGTERM stops it cleanly.
pub async fn demo_fills_every_input_topic_and_stops_on_sigterm(extra: &[&str]) {
    let data = tempfile::tempdir().unwrap();
    let mut args = vec!["up", "--demo", "--demo-rate", "300", "--http", "127.0.0.1:0", "--data-dir", data.path().to_str().unwrap()];
    args.extend_from_slice(extra);
    let zcdp = Zcdp::start(&args);
    let kafka = kafka_at(&zcdp.bootstrap);
    for topic in Topic::inputs() {
        eventually(Duration::from_secs(60), &format!("demo events in {topic}"), || async {
            (count(&kafka, topic).await > 0).then_some(())
        })
        .await;
    }
    let dead: Vec<String> = {
        let kafka = kafka.clone();
        tokio::task::spawn_blocking(move || read_to_end(&kafka, Topic::DeadLetter.name(), Duration::from_secs(20)).unwrap_or_default())
            .await
            .unwrap()
            .iter()
            .map(|m| match schemas::codec::decode::<schemas::event::DeadLetter>(rdkafka::Message::payload(m).unwrap_or_default()) {
                Ok(d) => format!("{} {} {}: {}", d.source, d.event_type.unwrap_or_default(), d.reason_code, d.reason),
                Err(e) => format!("undecodable dead letter: {e}"),
            })
            .collect()
    };
    assert!(dead.is_empty(), "the demo's events are all valid: {dead:?}");
    let metrics = reqwest::get(format!("http://{}/metrics", zcdp.http)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("zcdp_ingest_events_accepted_total"), "{metrics}");
    let (status, rest) = zcdp.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:?}");
}
