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
