//! Apps do not see each other (issue 19, point 3): one deployment serving two apps, and the same
//! user key in both — two different people. Everything one app knows of its user is kept under
//! keys that name the app, so erasing the user in one app leaves the other's profile, interests,
//! segment memberships and consents as they were, in the query API and in the compacted topics.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::Message;
use serde_json::{Value, json};

use schemas::kafka::{Kafka, KafkaArgs};
use schemas::testing::{eventually, read_to_end};
use schemas::topics::Topic;
use support::Zcdp;

const A: (&str, &str, &str, &str) =
    ("demo", "zcdp_write_demo_0123456789ab", "zcdp_secret_demo_0123456789ab", "zcdp_admin_demo_0123456789ab");
const B: (&str, &str, &str, &str) =
    ("shop-b", "zcdp_write_shopb_0123456789ab", "zcdp_secret_shopb_0123456789ab", "zcdp_admin_shopb_0123456789ab");

/// The latest value (None: a tombstone) of every key of a topic that names user `lan`.
async fn latest_of_lan(kafka: &Kafka, topic: &'static str) -> BTreeMap<String, Option<Vec<u8>>> {
    let kafka = kafka.clone();
    let msgs = tokio::task::spawn_blocking(move || read_to_end(&kafka, topic, Duration::from_secs(30)).unwrap()).await.unwrap();
    let mut out = BTreeMap::new();
    for m in msgs {
        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
        if key.split('/').any(|part| part == "lan") {
            out.insert(key, m.payload().map(<[u8]>::to_vec));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_a_user_in_one_app_leaves_the_same_user_key_in_another() {
    let dir = tempfile::tempdir().unwrap();
    let keys = |i: usize| {
        let pick = |app: (&str, &str, &str, &str)| [app.1, app.2, app.3][i].to_string();
        format!("{}:{},{}:{}", A.0, pick(A), B.0, pick(B))
    };
    let (write, secret, admin) = (keys(0), keys(1), keys(2));
    let z = Zcdp::start(&[
        "up",
        "--http",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--write-keys",
        &write,
        "--secret-keys",
        &secret,
        "--admin-keys",
        &admin,
    ]);
    let base = format!("http://{}", z.http);
    let c = reqwest::Client::new();
    // The shop's server of each app tells about its own Lan: consents, her name, a product seen.
    let ev = |kind: &str, props: Value| json!({"event_id": uuid::Uuid::new_v4().to_string(), "type": kind, "user": {"zalo_id": "lan"}, "properties": props});
    let post = |key: &'static str, events: Vec<Value>| {
        let (c, url) = (c.clone(), format!("{base}/v1/batch"));
        async move { c.post(url).bearer_auth(key).json(&json!({"events": events})).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    for (app, name, product) in [(A, "Lan of demo", "cf-suada"), (B, "Lan of shop-b", "tea-dao")] {
        let b = post(
            app.2,
            vec![
                ev("consent_changed", json!({"purpose": "profile", "granted": true})),
                ev("consent_changed", json!({"purpose": "marketing", "granted": true})),
            ],
        )
        .await;
        assert_eq!(b["accepted"], 2, "{b}");
        let b = post(
            app.2,
            vec![
                ev("identify", json!({"traits": {"name": name}})),
                ev("product_viewed", json!({"product_id": product, "category": "drinks"})),
            ],
        )
        .await;
        assert_eq!(b["accepted"], 2, "{b}");
    }
    let get = |path: String, key: &'static str| {
        let c = c.clone();
        async move {
            let r = c.get(path).bearer_auth(key).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let ready = |app: (&'static str, &'static str, &'static str, &'static str), name: &'static str| {
        let get = get.clone();
        let base = base.clone();
        async move {
            eventually(Duration::from_secs(60), "each app's own Lan, in a segment and with interests", || async {
                let (s, p) = get(format!("{base}/v1/users/lan/profile"), app.2).await;
                let (_, m) = get(format!("{base}/v1/segments/new_first_week/members"), app.2).await;
                let (_, r) = get(format!("{base}/v1/users/lan/recommendations"), app.2).await;
                (s == 200
                    && p["name"] == name
                    && m["members"].as_array()?.iter().any(|x| x["user_key"] == "lan")
                    && r["personalised"] == true)
                    .then_some(())
            })
            .await
        }
    };
    ready(A, "Lan of demo").await;
    ready(B, "Lan of shop-b").await;
    let kafka =
        Kafka::external(&KafkaArgs { brokers: Some(z.bootstrap.clone()), partitions: 6, replication_factor: 1, ..KafkaArgs::default() })
            .unwrap();
    let before: Vec<_> = [Topic::Profiles, Topic::Interests, Topic::Audiences, Topic::Consents].iter().map(|t| t.name()).collect();
    for topic in &before {
        let keys = latest_of_lan(&kafka, topic).await;
        for app in [A.0, B.0] {
            assert!(keys.iter().any(|(k, v)| k.starts_with(&format!("{app}/")) && v.is_some()), "{topic}: {app}'s Lan: {keys:?}");
        }
    }

    // demo erases its Lan.
    let r = c.delete(format!("{base}/v1/users/lan")).bearer_auth(A.3).send().await.unwrap();
    assert_eq!(r.status(), 202);
    eventually(Duration::from_secs(60), "demo's Lan gone from the query API", || async {
        let (s, _) = get(format!("{base}/v1/users/lan/profile"), A.2).await;
        let (_, m) = get(format!("{base}/v1/segments/new_first_week/members"), A.2).await;
        (s == 404 && !m["members"].as_array()?.iter().any(|x| x["user_key"] == "lan")).then_some(())
    })
    .await;
    // shop-b's Lan is all there: profile, segment, interests, and her consent (an identify is
    // still admitted), where demo's consent is gone.
    ready(B, "Lan of shop-b").await;
    let b = post(B.2, vec![ev("identify", json!({"traits": {"name": "Lan of shop-b"}}))]).await;
    assert_eq!(b["accepted"], 1, "shop-b's consent kept: {b}");
    let b = post(A.2, vec![ev("identify", json!({"traits": {"name": "Lan of demo"}}))]).await;
    assert_eq!(b["rejected"][0]["code"], "no_consent", "demo's consent forgotten: {b}");
    // In the compacted topics: every demo key of Lan's ends in a tombstone, shop-b's keep values.
    for topic in &before {
        let keys = eventually(Duration::from_secs(30), "demo's tombstones written", || async {
            let keys = latest_of_lan(&kafka, topic).await;
            keys.iter().filter(|(k, _)| k.starts_with("demo/")).all(|(_, v)| v.is_none()).then_some(keys)
        })
        .await;
        assert!(keys.iter().any(|(k, v)| k.starts_with("shop-b/") && v.is_some()), "{topic}: shop-b's Lan kept: {keys:?}");
        assert!(keys.iter().filter(|(k, _)| k.starts_with("shop-b/")).all(|(_, v)| v.is_some()), "{topic}: {keys:?}");
    }
    let (status, _) = z.terminate();
    assert!(status.success());
}

/// Upgrading from a version whose `zmp.profiles.v1` / `zmp.interests.v1` were keyed by user and
/// `zmp.audiences.v1` by `segment/user`: `zcdp topics migrate-keys` moves each latest old-key
/// record to its app's key on the same partition and deletes the old key; it never undoes an
/// erasure, never overwrites a newer record, never deletes a record already under its own key
/// (a user key holding `/`), and changes nothing the second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_keys_moves_old_records_to_their_apps_keys() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use schemas::derived::{AudienceChange, Profile, UserInterests};

    let cluster = std::sync::Arc::new(schemas::kafka::EmbeddedCluster::start(1).unwrap());
    let kafka = Kafka::embedded(cluster.clone(), 3);
    kafka.ensure_catalogue().await.unwrap();
    let producer: FutureProducer = kafka.producer_config().create().unwrap();
    let put = |topic: Topic, key: &str, payload: Option<Vec<u8>>| {
        let (producer, key) = (producer.clone(), key.to_string());
        async move {
            let mut r = FutureRecord::<str, [u8]>::to(topic.name()).partition(1).key(&key);
            if let Some(p) = &payload {
                r = r.payload(p);
            }
            producer.send(r, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
        }
    };
    let profile = |app: &str, user: &str, name: &str| {
        let p = Profile { app_id: app.into(), user_key: user.into(), name: Some(name.into()), ..Profile::default() };
        Some(schemas::codec::encode(&p).unwrap())
    };
    // Old keys: lan (demo), minh (demo, since erased), an (demo, changed since), and demo's
    // user `shop-b/x`, whose old key is shop-b's new key for `x` — already written since.
    put(Topic::Profiles, "lan", profile("demo", "lan", "Lan old")).await;
    put(Topic::Profiles, "minh", profile("demo", "minh", "Minh")).await;
    put(Topic::Profiles, "an", profile("demo", "an", "An old")).await;
    put(Topic::Profiles, "shop-b/x", profile("demo", "shop-b/x", "X of demo")).await;
    put(Topic::Profiles, "demo/minh", None).await;
    put(Topic::Profiles, "demo/an", profile("demo", "an", "An new")).await;
    put(Topic::Profiles, "shop-b/x", profile("shop-b", "x", "X of shop-b")).await;
    let interests = UserInterests { app_id: "demo".into(), user_key: "lan".into(), ..UserInterests::default() };
    put(Topic::Interests, "lan", Some(schemas::codec::encode(&interests).unwrap())).await;
    let entry = AudienceChange { app_id: "demo".into(), segment: "vip".into(), user_key: "lan".into(), member: true, ..Default::default() };
    put(Topic::Audiences, "vip/lan", Some(schemas::codec::encode(&entry).unwrap())).await;

    let migrate = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_zcdp"))
            .args(["topics", "migrate-keys", "--brokers", &kafka.bootstrap, "--partitions", "3", "--replication-factor", "1"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let first = migrate();
    assert!(first.contains("zmp.profiles.v1: 1 records moved to app keys, 3 old keys deleted"), "{first}");
    assert!(first.contains("zmp.interests.v1: 1 records moved to app keys, 1 old keys deleted"), "{first}");
    assert!(first.contains("zmp.audiences.v1: 1 records moved to app keys, 1 old keys deleted"), "{first}");
    let latest = |topic: Topic| {
        let kafka = kafka.clone();
        async move {
            let msgs =
                tokio::task::spawn_blocking(move || read_to_end(&kafka, topic.name(), Duration::from_secs(30)).unwrap()).await.unwrap();
            let mut out = BTreeMap::new();
            for m in msgs {
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                out.insert(
                    key,
                    m.payload().map(|p| schemas::codec::decode::<Profile>(p).map(|p| p.name.unwrap_or_default()).unwrap_or_default()),
                );
            }
            out
        }
    };
    let profiles = latest(Topic::Profiles).await;
    let want: BTreeMap<String, Option<String>> = [
        ("lan", None),
        ("demo/lan", Some("Lan old")),
        ("minh", None),
        ("demo/minh", None),
        ("an", None),
        ("demo/an", Some("An new")),
        ("shop-b/x", Some("X of shop-b")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
    .collect();
    assert_eq!(profiles, want);
    assert!(latest(Topic::Interests).await["demo/lan"].is_some());
    assert!(latest(Topic::Audiences).await["demo/vip/lan"].is_some());
    let second = migrate();
    assert_eq!(second.matches("0 records moved to app keys, 0 old keys deleted").count(), 3, "{second}");
}
