//! The gateway's trust boundary (docs/security.md), tried as a client holding only the public
//! write key would, against a live gateway and a Zalo-shaped Graph server that is not the
//! project's simulator (access token `tok-<id>` is user `<id>`; phone token `ph-<84…>`, with
//! that same user's token, is that number). What each event is recorded as (`trust`) is read
//! back from the topics.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use rdkafka::Message;
use reqwest::StatusCode;
use serde_json::{Value, json};

use ingest::{Gateway, IngestArgs};
use schemas::event::{InputEvent, Trust};
use schemas::kafka::{EmbeddedCluster, Kafka};
use schemas::testing::read_to_end;
use schemas::topics::Topic;

const WRITE: &str = "demo-key";
const SECRET: &str = "demo-secret-key";
const APP_SECRET: &str = "the-app-secret";
const OA_SECRET: &str = "the-oa-secret";

/// A Graph API of Zalo's shape: `/v2.0/me` and `/v2.0/me/info`.
async fn graph() -> String {
    let me = |headers: HeaderMap| async move {
        let token = headers.get("access_token").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        match token.strip_prefix("tok-") {
            Some(id) if !id.is_empty() => axum::Json(json!({"id": id, "name": format!("User {id}")})),
            _ => axum::Json(json!({"error": 452, "message": "Invalid access token"})),
        }
    };
    let info = |headers: HeaderMap| async move {
        let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        if h("secret_key") != APP_SECRET || !h("access_token").starts_with("tok-") {
            return axum::Json(json!({"error": -124, "message": "invalid"}));
        }
        match h("code").strip_prefix("ph-") {
            Some(n) => axum::Json(json!({"data": {"number": n}, "error": 0, "message": "Success"})),
            None => axum::Json(json!({"error": -201, "message": "invalid code"})),
        }
    };
    let app = axum::Router::new().route("/v2.0/me", axum::routing::get(me)).route("/v2.0/me/info", axum::routing::get(info));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

struct Env {
    kafka: Kafka,
    _cluster: Arc<EmbeddedCluster>,
    base: String,
    c: reqwest::Client,
}

impl Env {
    async fn start() -> Env {
        Env::start_with(|_| {}).await
    }

    /// A gateway whose arguments `configure` changes last.
    async fn start_with(configure: impl FnOnce(&mut IngestArgs)) -> Env {
        let cluster = Arc::new(EmbeddedCluster::start(1).unwrap());
        let kafka = Kafka::embedded(cluster.clone(), 3);
        kafka.ensure_catalogue().await.unwrap();
        let mut args = IngestArgs::default();
        args.zalo.graph_url = graph().await;
        args.zalo.app_id = Some("zalo-app".into());
        args.zalo.app_secret = Some(APP_SECRET.into());
        args.zalo.oa_secret = Some(OA_SECRET.into());
        configure(&mut args);
        let gw = Gateway::start(&kafka, &args).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, gw.router()).await });
        let env = Env { kafka, _cluster: cluster, base, c: reqwest::Client::new() };
        schemas::testing::eventually(Duration::from_secs(20), "gateway ready", || async {
            env.c.get(format!("{}/readyz", env.base)).send().await.ok()?.status().is_success().then_some(())
        })
        .await;
        env
    }

    async fn post(&self, path: &str, key: &str, session: Option<&str>, body: Value) -> (StatusCode, Value) {
        let mut req = self.c.post(format!("{}{path}", self.base)).bearer_auth(key).json(&body);
        if let Some(s) = session {
            req = req.header("x-zcdp-session", s);
        }
        let r = req.send().await.unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    async fn batch(&self, key: &str, session: Option<&str>, events: Vec<Value>) -> (StatusCode, Value) {
        self.post("/v1/batch", key, session, json!({"events": events})).await
    }

    /// A session for `user`, opened with the access token Zalo knows them by.
    async fn session(&self, user: &str) -> String {
        let (s, b) = self.post("/v1/session", WRITE, None, json!({"access_token": format!("tok-{user}")})).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["zalo_id"], user);
        assert!(chrono::DateTime::parse_from_rfc3339(b["expires_at"].as_str().unwrap()).is_ok(), "{b}");
        b["session"].as_str().unwrap().to_string()
    }

    /// Every stored input event by id: what it was recorded as.
    async fn stored(&self) -> HashMap<String, InputEvent> {
        let mut out = HashMap::new();
        for topic in Topic::inputs() {
            let kafka = self.kafka.clone();
            let msgs =
                tokio::task::spawn_blocking(move || read_to_end(&kafka, topic.name(), Duration::from_secs(20)).unwrap()).await.unwrap();
            for m in msgs {
                let e = schemas::codec::decode_input(topic, m.payload().unwrap()).unwrap();
                out.insert(e.event_id().to_string(), e);
            }
        }
        out
    }
}

fn uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn ev(kind: &str, user: Value, props: Value) -> Value {
    json!({"event_id": uid(), "type": kind, "user": user, "properties": props})
}

fn codes(body: &Value) -> Vec<(u64, String)> {
    body["rejected"].as_array().unwrap().iter().map(|r| (r["index"].as_u64().unwrap(), r["code"].as_str().unwrap().to_string())).collect()
}

/// The attack of issue 18, as one batch with only the public write key: consent ×3 for a
/// stranger, an identify typing in their phone, an order and two status changes. The consents
/// and the phone are refused with their codes; the orders are kept as what the app saw
/// (unverified), which no campaign takes as an order's status (the sinks' test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_key_cannot_set_a_strangers_consent_phone_or_oa_state() {
    let env = Env::start().await;
    let victim = json!({"zalo_id": "5012345678901234567"});
    let events = vec![
        ev("consent_changed", victim.clone(), json!({"purpose": "profile", "granted": true})),
        ev("consent_changed", victim.clone(), json!({"purpose": "phone", "granted": true})),
        ev("consent_changed", victim.clone(), json!({"purpose": "marketing", "granted": true})),
        ev("identify", victim.clone(), json!({"phone": "0987654321", "traits": {"name": "Lan"}})),
        ev(
            "order_placed",
            victim.clone(),
            json!({"order_id": "o1", "total": 100000, "items": [{"product_id": "p", "quantity": 1, "price": 100000}]}),
        ),
        ev("order_status_changed", victim.clone(), json!({"order_id": "o1", "status": "Nhấn vào link để nhận quà"})),
        ev("order_status_changed", victim.clone(), json!({"order_id": "o1", "status": "again"})),
        ev("oa_followed", json!({"zalo_id": "5012345678901234567", "oa_user_id": "oa-victim"}), json!({"oa_id": "sim-oa"})),
        // Consent and identify need a session even for an anonymous id: one the write key typed
        // may be anyone's (an "oa:" id is the gateway's own name for an OA follower).
        ev("consent_changed", json!({"anonymous_id": "dev-1"}), json!({"purpose": "profile", "granted": true})),
        ev("identify", json!({"anonymous_id": "dev-1"}), json!({"traits": {"city": "Huế"}})),
        ev("page_viewed", json!({"anonymous_id": "oa:oa-victim"}), json!({})),
        // What the device's own anonymous visitor did is kept, as what the app saw.
        ev("page_viewed", json!({"anonymous_id": "dev-1"}), json!({})),
    ];
    let (s, b) = env.batch(WRITE, None, events.clone()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        codes(&b),
        vec![
            (0, "session_required".to_string()),
            (1, "session_required".to_string()),
            (2, "session_required".to_string()),
            (3, "phone_not_verified".to_string()),
            (7, "zalo_only".to_string()),
            (8, "session_required".to_string()),
            (9, "session_required".to_string()),
            (10, "zalo_only".to_string()),
        ],
        "{b}"
    );
    let stored = env.stored().await;
    for i in [4, 5, 6, 11] {
        let e = &stored[events[i]["event_id"].as_str().unwrap()];
        assert_eq!(e.trust(), Trust::Unverified, "event {i} is what the app saw, unverified");
    }
    for i in [0, 1, 2, 3, 7, 8, 9, 10] {
        assert!(!stored.contains_key(events[i]["event_id"].as_str().unwrap()), "refused event {i} was written");
    }
    // A session that is not one: refused whole, nothing taken.
    let (s, b) = env.batch(WRITE, Some("00.00"), vec![ev("page_viewed", victim.clone(), json!({}))]).await;
    assert_eq!((s, b["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_session")));
    // A forged access token opens no session.
    let (s, b) = env.post("/v1/session", WRITE, None, json!({"access_token": "not-a-zalo-token"})).await;
    assert_eq!((s, b["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_access_token")));
    // The phone exchange needs a session.
    let (s, b) = env.post("/v1/users/phone", WRITE, None, json!({"access_token": "tok-x", "code": "ph-84987654321", "user": victim})).await;
    assert_eq!((s, b["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("session_required")));
}

/// Under a session, the Mini App speaks for its own user: events about them are verified,
/// identify and consent are theirs to make, the phone comes from Zalo's exchange with the same
/// user's token, and nothing may name another user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_speaks_for_its_own_user_only() {
    let env = Env::start().await;
    let lan = env.session("lan").await;
    let me = json!({"zalo_id": "lan", "anonymous_id": "dev-lan"});
    let events = vec![
        ev("consent_changed", me.clone(), json!({"purpose": "profile", "granted": true})),
        ev("consent_changed", me.clone(), json!({"purpose": "phone", "granted": true})),
        ev("identify", me.clone(), json!({"traits": {"name": "Lan"}})),
        ev("page_viewed", json!({"anonymous_id": "dev-lan"}), json!({})),
        ev("page_viewed", json!({"zalo_id": "minh"}), json!({})),
        ev("identify", me.clone(), json!({"phone": "0987654321"})),
    ];
    let (s, b) = env.batch(WRITE, Some(&lan), events.clone()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(codes(&b), vec![(4, "identity_mismatch".to_string()), (5, "phone_not_verified".to_string())], "{b}");
    // Another app's session, or a session with the secret key of another app: no such thing.
    let (s, _) = env.batch(WRITE, Some(&format!("{lan}00")), vec![ev("page_viewed", me.clone(), json!({}))]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // The phone: Zalo's exchange, with Lan's own access token; another user's token is refused.
    let (s, b) = env.post("/v1/users/phone", WRITE, Some(&lan), json!({"access_token": "tok-minh", "code": "ph-84900000001"})).await;
    assert_eq!((s, b["error"].as_str()), (StatusCode::FORBIDDEN, Some("identity_mismatch")), "{b}");
    let (s, b) = env
        .post(
            "/v1/users/phone",
            WRITE,
            Some(&lan),
            json!({"access_token": "tok-lan", "code": "ph-84912345678", "user": {"zalo_id": "minh"}}),
        )
        .await;
    assert_eq!((s, b["error"].as_str()), (StatusCode::FORBIDDEN, Some("identity_mismatch")), "the body cannot name another user: {b}");
    let (s, b) = env.post("/v1/users/phone", WRITE, Some(&lan), json!({"access_token": "tok-lan", "code": "ph-84912345678"})).await;
    assert_eq!(s, StatusCode::OK, "{b}");

    let stored = env.stored().await;
    let trust = |i: usize| stored[events[i]["event_id"].as_str().unwrap()].trust();
    assert_eq!((trust(0), trust(1), trust(2)), (Trust::Session, Trust::Session, Trust::Session));
    assert_eq!(trust(3), Trust::Unverified, "an event not naming the user stays anonymous analytics");
    let phones: Vec<&InputEvent> =
        stored.values().filter(|e| matches!(e, InputEvent::Identity(i) if i.properties.phone.is_some())).collect();
    assert_eq!(phones.len(), 1);
    let InputEvent::Identity(p) = phones[0] else { unreachable!() };
    assert_eq!((p.user.key.as_str(), p.properties.phone.as_deref(), p.trust), ("lan", Some("84912345678"), Trust::Zalo));

    // The shop's server may say all of it, for anyone.
    let (s, b) = env
        .batch(
            SECRET,
            None,
            vec![
                ev("consent_changed", json!({"zalo_id": "minh"}), json!({"purpose": "phone", "granted": true})),
                ev("identify", json!({"zalo_id": "minh"}), json!({"phone": "0900000001"})),
                ev("oa_followed", json!({"zalo_id": "minh", "oa_user_id": "oa-minh"}), json!({"oa_id": "sim-oa"})),
            ],
        )
        .await;
    assert_eq!((s, b["accepted"].as_u64()), (StatusCode::OK, Some(3)), "{b}");
}

/// A signed webhook is good once, near its own time: an old one is refused, a repeat dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_out_of_their_time_or_replayed_change_nothing() {
    let env = Env::start().await;
    let send = |ts: i64, header: fn(String) -> String| {
        let body = json!({"app_id": "zalo-app", "event_name": "follow", "timestamp": ts.to_string(), "oa_id": "oa",
            "follower": {"id": "oa-lan"}, "user_id_by_app": "lan"})
        .to_string();
        let sig = header(schemas::zalo::event_signature("zalo-app", &body, &ts.to_string(), OA_SECRET));
        let (c, url) = (env.c.clone(), format!("{}/webhooks/zalo", env.base));
        async move {
            let r =
                c.post(url).header("x-zevent-signature", sig).header("content-type", "application/json").body(body).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let now = schemas::time::now_ms();
    let same = |sig: String| sig;
    let (s, b) = send(now - 3_600_000, same).await;
    assert_eq!((s, b["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("stale_webhook")), "an hour old: {b}");
    let (s, b) = send(now, same).await;
    assert_eq!((s, b["accepted"].as_u64()), (StatusCode::OK, Some(1)), "{b}");
    let (s, b) = send(now, same).await;
    assert_eq!((s, b["duplicate"].as_bool()), (StatusCode::OK, Some(true)), "a replay is acknowledged and dropped: {b}");
    // The header written another way that the check still takes is the same webhook.
    let respelled = |sig: String| format!(" mac={} ", sig.trim_start_matches("mac=").to_ascii_uppercase());
    let (s, b) = send(now, respelled).await;
    assert_eq!((s, b["duplicate"].as_bool()), (StatusCode::OK, Some(true)), "a respelled replay is dropped too: {b}");
    let follows: Vec<InputEvent> = env.stored().await.into_values().filter(|e| e.type_name() == "oa_followed").collect();
    assert_eq!(follows.len(), 1);
    assert_eq!(follows[0].trust(), Trust::Zalo);
}

/// Several apps, each with its own Zalo app (`--zalo-apps-file`): a webhook is recorded under the
/// zcdp app whose Zalo app it names, and only if that app's OA secret signed it — another app's
/// secret cannot sign for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_apps_webhooks_are_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("zalo-apps.toml");
    std::fs::write(
        &file,
        format!(
            "[apps.demo]\napp_id = \"zalo-app\"\napp_secret = \"{APP_SECRET}\"\noa_secret = \"{OA_SECRET}\"\n\n\
             [apps.shop-b]\napp_id = \"zalo-app-b\"\napp_secret = \"app-secret-b\"\noa_secret = \"oa-secret-b\"\n"
        ),
    )
    .unwrap();
    let env = Env::start_with(|args| args.zalo.apps_file = Some(file)).await;
    let send = |app_id: &'static str, secret: &'static str, uid: &'static str| {
        let ts = schemas::time::now_ms().to_string();
        let body = json!({"app_id": app_id, "event_name": "follow", "timestamp": ts, "oa_id": "oa",
            "follower": {"id": format!("oa-{uid}")}, "user_id_by_app": uid})
        .to_string();
        let sig = schemas::zalo::event_signature(app_id, &body, &ts, secret);
        let (c, url) = (env.c.clone(), format!("{}/webhooks/zalo", env.base));
        async move {
            let r =
                c.post(url).header("x-zevent-signature", sig).header("content-type", "application/json").body(body).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, b) = send("zalo-app", OA_SECRET, "lan").await;
    assert_eq!((s, b["accepted"].as_u64()), (StatusCode::OK, Some(1)), "{b}");
    let (s, b) = send("zalo-app-b", "oa-secret-b", "lan").await;
    assert_eq!((s, b["accepted"].as_u64()), (StatusCode::OK, Some(1)), "{b}");
    // demo's OA secret signing an event that names shop-b's Zalo app.
    let (s, b) = send("zalo-app-b", OA_SECRET, "minh").await;
    assert_eq!((s, b["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("bad_signature")), "{b}");
    let (s, _) = send("zalo-app-c", "oa-secret-b", "minh").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "an app not configured");
    let mut follows: Vec<(String, String)> = env
        .stored()
        .await
        .into_values()
        .filter(|e| e.type_name() == "oa_followed")
        .map(|e| (e.app_id().to_string(), e.user().key.clone()))
        .collect();
    follows.sort();
    assert_eq!(follows, [("demo".to_string(), "lan".to_string()), ("shop-b".to_string(), "lan".to_string())]);
}
