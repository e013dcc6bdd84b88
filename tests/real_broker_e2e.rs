//! The end-to-end flow against a real Kafka-compatible broker process instead of the embedded
//! cluster: tansu (the `tansu` crate's broker, SQLite storage), which `scripts/test` installs
//! under `target/tools/` (`cargo install tansu --features libsql`). Over the network, through
//! librdkafka's real protocol path: topic creation with the admin API, the gateway's idempotent
//! producer, the processors' consumer group and changelogs, the sink's group, the query API.
//! tansu has no transactions; zcdp uses none.

mod support;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Broker {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tansu() -> PathBuf {
    let bin = std::env::var_os("ZCDP_TEST_TANSU")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tools/bin/tansu"));
    assert!(
        bin.exists(),
        "no tansu broker at {} (set ZCDP_TEST_TANSU): ./scripts/test installs it with `cargo install tansu --features libsql`",
        bin.display()
    );
    bin
}

/// A tansu broker on a free port, its data in a fresh SQLite file.
fn start_broker() -> Broker {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let url = format!("tcp://{addr}");
    let child = Command::new(tansu())
        // tansu reads the SQLite path relative to its working directory.
        .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine", "sqlite://tansu.db"])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start tansu");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "tansu did not listen on {addr} within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    Broker { child, addr, _dir: dir }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_real_broker_topics_are_created_and_a_campaign_message_earns_its_order() {
    let broker = start_broker();
    let out = Command::new(env!("CARGO_BIN_EXE_zcdp"))
        .args(["topics", "create", "--brokers", &broker.addr, "--partitions", "3", "--replication-factor", "1"])
        .env("ZCDP_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "zcdp topics create: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("topics on {}", broker.addr)), "{stdout}");
    // The whole pipeline on it: gateway, processors, sink, query API.
    support::campaign_flow::campaign_flow(&["--brokers", &broker.addr, "--partitions", "3", "--replication-factor", "1"]).await;
}

/// A stock Confluent client reads what the gateway wrote to the real broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_real_broker_a_stock_client_reads_posted_events() {
    let broker = start_broker();
    support::up_flows::stock_client_reads_posted_events(&["--brokers", &broker.addr, "--partitions", "3", "--replication-factor", "1"])
        .await;
}

/// Demo traffic reaches every input topic of the real broker; SIGTERM stops zcdp cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_real_broker_demo_traffic_fills_every_input_topic() {
    let broker = start_broker();
    support::up_flows::demo_fills_every_input_topic_and_stops_on_sigterm(&[
        "--brokers",
        &broker.addr,
        "--partitions",
        "3",
        "--replication-factor",
        "1",
    ])
    .await;
}

/// A processor member killed with SIGKILL mid-stream and restarted (on its disk, then on an empty
/// one, restoring from the broker's changelogs) gives the outputs of an uninterrupted run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_real_broker_a_killed_processor_member_changes_no_output() {
    let broker = start_broker();
    let kafka = schemas::kafka::Kafka::external(&schemas::kafka::KafkaArgs {
        brokers: Some(broker.addr.clone()),
        partitions: 6,
        replication_factor: 1,
        ..Default::default()
    })
    .unwrap();
    kafka.ensure_catalogue().await.unwrap();
    support::kill_flow::killed_member_changes_no_output(&kafka, None).await;
}

/// `zcdp topics create` makes durable topics (min.insync.replicas = min(2, RF), no unclean
/// leader election) and `zcdp topics check` agrees; a topic someone made by hand, with the wrong
/// partition count and none of the settings, is reported setting by setting, and the check
/// exits non-zero (issue 19).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_real_broker_topics_check_reports_what_differs_from_the_catalogue() {
    let zcdp = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_zcdp")).args(args).env("ZCDP_LOG", "warn").output().unwrap();
        (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    let good = start_broker();
    let flags = ["--brokers", good.addr.as_str(), "--partitions", "3", "--replication-factor", "1"];
    let (ok, out) = zcdp(&[&["topics", "create"][..], &flags].concat());
    assert!(ok, "{out}");
    let (ok, out) = zcdp(&[&["topics", "check"][..], &flags].concat());
    assert!(ok, "a catalogue just created differs from itself: {out}");
    assert!(out.contains("match the catalogue"), "{out}");

    let drifted = start_broker();
    {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> =
            rdkafka::ClientConfig::new().set("bootstrap.servers", &drifted.addr).create().unwrap();
        // Compacted in the catalogue, one partition and no settings here; and an input topic with
        // three replicas but the broker's default min.insync.replicas (1).
        let profiles = NewTopic::new("zmp.profiles.v1", 1, TopicReplication::Fixed(1));
        let views = NewTopic::new("zmp.views.v1", 3, TopicReplication::Fixed(3));
        let r = admin.create_topics([&profiles, &views], &AdminOptions::new()).await.unwrap();
        assert!(r.iter().all(Result::is_ok), "{r:?}");
    }
    let flags = ["--brokers", drifted.addr.as_str(), "--partitions", "3", "--replication-factor", "1"];
    let (ok, out) = zcdp(&[&["topics", "create"][..], &flags].concat());
    assert!(ok, "{out}");
    let (ok, out) = zcdp(&[&["topics", "check"][..], &flags].concat());
    assert!(!ok, "the check passed a topic made by hand: {out}");
    for row in [
        "| zmp.profiles.v1 | partitions | 3 | 1 |",
        "| zmp.profiles.v1 | cleanup.policy | compact | delete |",
        "| zmp.views.v1 | min.insync.replicas | 2 (replication factor 3) | 1 |",
    ] {
        assert!(out.contains(row), "no row {row:?} in:\n{out}");
    }
    assert_eq!(out.lines().filter(|l| l.starts_with("| zmp.")).count(), 3, "only the hand-made topics differ:\n{out}");
    assert!(out.contains("3 difference(s)"), "{out}");
}

/// A `zcdp serve` replica keeps its view on disk (`--view-dir`): restarted, it reads only the
/// records written while it was down — a tombstone (an erasure) among them — and answers for
/// every user, the ones it read before included, with engagement counted from what it kept
/// (issue 20).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_real_broker_a_restarted_query_replica_reads_only_what_is_new() {
    use processors::query::{QueryApi, QueryArgs};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use schemas::derived::Profile;
    use schemas::topics::{Topic, app_user_key};

    let broker = start_broker();
    let kafka = schemas::kafka::Kafka::external(&schemas::kafka::KafkaArgs {
        brokers: Some(broker.addr.clone()),
        partitions: 3,
        replication_factor: 1,
        ..Default::default()
    })
    .unwrap();
    kafka.ensure_catalogue().await.unwrap();
    let producer: FutureProducer = kafka.producer_config().create().unwrap();
    let now = schemas::time::now_ms();
    let write = |user: String, orders: Option<i64>| {
        let producer = producer.clone();
        let partitions = kafka.partitions;
        async move {
            let key = app_user_key("shop", &user);
            let payload = orders.map(|orders| {
                let p = Profile {
                    app_id: "shop".into(),
                    user_key: user.clone(),
                    as_of: now,
                    first_seen: now,
                    last_seen: now,
                    orders,
                    recent_active_days: vec![schemas::time::vn_day(now)],
                    ..Default::default()
                };
                schemas::codec::encode(&p).unwrap()
            });
            let mut record = FutureRecord::<String, Vec<u8>>::to(Topic::Profiles.name())
                .key(&key)
                .partition(schemas::kafka::key_partition(user.as_bytes(), partitions));
            if let Some(p) = &payload {
                record = record.payload(p);
            }
            producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
        }
    };
    for i in 0..40 {
        write(format!("u{i}"), Some(1)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let args = QueryArgs { view_dir: Some(dir.path().join("view")), ..QueryArgs::default() };
    let start = || {
        let keys =
            schemas::keys::Keys::parse(&schemas::keys::KeyArgs { secret_keys: vec!["shop:test-secret-key".into()], ..Default::default() })
                .unwrap();
        let sessions = schemas::session::Sessions::new(ingest::DEMO_SESSION_SECRET, Duration::from_secs(60));
        QueryApi::start(&kafka, &args, keys, sessions, None).unwrap()
    };
    let caught_up = |api: std::sync::Arc<QueryApi>| async move {
        schemas::testing::eventually(Duration::from_secs(60), "the view caught up", || {
            let api = api.clone();
            async move { api.view().caught_up().then_some(()) }
        })
        .await;
    };

    let first = start();
    caught_up(first.clone()).await;
    assert_eq!(first.view().records_read(), 40, "a new view reads the whole topic");
    assert_eq!(first.view().engagement("shop").users, 40);
    first.shutdown().await;
    drop(first);

    // While it is down: five new users, one updated, one erased.
    for i in 40..45 {
        write(format!("u{i}"), Some(1)).await;
    }
    write("u1".into(), Some(2)).await;
    write("u0".into(), None).await;

    let second = start();
    caught_up(second.clone()).await;
    assert_eq!(second.view().records_read(), 7, "the restarted view reads only the 7 records written while it was down");
    let view = second.view();
    assert!(view.profile("shop", "u0").is_none(), "the erased user is gone");
    assert_eq!(view.profile("shop", "u1").map(|p| p.orders), Some(2), "the update is there");
    assert_eq!(view.profile("shop", "u39").map(|p| p.orders), Some(1), "a user read before the restart is there");
    assert_eq!(view.profile("shop", "u44").map(|p| p.orders), Some(1), "a new user is there");
    let e = view.engagement("shop");
    assert_eq!((e.users, e.funnel.ordered), (44, 44), "engagement counts the kept users, the new ones, less the erased one");
    second.shutdown().await;
}
