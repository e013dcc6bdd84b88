//! The fault suite, on the embedded cluster's fault injection (librdkafka's mock cluster, three
//! brokers): what users care about holds while Kafka misbehaves.
//!
//! Here:
//! - ingest through leader changes, produce errors and every broker down: no event that got a 200
//!   is lost;
//! - the processors through leader changes, produce, fetch and commit errors and the group
//!   coordinator moving: their outputs equal a clean run's, record for record.
//!
//! Elsewhere, with the same assertions:
//! - a processor member killed with SIGKILL mid-stream and restarted, on its disk and on an empty
//!   one: `processors_e2e::a_member_killed_mid_stream_and_restarted_changes_no_output`;
//! - a sink member killed mid-stream and restarted: no message sent twice, counted at the Zalo
//!   simulator: `messaging_e2e::no_duplicate_send_after_a_member_is_killed_and_restarted`;
//! - every broker down for the gateway's readiness and 503 timing:
//!   `ingest/tests/http_contract.rs::with_every_broker_down_requests_fail_fast_and_nothing_acknowledged_is_lost`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::mocking::MockCoordinator;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use serde_json::{Value, json};

use ingest::{Gateway, IngestArgs};
use processors::ProcessArgs;
use processors::runtime::testing::{History, outputs, reference_run, wait_progress};
use schemas::kafka::{EmbeddedCluster, Kafka};
use schemas::testing::{eventually, read_to_end};
use schemas::topics::Topic;

const BROKERS: i32 = 3;
const PARTITIONS: i32 = 6;

async fn cluster(brokers: i32) -> (Arc<EmbeddedCluster>, Kafka) {
    let cluster = Arc::new(EmbeddedCluster::start(brokers).unwrap());
    let kafka = Kafka::embedded(cluster.clone(), PARTITIONS);
    kafka.ensure_catalogue().await.unwrap();
    (cluster, kafka)
}

/// Moves the leader of every partition of `topics` to the next broker.
fn move_leaders(cluster: &EmbeddedCluster, topics: &[Topic], round: i32) {
    for t in topics {
        for p in 0..PARTITIONS {
            cluster.mock().partition_leader(t.name(), p, Some((p + round) % BROKERS + 1)).unwrap();
        }
    }
}

/// Warnings and errors of the runtime, captured with the test's output (shown when it fails).
fn capture_logs() {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("warn").try_init();
}

/// Waits for the group to commit all the input, failing at once (with the member's error) if the
/// member stops instead.
async fn wait_all(kafka: &Kafka, group: &str, member: &processors::Member) {
    let ended = member.ended_flag();
    tokio::select! {
        _ = wait_progress(kafka, group, 1.0, Duration::from_secs(300)) => {}
        _ = eventually(Duration::from_secs(300), "the member to stop", || {
            let ended = ended.clone();
            async move { ended.load(Ordering::Acquire).then_some(()) }
        }) => panic!("the member stopped while the input was being processed (its error is in the log above)"),
    }
}

fn view(user: &str, i: usize) -> Value {
    json!({"event_id": uuid::Uuid::new_v4().to_string(), "type": "product_viewed", "user": {"zalo_id": user},
           "properties": {"product_id": format!("p{}", i % 13), "category": "coffee", "price": 35000, "dwell_ms": 1200}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_through_leader_changes_produce_errors_and_every_broker_down_loses_no_acknowledged_event() {
    capture_logs();
    let (cluster, kafka) = cluster(BROKERS).await;
    let args = IngestArgs { ack_timeout: Duration::from_secs(2), ..IngestArgs::default() };
    let gw = Gateway::start(&kafka, &args).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, gw.router()).await });

    // Four clients post batches of 20 for as long as the faults go on, retrying a refused batch
    // after its Retry-After, as the contract asks of a client.
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (base, stop) = (base.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
            let (mut acknowledged, mut refused) = (Vec::<String>::new(), 0usize);
            let mut round = 0;
            while !stop.load(Ordering::Acquire) || round < 5 {
                let events: Vec<Value> = (0..20).map(|i| view(&format!("u{c}-{}", i % 7), round * 20 + i)).collect();
                let ids: Vec<String> = events.iter().map(|e| e["event_id"].as_str().unwrap().to_string()).collect();
                let body = json!({"events": events});
                loop {
                    let r = http.post(format!("{base}/v1/batch")).bearer_auth("demo-key").json(&body).send().await;
                    match r {
                        Ok(r) if r.status() == 200 => {
                            let answer: Value = r.json().await.unwrap();
                            assert_eq!(answer["accepted"], 20, "{answer}");
                            acknowledged.extend(ids);
                            break;
                        }
                        Ok(r) if r.status() == 503 => {
                            refused += 1;
                            let after: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
                            tokio::time::sleep(Duration::from_secs(after.min(1))).await;
                        }
                        Ok(r) => panic!("unexpected answer {}: {}", r.status(), r.text().await.unwrap_or_default()),
                        Err(e) => panic!("the gateway did not answer: {e}"),
                    }
                }
                round += 1;
            }
            (acknowledged, refused)
        }));
    }

    let views = [Topic::Views, Topic::DeadLetter];
    let produced = || async {
        let k = kafka.clone();
        tokio::task::spawn_blocking(move || read_to_end(&k, Topic::Views.name(), Duration::from_secs(20)).unwrap().len()).await.unwrap()
    };
    let mut seen = 0;
    for round in 0..3 {
        // Leaders move while the clients post.
        move_leaders(&cluster, &views, round);
        // Produce requests fail (retriable errors: the producer retries them, idempotently).
        cluster.mock().request_errors(
            RDKafkaApiKey::Produce,
            &[
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            ],
        );
        let before = seen;
        seen = eventually(Duration::from_secs(60), "events stored after the leader change", || async {
            let n = produced().await;
            (n > before + 200).then_some(n)
        })
        .await;
    }
    // Every broker down for three seconds, then back.
    cluster.mock().broker_down(-1).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.mock().broker_up(-1).unwrap();
    let before = seen;
    eventually(Duration::from_secs(60), "events stored after the outage", || async {
        let n = produced().await;
        (n > before + 200).then_some(n)
    })
    .await;
    stop.store(true, Ordering::Release);

    let (mut acknowledged, mut refused) = (Vec::new(), 0);
    for c in clients {
        let (a, r) = c.await.unwrap();
        acknowledged.extend(a);
        refused += r;
    }
    let k = kafka.clone();
    let stored: HashSet<String> =
        tokio::task::spawn_blocking(move || read_to_end(&k, Topic::Views.name(), Duration::from_secs(30)).unwrap())
            .await
            .unwrap()
            .iter()
            .map(|m| schemas::codec::decode_input(Topic::Views, m.payload().unwrap()).unwrap().event_id().to_string())
            .collect();
    let lost: Vec<&String> = acknowledged.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(acknowledged.len() > 1000, "only {} events acknowledged", acknowledged.len());
    assert!(refused > 0, "the outage refused no batch: was it an outage?");
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged events are not in Kafka, e.g. {:?}",
        lost.len(),
        acknowledged.len(),
        &lost[..lost.len().min(3)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processors_through_leader_changes_request_errors_and_a_moving_coordinator_give_a_clean_runs_outputs() {
    capture_logs();
    let history = History::new(1500, 4);
    let dir = tempfile::tempdir().unwrap();
    let args = |name: &str| ProcessArgs {
        data_dir: dir.path().join(name),
        commit_interval: Duration::from_millis(100),
        // Timers in event time only, so both runs fire them at the same records.
        timer_grace: Duration::from_secs(3600),
        max_task_idle: Duration::from_secs(2),
        ..ProcessArgs::default()
    };
    let (_c1, reference) = cluster(1).await;
    let expected = reference_run(&reference, &history, &args("reference"), processors::topology(&args("reference")).unwrap()).await;
    assert!(!expected.triggers.is_empty() && !expected.sessions.is_empty() && !expected.profiles.is_empty());

    let (cluster, kafka) = cluster(BROKERS).await;
    let topology = processors::topology(&ProcessArgs::default()).unwrap();
    processors::runtime::ensure_changelogs(&kafka, "cdp", &topology, PARTITIONS).await.unwrap();
    let member = processors::Member::start(&kafka, &args("faulty"), processors::topology(&args("faulty")).unwrap(), None).await.unwrap();
    let group = "zcdp-cdp";
    let inputs: Vec<Topic> = Topic::inputs().collect();

    // Phase 0: input leaders move while it streams in.
    history.produce(&kafka, 0).await;
    move_leaders(&cluster, &inputs, 1);
    wait_all(&kafka, group, &member).await;

    // Phase 1: produce (outputs, changelogs), fetch and offset-commit requests fail for a while.
    let errs = |e: &[RDKafkaRespErr]| e.to_vec();
    cluster.mock().request_errors(
        RDKafkaApiKey::Fetch,
        &errs(&[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT]),
    );
    history.produce(&kafka, 1).await;
    cluster.mock().request_errors(
        RDKafkaApiKey::Produce,
        &errs(&[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT]),
    );
    cluster.mock().request_errors(
        RDKafkaApiKey::OffsetCommit,
        &errs(&[RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE]),
    );
    wait_all(&kafka, group, &member).await;

    // Phase 2: the group coordinator moves to another broker mid-stream, and the changelogs'
    // and outputs' leaders move too.
    history.produce(&kafka, 2).await;
    cluster.mock().coordinator(MockCoordinator::Group(group.to_string()), 2).unwrap();
    move_leaders(&cluster, &[Topic::Sessions, Topic::Profiles, Topic::Interests, Topic::CartTriggers], 2);
    wait_all(&kafka, group, &member).await;

    // Phase 3: and back, with another round of input leader changes.
    history.produce(&kafka, 3).await;
    cluster.mock().coordinator(MockCoordinator::Group(group.to_string()), 3).unwrap();
    move_leaders(&cluster, &inputs, 2);
    wait_all(&kafka, group, &member).await;
    history.finish(&kafka).await;
    wait_all(&kafka, group, &member).await;
    tokio::task::spawn_blocking(move || member.stop()).await.unwrap().expect("the member stops cleanly after the faults");

    let actual = outputs(&kafka).await;
    assert!(actual == expected, "outputs differ from a clean run (lost or counted twice):\n{}", actual.difference(&expected));
}
