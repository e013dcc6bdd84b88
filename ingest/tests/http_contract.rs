//! The HTTP contract of docs/http-api.md, checked against a live gateway on the embedded Kafka
//! cluster: what a Mini App developer sees, and what lands in the topics.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message;
use reqwest::StatusCode;
use serde_json::{Value, json};

use ingest::{Gateway, IngestArgs};
use schemas::event::{DeadLetter, EVENT_TYPES, ViewEvent};
use schemas::kafka::{EmbeddedCluster, Kafka};
use schemas::testing::{eventually, read_to_end};
use schemas::topics::Topic;

struct Harness {
    kafka: Kafka,
    cluster: Arc<EmbeddedCluster>,
    base: String,
    client: reqwest::Client,
}

/// The demo app's secret key (`IngestArgs::default()`'s).
const SECRET_KEY: &str = "demo-secret-key";

impl Harness {
    async fn start(args: IngestArgs) -> Harness {
        let cluster = Arc::new(EmbeddedCluster::start(1).unwrap());
        let kafka = Kafka::embedded(cluster.clone(), 3);
        kafka.ensure_catalogue().await.unwrap();
        let gw = Gateway::start(&kafka, &args).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, gw.router()).await });
        let h = Harness { kafka, cluster, base, client: reqwest::Client::new() };
        h.wait_ready(true).await;
        h
    }

    async fn wait_ready(&self, ready: bool) {
        eventually(Duration::from_secs(20), if ready { "gateway ready" } else { "gateway not ready" }, || async {
            let r = self.client.get(format!("{}/readyz", self.base)).send().await.ok()?;
            (r.status().is_success() == ready).then_some(())
        })
        .await
    }

    async fn post(&self, path: &str, key: Option<&str>, body: impl Into<reqwest::Body>) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut req = self.client.post(format!("{}{path}", self.base)).header("content-type", "application/json").body(body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, headers, body)
    }

    /// A batch from the Mini App (the public write key, no session).
    async fn batch(&self, events: Vec<Value>) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        self.batch_as("demo-key", events).await
    }

    /// A batch with `key`: the shop's server uses its secret key for trusted facts.
    async fn batch_as(&self, key: &str, events: Vec<Value>) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let body = json!({"sent_at": chrono::Utc::now().to_rfc3339(), "events": events});
        self.post("/v1/batch", Some(key), body.to_string()).await
    }

    async fn read(&self, topic: Topic) -> Vec<rdkafka::message::OwnedMessage> {
        let kafka = self.kafka.clone();
        tokio::task::spawn_blocking(move || read_to_end(&kafka, topic.name(), Duration::from_secs(20)).unwrap()).await.unwrap()
    }

    /// Event ids stored in the input topics, by topic.
    async fn stored_ids(&self) -> HashMap<String, Topic> {
        let mut out = HashMap::new();
        for topic in Topic::inputs() {
            for m in self.read(topic).await {
                let e = schemas::codec::decode_input(topic, m.payload().unwrap()).unwrap();
                out.insert(e.event_id().to_string(), topic);
            }
        }
        out
    }
}

fn uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn view(user: &str) -> Value {
    json!({"event_id": uid(), "type": "page_viewed", "user": {"zalo_id": user}, "context": {"screen": "/home"}})
}

/// The ```json blocks under "## Event types" in docs/http-api.md.
fn documented_examples() -> Vec<Value> {
    let doc = include_str!("../../docs/http-api.md");
    let section = &doc[doc.find("## Event types").unwrap()..doc.find("## Reading the topics").unwrap()];
    section
        .split("```json")
        .skip(1)
        .map(|block| serde_json::from_str(&block[..block.find("```").unwrap()]).expect("example is JSON"))
        .collect()
}

/// The shop's server (its secret key) may post every documented example; the Mini App's write
/// key, without a session, the ones that describe what the app saw (tested after).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_example_is_accepted_and_lands_in_its_topic() {
    let h = Harness::start(IngestArgs::default()).await;
    let examples = documented_examples();
    let documented: HashSet<&str> = examples.iter().map(|e| e["type"].as_str().unwrap()).collect();
    for (name, _) in EVENT_TYPES {
        assert!(documented.contains(name), "docs/http-api.md has no example of {name}");
    }
    let (status, _, body) = h.batch_as(SECRET_KEY, examples.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rejected"], json!([]), "{body}");
    assert_eq!(body["accepted"], json!(examples.len()));

    let stored = h.stored_ids().await;
    for e in &examples {
        let expected = EVENT_TYPES.iter().find(|(n, _)| *n == e["type"]).unwrap().1;
        assert_eq!(stored.get(e["event_id"].as_str().unwrap()), Some(&expected), "{}", e["type"]);
    }
}

/// What a downstream subscriber does: take the schema id from the record, fetch the schema
/// from the gateway's registry API, decode generically. The fields are the posted ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_decode_with_the_schema_served_by_id() {
    let h = Harness::start(IngestArgs::default()).await;
    let id = uid();
    let event = json!({"event_id": id, "type": "product_viewed", "event_time": "2026-11-23T09:30:00+07:00",
        "user": {"zalo_id": "5012345678901234567", "anonymous_id": "dev-1"},
        "context": {"screen": "/product/cf-suada", "utm_source": "zalo_oa"},
        "properties": {"product_id": "cf-suada", "category": "coffee", "price": 35000, "dwell_ms": 8200, "color": "đen"}});
    let (status, _, body) = h.post("/v1/events", Some("demo-key"), event.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let msgs = h.read(Topic::Views).await;
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m.key(), Some("5012345678901234567".as_bytes()), "keyed by the user");
    let bytes = m.payload().unwrap();
    assert_eq!(bytes[0], 0, "Confluent magic byte");
    let schema_id = u32::from_be_bytes(bytes[1..5].try_into().unwrap());

    let served: Value = h.client.get(format!("{}/schemas/ids/{schema_id}", h.base)).send().await.unwrap().json().await.unwrap();
    let schema = apache_avro::Schema::parse_str(served["schema"].as_str().unwrap()).unwrap();
    let value = apache_avro::reader::datum::GenericDatumReader::builder(&schema).build().unwrap().read_value(&mut &bytes[5..]).unwrap();
    let json: Value = serde_json::to_value(&apache_avro::from_value::<ViewEvent>(&value).unwrap()).unwrap();
    assert_eq!(json["event_id"], json!(id));
    assert_eq!(json["type"], json!("product_viewed"));
    assert_eq!(json["user"]["zalo_id"], json!("5012345678901234567"));
    assert_eq!(json["user"]["anonymous_id"], json!("dev-1"));
    assert_eq!(json["context"]["utm_source"], json!("zalo_oa"));
    assert_eq!(json["properties"]["product_id"], json!("cf-suada"));
    assert_eq!(json["properties"]["price"], json!(35000));
    assert_eq!(json["properties"]["dwell_ms"], json!(8200));
    assert_eq!(json["properties"]["custom"]["color"], json!("đen"));
    assert_eq!(json["event_time"], json!(chrono::DateTime::parse_from_rfc3339("2026-11-23T09:30:00+07:00").unwrap().timestamp_millis()));

    // The other registry reads a stock client may make.
    let subjects: Value = h.client.get(format!("{}/subjects", h.base)).send().await.unwrap().json().await.unwrap();
    assert!(subjects.as_array().unwrap().contains(&json!("zmp.views.v1-value")));
    let latest: Value =
        h.client.get(format!("{}/subjects/zmp.views.v1-value/versions/latest", h.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(latest["id"], json!(schema_id));
    let missing = h.client.get(format!("{}/schemas/ids/9999", h.base)).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_status_and_a_reason() {
    let h = Harness::start(IngestArgs::default()).await;
    let one_batch = json!({"events": [view("u1")]}).to_string();

    let (s, _, b) = h.post("/v1/batch", None, one_batch.clone()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(b["message"].as_str().unwrap().contains("write key"), "{b}");
    let (s, _, _) = h.post("/v1/batch", Some("wrong-key"), one_batch.clone()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let r = h.client.post(format!("{}/v1/batch", h.base)).header("x-write-key", "demo-key").body(one_batch.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "X-Write-Key works too");

    let (s, _, b) = h.post("/v1/batch", Some("demo-key"), "{not json").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"], json!("invalid_json"));
    let (s, _, b) = h.post("/v1/batch", Some("demo-key"), r#"{"sent_at": "2026-11-23T00:00:00Z"}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(b["message"].as_str().unwrap().contains("events"), "{b}");
    let (s, _, b) = h.post("/v1/events", Some("demo-key"), "[]").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");

    let many: Vec<Value> = (0..1001).map(|_| view("u1")).collect();
    let (s, _, b) = h.batch(many).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(b["message"].as_str().unwrap().contains("1000"), "{b}");

    let big: Vec<Value> = (0..800)
        .map(|_| json!({"event_id": uid(), "type": "page_viewed", "user": {"zalo_id": "u1"}, "properties": {"pad": "x".repeat(700)}}))
        .collect();
    let (s, _, b) = h.batch(big).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "a body over 500 KB: {b}");

    let huge = json!({"event_id": uid(), "type": "page_viewed", "user": {"zalo_id": "u1"}, "properties": {"pad": "x".repeat(33 * 1024)}});
    let (s, _, _) = h.post("/v1/events", Some("demo-key"), huge.to_string()).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let (s, _, b) = h.batch(vec![view("u1"), huge]).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(b["message"].as_str().unwrap().contains("event 1"), "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_rate_the_answer_is_429_with_retry_after() {
    let h = Harness::start(IngestArgs { rate_limit: 10, rate_burst: 20, ..IngestArgs::default() }).await;
    let (s, _, _) = h.batch((0..20).map(|_| view("u1")).collect()).await;
    assert_eq!(s, StatusCode::OK);
    let (s, headers, b) = h.batch((0..10).map(|_| view("u1")).collect()).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{b}");
    let after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&after), "Retry-After {after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_events_are_explained_and_dead_lettered() {
    let h = Harness::start(IngestArgs::default()).await;
    let dup = uid();
    let events = vec![
        view("good-user"),                                                                   // 0 ok
        json!({"event_id": uid(), "type": "page_viewed", "user": {"zalo_id": "undefined"}}), // 1
        json!({"type": "page_viewed", "user": {"zalo_id": "u2"}}),                           // 2
        json!({"event_id": uid(), "type": "page_teleported", "user": {"zalo_id": "u2"}}),    // 3
        json!({"event_id": uid(), "type": "product_viewed", "user": {"zalo_id": "u2"}, "properties": {"product_id": "p", "price": 35000.5}}), // 4
        json!({"event_id": uid(), "type": "identify", "user": {"zalo_id": "u3"}, "properties": {"phone": "0987654321", "traits": {"name": "Lan"}}}), // 5
        json!({"event_id": dup, "type": "page_viewed", "user": {"anonymous_id": "d1"}}), // 6 ok
        json!({"event_id": dup, "type": "page_viewed", "user": {"anonymous_id": "d1"}}), // 7
        json!({"event_id": uid(), "type": "page_viewed", "user": {"oa_user_id": "oa1"}}), // 8
    ];
    let (s, _, body) = h.batch_as(SECRET_KEY, events.clone()).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], json!(2));
    let codes: HashMap<u64, String> = body["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert!(!r["reason"].as_str().unwrap().is_empty());
            (r["index"].as_u64().unwrap(), r["code"].as_str().unwrap().to_string())
        })
        .collect();
    let expect = [
        (1, "placeholder_id"),
        (2, "missing_field"),
        (3, "unknown_type"),
        (4, "invalid_value"),
        (5, "no_consent"),
        (7, "duplicate_event_id"),
        (8, "no_user_id"),
    ];
    assert_eq!(codes, expect.iter().map(|(i, c)| (*i as u64, c.to_string())).collect());

    let letters: Vec<DeadLetter> =
        h.read(Topic::DeadLetter).await.iter().map(|m| schemas::codec::decode(m.payload().unwrap()).unwrap()).collect();
    assert_eq!(letters.len(), expect.len());
    for (i, code) in expect {
        let l = letters.iter().find(|l| l.index == Some(i)).unwrap_or_else(|| panic!("no dead letter for event {i}"));
        assert_eq!(l.reason_code, code);
        assert_eq!(l.app_id.as_deref(), Some("demo"));
        assert_eq!(l.source, "http:/v1/batch");
        let raw = String::from_utf8(l.raw.clone()).unwrap();
        if i == 5 {
            assert!(!raw.contains("0987654321") && !raw.contains("Lan"), "personal data kept without consent: {raw}");
        } else {
            assert_eq!(serde_json::from_str::<Value>(&raw).unwrap(), events[i as usize], "raw bytes kept");
        }
    }
    let stored = h.stored_ids().await;
    assert_eq!(stored.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_is_stored_only_with_consent() {
    let h = Harness::start(IngestArgs::default()).await;
    // The shop's server records these (a phone comes from it or from Zalo, never the Mini App).
    let batch = |events: Vec<Value>| h.batch_as(SECRET_KEY, events);
    let consent = |user: &str, purpose: &str, granted: bool| json!({"event_id": uid(), "type": "consent_changed", "user": {"zalo_id": user}, "properties": {"purpose": purpose, "granted": granted}});
    let identify = |user: &str| json!({"event_id": uid(), "type": "identify", "user": {"zalo_id": user}, "properties": {"traits": {"name": "Minh"}, "phone": "+84 912 345 678"}});

    // Consent in the same batch, even after the identify.
    let (_, _, b) = batch(vec![identify("a"), consent("a", "profile", true), consent("a", "phone", true)]).await;
    assert_eq!(b["accepted"], json!(3), "{b}");
    // Only one of the two purposes: refused.
    let (_, _, b) = batch(vec![consent("b", "profile", true), identify("b")]).await;
    assert_eq!(b["rejected"][0]["code"], json!("no_consent"), "{b}");
    assert!(b["rejected"][0]["reason"].as_str().unwrap().contains("phone"));
    // Consent from an earlier request counts.
    let (_, _, b) = batch(vec![consent("c", "profile", true), consent("c", "phone", true)]).await;
    assert_eq!(b["accepted"], json!(2));
    let (_, _, b) = batch(vec![identify("c")]).await;
    assert_eq!(b["accepted"], json!(1), "{b}");
    // Revoked: refused again.
    let (_, _, b) = batch(vec![consent("c", "phone", false)]).await;
    assert_eq!(b["accepted"], json!(1));
    let (_, _, b) = batch(vec![identify("c")]).await;
    assert_eq!(b["rejected"][0]["code"], json!("no_consent"), "{b}");

    // The stored phone is normalised.
    let phones: Vec<String> = h
        .read(Topic::Identities)
        .await
        .iter()
        .filter_map(|m| schemas::codec::decode::<schemas::event::IdentityEvent>(m.payload().unwrap()).ok()?.properties.phone)
        .collect();
    assert_eq!(phones, vec!["84912345678".to_string(), "84912345678".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_is_corrected_by_the_device_clock_error() {
    let h = Harness::start(IngestArgs::default()).await;
    // The device clock runs an hour behind; the event happened 2 s before the send.
    let device_now = chrono::Utc::now() - chrono::Duration::hours(1);
    let event_time = device_now - chrono::Duration::seconds(2);
    let body = json!({"sent_at": device_now.to_rfc3339(), "events": [{"event_id": uid(), "type": "page_viewed", "event_time": event_time.to_rfc3339(), "user": {"zalo_id": "u"}}]});
    let before = chrono::Utc::now().timestamp_millis();
    let (s, _, _) = h.post("/v1/batch", Some("demo-key"), body.to_string()).await;
    let after = chrono::Utc::now().timestamp_millis();
    assert_eq!(s, StatusCode::OK);
    let e: ViewEvent = schemas::codec::decode(h.read(Topic::Views).await[0].payload().unwrap()).unwrap();
    assert!(
        e.corrected_time >= before - 2000 && e.corrected_time <= after - 2000,
        "corrected {} not in [{}, {}]",
        e.corrected_time,
        before - 2000,
        after - 2000
    );
    assert_eq!(e.event_time, event_time.timestamp_millis());
    assert!(e.clock_skew_ms >= 3_600_000);
}

/// Every broker down: requests get 503 with Retry-After in bounded time, readiness drops, and
/// once the cluster is back, every event that ever got a 200 is in its topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_broker_down_requests_fail_fast_and_nothing_acknowledged_is_lost() {
    let args = IngestArgs { ack_timeout: Duration::from_secs(2), ..IngestArgs::default() };
    let h = Harness::start(args).await;
    let mut acknowledged: Vec<String> = Vec::new();
    let send = |events: Vec<Value>| {
        let ids: Vec<String> = events.iter().map(|e| e["event_id"].as_str().unwrap().to_string()).collect();
        (events, ids)
    };
    let (events, ids) = send((0..50).map(|i| view(&format!("user-{i}"))).collect());
    let (s, _, _) = h.batch(events).await;
    assert_eq!(s, StatusCode::OK);
    acknowledged.extend(ids);

    h.cluster.mock().broker_down(-1).unwrap();
    let (events, ids) = send((0..50).map(|i| view(&format!("user-{i}"))).collect());
    let start = Instant::now();
    let (s, headers, body) = h.batch(events.clone()).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(headers.contains_key("retry-after"));
    assert!(start.elapsed() < Duration::from_secs(5), "503 took {:?}", start.elapsed());
    h.wait_ready(false).await;
    let start = Instant::now();
    let (s, _, _) = h.batch(vec![view("u")]).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(start.elapsed() < Duration::from_secs(1), "once Kafka is known down, 503 is immediate");

    h.cluster.mock().broker_up(-1).unwrap();
    h.wait_ready(true).await;
    // The client retries the refused batch, as the contract says.
    eventually(Duration::from_secs(30), "the retried batch to be accepted", || async {
        let (s, _, _) = h.batch(events.clone()).await;
        (s == StatusCode::OK).then_some(())
    })
    .await;
    acknowledged.extend(ids);

    let stored = h.stored_ids().await;
    for id in &acknowledged {
        assert!(stored.contains_key(id), "event {id} got a 200 but is not in Kafka");
    }
}

/// Bounds the gateway checks (issue 19), each refused with its reason: money up to 10¹³ VND,
/// quantities up to 10⁶, ids up to 128 bytes, the texts the processors keep up to 256 bytes; at
/// the bounds, accepted. Custom properties are bounded only by the event's size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amounts_quantities_and_kept_texts_are_bounded() {
    let h = Harness::start(IngestArgs::default()).await;
    let add = |props: Value| json!({"event_id": uid(), "type": "cart_item_added", "user": {"anonymous_id": "a1"}, "properties": props});
    let ok = json!({"cart_id": "c".repeat(128), "product_id": "p".repeat(128), "product_name": "n".repeat(256), "category": "k".repeat(256),
        "quantity": 1_000_000, "price": 10_000_000_000_000i64, "note": "x".repeat(20_000)});
    let mut over = Vec::new();
    for (key, value) in [
        ("price", json!(10_000_000_000_001i64)),
        ("price", json!(9_223_372_036_854_775_807i64)),
        ("quantity", json!(1_000_001)),
        ("cart_id", json!("c".repeat(129))),
        ("product_id", json!("p".repeat(129))),
        ("product_name", json!("n".repeat(257))),
        // Bytes, not characters: 86 × "ạ" (3 bytes each) is 258 bytes.
        ("category", json!("ạ".repeat(86))),
    ] {
        let mut p = ok.clone();
        p[key] = value;
        over.push((key, add(p)));
    }
    let order = json!({"event_id": uid(), "type": "order_placed", "user": {"anonymous_id": "a1"},
        "properties": {"order_id": "o1", "total": 10_000_000_000_001i64, "items": [{"product_id": "p", "quantity": 1, "price": 1}]}});
    over.push(("total", order));
    let mut events = vec![add(ok)];
    events.extend(over.iter().map(|(_, e)| e.clone()));
    let (s, _, body) = h.batch_as(SECRET_KEY, events).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], json!(1), "{body}");
    let rejected = body["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), over.len(), "{body}");
    for (r, (key, _)) in rejected.iter().zip(&over) {
        assert_eq!(r["code"], "invalid_value", "{r}");
        let reason = r["reason"].as_str().unwrap();
        assert!(reason.contains(key) && (reason.contains("at most") || reason.contains("the limit is")), "{key}: {reason}");
    }
}

/// Dead letters never keep a phone (issue 19): redaction works on the bytes as sent, so an event
/// that serde_json cannot re-parse (`1e400`) loses its phone and traits like any other, and an
/// unparseable body loses spaced and bracketed phone numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_keep_no_phone_whatever_the_bytes() {
    let h = Harness::start(IngestArgs::default()).await;
    let id = uid();
    // No consent: refused and dead-lettered. serde_json refuses 1e400; the gateway's reader does not.
    let body = format!(
        r#"{{"events":[{{"event_id":"{id}","type":"identify","user":{{"zalo_id":"u9"}},"properties":{{"phone":"0987654321","traits":{{"name":"Lan","email":"lan@example.vn"}},"x":1e400}}}}]}}"#
    );
    let (s, _, b) = h.post("/v1/batch", Some(SECRET_KEY), body).await;
    assert_eq!((s, &b["rejected"][0]["code"]), (StatusCode::OK, &json!("no_consent")), "{b}");
    let (s, _, _) = h.post("/v1/batch", Some(SECRET_KEY), r#"{"events":[{"note":"call 0987 654 321 or (+84) 912.345.678", "#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let letters: Vec<DeadLetter> =
        h.read(Topic::DeadLetter).await.iter().map(|m| schemas::codec::decode(m.payload().unwrap()).unwrap()).collect();
    assert_eq!(letters.len(), 2);
    for l in &letters {
        let raw = String::from_utf8_lossy(&l.raw);
        for personal in ["0987654321", "0987 654 321", "912.345.678", "Lan", "lan@example.vn"] {
            assert!(!raw.contains(personal), "{personal:?} kept in a dead letter: {raw}");
        }
    }
    assert!(letters.iter().any(|l| l.event_id.as_deref() == Some(id.as_str()) || String::from_utf8_lossy(&l.raw).contains(&id)));
}

/// Consent that does not expire (issue 19): the gateway's consent view is rebuilt from the
/// compacted `zmp.consents.v1`, not from the input topic. A gateway starting on a cluster whose
/// `zmp.identities.v1` holds nothing any more (the consent older than its retention) but whose
/// `zmp.consents.v1` holds the decision still admits the user's `identify`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consents_older_than_the_input_topics_still_count_after_a_restart() {
    let first = Harness::start(IngestArgs::default()).await;
    let consent = |purpose: &str| json!({"event_id": uid(), "type": "consent_changed", "user": {"zalo_id": "old-friend"}, "properties": {"purpose": purpose, "granted": true}});
    let (_, _, b) = first.batch_as(SECRET_KEY, vec![consent("profile"), consent("phone")]).await;
    assert_eq!(b["accepted"], json!(2), "{b}");
    let kept: Vec<(Vec<u8>, Vec<u8>)> =
        first.read(Topic::Consents).await.iter().map(|m| (m.key().unwrap().to_vec(), m.payload().unwrap().to_vec())).collect();
    let mut keys: Vec<String> = kept.iter().map(|(k, _)| String::from_utf8(k.clone()).unwrap()).collect();
    keys.sort();
    assert_eq!(keys, ["demo/old-friend/phone", "demo/old-friend/profile"]);

    // A year later: the input topics have forgotten, the consents topic has not. A new gateway.
    let cluster = Arc::new(EmbeddedCluster::start(1).unwrap());
    let kafka = Kafka::embedded(cluster.clone(), 3);
    kafka.ensure_catalogue().await.unwrap();
    let producer: rdkafka::producer::FutureProducer = kafka.producer_config().create().unwrap();
    for (k, v) in &kept {
        let record = rdkafka::producer::FutureRecord::to(Topic::Consents.name()).key(k).payload(v);
        producer.send(record, Duration::from_secs(10)).await.unwrap();
    }
    assert!(read_to_end(&kafka, Topic::Identities.name(), Duration::from_secs(10)).unwrap().is_empty());
    let gw = Gateway::start(&kafka, &IngestArgs::default()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, gw.router()).await });
    let second = Harness { kafka, cluster, base, client: reqwest::Client::new() };
    second.wait_ready(true).await;
    let identify = json!({"event_id": uid(), "type": "identify", "user": {"zalo_id": "old-friend"},
        "properties": {"traits": {"name": "Lan"}, "phone": "0912345678"}});
    let (s, _, b) = second.batch_as(SECRET_KEY, vec![identify]).await;
    assert_eq!((s, &b["accepted"]), (StatusCode::OK, &json!(1)), "{b}");
}

/// A deployment upgraded from a version that kept consents only in `zmp.identities.v1`: the
/// first gateway finds `zmp.consents.v1` empty and carries the decisions over — the latest per
/// user id and purpose, none of a user erased after deciding — so consents given before the
/// upgrade still count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consents_in_the_identities_topic_are_carried_over_on_an_upgrade() {
    let old = Harness::start(IngestArgs::default()).await;
    let consent = |user: &str, purpose: &str, granted: bool| json!({"event_id": uid(), "type": "consent_changed", "user": {"zalo_id": user}, "properties": {"purpose": purpose, "granted": granted}});
    let batch = vec![consent("kept", "profile", true), consent("revoked", "profile", true), consent("erased", "profile", true)];
    assert_eq!(old.batch_as(SECRET_KEY, batch).await.2["accepted"], json!(3));
    assert_eq!(old.batch_as(SECRET_KEY, vec![consent("revoked", "profile", false)]).await.2["accepted"], json!(1));
    let identities: Vec<(Vec<u8>, Vec<u8>)> =
        old.read(Topic::Identities).await.iter().map(|m| (m.key().unwrap().to_vec(), m.payload().unwrap().to_vec())).collect();

    // The new version's cluster: the identities topic as it was, nothing in zmp.consents.v1,
    // and an erasure of one user after their consent.
    let cluster = Arc::new(EmbeddedCluster::start(1).unwrap());
    let kafka = Kafka::embedded(cluster.clone(), 3);
    kafka.ensure_catalogue().await.unwrap();
    let producer: rdkafka::producer::FutureProducer = kafka.producer_config().create().unwrap();
    let forget = schemas::codec::encode(&match schemas::event::forget_request("demo", "erased", schemas::time::now_ms() + 1000) {
        schemas::event::InputEvent::Identity(e) => e,
        _ => unreachable!(),
    })
    .unwrap();
    for (k, v) in identities.iter().chain([(b"erased".to_vec(), forget)].iter()) {
        let record = rdkafka::producer::FutureRecord::to(Topic::Identities.name()).key(k).payload(v);
        producer.send(record, Duration::from_secs(10)).await.unwrap();
    }
    let gw = Gateway::start(&kafka, &IngestArgs::default()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, gw.router()).await });
    let new = Harness { kafka, cluster, base, client: reqwest::Client::new() };
    new.wait_ready(true).await;
    let mut keys: Vec<String> =
        new.read(Topic::Consents).await.iter().map(|m| String::from_utf8(m.key().unwrap().to_vec()).unwrap()).collect();
    keys.sort();
    assert_eq!(keys, ["demo/kept/profile", "demo/revoked/profile"], "one record per key, none for the erased user");
    let identify =
        |user: &str| json!({"event_id": uid(), "type": "identify", "user": {"zalo_id": user}, "properties": {"traits": {"name": "An"}}});
    let (_, _, b) = new.batch_as(SECRET_KEY, vec![identify("kept"), identify("revoked"), identify("erased")]).await;
    assert_eq!(b["accepted"], json!(1), "{b}");
    let refused: Vec<u64> = b["rejected"].as_array().unwrap().iter().map(|r| r["index"].as_u64().unwrap()).collect();
    assert_eq!(refused, [1, 2], "{b}");
}
