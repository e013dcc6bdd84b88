//! The query API inside `zcdp up`: what a Mini App reads back after it posted events — the
//! profile, recommendations and the app's engagement — with a read key.

mod support;

use std::time::Duration;

use std::collections::BTreeMap;

use rdkafka::Message;
use serde_json::{Value, json};

use schemas::kafka::{Kafka, KafkaArgs};
use schemas::testing::{eventually, eventually_explained, read_to_end};
use schemas::topics::Topic;
use support::Zcdp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_recommendations_and_engagement_answer_what_was_posted() {
    let data = tempfile::tempdir().unwrap();
    let zcdp = Zcdp::start(&["up", "--http", "127.0.0.1:0", "--engagement-refresh", "200ms", "--data-dir", data.path().to_str().unwrap()]);
    let base = format!("http://{}", zcdp.http);
    let (write, secret, admin): (&'static str, &'static str, &'static str) =
        (zcdp.key("write").to_string().leak(), zcdp.key("secret").to_string().leak(), zcdp.key("admin").to_string().leak());
    let client = reqwest::Client::new();
    let ev = |user: &str, kind: &str, props: Value| {
        json!({"event_id": uuid::Uuid::new_v4().to_string(), "type": kind, "user": {"zalo_id": user},
               "context": {"screen": "/p", "utm_source": "zalo_oa", "utm_campaign": "tet"}, "properties": props})
    };
    let events = vec![
        ev("lan", "product_viewed", json!({"product_id": "cf-suada", "category": "coffee", "price": 35000, "dwell_ms": 20000})),
        ev(
            "lan",
            "cart_item_added",
            json!({"cart_id": "c1", "product_id": "cf-suada", "category": "coffee", "quantity": 2, "price": 35000}),
        ),
        ev("lan", "checkout_started", json!({"cart_id": "c1"})),
        ev(
            "lan",
            "order_placed",
            json!({"order_id": "o1", "cart_id": "c1", "total": 70000, "items": [{"product_id": "cf-suada", "category": "coffee", "quantity": 2, "price": 35000}]}),
        ),
        ev("minh", "product_viewed", json!({"product_id": "tea-dao", "category": "tea", "price": 49000, "dwell_ms": 5000})),
    ];
    let r = client.post(format!("{base}/v1/batch")).bearer_auth(write).json(&json!({"events": events})).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let get = |path: String, key: Option<&'static str>| {
        let client = client.clone();
        async move {
            let mut req = client.get(path);
            if let Some(k) = key {
                req = req.bearer_auth(k);
            }
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // Profiles are written at the processors' commit (every second), then read by the view.
    let profile = eventually(Duration::from_secs(30), "lan's profile with her order", || async {
        let (s, p) = get(format!("{base}/v1/users/lan/profile"), Some(secret)).await;
        (s == 200 && p["orders"] == 1).then_some(p)
    })
    .await;
    assert_eq!(profile["revenue"], 70000);
    assert_eq!(profile["funnel_stage"], "purchase");
    assert_eq!(profile["lifecycle"], "new");
    assert_eq!(profile["first_touch"]["utm_campaign"], "tet");
    assert_eq!(profile["first_touch"]["conversions"], 1);

    // Lan's own interest first; Minh's product fills the list as trending.
    let recs = eventually(Duration::from_secs(30), "recommendations with a trending fill", || async {
        let (s, r) = get(format!("{base}/v1/users/lan/recommendations?limit=5"), Some(secret)).await;
        (s == 200 && r["items"].as_array().is_some_and(|i| i.len() == 2)).then_some(r)
    })
    .await;
    assert_eq!(recs["personalised"], true);
    assert_eq!(recs["items"][0]["product_id"], "cf-suada");
    assert_eq!(recs["items"][0]["reason"], "interest");
    assert_eq!(recs["items"][1]["product_id"], "tea-dao");
    assert_eq!(recs["items"][1]["reason"], "trending");
    // Someone the app has never seen still gets the trending products.
    let (s, r) = get(format!("{base}/v1/users/nobody/recommendations"), Some(secret)).await;
    assert_eq!((s, &r["personalised"]), (200, &json!(false)));
    assert_eq!(r["items"][0]["reason"], "trending");

    let engagement = eventually(Duration::from_secs(30), "engagement of both users", || async {
        let (s, e) = get(format!("{base}/v1/engagement"), Some(secret)).await;
        (s == 200 && e["users"] == 2).then_some(e)
    })
    .await;
    assert_eq!((engagement["dau"].clone(), engagement["mau"].clone(), engagement["stickiness"].clone()), (json!(2), json!(2), json!(1.0)));
    assert_eq!(engagement["funnel"], json!({"users": 2, "viewed_product": 2, "added_to_cart": 1, "started_checkout": 1, "ordered": 1}));
    assert_eq!(engagement["retention"][0]["users"], 2);
    assert_eq!(engagement["top_categories"][0]["id"], "coffee");

    // Both are new: members of the shipped segment new_first_week, a page at a time.
    let seg = format!("{base}/v1/segments/new_first_week/members");
    let members = eventually(Duration::from_secs(30), "both users in new_first_week", || async {
        let (s, m) = get(seg.clone(), Some(secret)).await;
        (s == 200 && m["members"].as_array().is_some_and(|a| a.len() == 2)).then_some(m)
    })
    .await;
    assert_eq!(members["members"][0]["user_key"], "lan");
    assert_eq!(members["members"][1]["zalo_id"], "minh");
    let (_, page) = get(format!("{seg}?limit=1"), Some(secret)).await;
    assert_eq!((page["members"].as_array().unwrap().len(), page["next_after"].as_str()), (1, Some("lan")));
    let (_, page) = get(format!("{seg}?limit=1&after=lan"), Some(secret)).await;
    assert_eq!((page["members"][0]["user_key"].as_str(), &page["next_after"]), (Some("minh"), &Value::Null));
    let (s, e) = get(format!("{base}/v1/segments/no_such/members"), Some(secret)).await;
    assert_eq!((s, e["error"].as_str()), (404, Some("unknown_segment")));

    // Keys and inputs are checked.
    assert_eq!(get(format!("{base}/v1/users/lan/profile"), None).await.0, 401);
    assert_eq!(get(format!("{base}/v1/users/lan/profile"), Some(write)).await.0, 403, "a write key does not read");
    assert_eq!(get(format!("{base}/v1/users/lan/profile"), Some("not-a-key")).await.0, 401);
    assert_eq!(get(format!("{base}/v1/engagement"), Some(write)).await.0, 403, "a write key does not read the app's engagement");
    assert_eq!(get(format!("{base}/v1/users/nobody/profile"), Some(secret)).await.0, 404);
    let (s, e) = get(format!("{base}/v1/users/lan/recommendations?limit=0"), Some(secret)).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("bad_limit")));

    // Erasure: accepted with the admin key only; then no store and no compacted topic keeps Lan.
    let delete = |key: Option<&'static str>| {
        let client = client.clone();
        let url = format!("{base}/v1/users/lan");
        async move {
            let mut req = client.delete(url);
            if let Some(k) = key {
                req = req.bearer_auth(k);
            }
            req.send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(delete(None).await, 401);
    assert_eq!(delete(Some(write)).await, 403);
    assert_eq!(delete(Some(secret)).await, 403, "a secret key does not erase");
    assert_eq!(delete(Some(admin)).await, 202);
    eventually(Duration::from_secs(30), "lan's profile gone from the API", || async {
        (get(format!("{base}/v1/users/lan/profile"), Some(secret)).await.0 == 404).then_some(())
    })
    .await;
    let (_, r) = get(format!("{base}/v1/users/lan/recommendations"), Some(secret)).await;
    assert_eq!(r["personalised"], false);
    eventually(Duration::from_secs(30), "lan out of the segment's members", || async {
        let (_, m) = get(seg.clone(), Some(secret)).await;
        (m["members"].as_array().map(Vec::len) == Some(1)).then_some(())
    })
    .await;
    let kafka =
        Kafka::external(&KafkaArgs { brokers: Some(zcdp.bootstrap.clone()), partitions: 6, replication_factor: 1, ..KafkaArgs::default() })
            .unwrap();
    let latest = |topic: String| {
        let kafka = kafka.clone();
        async move {
            let msgs = tokio::task::spawn_blocking(move || read_to_end(&kafka, &topic, Duration::from_secs(30)).unwrap()).await.unwrap();
            let mut out: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
            for m in msgs {
                out.insert(m.key().unwrap_or_default().to_vec(), m.payload().map(<[u8]>::to_vec));
            }
            out
        }
    };
    let lan_key = |k: &[u8]| k == b"lan" || k.ends_with(b"/lan") || k == b"demo\x1flan";
    let mut topics: Vec<String> = [Topic::Profiles, Topic::Interests, Topic::Audiences].iter().map(|t| t.name().to_string()).collect();
    topics.extend(["sessions", "interests", "carts", "profiles"].map(|s| processors::runtime::checkpoint::changelog_topic("cdp", s)));
    // The API answers from records emitted between commits; the stores' changelogs are written
    // at the commit after the erasure: wait for it, then every key of Lan's is a tombstone.
    for topic in topics {
        let what = format!("{topic}: every key of lan's ends in a tombstone");
        eventually_explained(Duration::from_secs(30), &what, || async {
            let values = latest(topic.clone()).await;
            let lan: Vec<_> = values.iter().filter(|(k, _)| lan_key(k)).collect();
            if lan.is_empty() && !topic.contains("sessions") && !topic.contains("carts") {
                return Err(format!("{topic} has no key of lan's yet"));
            }
            match lan.iter().find(|(_, v)| v.is_some()) {
                Some((k, _)) => Err(format!("the latest value of {} is not a tombstone", String::from_utf8_lossy(k))),
                None => Ok(()),
            }
        })
        .await;
    }
    // The same from the command line.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zcdp"))
        .args(["users", "forget", "minh", "--app", "demo", "--brokers", &zcdp.bootstrap])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eventually(Duration::from_secs(30), "minh's profile gone", || async {
        (get(format!("{base}/v1/users/minh/profile"), Some(secret)).await.0 == 404).then_some(())
    })
    .await;

    let (status, _) = zcdp.terminate();
    assert!(status.success());
}

/// The HTTP contract lets one batch (here from the shop's server) carry a consent after the
/// `identify` that needs it. The profiles apply consents in the order they read them, so the
/// gateway writes such an identify after the batch's other events: the name and the phone must
/// end up in the profile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_before_its_consent_in_the_same_batch_reaches_the_profile() {
    let data = tempfile::tempdir().unwrap();
    let zcdp = Zcdp::start(&["up", "--http", "127.0.0.1:0", "--data-dir", data.path().to_str().unwrap()]);
    let base = format!("http://{}", zcdp.http);
    // The shop's server (its secret key) sets a phone; a Mini App cannot.
    let secret = zcdp.key("secret").to_string();
    let client = reqwest::Client::new();
    let ev = |kind: &str, props: Value| json!({"event_id": uuid::Uuid::new_v4().to_string(), "type": kind, "user": {"zalo_id": "hoa"}, "properties": props});
    let events = vec![
        ev("identify", json!({"traits": {"name": "Hoa", "city": "Đà Nẵng"}, "phone": "0912 345 678"})),
        ev("consent_changed", json!({"purpose": "profile", "granted": true})),
        ev("consent_changed", json!({"purpose": "phone", "granted": true})),
    ];
    let r = client.post(format!("{base}/v1/batch")).bearer_auth(&secret).json(&json!({"events": events})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["accepted"], 3, "{answer}");

    let profile = eventually(Duration::from_secs(30), "hoa's profile with her consents", || async {
        let r = client.get(format!("{base}/v1/users/hoa/profile")).bearer_auth(&secret).send().await.ok()?;
        let p: Value = r.json().await.ok()?;
        (p["consents"].as_array().is_some_and(|c| c.len() == 2)).then_some(p)
    })
    .await;
    assert_eq!(profile["name"], "Hoa", "{profile}");
    assert_eq!(profile["phone"], "84912345678", "{profile}");
}
