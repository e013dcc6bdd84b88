//! The processor runtime on the embedded Kafka cluster: abandoned carts in event and wall-clock
//! time, deduplication, and rebalances that move state by changelog restore without changing a
//! single output.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use processors::ProcessArgs;
use processors::runtime::task::INPUTS;
use processors::runtime::testing::{History, outputs, read, reference_run, wait_progress};
use processors::{Member, TaskEvent, TaskObserver, topology};
use schemas::derived::{CartTrigger, Session};
use schemas::kafka::{EmbeddedCluster, Kafka};
use schemas::testing::build::*;
use schemas::testing::{eventually, produce};
use schemas::topics::Topic;

struct Env {
    _cluster: Arc<EmbeddedCluster>,
    kafka: Kafka,
    dir: tempfile::TempDir,
}

async fn env(partitions: i32) -> Env {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("ZCDP_TEST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    let cluster = Arc::new(EmbeddedCluster::start(1).unwrap());
    let kafka = Kafka::embedded(cluster.clone(), partitions);
    kafka.ensure_catalogue().await.unwrap();
    Env { _cluster: cluster, kafka, dir: tempfile::tempdir().unwrap() }
}

/// Settings for runs compared record for record: timers fire in event time only (the history
/// ends with an event a day later on every partition), never by the wall clock, whose moments
/// depend on when fetches return.
fn args(env: &Env, member_dir: &str) -> ProcessArgs {
    ProcessArgs {
        data_dir: env.dir.path().join(member_dir),
        commit_interval: Duration::from_millis(100),
        session_gap: Duration::from_secs(30 * 60),
        cart_timeout: Duration::from_secs(3600),
        timer_grace: Duration::from_secs(3600),
        max_task_idle: Duration::from_secs(2),
        session_timeout: Duration::from_secs(6),
        ..ProcessArgs::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_cart_triggers_once_and_an_order_even_read_first_prevents_it() {
    let env = env(3).await;
    let mut args = args(&env, "m");
    args.cart_timeout = Duration::from_secs(4);
    args.session_gap = Duration::from_secs(3);
    args.timer_grace = Duration::from_secs(1);
    let started = Arc::new(Mutex::new(0));
    let observer: TaskObserver = {
        let started = started.clone();
        Arc::new(move |_: &str, _: i32, ev: TaskEvent| {
            if ev == TaskEvent::Started {
                *started.lock().unwrap() += 1;
            }
        })
    };
    let member = Member::start(&env.kafka, &args, topology(&args).unwrap(), Some(observer)).await.unwrap();
    // Live traffic: the events happen now, while the member runs.
    eventually(Duration::from_secs(60), "the member to run its tasks", || async { (*started.lock().unwrap() == 3).then_some(()) }).await;

    let now = chrono::Utc::now().timestamp_millis();
    // A views a product, adds it twice (the second is a client retry of the same event), leaves.
    let a_add = cart_add("anna", now, "cart-a", "cf-1", 2, 35_000);
    let a = vec![product_view("anna", now - 500, "cf-1", "coffee", 12_000), a_add.clone(), a_add];
    // B adds and orders.
    let b = vec![cart_add("bao", now, "cart-b", "tea-1", 1, 45_000), order("bao", now + 100, "ord-b", Some("cart-b"), 45_000)];
    // C's order is written (and read) before the cart event it closes, which happened earlier.
    let c_order = order("chi", now + 200, "ord-c", Some("cart-c"), 35_000);
    let c_cart = cart_add("chi", now, "cart-c", "cf-2", 1, 35_000);
    // D, the control, abandons a cart a second later than everyone else.
    let d = vec![cart_add("dung", now + 1_000, "cart-d", "bk-1", 1, 15_000)];
    produce(&env.kafka, &[c_order]).await.unwrap();
    produce(&env.kafka, &b).await.unwrap();
    produce(&env.kafka, &[c_cart]).await.unwrap();
    produce(&env.kafka, &a).await.unwrap();
    produce(&env.kafka, &d).await.unwrap();

    // Nobody sends anything else: the wall clock has to fire the timers. Once every user's
    // session is out (each task has read its events and run its timers) and the control's
    // trigger, with the latest deadline, too, any trigger the others would get was sent.
    eventually(Duration::from_secs(60), "every session and the control user's trigger", || async {
        let sessions: BTreeSet<String> = read::<Session>(&env.kafka).await.into_iter().map(|(k, _)| k).collect();
        let control = read::<CartTrigger>(&env.kafka).await.iter().any(|(k, _)| k == "dung");
        (control && ["anna", "bao", "chi", "dung"].iter().all(|u| sessions.contains(*u))).then_some(())
    })
    .await;
    tokio::task::spawn_blocking(move || member.stop()).await.unwrap().unwrap();

    let triggers = read::<CartTrigger>(&env.kafka).await;
    let users: Vec<&str> = triggers.iter().map(|(k, _)| k.as_str()).collect::<BTreeSet<_>>().into_iter().collect();
    assert_eq!(users, vec!["anna", "dung"], "only the carts without an order trigger");
    let anna: Vec<&CartTrigger> = triggers.iter().filter(|(k, _)| k == "anna").map(|(_, t)| t).collect();
    assert_eq!(anna.len(), 1, "one trigger per cart version");
    let t = anna[0];
    assert_eq!(t.cart_id, "cart-a");
    assert_eq!(t.items.len(), 1);
    assert_eq!(t.items[0].quantity, 2, "the retried add is counted once");
    assert_eq!(t.value, 70_000);
    assert_eq!(t.deadline, now + 4000);
    assert_eq!(t.last_viewed_product.as_ref().map(|p| p.product_id.as_str()), Some("cf-1"));

    // The sessions closed by the wall clock too, with the retry counted once.
    let sessions = read::<Session>(&env.kafka).await;
    let anna_s: Vec<&Session> = sessions.iter().filter(|(k, _)| k == "anna").map(|(_, s)| s).collect();
    assert_eq!(anna_s.len(), 1);
    assert_eq!(anna_s[0].events, 2);
    assert_eq!(anna_s[0].cart_adds, 1);
    let bao: Vec<&Session> = sessions.iter().filter(|(k, _)| k == "bao").map(|(_, s)| s).collect();
    assert_eq!(bao.len(), 1, "sessions: {:?}", sessions.iter().map(|(k, s)| (k, s.start - now, s.end - now)).collect::<Vec<_>>());
    assert!(bao[0].converted && bao[0].revenue == 45_000, "{bao:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatched_partition_counts_are_refused_with_a_reason() {
    let cluster = Arc::new(EmbeddedCluster::start(1).unwrap());
    let kafka = Kafka::embedded(cluster.clone(), 3);
    for t in INPUTS {
        cluster.create_topic(t.name(), if t == Topic::Orders { 4 } else { 3 }).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let args = ProcessArgs { data_dir: dir.path().to_path_buf(), ..ProcessArgs::default() };
    let err = Member::start(&kafka, &args, topology(&args).unwrap(), None).await.err().expect("must refuse").to_string();
    assert!(err.contains("co-partitioned") && err.contains("zmp.orders.v1=4"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_joining_and_leaving_move_state_by_restore_and_change_no_output() {
    let history = History::new(2500, 3);
    let reference_env = env(6).await;
    let solo = args(&reference_env, "solo");
    let expected = reference_run(&reference_env.kafka, &history, &solo, topology(&solo).unwrap()).await;
    assert!(
        expected.sessions.len() > 2500
            && !expected.triggers.is_empty()
            && expected.interests.len() == 2500
            && expected.profiles.len() == 2500
    );

    let env = env(6).await;
    // Who runs which task, when: no task may ever run on two members at once.
    let log: Arc<Mutex<Vec<(String, i32, TaskEvent)>>> = Arc::default();
    let running: Arc<Mutex<HashMap<i32, String>>> = Arc::default();
    let observer: TaskObserver = {
        let (log, running) = (log.clone(), running.clone());
        Arc::new(move |member: &str, task: i32, ev: TaskEvent| {
            let mut running = running.lock().unwrap();
            match ev {
                TaskEvent::Started => {
                    if let Some(other) = running.insert(task, member.to_string()) {
                        panic!("task {task} started on {member} while running on {other}");
                    }
                }
                TaskEvent::Stopped => {
                    assert_eq!(running.remove(&task).as_deref(), Some(member), "task {task} stopped on a member that did not run it");
                }
            }
            log.lock().unwrap().push((member.to_string(), task, ev));
        })
    };
    let start = |name: &'static str| {
        let (member_args, observer) = (args(&env, name), observer.clone());
        let kafka = env.kafka.clone();
        async move { Member::start(&kafka, &member_args, topology(&member_args).unwrap(), Some(observer)).await.unwrap() }
    };
    let all_running_on = |members: Vec<String>| {
        let running = running.clone();
        async move {
            eventually(Duration::from_secs(60), &format!("all six tasks running on {members:?}"), || async {
                let r = running.lock().unwrap();
                (r.len() == 6 && members.iter().all(|m| r.values().any(|x| x == m))).then_some(())
            })
            .await
        }
    };

    // Two members take the first third.
    let m1 = start("m1").await;
    let m2 = start("m2").await;
    all_running_on(vec![m1.name.clone(), m2.name.clone()]).await;
    history.produce(&env.kafka, 0).await;
    wait_progress(&env.kafka, "zcdp-cdp", 1.0, Duration::from_secs(180)).await;
    // A third joins: tasks move to it, by restore, and it processes the second third.
    let m3 = start("m3").await;
    all_running_on(vec![m1.name.clone(), m2.name.clone(), m3.name.clone()]).await;
    history.produce(&env.kafka, 1).await;
    wait_progress(&env.kafka, "zcdp-cdp", 1.0, Duration::from_secs(180)).await;
    // One leaves: its tasks move to the other two, which process the last third.
    let m1_name = m1.name.clone();
    tokio::task::spawn_blocking(move || m1.stop()).await.unwrap().unwrap();
    all_running_on(vec![m2.name.clone(), m3.name.clone()]).await;
    history.produce(&env.kafka, 2).await;
    history.finish(&env.kafka).await;
    wait_progress(&env.kafka, "zcdp-cdp", 1.0, Duration::from_secs(180)).await;
    for m in [m2, m3] {
        tokio::task::spawn_blocking(move || m.stop()).await.unwrap().unwrap();
    }

    let log = log.lock().unwrap().clone();
    assert!(log.iter().any(|(m, _, e)| *m == m1_name && *e == TaskEvent::Started), "{log:?}");
    let actual = outputs(&env.kafka).await;
    assert!(actual == expected, "outputs differ from a single-member run:\n{}", actual.difference(&expected));
}
