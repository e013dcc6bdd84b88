//! The campaign-results flow, run by `campaigns_e2e` on the embedded cluster and by
//! `real_broker_e2e` against a real broker.

use std::time::Duration;

use serde_json::{Value, json};

use schemas::testing::eventually;

use super::UpWithCampaigns;

/// Not promotional, so the night ban (22:00–06:00 Vietnam time) does not defer it whenever CI runs.
const CAMPAIGNS: &str = r#"
[limits]
package = "basic"
frequency_cap = 5

[[campaign]]
name = "cart_rescue"
trigger = "cart_abandoned"
purpose = "marketing"
promotional = false
channel = "oa_consultation"
text = "Chào {name}, giỏ {cart_value} đ đang chờ bạn"
"#;

fn ev(user: &str, kind: &str, props: Value) -> Value {
    json!({"event_id": uuid::Uuid::new_v4().to_string(), "type": kind, "user": {"zalo_id": user}, "properties": props})
}

/// `zcdp up <extra>` with a cart campaign; a cart reminder sent through the Zalo simulator, then
/// the user's order, credited to the campaign; a cart nobody could be messaged about (no consent)
/// and then ordered counted as recovered too, in `GET /v1/campaigns` and `/metrics`.
pub async fn campaign_flow(extra: &[&str]) {
    let up = UpWithCampaigns::start(CAMPAIGNS, extra);
    let (zcdp, base, sim, received_url) = (up.zcdp, up.base, up.sim, up.received_url);
    let (write, secret) = (zcdp.key("write").to_string(), zcdp.key("secret").to_string());
    let c = reqwest::Client::new();
    let post_as = |key: &str, events: Vec<Value>| {
        let c = c.clone();
        let url = format!("{base}/v1/batch");
        let key = key.to_string();
        async move {
            let r = c.post(url).bearer_auth(key).json(&json!({"events": events})).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["rejected"], json!([]), "{body}");
        }
    };

    // Lan consents to marketing and follows the OA (at Zalo: the simulator's webhook tells the
    // gateway); Minh does not consent: the shop's server records both (its secret key). Both
    // leave a cart (the Mini App's write key).
    post_as(
        &secret,
        vec![
            ev("lan", "consent_changed", json!({"purpose": "marketing", "granted": true})),
            ev("minh", "consent_changed", json!({"purpose": "marketing", "granted": false})),
        ],
    )
    .await;
    let r = c.post(format!("{sim}/sim/oa_events")).json(&json!({"event_name": "follow", "user_id": "oa-lan", "user_id_by_app": "lan"}));
    assert!(r.send().await.unwrap().status().is_success());
    let profile = eventually(Duration::from_secs(30), "lan's follow in her profile", || async {
        let p: Value = c.get(format!("{base}/v1/users/lan/profile")).bearer_auth(&secret).send().await.ok()?.json().await.ok()?;
        (p["oa_following"] == true).then_some(p)
    })
    .await;
    assert_eq!(profile["oa_user_id"], "oa-lan");
    let cart = |user: &str, price: i64| {
        ev(user, "cart_item_added", json!({"cart_id": format!("c-{user}"), "product_id": "cf-suada", "quantity": 2, "price": price}))
    };
    post_as(&write, vec![cart("lan", 175_000), cart("minh", 50_000)]).await;

    // The carts are abandoned 2 s later: a reminder to Lan, Minh's suppressed.
    let campaign = |v: &Value| v["campaigns"].as_array().and_then(|a| a.iter().find(|c| c["campaign"] == "cart_rescue").cloned());
    let get_campaigns = || async {
        let r = c.get(format!("{base}/v1/campaigns")).bearer_auth(&secret).send().await.ok()?;
        r.json::<Value>().await.ok()
    };
    let first = eventually(Duration::from_secs(60), "the reminder sent and the suppression counted", || async {
        let v = get_campaigns().await?;
        campaign(&v).filter(|c| c["sent"] == 1 && c["suppressed"]["no_consent"] == 1)
    })
    .await;
    assert_eq!((first["conversions"].as_i64(), first["carts_triggered"].as_i64()), (Some(0), Some(2)), "{first}");
    let received: Value = c.get(&received_url).send().await.unwrap().json().await.unwrap();
    let to_lan: Vec<&Value> = received["received"].as_array().unwrap().iter().filter(|r| r["to"] == "oa-lan").collect();
    assert_eq!(to_lan.len(), 1, "{received}");
    assert!(to_lan[0]["body"]["message"]["text"].as_str().unwrap().contains("350.000"), "{received}");

    // Both come back and order.
    let order = |user: &str, total: i64| {
        ev(
            user,
            "order_placed",
            json!({"order_id": format!("o-{user}"), "cart_id": format!("c-{user}"), "total": total,
            "items": [{"product_id": "cf-suada", "quantity": 2, "price": total / 2}]}),
        )
    };
    post_as(&write, vec![order("lan", 350_000), order("minh", 100_000)]).await;
    let done = eventually(Duration::from_secs(60), "the conversion and the recoveries", || async {
        let v = get_campaigns().await?;
        campaign(&v).filter(|c| c["carts_recovered"] == 2)
    })
    .await;
    assert_eq!((done["conversions"].as_i64(), done["revenue_vnd"].as_i64()), (Some(1), Some(350_000)), "only Lan was messaged: {done}");
    assert_eq!(done["recovered_revenue_vnd"].as_i64(), Some(450_000), "{done}");
    assert_eq!((done["cost_vnd"].as_i64(), done["revenue_per_vnd"].clone()), (Some(0), Value::Null), "free within the 48 h window");
    assert_eq!(done["conversion_rate"].as_f64(), Some(1.0));
    assert_eq!(done["recovery_rate"].as_f64(), Some(1.0));

    // The same numbers in /metrics; no read key, no answer.
    let metrics = eventually(Duration::from_secs(30), "campaign gauges", || async {
        let m = c.get(format!("{base}/metrics")).send().await.ok()?.text().await.ok()?;
        m.contains("zcdp_campaign_conversions{app=\"demo\",campaign=\"cart_rescue\"} 1").then_some(m)
    })
    .await;
    assert!(metrics.contains("zcdp_campaign_carts_recovered{app=\"demo\",campaign=\"cart_rescue\"} 2"));
    assert!(metrics.contains("zcdp_campaign_suppressed{app=\"demo\",campaign=\"cart_rescue\",reason=\"no_consent\"} 1"));
    assert_eq!(c.get(format!("{base}/v1/campaigns")).send().await.unwrap().status(), 401);
    let (status, _) = zcdp.terminate();
    assert!(status.success());
}
