//! End to end through the real binary: `zcdp up` on the embedded cluster, read from outside by a
//! stock Kafka client, stopped with SIGTERM.

mod support;

use std::process::Command;

/// A stock Confluent client, knowing nothing of zcdp but the printed bootstrap address and the
/// gateway's registry URL, reads what was posted, with the fields as posted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_kafka_client_reads_posted_events_from_the_printed_address() {
    support::up_flows::stock_client_reads_posted_events(&[]).await;
}

/// `zcdp up --demo`: shoppers' traffic reaches every input topic; SIGTERM stops it cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_with_demo_traffic_fills_every_input_topic_and_stops_on_sigterm() {
    support::up_flows::demo_fills_every_input_topic_and_stops_on_sigterm(&[]).await;
}

/// `zcdp bench ingest`, small: both paths run to the end (the load generator got a 200 for every
/// request, the bare producer a delivery report for every record) and the comparison is printed.
#[test]
fn bench_ingest_runs_both_paths_and_prints_the_comparison() {
    let out = Command::new(env!("CARGO_BIN_EXE_zcdp"))
        .args(["bench", "ingest", "--events", "3000", "--batch", "100", "--log", "error"])
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "bench ingest failed:\n{stderr}\n{stdout}");
    for row in ["| bare rdkafka producer (same records) | 3000 |", "| gateway POST /v1/batch | 3000 |", "| gateway at half the bare rate |"]
    {
        assert!(stdout.contains(row), "no row {row:?} in:\n{stdout}");
    }
    assert!(stdout.contains("gateway / bare producer: "), "no ratio in:\n{stdout}");
}

#[test]
fn every_role_documents_its_flags_with_env_vars() {
    for args in [
        &["up", "--help"][..],
        &["ingest", "--help"],
        &["simulate", "--help"],
        &["topics", "create", "--help"],
        &["bench", "ingest", "--help"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_zcdp")).args(args).output().unwrap();
        assert!(out.status.success());
        let help = String::from_utf8(out.stdout).unwrap();
        for line in help.lines().filter(|l| l.trim_start().starts_with("--") && !l.contains("--help") && !l.contains("--version")) {
            let flag = line.split_whitespace().next().unwrap();
            // Each flag's description (which clap may wrap onto following lines) names its env var.
            let from = help.find(line).unwrap();
            let until = help[from + line.len()..].find("\n  -").map_or(help.len(), |i| from + line.len() + i);
            assert!(help[from..until].contains("[env: ZCDP_"), "{args:?}: {flag} has no ZCDP_ env var");
        }
    }
}
