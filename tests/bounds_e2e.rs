//! No one client can stop `zcdp up` or hold it (issue 19), tried from outside against the real
//! binary: a hostile user posting the largest events the gateway takes, slow clients, and a role
//! that stops.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use schemas::testing::eventually;
use support::Zcdp;

fn now_ms() -> i64 {
    schemas::time::now_ms()
}

fn event(kind: &str, user: Value, properties: Value) -> Value {
    json!({"event_id": uuid::Uuid::new_v4().to_string(), "type": kind, "user": user, "event_time": now_ms(), "properties": properties})
}

/// Text of exactly `n` bytes, distinct per `tag`.
fn text(tag: &str, n: usize) -> String {
    let mut s = format!("{tag}-");
    while s.len() < n {
        s.push('x');
    }
    s.truncate(n);
    s
}

/// A `cart_viewed` for a new cart, filled with as many lines of the longest ids and names the
/// gateway takes as fit under its 32 KB limit.
fn hostile_cart(cart: usize) -> Value {
    let items: Vec<Value> = (0..40)
        .map(|i| {
            json!({"product_id": text(&format!("p{cart}-{i}"), 128), "product_name": text(&format!("name{i}"), 256),
                   "category": text(&format!("cat{i}"), 256), "quantity": 1_000_000, "price": 10_000_000_000_000i64})
        })
        .collect();
    event("cart_viewed", json!({"anonymous_id": "attacker"}), json!({"cart_id": text(&format!("c{cart}"), 128), "items": items}))
}

/// The worst of issue 19, bounded: one user posts 300 of the largest cart events the gateway
/// accepts (each a new cart of 40 lines, every text at its limit), twenty concurrent requests,
/// while three shoppers browse and add to their carts. The processors keep running, the
/// shoppers' profiles and abandoned carts come out right, the attacker's state stays within its
/// bounds (counted in /metrics), and `zcdp up` stops cleanly at the end: a member that had
/// stopped would make it exit non-zero. (Before the bounds, the carts changelog record grew past
/// what Kafka takes and the member, then `zcdp up`, stopped.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_user_cannot_stop_the_processors() {
    let data = tempfile::tempdir().unwrap();
    let z = Zcdp::start(&["up", "--http", "127.0.0.1:0", "--data-dir", data.path().to_str().unwrap(), "--cart-timeout", "3s"]);
    let base = format!("http://{}", z.http);
    let (write, secret) = (z.key("write").to_string(), z.key("secret").to_string());
    let c = reqwest::Client::new();

    let biggest = serde_json::to_vec(&hostile_cart(0)).unwrap().len();
    assert!((28_000..32 * 1024).contains(&biggest), "a hostile event is {biggest} bytes");
    // Every hostile event made first, so their times are within a second of each other and no
    // cart's deadline passes while the attack is still being read.
    let carts: Vec<Vec<Value>> = (0..20).map(|r| (0..15).map(|i| hostile_cart(r * 15 + i)).collect()).collect();
    let adds: Vec<Value> = (0..300)
        .map(|i| {
            event(
                "cart_item_added",
                json!({"anonymous_id": "attacker"}),
                json!({"cart_id": "one", "product_id": text(&format!("q{i}"), 128), "product_name": text("n", 256), "quantity": 1, "price": 1000}),
            )
        })
        .collect();
    let posts: Vec<_> = carts
        .into_iter()
        .map(|events| {
            let (c, url, key) = (c.clone(), format!("{base}/v1/batch"), write.clone());
            tokio::spawn(async move {
                let r = c.post(url).bearer_auth(key).json(&json!({"events": events})).send().await.unwrap();
                let status = r.status();
                (status, r.json::<Value>().await.unwrap())
            })
        })
        .collect();
    for p in posts {
        let (status, body) = p.await.unwrap();
        assert_eq!((status.as_u16(), &body["accepted"]), (200, &json!(15)), "{body}");
    }
    // One cart with 300 products added one by one, to the same cart.
    for chunk in adds.chunks(100) {
        let r = c.post(format!("{base}/v1/batch")).bearer_auth(&write).json(&json!({"events": chunk})).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }

    // Three shoppers, after the attack.
    let shoppers = ["shopper-1", "shopper-2", "shopper-3"];
    let mut events = Vec::new();
    for s in shoppers {
        let user = json!({"anonymous_id": s});
        events.push(event("product_viewed", user.clone(), json!({"product_id": "cf-suada", "category": "coffee", "price": 35000})));
        events.push(event(
            "cart_item_added",
            user,
            json!({"cart_id": format!("cart-{s}"), "product_id": "cf-suada", "quantity": 2, "price": 35000}),
        ));
    }
    let r = c.post(format!("{base}/v1/batch")).bearer_auth(&write).json(&json!({"events": events})).send().await.unwrap();
    assert_eq!(r.status(), 200);

    for s in shoppers {
        let p = eventually(Duration::from_secs(90), "a shopper's profile", || async {
            let r = c.get(format!("{base}/v1/users/{s}/profile")).bearer_auth(&secret).send().await.ok()?;
            let p: Value = r.json().await.ok()?;
            (p["cart_adds"] == 1 && p["product_views"] == 1).then_some(p)
        })
        .await;
        assert_eq!(p["sessions"], 1, "{s}: {p}");
    }
    // Their carts are abandoned after --cart-timeout: one trigger each, with the right value.
    let kafka = schemas::kafka::Kafka::external(&schemas::kafka::KafkaArgs {
        brokers: Some(z.bootstrap.clone()),
        partitions: 1,
        replication_factor: 1,
        ..Default::default()
    })
    .unwrap();
    let triggers = eventually(Duration::from_secs(90), "the shoppers' abandoned carts", || async {
        let k = kafka.clone();
        let records =
            tokio::task::spawn_blocking(move || k.read_to_end("zmp.cart-triggers.v1", Duration::from_secs(10))).await.ok()?.ok()?;
        let triggers: Vec<schemas::derived::CartTrigger> =
            records.iter().filter_map(|m| rdkafka::Message::payload(m).and_then(|p| schemas::codec::decode(p).ok())).collect();
        shoppers.iter().all(|s| triggers.iter().any(|t| t.user.key == *s)).then_some(triggers)
    })
    .await;
    for s in shoppers {
        let t: Vec<_> = triggers.iter().filter(|t| t.user.key == s).collect();
        assert_eq!(t.len(), 1, "{s}");
        assert_eq!(t[0].value, 70000, "{s}");
    }
    // The attacker's state stayed bounded: carts pushed out, lines not added, all counted.
    let attacker: Vec<_> = triggers.iter().filter(|t| t.user.key == "attacker").collect();
    assert!(attacker.len() <= 5, "{} abandoned carts for one user; the bound is 5 open at once", attacker.len());
    assert!(attacker.iter().all(|t| t.items.len() <= 100), "a cart over 100 lines");
    let metrics = c.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    for bound in ["open_carts", "lines_per_cart"] {
        let line = metrics
            .lines()
            .find(|l| l.starts_with("zcdp_process_bounded_total") && l.contains(&format!("bound=\"{bound}\"")))
            .unwrap_or_else(|| panic!("no zcdp_process_bounded_total for {bound}"));
        let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n > 0.0, "{line}");
    }
    assert_eq!(c.get(format!("{base}/healthz")).send().await.unwrap().status(), 200);
    let (status, rest) = z.terminate();
    assert!(status.success(), "zcdp up did not stop cleanly: {rest:?}");
    assert!(!rest.iter().any(|l| l.contains("stopped (")), "a role stopped: {rest:?}");
}

/// Reads from `s` until the server closes it (or errors): how long that took and what it
/// answered, if within `within`.
async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> Option<(Duration, String)> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let mut answer = Vec::new();
    let deadline = started + within;
    loop {
        match tokio::time::timeout_at(deadline.into(), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((started.elapsed(), String::from_utf8_lossy(&answer).into_owned())),
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
        }
    }
}

/// Slow clients cannot hold the server (issue 19, point 8): a connection that sends nothing, one
/// that trickles its headers, one that never finishes its body and one left idle after a request
/// are all cut at the time-outs; with every connection slot taken by trickling clients, a real
/// request still gets through once they are cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_at_the_time_outs() {
    let data = tempfile::tempdir().unwrap();
    let z = Zcdp::start(&[
        "up",
        "--http",
        "127.0.0.1:0",
        "--data-dir",
        data.path().to_str().unwrap(),
        "--http-header-timeout",
        "1s",
        "--http-body-timeout",
        "2s",
        "--http-max-connections",
        "8",
    ]);
    let addr = z.http.clone();
    let connect = || async { tokio::net::TcpStream::connect(&addr).await.unwrap() };
    let limit = Duration::from_secs(6);

    // Says nothing.
    let mut silent = connect().await;
    let (t, _) = closed_within(&mut silent, limit).await.expect("a silent connection is closed");
    assert!(t >= Duration::from_millis(800), "closed after {t:?}");

    // Trickles its headers, a byte every 200 ms.
    let (mut r, mut w) = connect().await.into_split();
    let writer = tokio::spawn(async move {
        for b in b"GET /healthz HTTP/1.1\r\nHost: zcdp\r\nX-Slow: ".iter().cycle().take(100) {
            if w.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let cut = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 256];
        while let Ok(n) = r.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    assert!(cut.is_ok(), "a client trickling its headers held the connection for {limit:?}");
    writer.abort();

    // Headers, then half a body, then nothing: an error answer, and the connection closed.
    let mut half = connect().await;
    let head = format!(
        "POST /v1/batch HTTP/1.1\r\nHost: zcdp\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"events\":[",
        z.key("write")
    );
    half.write_all(head.as_bytes()).await.unwrap();
    let (t, answer) = closed_within(&mut half, limit).await.expect("a body that never ends holds the connection");
    assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("bad_body"), "{answer}");
    assert!(t >= Duration::from_millis(1500), "cut after {t:?}, before the body time-out");

    // A finished request on a kept-alive connection, then idle.
    let mut idle = connect().await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: zcdp\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 256];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    assert!(closed_within(&mut idle, limit).await.is_some(), "an idle kept-alive connection is kept forever");

    // Every slot taken by clients that never finish their headers: a real request waits for the
    // header time-out to free a slot, then is answered.
    let mut holders = Vec::new();
    for _ in 0..8 {
        let mut s = connect().await;
        s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        holders.push(s);
    }
    let started = Instant::now();
    let r = reqwest::Client::new().get(format!("http://{addr}/healthz")).timeout(limit).send().await.expect("answered once slots free up");
    assert_eq!(r.status(), 200);
    // It waited for a slot: the cap held.
    assert!(started.elapsed() >= Duration::from_millis(500), "answered after {:?}: no slot was taken", started.elapsed());
    assert!(started.elapsed() < limit);
    drop(holders);
    let (status, _) = z.terminate();
    assert!(status.success());
}

/// `zcdp up` watches its roles (issue 19, point 9): when the messaging sink stops — here because
/// its Zalo token file can no longer be written, so a rotated refresh token could not be kept —
/// `zcdp up` says which role stopped and why, and exits non-zero, instead of serving on with
/// messaging dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_stops_and_says_so_when_the_sink_stops() {
    let data = tempfile::tempdir().unwrap();
    let mut z = Zcdp::start(&[
        "up",
        "--demo",
        "--demo-rate",
        "40",
        "--cart-timeout",
        "5s",
        "--http",
        "127.0.0.1:0",
        "--data-dir",
        data.path().to_str().unwrap(),
    ]);
    // The token file of this run, written at start; a directory in its place cannot be replaced
    // by a rename, whoever runs the test.
    let pid = z.pid();
    let file = data.path().join(format!("embedded-{pid}")).join(format!("zalo-sim-tokens-{pid}.json"));
    assert!(file.exists(), "no token file at {}", file.display());
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    std::fs::write(file.join("keep"), b"x").unwrap();

    // The demo's first message needs a token: the refresh finds nowhere to keep its successor.
    let line = z.wait_line_within("stopped (", Duration::from_secs(240));
    assert!(line.contains("the messaging sink stopped"), "{line}");
    let (status, rest) = z.wait_exit(Duration::from_secs(60));
    assert!(!status.success(), "zcdp up exited 0 with messaging dead: {rest:?}");
}
