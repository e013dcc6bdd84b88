//! A processor member killed with SIGKILL mid-stream and restarted, on its own disk and then on an
//! empty one, gives the outputs of an uninterrupted run: on the embedded cluster
//! (`processors_e2e`) and on a real broker (`real_broker_e2e`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use processors::ProcessArgs;
use processors::runtime::testing::{History, outputs, progress, reference_run, wait_progress};
use schemas::kafka::{EmbeddedCluster, Kafka};

const USERS: usize = 5000;
const GROUP: &str = "zcdp-cdp";

/// `zcdp process` on `bootstrap`; `instance`: its static membership id (`--instance-id`).
pub fn member_process(bootstrap: &str, data_dir: &Path, instance: Option<&str>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_zcdp"));
    cmd
        // Timers in event time only, as in the reference run: see `reference_run`.
        .args([
            "process",
            "--brokers",
            bootstrap,
            "--partitions",
            "6",
            "--commit-interval",
            "100ms",
            "--session-timeout",
            "6s",
            "--timer-grace",
            "1h",
            "--max-task-idle",
            "2s",
            "--http",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .env("ZCDP_LOG", "warn")
        .stdout(Stdio::null());
    if let Some(id) = instance {
        cmd.args(["--instance-id", id]);
    }
    cmd.spawn().expect("start zcdp process")
}

pub fn sigkill(mut child: Child) {
    child.kill().unwrap(); // SIGKILL: no flush, no commit, no leave
    child.wait().unwrap();
}

/// The reference run is on a fresh embedded cluster; the interrupted one on `kafka` (6 partitions,
/// the catalogue created).
/// `instance`: the members' static membership id, if any.
pub async fn killed_member_changes_no_output(kafka: &Kafka, instance: Option<&str>) {
    let kafka = kafka.clone();
    let history = History::new(USERS, 3);
    let dir = tempfile::tempdir().unwrap();
    // The reference: one member, never interrupted, the same phases.
    let reference = Kafka::embedded(std::sync::Arc::new(EmbeddedCluster::start(1).unwrap()), 6);
    reference.ensure_catalogue().await.unwrap();
    let args = ProcessArgs {
        data_dir: dir.path().join("reference"),
        commit_interval: Duration::from_millis(100),
        timer_grace: Duration::from_secs(3600),
        max_task_idle: Duration::from_secs(2),
        ..ProcessArgs::default()
    };
    let expected = reference_run(&reference, &history, &args, processors::topology(&args).unwrap()).await;
    assert!(
        expected.sessions.len() > USERS
            && !expected.triggers.is_empty()
            && expected.interests.len() == USERS
            && expected.profiles.len() == USERS
    );

    // The same history, with a member killed twice while a phase streams in: once restarting on
    // its own disk, once on a new, empty one (a lost machine: everything restores from the
    // changelogs).
    // The embedded cluster has no CreateTopics API: make the changelogs as an operator would.
    let topology = processors::topology(&ProcessArgs::default()).unwrap();
    processors::runtime::ensure_changelogs(&kafka, "cdp", &topology, 6).await.unwrap();
    let disk = dir.path().join("killed");
    let child = member_process(&kafka.bootstrap, &disk, instance);
    history.produce(&kafka, 0).await;
    wait_progress(&kafka, GROUP, 1.0, Duration::from_secs(300)).await;

    history.produce(&kafka, 1).await;
    sigkill(child);
    let (done, end) = progress(&kafka, GROUP).await;
    assert!(done < end, "the member had committed everything before it was killed");
    let child = member_process(&kafka.bootstrap, &disk, instance);
    wait_progress(&kafka, GROUP, 1.0, Duration::from_secs(300)).await;

    history.produce(&kafka, 2).await;
    sigkill(child);
    let (done, end) = progress(&kafka, GROUP).await;
    assert!(done < end, "the member had committed everything before the second kill");
    let mut child = member_process(&kafka.bootstrap, &dir.path().join("new-disk"), instance);
    wait_progress(&kafka, GROUP, 1.0, Duration::from_secs(300)).await;
    history.finish(&kafka).await;
    wait_progress(&kafka, GROUP, 1.0, Duration::from_secs(300)).await;
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success(), "a member stops cleanly on SIGTERM");

    let actual = outputs(&kafka).await;
    assert!(actual == expected, "outputs differ from an uninterrupted run (lost or counted twice):\n{}", actual.difference(&expected));
}
