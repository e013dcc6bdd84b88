//! The trust boundary from outside (docs/security.md): which key may do what, what a client
//! holding only the public write key cannot cause, and the roles meant for production refusing
//! to start on keys anyone knows.

mod support;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use serde_json::{Value, json};

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
    // (the command, its environment, what its error must say)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["ingest"], vec![], "--write-keys"),
        (vec!["ingest", "--write-keys", "demo:demo-key"], vec![], "demo key"),
        (vec!["ingest"], vec![("ZCDP_WRITE_KEYS", "shop1:change-me-write-key")], "placeholder"),
        (vec!["ingest"], strong.to_vec(), "--session-secret"),
        (vec!["ingest", "--session-secret", "change-me-session-secret-of-32-or-more"], strong.to_vec(), "--session-secret"),
        (vec!["serve", "--session-secret", long], vec![("ZCDP_WRITE_KEYS", "shop:w-0123456789")], "secret keys"),
        (vec!["serve", "--session-secret", long, "--secret-keys", "shop:demo-secret-key"], vec![], "demo key"),
        (vec!["serve", "--session-secret", long, "--secret-keys", "shop:short"], vec![], "shorter than 20"),
        (vec!["serve", "--session-secret", long, "--read-keys", "shop:zcdp_read_0123456789abcdef0123"], strong.to_vec(), "--read-keys"),
        (vec!["ingest", "--session-secret", "zcdp-demo-session-secret-not-for-production"], strong.to_vec(), "demo secret"),
        (
            vec!["ingest", "--session-secret", long, "--zalo-app-id", "sim-app", "--zalo-oa-secret", "sim-oa-secret"],
            strong.to_vec(),
            "simulator",
        ),
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

/// A Zalo of Zalo's HTTP shape that is not the project's simulator: access token `tok-<id>` is
/// user `<id>`; phone token `ph-84…`, with a user's access token, is that number; token
/// refreshes, ZNS and OA messages answer success. Every request it gets is kept, in order.
async fn zalo_shaped() -> (String, Arc<Mutex<Vec<Value>>>) {
    use axum::http::HeaderMap;
    use axum::routing::{get, post};
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let keep = |seen: &Arc<Mutex<Vec<Value>>>, path: &str, headers: &HeaderMap, body: Value| {
        let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        seen.lock().unwrap().push(json!({"path": path, "access_token": h("access_token"), "code": h("code"), "body": body}));
        (h("access_token"), h("code"))
    };
    let me = {
        let seen = seen.clone();
        move |headers: HeaderMap| async move {
            let (token, _) = keep(&seen, "/v2.0/me", &headers, Value::Null);
            match token.strip_prefix("tok-").filter(|id| !id.is_empty()) {
                Some(id) => Json(json!({"id": id, "name": format!("User {id}"), "error": 0, "message": "Success"})),
                None => Json(json!({"error": 452, "message": "Invalid access token"})),
            }
        }
    };
    let info = {
        let seen = seen.clone();
        move |headers: HeaderMap| async move {
            let (token, code) = keep(&seen, "/v2.0/me/info", &headers, Value::Null);
            match code.strip_prefix("ph-").filter(|n| n.starts_with("84") && token.starts_with("tok-")) {
                Some(n) => Json(json!({"data": {"number": n}, "error": 0, "message": "Success"})),
                None => Json(json!({"error": -201, "message": "invalid code"})),
            }
        }
    };
    let refresh = {
        let seen = seen.clone();
        move |headers: HeaderMap, body: String| async move {
            keep(&seen, "/v4/oa/access_token", &headers, json!(body));
            Json(json!({"access_token": "at-1", "refresh_token": "rt-2", "expires_in": "90000"}))
        }
    };
    let message = {
        let seen = seen.clone();
        move |uri: axum::http::Uri, headers: HeaderMap, Json(body): Json<Value>| async move {
            keep(&seen, uri.path(), &headers, body);
            Json(json!({"error": 0, "message": "Success", "data": {"msg_id": uuid::Uuid::new_v4().to_string(), "message_id": "m"}}))
        }
    };
    let app = axum::Router::new()
        .route("/v2.0/me", get(me))
        .route("/v2.0/me/info", get(info))
        .route("/v4/oa/access_token", post(refresh))
        .route("/message/template", post(message.clone()))
        .route("/v3.0/oa/message/{kind}", post(message));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, seen)
}

/// The attack of issue 18 against `zcdp up` on a Zalo-shaped server that is not the project's
/// simulator, from outside, with only the public write key — a batch of consents for a
/// stranger, their phone typed in, an order and two status changes — sends nothing anywhere; the
/// public key cannot read or erase the stranger. The same facts said the way they may be — a
/// Zalo-verified session, a phone from Zalo's exchange, the order's status from the shop's
/// secret key — reach Zalo, once, at the exchanged phone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_trusted_sources_make_the_shop_send_a_message() {
    let (zalo, seen) = zalo_shaped().await;
    let data = tempfile::tempdir().unwrap();
    let mut args = vec!["up", "--http", "127.0.0.1:0", "--data-dir", data.path().to_str().unwrap()];
    args.extend(["--zalo-app-id", "shop-app", "--zalo-app-secret", "shop-app-secret", "--zalo-oa-secret", "shop-oa-secret"]);
    args.extend(["--zalo-refresh-token", "rt-1"]);
    for flag in ["--zalo-oa-url", "--zalo-zns-url", "--zalo-oauth-url", "--zalo-graph-url"] {
        args.extend([flag, zalo.as_str()]);
    }
    let mut up = Zcdp::spawn(&args);
    let line = up.wait_line("bootstrap: ");
    let bootstrap = line.split("bootstrap: ").nth(1).unwrap().trim().to_string();
    let line = up.wait_line("HTTP API on http://");
    let base = format!("http://{}", line.split("HTTP API on http://").nth(1).unwrap().split_whitespace().next().unwrap());
    up.wait_keys();
    let (write, secret, admin) = (up.key("write").to_string(), up.key("secret").to_string(), up.key("admin").to_string());
    let c = reqwest::Client::new();
    let ev = |kind: &str, user: &str, props: Value| json!({"event_id": uuid::Uuid::new_v4().to_string(), "type": kind, "user": {"zalo_id": user}, "properties": props});
    let post = |key: String, session: Option<String>, events: Vec<Value>| {
        let (c, url) = (c.clone(), format!("{base}/v1/batch"));
        async move {
            let mut req = c.post(url).bearer_auth(key).json(&json!({"events": events}));
            if let Some(s) = session {
                req = req.header("x-zcdp-session", s);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    // What was sent: the ZNS and OA messages Zalo received.
    let received = || -> Vec<Value> {
        seen.lock().unwrap().iter().filter(|r| r["path"].as_str().is_some_and(|p| p.contains("/message/"))).cloned().collect()
    };
    let order = |status: &str| json!({"order_id": "o-1", "status": status, "total": 350000});
    let placed = json!({"order_id": "o-1", "total": 350000, "items": [{"product_id": "cf-suada", "quantity": 10, "price": 35000}]});

    // 1. The attack: a stranger's zalo id, their phone typed in, an order and its status.
    let stranger = "5019999999999999999";
    let answer = post(
        write.clone(),
        None,
        vec![
            ev("consent_changed", stranger, json!({"purpose": "profile", "granted": true})),
            ev("consent_changed", stranger, json!({"purpose": "phone", "granted": true})),
            ev("consent_changed", stranger, json!({"purpose": "marketing", "granted": true})),
            ev("identify", stranger, json!({"phone": "0987654321", "traits": {"name": "Nạn nhân"}})),
            ev("order_placed", stranger, placed.clone()),
            ev("order_status_changed", stranger, order("Quà tặng: bấm link")),
            ev("order_status_changed", stranger, order("Lần nữa")),
        ],
    )
    .await;
    let codes: Vec<&str> = answer["rejected"].as_array().unwrap().iter().map(|r| r["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["session_required", "session_required", "session_required", "phone_not_verified"], "{answer}");
    // The public key neither reads nor erases the stranger; the secret key does not erase.
    let profile = format!("{base}/v1/users/{stranger}/profile");
    assert_eq!(c.get(&profile).bearer_auth(&write).send().await.unwrap().status(), 403);
    assert_eq!(c.get(format!("{base}/v1/segments")).bearer_auth(&write).send().await.unwrap().status(), 403);
    assert_eq!(c.get(format!("{base}/v1/engagement")).bearer_auth(&write).send().await.unwrap().status(), 403);
    let erase = format!("{base}/v1/users/{stranger}");
    assert_eq!(c.delete(&erase).bearer_auth(&write).send().await.unwrap().status(), 403);
    assert_eq!(c.delete(&erase).bearer_auth(&secret).send().await.unwrap().status(), 403);

    // 2. The same facts, said by who may say them: Lan is a Zalo user; her Mini App opens a
    // session with her access token, consents, and shares her phone (Zalo's exchange).
    let access = "tok-lan";
    let forged = c.post(format!("{base}/v1/session")).bearer_auth(&write).json(&json!({"access_token": "forged"})).send().await.unwrap();
    assert_eq!(forged.status(), 401, "a forged access token opens no session");
    let opened: Value = c
        .post(format!("{base}/v1/session"))
        .bearer_auth(&write)
        .json(&json!({"access_token": access}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = opened["session"].as_str().unwrap().to_string();
    let other = post(write.clone(), Some(session.clone()), vec![ev("identify", "minh", json!({"traits": {"name": "Minh"}}))]).await;
    assert_eq!(other["rejected"][0]["code"], "identity_mismatch", "a session for Lan cannot identify Minh: {other}");
    let consents = ["profile", "phone"].map(|p| ev("consent_changed", "lan", json!({"purpose": p, "granted": true}))).to_vec();
    assert_eq!(post(write.clone(), Some(session.clone()), consents).await["accepted"], 2);
    let r = c
        .post(format!("{base}/v1/users/phone"))
        .bearer_auth(&write)
        .header("x-zcdp-session", &session)
        .json(&json!({"access_token": access, "code": "ph-84912345678"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // Her order from the Mini App is what the app saw: it sends nothing. Its status from the
    // shop's server (the secret key) reaches her, at the exchanged phone.
    post(write.clone(), Some(session.clone()), vec![ev("order_placed", "lan", placed.clone())]).await;
    schemas::testing::eventually(Duration::from_secs(60), "Lan's verified phone in her profile", || async {
        let p: Value = c.get(format!("{base}/v1/users/lan/profile")).bearer_auth(&secret).send().await.ok()?.json().await.ok()?;
        (p["phone_verified"] == true && p["phone"] == "84912345678").then_some(())
    })
    .await;
    post(secret.clone(), None, vec![ev("order_status_changed", "lan", order("Đang giao"))]).await;
    let to_lan = schemas::testing::eventually(Duration::from_secs(60), "the order's status at Lan's phone", || async {
        let to_lan: Vec<Value> = received().into_iter().filter(|r| r["body"]["phone"] == "84912345678").collect();
        (!to_lan.is_empty()).then_some(to_lan)
    })
    .await;
    assert_eq!(to_lan.len(), 1, "{to_lan:?}");
    assert!(to_lan[0]["body"].to_string().contains("Đang giao"), "{to_lan:?}");
    // Nothing ever went to the typed-in phone, nor for the stranger in any way; Zalo was asked
    // about no token but the forged one and Lan's.
    let all = received();
    assert!(!all.iter().any(|r| r.to_string().contains("987654321") || r.to_string().contains(stranger)), "{all:?}");
    assert_eq!(all.len(), 1, "only Lan's order status was sent: {all:?}");
    let asked: Vec<Value> = seen.lock().unwrap().iter().filter(|r| r["path"].as_str().unwrap().starts_with("/v2.0/")).cloned().collect();
    assert!(asked.iter().all(|r| r["access_token"] == "forged" || r["access_token"] == "tok-lan"), "{asked:?}");

    // Erasure: the admin key, and it is recorded.
    assert_eq!(c.delete(format!("{base}/v1/users/lan")).bearer_auth(&admin).send().await.unwrap().status(), 202);
    let kafka = schemas::kafka::Kafka::external(&schemas::kafka::KafkaArgs {
        brokers: Some(bootstrap),
        partitions: 6,
        replication_factor: 1,
        ..Default::default()
    })
    .unwrap();
    let audit =
        tokio::task::spawn_blocking(move || schemas::testing::read_to_end(&kafka, "zmp.audit.v1", Duration::from_secs(20)).unwrap())
            .await
            .unwrap();
    let records: Vec<schemas::derived::AuditRecord> =
        audit.iter().map(|m| schemas::codec::decode(rdkafka::Message::payload(m).unwrap()).unwrap()).collect();
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].user_key.as_str(), records[0].action.as_str(), records[0].key_id.len()), ("lan", "erase", 12));
    assert!(!records[0].key_id.contains(&admin) && !admin.contains(&records[0].key_id), "a key id, not the key");
}

/// Erasure forgets consent at the gateway too (issue 19): the user's decisions are tombstoned in
/// `zmp.consents.v1`, so an `identify` that was admitted before the erasure is refused after it
/// (until the user consents again). The tombstones are in the compacted topic every gateway's
/// view is rebuilt from, so a restarted gateway forgets them too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_forgets_the_users_consent_at_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let z = Zcdp::start(&["up", "--http", "127.0.0.1:0", "--data-dir", dir.path().to_str().unwrap()]);
    let base = format!("http://{}", z.http);
    let (secret, admin) = (z.key("secret").to_string(), z.key("admin").to_string());
    let c = reqwest::Client::new();
    let ev = |kind: &str, props: Value| json!({"event_id": uuid::Uuid::new_v4().to_string(), "type": kind, "user": {"zalo_id": "quyen"}, "properties": props});
    let identify = || ev("identify", json!({"traits": {"name": "Quyên"}}));
    let post = |events: Vec<Value>| {
        let (c, url, key) = (c.clone(), format!("{base}/v1/batch"), secret.clone());
        async move { c.post(url).bearer_auth(key).json(&json!({"events": events})).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let b = post(vec![ev("consent_changed", json!({"purpose": "profile", "granted": true}))]).await;
    assert_eq!(b["accepted"], 1, "{b}");
    let b = post(vec![identify()]).await;
    assert_eq!(b["accepted"], 1, "consented: {b}");
    // The profile exists before the erasure is asked for (so the processors hold the user).
    schemas::testing::eventually(Duration::from_secs(60), "Quyên's profile", || async {
        let r = c.get(format!("{base}/v1/users/quyen/profile")).bearer_auth(&secret).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    let r = c.delete(format!("{base}/v1/users/quyen")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let refused = schemas::testing::eventually(Duration::from_secs(60), "the erased user's consent forgotten", || async {
        let b = post(vec![identify()]).await;
        (b["rejected"][0]["code"] == "no_consent").then_some(b)
    })
    .await;
    assert_eq!(refused["accepted"], 0);
}
