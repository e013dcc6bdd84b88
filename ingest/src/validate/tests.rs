//! The reader against the contract: times, every check's rejection, repeated members, escapes,
//! and records byte for byte.

use super::checks::*;
use super::*;
use chrono::DateTime;
use serde_json::{Value, json};

const NOW: i64 = 1_795_000_000_000;

#[test]
fn trim_is_str_trim() {
    for t in ["", "a", " a", "a ", "\ta\n", "\u{a0}x", "x\u{3000}", "\u{85}", "ệ", " ệ ", "a b", "\u{1}a", "a\u{7f}"] {
        assert_eq!(trim(t), t.trim(), "{t:?}");
    }
}

/// The fast reading of RFC 3339 times gives chrono's value whenever it gives one, and
/// leaves everything it does not read exactly to chrono.
#[test]
fn fast_rfc3339_agrees_with_chrono() {
    let chrono_ms = |s: &str| DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis());
    let mut texts: Vec<String> = Vec::new();
    for year in [1900, 1969, 1970, 1999, 2000, 2024, 2026, 2100, 9999] {
        for month in 0..=13 {
            for day in [0, 1, 15, 28, 29, 30, 31, 32] {
                texts.push(format!("{year:04}-{month:02}-{day:02}T12:30:45Z"));
            }
        }
    }
    let clocks = ["00:00:00", "23:59:59", "24:00:00", "12:60:00", "12:00:60", "1:00:00", "12:0a:00"];
    let fractions = ["", ".1", ".12", ".123", ".1234", ".999999999", ".1234567891", ".", ".x"];
    let offsets =
        ["Z", "z", "+00:00", "-00:00", "+07:00", "-03:30", "+23:59", "-23:59", "+24:00", "+07:60", "+0700", "+07", "", "Z ", "+07:00x"];
    for clock in clocks {
        for fraction in fractions {
            for offset in offsets {
                texts.push(format!("1970-01-01T{clock}{fraction}{offset}"));
                texts.push(format!("2026-02-28T{clock}{fraction}{offset}"));
            }
        }
    }
    texts.extend(
        ["2026-11-23t09:30:00Z", "2026-11-23 09:30:00Z", "2026-11-23T09:30:00−07:00", "２026-11-23T09:30:00Z", "", "2026"]
            .map(String::from),
    );
    let mut fast = 0;
    for t in &texts {
        if let Some(ms) = rfc3339_millis(t) {
            fast += 1;
            assert_eq!(Some(ms), chrono_ms(t), "{t}");
        }
    }
    assert!(fast > 500, "the fast path read only {fast} of {}", texts.len());
    // What SDKs send is read by the fast path.
    for t in ["2026-11-23T09:30:00Z", "2026-11-23T09:30:00.123Z", "2026-11-23T09:30:00+07:00", "2026-11-23T09:30:00.5-03:30"] {
        assert_eq!(rfc3339_millis(t), chrono_ms(t), "{t}");
        assert!(rfc3339_millis(t).is_some(), "{t}");
    }
}

fn receipt() -> Receipt<'static> {
    Receipt { app_id: "demo", received_at: NOW, sent_at: None }
}

fn base(kind: &str, props: Value) -> Value {
    json!({
        "event_id": "5A1F7C2E-3B4D-4E5F-8A9B-0C1D2E3F4A5B",
        "type": kind,
        "user": {"zalo_id": "5012345678901234567"},
        "properties": props,
    })
}

fn parse(v: &Value) -> Result<ParsedEvent> {
    parse_event(&v.to_string(), &receipt())
}

fn code(v: &Value) -> RejectCode {
    parse(v).expect_err("should be rejected").code
}

#[test]
fn a_product_view_becomes_a_view_event() {
    let v = base("product_viewed", json!({"product_id": 123, "category": "coffee", "price": 35000, "dwell_ms": 5400, "color": "đen"}));
    let p = parse(&v).unwrap();
    let InputEvent::View(e) = p.event() else { panic!() };
    assert_eq!(e.event_id, "5a1f7c2e-3b4d-4e5f-8a9b-0c1d2e3f4a5b");
    assert_eq!(e.user.key, "5012345678901234567");
    assert_eq!(e.properties.product_id.as_deref(), Some("123"));
    assert_eq!(e.properties.price, Some(35000));
    assert_eq!(e.properties.custom.get("color").map(String::as_str), Some("đen"));
    assert!(p.needs_consent.is_empty());
}

#[test]
fn anonymous_users_are_keyed_by_their_device_id() {
    let v = json!({"event_id": "5a1f7c2e-3b4d-4e5f-8a9b-0c1d2e3f4a5b", "type": "page_viewed", "user": {"anonymous_id": "dev-1"}});
    assert_eq!(parse(&v).unwrap().event().user().key, "dev-1");
}

#[test]
fn required_fields_are_named_when_missing() {
    let mut v = base("page_viewed", json!({}));
    v.as_object_mut().unwrap().remove("event_id");
    let r = parse(&v).unwrap_err();
    assert_eq!(r.code, RejectCode::MissingField);
    assert!(r.message.contains("event_id"), "{}", r.message);

    let r = parse(&base("cart_item_added", json!({"cart_id": "c1", "product_id": "p"}))).unwrap_err();
    assert_eq!(r.code, RejectCode::MissingField);
    assert!(r.message.contains("properties.quantity"), "{}", r.message);

    assert_eq!(code(&base("order_placed", json!({"order_id": "o1", "total": 5}))), RejectCode::MissingField);
    assert_eq!(code(&base("search", json!({}))), RejectCode::MissingField);
}

#[test]
fn bad_values_are_refused() {
    assert_eq!(code(&base("nonsense", json!({}))), RejectCode::UnknownType);
    // An erasure request is zcdp's own: a client cannot send one.
    assert_eq!(code(&base("user_forgotten", json!({}))), RejectCode::UnknownType);
    let mut v = base("page_viewed", json!({}));
    v["event_id"] = json!("not-a-uuid");
    assert_eq!(code(&v), RejectCode::InvalidValue);
    let r = parse(&base("product_viewed", json!({"product_id": "p", "price": 35000.5}))).unwrap_err();
    assert_eq!(r.code, RejectCode::InvalidValue);
    assert!(r.message.contains("VND"), "{}", r.message);
    assert_eq!(code(&base("product_viewed", json!({"product_id": "p", "price": -1}))), RejectCode::InvalidValue);
    assert_eq!(code(&base("product_viewed", json!({"product_id": "p", "price": "35000"}))), RejectCode::InvalidValue);
    assert_eq!(code(&base("review_submitted", json!({"product_id": "p", "rating": 9}))), RejectCode::InvalidValue);
    assert_eq!(code(&base("consent_changed", json!({"purpose": "spam", "granted": true}))), RejectCode::InvalidValue);
    let mut v = base("page_viewed", json!({}));
    v["event_time"] = json!("yesterday");
    assert_eq!(code(&v), RejectCode::InvalidValue);
    let mut v = base("page_viewed", json!({}));
    v["user"] = json!({"zalo_id": 5012345678901234567u64});
    assert_eq!(code(&v), RejectCode::InvalidValue);
    assert_eq!(code(&json!([1, 2])), RejectCode::InvalidJson);
}

#[test]
fn placeholder_ids_are_refused() {
    for id in ["anonymous", "null", "undefined", "0", "-1", "", "  ", "NULL", "Undefined"] {
        let mut v = base("page_viewed", json!({}));
        v["user"] = json!({"zalo_id": id});
        assert_eq!(code(&v), RejectCode::PlaceholderId, "{id:?}");
    }
    let mut v = base("page_viewed", json!({}));
    v["user"] = json!({"oa_user_id": "oa1"});
    assert_eq!(code(&v), RejectCode::NoUserId);
    let mut v = base("page_viewed", json!({}));
    v.as_object_mut().unwrap().remove("user");
    assert_eq!(code(&v), RejectCode::NoUserId);
}

#[test]
fn identify_needs_consent_for_what_it_carries() {
    let p = parse(&base("identify", json!({"traits": {"name": "Lan", "phone": "0987 654 321"}}))).unwrap();
    assert_eq!(p.needs_consent, vec![PURPOSE_PROFILE, PURPOSE_PHONE]);
    let InputEvent::Identity(e) = p.event() else { panic!() };
    assert_eq!(e.properties.phone.as_deref(), Some("84987654321"));
    assert_eq!(e.properties.traits.unwrap().name.as_deref(), Some("Lan"));

    let p = parse(&base("identify", json!({"phone": "01681234567"}))).unwrap();
    assert_eq!(p.needs_consent, vec![PURPOSE_PHONE]);
    let InputEvent::Identity(e) = p.event() else { panic!() };
    assert_eq!(e.properties.phone.as_deref(), Some("84381234567"));

    assert_eq!(code(&base("identify", json!({"phone": "12345"}))), RejectCode::InvalidValue);
    assert_eq!(code(&base("identify", json!({}))), RejectCode::MissingField);
}

#[test]
fn corrected_time_removes_the_device_clock_error() {
    // The device clock is 10 minutes behind; the event happened 5 s before the send.
    let device_now = NOW - 600_000;
    let r = Receipt { app_id: "demo", received_at: NOW, sent_at: Some(device_now) };
    let mut v = base("page_viewed", json!({}));
    v["event_time"] = json!(device_now - 5_000);
    let e = parse_event(&v.to_string(), &r).unwrap().event();
    let InputEvent::View(e) = e else { panic!() };
    assert_eq!(e.corrected_time, NOW - 5_000);
    assert_eq!(e.clock_skew_ms, 600_000);
    assert!(!e.future_clamped && !e.stale);
}

#[test]
fn future_times_are_clamped_and_old_ones_flagged() {
    let mut v = base("page_viewed", json!({}));
    v["event_time"] = json!(chrono::DateTime::from_timestamp_millis(NOW + 3_600_000).unwrap().to_rfc3339());
    let InputEvent::View(e) = parse(&v).unwrap().event() else { panic!() };
    assert_eq!(e.corrected_time, NOW);
    assert!(e.future_clamped);

    v["event_time"] = json!(NOW - 31 * 24 * 3600 * 1000);
    let InputEvent::View(e) = parse(&v).unwrap().event() else { panic!() };
    assert!(e.stale);
    assert_eq!(e.corrected_time, NOW - 31 * 24 * 3600 * 1000);
}

#[test]
fn oversized_events_are_refused() {
    let v = base("page_viewed", json!({"blob": "x".repeat(MAX_EVENT_BYTES)}));
    assert_eq!(code(&v), RejectCode::TooLarge);
}

/// The slots are kept from one event of a batch to the next: nothing of a rejected event, or
/// of a member sent twice, may reach the events after it.
#[test]
fn nothing_of_one_event_leaks_into_the_next() {
    let id = |n: u8| format!("5a1f7c2e-3b4d-4e5f-8a9b-0c1d2e3f4a{n:02x}");
    let events = [
        // Rejected (not a UUID) after its properties, context and user were read.
        r#"{"properties": {"left": 1}, "context": {"screen": "/a"}, "user": {"zalo_id": "z0"}, "event_id": "bad", "type": "page_viewed"}"#
            .to_string(),
        // Accepted, its properties sent twice: the last copy (null) counts.
        format!(
            r#"{{"properties": {{"twice": 1}}, "properties": null, "event_id": "{}", "type": "page_viewed", "user": {{"zalo_id": "z1"}}}}"#,
            id(1)
        ),
        format!(
            r#"{{"event_id": "{}", "type": "page_viewed", "user": {{"anonymous_id": "d2"}}, "properties": {{"page_title": "b"}}}}"#,
            id(2)
        ),
    ];
    let body = format!(r#"{{"events": [{}], "sent_at": null}}"#, events.join(","));
    let batch = read_batch(&body, "demo").unwrap();
    assert_eq!(batch.count, 3);
    let mut decoded = Vec::new();
    for c in &batch.events.checked {
        match c {
            Checked::Rejected(_, why) => decoded.push(Err(why.code)),
            Checked::Accepted(_, e) => {
                let mut payload = Vec::new();
                e.frame(&batch.events.buf, &e.times(None, NOW), Trust::Unverified, &mut payload);
                decoded.push(Ok(schemas::codec::decode_input(e.topic, &payload).unwrap()));
            }
        }
    }
    assert_eq!(decoded[0], Err(RejectCode::InvalidValue));
    let Ok(InputEvent::View(first)) = &decoded[1] else { panic!("{:?}", decoded[1]) };
    assert!(first.properties.custom.is_empty(), "{:?}", first.properties.custom);
    assert_eq!(first.context, Context::default());
    assert_eq!(first.user.key, "z1");
    let Ok(InputEvent::View(second)) = &decoded[2] else { panic!("{:?}", decoded[2]) };
    assert_eq!(second.properties.page_title.as_deref(), Some("b"));
    assert!(second.properties.custom.is_empty(), "{:?}", second.properties.custom);
    assert_eq!((second.user.key.as_str(), second.user.zalo_id.as_deref()), ("d2", None));
}
