//! The trust boundary from outside (docs/security.md): which key may do what, what a client
//! holding only the public write key cannot cause, and the roles meant for production refusing
//! to start on keys anyone knows.

mod support;

use std::process::Command;

use support::Zcdp;

/// `zcdp <args>` run to its end: (success, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_zcdp"))
        .args(args)
        .env("ZCDP_LOG", "warn")
        .env_remove("ZCDP_WRITE_KEYS")
        .envs(env.iter().copied())
        .output()
        .expect("run zcdp");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The production roles stop at once, saying why, without keys, on the demo keys, on a
/// placeholder, without a session secret, and (the sink) on the simulator's Zalo app against
/// Zalo's real URLs. The Kafka address is never reached: nothing listens there.
#[test]
fn production_roles_refuse_missing_demo_and_placeholder_secrets() {
    let brokers = ["--brokers", "127.0.0.1:1"];
    let long = "s".repeat(40);
    let long = long.as_str();
    let strong = [
        ("ZCDP_WRITE_KEYS", "shop:w-0123456789"),
        ("ZCDP_SECRET_KEYS", "shop:zcdp_secret_0123456789abcdef0123456789"),
        ("ZCDP_ADMIN_KEYS", "shop:zcdp_admin_0123456789abcdef0123456789"),
    ];
    let cases: Vec<(Vec<&str>, Vec<(&str, &str)>, &str)> = vec![
        (vec!["ingest"], vec![], "--write-keys"),
        (vec!["ingest", "--write-keys", "demo:demo-key"], vec![], "demo key"),
        (vec!["ingest"], vec![("ZCDP_WRITE_KEYS", "shop1:change-me-write-key")], "placeholder"),
        (vec!["ingest"], strong.to_vec(), "--session-secret"),
        (vec!["ingest", "--session-secret", "change-me-session-secret-of-32-or-more"], strong.to_vec(), "--session-secret"),
        (vec!["serve", "--session-secret", long], vec![("ZCDP_WRITE_KEYS", "shop:w-0123456789")], "secret keys"),
        (vec!["serve", "--session-secret", long, "--secret-keys", "shop:demo-secret-key"], vec![], "demo key"),
        (vec!["serve", "--session-secret", long, "--read-keys", "shop:short"], vec![], "shorter than 20"),
        (vec!["sink"], vec![], "--zalo-app-id"),
        (
            vec!["sink", "--zalo-app-id", "sim-app", "--zalo-app-secret", "sim-secret", "--zalo-refresh-token", "sim-refresh-0"],
            vec![],
            "simulator",
        ),
    ];
    for (args, env, why) in cases {
        let mut all = args.clone();
        all.extend_from_slice(&brokers);
        let (ok, stderr) = run(&all, &env);
        assert!(!ok, "zcdp {args:?} started");
        assert!(stderr.contains(why), "zcdp {args:?}: {stderr}");
        for (_, v) in &env {
            let key = v.split_once(':').map_or(*v, |(_, k)| k);
            assert!(!stderr.contains(key) || key.contains("change-me"), "zcdp {args:?} printed a key: {stderr}");
        }
    }
}

/// `zcdp up` without `--demo` and without key flags makes its own keys on the first start,
/// prints them, keeps them in its data dir (readable by its owner only) and uses them again
/// on the next start; with `--demo` it uses the fixed demo keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_makes_keys_once_and_keeps_them() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let first = Zcdp::start(&["up", "--http", "127.0.0.1:0", "--data-dir", dir]);
    let keys = first.keys.clone();
    for kind in ["write", "secret", "admin"] {
        assert!(keys[kind].starts_with(&format!("zcdp_{kind}_")) && keys[kind].len() > 30, "{kind}: {}", keys[kind]);
    }
    // The keys work as their kinds: the write key posts and does not read; the secret key reads.
    let c = reqwest::Client::new();
    let base = format!("http://{}", first.http);
    let post = c.post(format!("{base}/v1/batch")).bearer_auth(&keys["write"]).json(&serde_json::json!({"events": []}));
    assert_eq!(post.send().await.unwrap().status(), 200);
    assert_eq!(c.get(format!("{base}/v1/engagement")).bearer_auth(&keys["write"]).send().await.unwrap().status(), 403);
    assert_eq!(c.get(format!("{base}/v1/engagement")).bearer_auth(&keys["secret"]).send().await.unwrap().status(), 200);
    let (status, _) = first.terminate();
    assert!(status.success());
    let file = data.path().join("keys.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o077, 0, "keys.json is its owner's only");

    let second = Zcdp::start(&["up", "--http", "127.0.0.1:0", "--data-dir", dir]);
    assert_eq!(second.keys, keys, "the same keys on the next start");
    drop(second);

    let demo = Zcdp::start(&["up", "--demo", "--demo-rate", "1", "--http", "127.0.0.1:0", "--data-dir", dir]);
    assert_eq!((demo.key("write"), demo.key("secret"), demo.key("admin")), ("demo-key", "demo-secret-key", "demo-admin-key"));
}
