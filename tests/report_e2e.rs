//! The report page (`GET /report`) in a real headless Chromium (Debian's package, installed by
//! `scripts/test`) after `zcdp up --demo` has sent a minute of traffic: every panel has data, every
//! number on the page equals the API's, and a screenshot is taken
//! (`target/tmp/report.png`). The browser signs in through a one-time link (the admin key never
//! in a URL); without a sign-in the page shows the form and no number.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use schemas::testing::eventually_explained;
use serde_json::Value;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Chromium headless, as this machine's closed network needs it.
fn chromium(profile: &std::path::Path, extra: &[&str], url: &str) -> std::process::Output {
    Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,1700",
            "--virtual-time-budget=15000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium")
}

/// Every `data-k="…" data-v="…"` pair of the page.
fn numbers(dom: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for part in dom.split("data-k=\"").skip(1) {
        let (k, rest) = part.split_once('"').unwrap();
        let v = rest.split("data-v=\"").nth(1).unwrap().split('"').next().unwrap();
        out.insert(k.replace("&amp;", "&"), v.to_string());
    }
    out
}

fn same(page: &str, api: &Value) -> bool {
    match api {
        Value::Null => page.is_empty(),
        // serde_json's default float parsing may differ from the exact value in the last bit.
        Value::Number(n) => page.parse::<f64>().ok().zip(n.as_f64()).is_some_and(|(p, a)| (p - a).abs() <= 1e-12 * a.abs().max(1.0)),
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_page_shows_what_the_api_says_after_a_minute_of_demo_traffic() {
    assert!(
        std::path::Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: scripts/test installs Debian's chromium (apt-get install chromium)"
    );
    let data = tempfile::tempdir().unwrap();
    // 100 events a second for a minute, then the traffic stops so the numbers settle.
    let mut zcdp = support::Zcdp::spawn(&[
        "up",
        "--demo",
        "--demo-rate",
        "100",
        "--demo-events",
        "6000",
        "--cart-timeout",
        "3s",
        "--engagement-refresh",
        "200ms",
        "--http",
        "127.0.0.1:0",
        "--data-dir",
        data.path().to_str().unwrap(),
    ]);
    let line = zcdp.wait_line("report page: http://");
    let url = line.split("report page: ").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    assert!(!line.contains("key="), "no key in the printed URL: {line}");
    let base = url.split("/report").next().unwrap().to_string();
    zcdp.wait_keys();
    let (secret, admin) = (zcdp.key("secret").to_string(), zcdp.key("admin").to_string());
    let c = reqwest::Client::new();
    let api = |path: &'static str| {
        let (c, base, secret) = (c.clone(), base.clone(), secret.clone());
        async move {
            let r = c.get(format!("{base}{path}")).bearer_auth(secret).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            r.json::<Value>().await.unwrap()
        }
    };
    let snapshot =
        || async { (api("/v1/engagement").await, api("/v1/activity").await, api("/v1/segments").await, api("/v1/campaigns").await) };
    // The demo's minute, then until nothing changes for 5 s (late carts, their messages, and
    // the shoppers who come back after one, have all been counted).
    zcdp.wait_line_within("zcdp: demo sent", Duration::from_secs(180));
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = snapshot().await;
    let mut stable_since = Instant::now();
    while stable_since.elapsed() < Duration::from_secs(5) {
        assert!(Instant::now() < deadline, "the API's numbers did not settle within two minutes");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = snapshot().await;
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
    }

    // Timers may still fire after that quiet spell (a shopper's expected next purchase is the
    // last order plus the mean interval between orders: up to a minute after the traffic stops),
    // so the page is compared with the API as read just before and just after it loaded, and
    // loaded again if the two reads differ.
    let profile = data.path().join("chromium");
    // A one-time sign-in link for each load, asked for with the admin key (the secret key may not).
    let page_url = || {
        let (c, base, admin) = (c.clone(), base.clone(), admin.clone());
        async move {
            let r = c.post(format!("{base}/report/links")).bearer_auth(admin).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let link: Value = r.json().await.unwrap();
            format!("{base}{}&refresh=0", link["url"].as_str().unwrap())
        }
    };
    assert_eq!(c.post(format!("{base}/report/links")).bearer_auth(&secret).send().await.unwrap().status(), 403);
    let signed_out = chromium(&data.path().join("chromium-signed-out"), &["--dump-dom"], &format!("{base}/report?refresh=0"));
    let signed_out = String::from_utf8(signed_out.stdout).unwrap();
    let signed_out = signed_out.split("<script>").next().unwrap();
    assert!(
        signed_out.contains("action=\"/report/sign-in\"") && !signed_out.contains("data-k="),
        "signed out: the form, no number: {signed_out}"
    );
    // A link works once.
    let once = page_url().await;
    let first = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap().get(&once).send().await.unwrap();
    assert_eq!(first.status(), 303);
    assert!(first.headers()["set-cookie"].to_str().unwrap().contains("HttpOnly"), "the sign-in cookie is HttpOnly");
    assert_eq!(first.headers()["referrer-policy"], "no-referrer");
    let again = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap().get(&once).send().await.unwrap();
    assert!(again.headers().get("set-cookie").is_none(), "a used link signs nobody in");
    let (dom, (engagement, activity, segments, campaigns)) =
        eventually_explained(Duration::from_secs(120), "a page load during which the API's numbers did not change", || async {
            let before = snapshot().await;
            let out = chromium(&profile, &["--dump-dom"], &page_url().await);
            assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
            let after = snapshot().await;
            if before != after {
                eprintln!("the API's numbers changed while the page loaded: loading it again");
                return Err("they changed during the last load too".to_string());
            }
            Ok((String::from_utf8(out.stdout).unwrap(), after))
        })
        .await;
    assert!(dom.contains("data-loaded=\"1\""), "the page did not load its data: {dom}");
    // What was rendered: the page before its script.
    let rendered = dom.split("<script>").next().unwrap();
    let shown = numbers(rendered);

    // Every panel has data.
    for prefix in
        ["users", "dau", "mau", "events.", "funnel.", "cohort.", "product.", "category.", "segment.", "carts.", "campaign.", "lift."]
    {
        assert!(shown.keys().any(|k| k.starts_with(prefix)), "no {prefix} number on the page");
    }
    assert!(!rendered.contains("no data yet") && !rendered.contains("no campaign has run yet"), "an empty panel: {rendered}");
    assert!(engagement["users"].as_i64().unwrap() > 0 && shown["funnel.ordered"] != "0");
    assert!(campaigns["campaigns"].as_array().unwrap().iter().any(|c| c["sent"].as_i64() > Some(0)), "{campaigns}");

    // Every number equals the API's.
    let mut want: BTreeMap<String, Value> = BTreeMap::new();
    for k in ["users", "dau", "wau", "mau", "stickiness"] {
        want.insert(k.into(), engagement[k].clone());
    }
    // The funnel's steps (its `users` is the overview's).
    for (k, v) in engagement["funnel"].as_object().unwrap().iter().filter(|(k, _)| *k != "users") {
        want.insert(format!("funnel.{k}"), v.clone());
    }
    for c in engagement["retention"].as_array().unwrap().iter().take(10) {
        for k in ["users", "day1", "day7", "day30"] {
            want.insert(format!("cohort.{}.{k}", c["cohort"].as_str().unwrap()), c[k].clone());
        }
    }
    for d in engagement["daily_active"].as_array().unwrap().iter().rev().take(7) {
        want.insert(format!("daily.{}", d["day"].as_str().unwrap()), d["users"].clone());
    }
    for (list, prefix) in [("top_products", "product."), ("top_categories", "category.")] {
        for s in engagement[list].as_array().unwrap().iter().take(10) {
            want.insert(format!("{prefix}{}", s["id"].as_str().unwrap()), s["score"].clone());
        }
    }
    for (t, n) in activity["totals"].as_object().unwrap() {
        want.insert(format!("events.{t}"), n.clone());
    }
    for s in segments["segments"].as_array().unwrap() {
        want.insert(format!("segment.{}", s["name"].as_str().unwrap()), s["size"].clone());
    }
    let (mut triggered, mut recovered, mut recovered_revenue) = (0, 0, 0);
    for c in campaigns["campaigns"].as_array().unwrap() {
        let name = c["campaign"].as_str().unwrap();
        for k in ["sent", "suppressed_total", "deferred", "delivered", "cost_vnd", "conversions", "revenue_vnd", "revenue_per_vnd"] {
            want.insert(format!("campaign.{name}.{k}"), c[k].clone());
        }
        for (r, n) in c["suppressed"].as_object().unwrap() {
            want.insert(format!("campaign.{name}.suppressed.{r}"), n.clone());
        }
        if let Some(l) = c["lift"].as_object() {
            for k in [
                "treatment",
                "control",
                "treatment_conversion_rate",
                "control_conversion_rate",
                "absolute_lift",
                "relative_lift",
                "incremental_orders",
                "incremental_revenue_vnd",
                "cost_per_incremental_order_vnd",
            ] {
                want.insert(format!("lift.{name}.{k}"), l[k].clone());
            }
            for k in ["absolute_lift_ci95", "relative_lift_ci95"] {
                want.insert(format!("lift.{name}.{k}.lo"), l[k].get(0).cloned().unwrap_or(Value::Null));
                want.insert(format!("lift.{name}.{k}.hi"), l[k].get(1).cloned().unwrap_or(Value::Null));
            }
        }
        triggered += c["carts_triggered"].as_i64().unwrap();
        recovered += c["carts_recovered"].as_i64().unwrap();
        recovered_revenue += c["recovered_revenue_vnd"].as_i64().unwrap();
    }
    want.insert("carts.triggered".into(), triggered.into());
    want.insert("carts.recovered".into(), recovered.into());
    want.insert("carts.revenue".into(), recovered_revenue.into());
    want.insert("carts.rate".into(), if triggered > 0 { (recovered as f64 / triggered as f64).into() } else { Value::Null });
    let only_page: Vec<&String> = shown.keys().filter(|k| !want.contains_key(*k)).collect();
    let only_api: Vec<&String> = want.keys().filter(|k| !shown.contains_key(*k)).collect();
    assert!(only_page.is_empty() && only_api.is_empty(), "on the page only: {only_page:?}; in the API only: {only_api:?}");
    for (k, v) in &want {
        assert!(same(&shown[k], v), "{k}: the page shows {:?}, the API says {v}", shown[k]);
    }

    // The screenshot, for people.
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("report.png");
    let _ = std::fs::remove_file(&shot);
    let out = chromium(&profile, &[&format!("--screenshot={}", shot.display())], &page_url().await);
    assert!(out.status.success(), "chromium screenshot failed: {}", String::from_utf8_lossy(&out.stderr));
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "a real screenshot: {} bytes", png.len());
    eprintln!("report screenshot: {}", shot.display());

    let (status, _) = zcdp.terminate();
    assert!(status.success());
}
