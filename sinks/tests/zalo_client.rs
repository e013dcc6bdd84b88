//! The Zalo clients over real HTTP: against the project's simulator (token rotation, the rate
//! limit) and against a Zalo-shaped server that is not the simulator, which records exactly what
//! arrives (paths, headers, bodies as zalo-api.md describes them).

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::routing::any;
use hmac::Mac;
use serde_json::{Value, json};

use schemas::zalo::ZaloArgs;
use sinks::Clock;
use sinks::simulator::{SimConfig, Simulator};
use sinks::zalo::{ClientConfig, Content, OaKind, ZaloClient, ZaloError};

/// 2026-11-23T10:00:00+07:00.
const TEN_AM: i64 = 1_795_402_800_000;

fn clock(now: &Arc<AtomicI64>) -> Clock {
    let now = now.clone();
    Arc::new(move || now.load(Ordering::SeqCst))
}

fn args(base: &str, dir: &std::path::Path, rate_limit: u32) -> ZaloArgs {
    ZaloArgs {
        app_id: Some("sim-app".into()),
        app_secret: Some("sim-secret".into()),
        oa_secret: Some("sim-oa-secret".into()),
        refresh_token: Some("sim-refresh-0".into()),
        token_file: dir.join("tokens.json"),
        oa_url: base.into(),
        zns_url: base.into(),
        oauth_url: base.into(),
        graph_url: base.into(),
        rate_limit,
        ..ZaloArgs::default()
    }
}

fn client(a: &ZaloArgs, clock: Clock, window: Duration) -> ZaloClient {
    ZaloClient::new(ClientConfig { args: a, clock, rate_window: window, timeout: Duration::from_secs(5) }).unwrap()
}

async fn follower(base: &str, id: &str, at: i64) {
    reqwest::Client::new()
        .post(format!("{base}/sim/users"))
        .json(&json!({"user_id": id, "follows": true, "last_interaction": at}))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn concurrent_sends_refresh_once_and_the_rotated_token_survives_a_restart() {
    let now = Arc::new(AtomicI64::new(TEN_AM));
    let sim = Simulator::new(SimConfig::default(), clock(&now));
    let (base, _h) = sim.serve("127.0.0.1:0").await.unwrap();
    follower(&base, "u1", TEN_AM - 3_600_000).await;
    let dir = tempfile::tempdir().unwrap();
    let a = args(&base, dir.path(), 4000);
    let c = Arc::new(client(&a, clock(&now), Duration::from_secs(60)));
    let text = Content { text: "xin chào".into(), ..Content::default() };
    let sends: Vec<_> = (0..20)
        .map(|_| {
            let (c, text) = (c.clone(), text.clone());
            tokio::spawn(async move { c.send_oa(OaKind::Consultation, "u1", &text).await })
        })
        .collect();
    for s in sends {
        s.await.unwrap().expect("every concurrent send succeeds");
    }
    assert_eq!(sim.refreshes(), (1, 0), "20 concurrent sends: one refresh, no refresh token used twice");
    // The file holds the rotated refresh token: a new process (a new client) refreshes with it
    // once the access token is near expiry, and Zalo (the simulator) accepts it.
    now.fetch_add(25 * 3_600_000, Ordering::SeqCst);
    let restarted = client(&a, clock(&now), Duration::from_secs(60));
    follower(&base, "u1", now.load(Ordering::SeqCst) - 60_000).await;
    restarted.send_oa(OaKind::Consultation, "u1", &text).await.expect("the persisted refresh token works");
    assert_eq!(sim.refreshes(), (2, 0));
    let file: Value = serde_json::from_slice(&std::fs::read(dir.path().join("tokens.json")).unwrap()).unwrap();
    assert_eq!(file["refresh_token"].as_str().unwrap(), restarted.tokens.refresh_token().await);
}

#[tokio::test]
async fn the_rate_limit_is_never_exceeded() {
    let now = Arc::new(AtomicI64::new(TEN_AM));
    // The simulator counts per second here (fixed windows), and refuses the 11th with -32.
    let cfg = SimConfig { rate_limit_per_minute: 10, rate_window_ms: 1000, ..SimConfig::default() };
    let sim = Simulator::new(cfg, sinks::system_clock());
    let (base, _h) = sim.serve("127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(&base, dir.path(), 10);
    a.rate_limit = 10;
    let mut c = client(&a, clock(&now), Duration::from_secs(1));
    c.attempts = 1; // a -32 would surface as an error instead of being retried away
    let c = Arc::new(c);
    let content = Content { template_id: Some("t1".into()), ..Content::default() };
    let sends: Vec<_> = (0..34)
        .map(|i| {
            let (c, content) = (c.clone(), content.clone());
            tokio::spawn(async move { c.send_zns("84901234567", &content, &format!("trk-{i}")).await })
        })
        .collect();
    for s in sends {
        s.await.unwrap().expect("no request over the limit");
    }
    let received = sim.received();
    // 33 sends plus the refresh request are 34 calls; none was refused.
    assert_eq!(received.len(), 34);
    assert!(received.iter().all(|r| r.error == 0), "a request was over Zalo's limit");
}

#[derive(Clone, Default)]
struct Seen {
    requests: Arc<Mutex<Vec<(String, String, HeaderMap, String)>>>,
    /// Answers with -32 this many times before succeeding.
    throttle: Arc<AtomicU32>,
}

/// A server shaped like Zalo (not the simulator): it records each request and answers as Zalo's
/// documentation says.
async fn zalo_shaped(
    State(seen): State<Seen>,
    method: axum::http::Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> axum::Json<Value> {
    let path = uri.path().to_string();
    seen.requests.lock().unwrap().push((method.to_string(), path.clone(), headers, body));
    if path == "/v4/oa/access_token" {
        return axum::Json(json!({"access_token": "AT-1", "refresh_token": "RT-2", "expires_in": "90000"}));
    }
    if path == "/v2.0/me/info" {
        return axum::Json(json!({"data": {"number": "84987654321"}, "error": 0, "message": "Success"}));
    }
    if seen.throttle.load(Ordering::SeqCst) > 0 {
        seen.throttle.fetch_sub(1, Ordering::SeqCst);
        return axum::Json(json!({"error": -32, "message": "rate limit"}));
    }
    if path.contains("/oa/message/") {
        let to = serde_json::from_str::<Value>(&seen.requests.lock().unwrap().last().unwrap().3).unwrap();
        if to["recipient"]["user_id"] == "stranger" {
            return axum::Json(json!({"error": -213, "message": "user has not followed OA"}));
        }
        return axum::Json(json!({"data": {"message_id": "m-1", "user_id": "u"}, "error": 0, "message": "Success"}));
    }
    axum::Json(
        json!({"error": 0, "message": "Success", "data": {"msg_id": "z-1", "sent_time": "1", "quota": {"dailyQuota": "500", "remainingQuota": "499"}}}),
    )
}

#[tokio::test]
async fn a_zalo_shaped_server_receives_well_formed_requests() {
    let seen = Seen::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new().fallback(any(zalo_shaped)).with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(&base, dir.path(), 4000);
    a.app_id = Some("1234567890".into());
    a.app_secret = Some("app-secret".into());
    a.refresh_token = Some("RT-1".into());
    let mut c = client(&a, sinks::system_clock(), Duration::from_secs(60));
    c.backoff = Duration::from_millis(10);
    let content = Content {
        title: Some("Đơn hàng".into()),
        text: "Xin chào".into(),
        template_id: Some("tpl-1".into()),
        template_data: json!({"name": "Lan"}).as_object().unwrap().clone(),
        ..Content::default()
    };
    c.send_oa(OaKind::Consultation, "u1", &content).await.unwrap();
    c.send_oa(OaKind::Transaction, "u1", &content).await.unwrap();
    c.send_oa(OaKind::Promotion, "u1", &content).await.unwrap();
    c.send_zns("84987654321", &content, "trk-1").await.unwrap();
    c.send_zns_hashed(&"a".repeat(64), &content, "trk-2").await.unwrap();
    // Errors in HTTP-200 bodies are typed; -213 is not retried, -32 is.
    let err = c.send_oa(OaKind::Consultation, "stranger", &content).await.unwrap_err();
    assert_eq!(err, ZaloError::Api { code: -213, message: "user has not followed OA".into() });
    seen.throttle.store(2, Ordering::SeqCst);
    c.send_oa(OaKind::Consultation, "u1", &content).await.expect("-32 twice, then success");
    let http = reqwest::Client::new();
    let number = schemas::zalo::exchange_phone_token(&http, &base, "user-token", "phone-token", "app-secret").await.unwrap();
    assert_eq!(number, "84987654321");

    let reqs = seen.requests.lock().unwrap().clone();
    let paths: Vec<(&str, &str)> = reqs.iter().map(|(m, p, _, _)| (m.as_str(), p.as_str())).collect();
    assert_eq!(
        paths,
        vec![
            ("POST", "/v4/oa/access_token"),
            ("POST", "/v3.0/oa/message/cs"),
            ("POST", "/v3.0/oa/message/transaction"),
            ("POST", "/v3.0/oa/message/promotion"),
            ("POST", "/message/template"),
            ("POST", "/message/template/hashphone"),
            ("POST", "/v3.0/oa/message/cs"),
            ("POST", "/v3.0/oa/message/cs"),
            ("POST", "/v3.0/oa/message/cs"),
            ("POST", "/v3.0/oa/message/cs"),
            ("GET", "/v2.0/me/info"),
        ]
    );
    // The refresh: form-urlencoded, secret_key header, the three fields.
    let (_, _, h, body) = &reqs[0];
    assert_eq!(h["secret_key"], "app-secret");
    assert!(h["content-type"].to_str().unwrap().starts_with("application/x-www-form-urlencoded"));
    let form: Vec<(String, String)> = body.split('&').map(|kv| kv.split_once('=').map(|(k, v)| (k.into(), v.into())).unwrap()).collect();
    assert!(form.contains(&("refresh_token".into(), "RT-1".into())));
    assert!(form.contains(&("app_id".into(), "1234567890".into())));
    assert!(form.contains(&("grant_type".into(), "refresh_token".into())));
    // Every API call: the access token header, appsecret_proof = HMAC-SHA256(token, app secret), JSON.
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"app-secret").unwrap();
    mac.update(b"AT-1");
    let proof = hex::encode(mac.finalize().into_bytes());
    for (_, path, h, _) in &reqs[1..10] {
        assert_eq!(h["access_token"], "AT-1", "{path}");
        assert_eq!(h["appsecret_proof"].to_str().unwrap(), proof, "{path}");
        assert_eq!(h["content-type"], "application/json", "{path}");
    }
    let body = |i: usize| serde_json::from_str::<Value>(&reqs[i].3).unwrap();
    assert_eq!(body(1), json!({"recipient": {"user_id": "u1"}, "message": {"text": "Xin chào"}}));
    let tx = body(2);
    assert_eq!(tx["message"]["attachment"]["type"], "template");
    assert_eq!(tx["message"]["attachment"]["payload"]["template_type"], "transaction_order");
    assert_eq!(tx["message"]["attachment"]["payload"]["elements"][0], json!({"type": "header", "content": "Đơn hàng", "align": "left"}));
    assert_eq!(body(3)["message"]["attachment"]["payload"]["template_type"], "promotion");
    let zns = body(4);
    assert_eq!(zns, json!({"phone": "84987654321", "template_id": "tpl-1", "template_data": {"name": "Lan"}, "tracking_id": "trk-1"}));
    assert_eq!(body(5)["hash_phone"], "a".repeat(64));
    // The phone exchange: a GET with the user's token, the phone token and the app secret.
    let (_, _, h, _) = &reqs[10];
    assert_eq!(
        (h["access_token"].to_str().unwrap(), h["code"].to_str().unwrap(), h["secret_key"].to_str().unwrap()),
        ("user-token", "phone-token", "app-secret")
    );
}

/// At most once (issue 19): a send whose answer comes after the client's time-out, or that Zalo
/// answers with a 5xx after accepting it, is never sent again. The simulator counts exactly one
/// request per send, and the error says the message may have gone out (the sink records it
/// `unknown`). A refusal that proves nothing was sent (the rate limit) is still retried.
#[tokio::test]
async fn a_send_without_an_answer_is_never_sent_twice() {
    let now = Arc::new(AtomicI64::new(TEN_AM));
    let sim = Simulator::new(SimConfig::default(), clock(&now));
    let (base, _h) = sim.serve("127.0.0.1:0").await.unwrap();
    follower(&base, "u1", TEN_AM - 3_600_000).await;
    let dir = tempfile::tempdir().unwrap();
    let a = args(&base, dir.path(), 4000);
    let c = ZaloClient::new(ClientConfig {
        args: &a,
        clock: clock(&now),
        rate_window: Duration::from_secs(60),
        timeout: Duration::from_millis(400),
    })
    .unwrap();
    let text = Content { text: "xin chào".into(), ..Content::default() };
    let zns = Content { template_id: Some("order_status_v1".into()), ..Content::default() };
    // One clean send first: the token refresh is behind us.
    c.send_oa(OaKind::Consultation, "u1", &text).await.expect("a clean send");
    let before = sim.received().len();

    // Late past the time-out (asked over HTTP, as a test from outside would).
    let r = reqwest::Client::new().post(format!("{base}/sim/faults")).json(&json!({"delay_ms": 1500, "count": 1})).send().await.unwrap();
    assert!(r.status().is_success());
    let e = c.send_zns("84912345678", &zns, "trk-late").await.expect_err("no answer within the time-out");
    assert!(matches!(e, ZaloError::NoAnswer(_)) && e.may_have_been_delivered(), "{e:?}");
    assert_eq!(sim.received().len() - before, 1, "the late ZNS was sent once");

    // A 5xx after accepting, on both channels.
    sim.add_faults(sinks::simulator::Fault::Status(500), 1);
    let e = c.send_oa(OaKind::Consultation, "u1", &text).await.expect_err("a 500");
    assert!(e.may_have_been_delivered() && !e.safe_to_retry(), "{e:?}");
    sim.add_faults(sinks::simulator::Fault::Status(503), 1);
    let e = c.send_zns("84912345678", &zns, "trk-503").await.expect_err("a 503");
    assert!(e.may_have_been_delivered(), "{e:?}");
    assert_eq!(sim.received().len() - before, 3, "three sends, three requests: none repeated");
    let trackings: Vec<String> =
        sim.received()[before..].iter().filter_map(|r| r.body["tracking_id"].as_str().map(str::to_string)).collect();
    assert_eq!(trackings, ["trk-late", "trk-503"]);

    // A bad fault request is refused.
    let r = reqwest::Client::new().post(format!("{base}/sim/faults")).json(&json!({"status": 200})).send().await.unwrap();
    assert_eq!(r.status(), 400);
}
