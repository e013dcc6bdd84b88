//! From the JSON a Mini App posts to the typed event written to Kafka: every check the HTTP
//! contract promises, each failure with a reason code and a sentence a front-end developer can
//! act on.
//!
//! This module is pure: no I/O, no state. Consent, which needs state, is decided by the caller
//! from [`ParsedEvent::needs_consent`].

use chrono::DateTime;

use crate::json::{self, Fields, Kind, Value};

use schemas::event::*;
use schemas::phone::normalize_vn_phone;
use schemas::topics::Topic;

/// Largest accepted event, serialized.
pub const MAX_EVENT_BYTES: usize = 32 * 1024;
/// An event older than this (corrected time before receipt) is flagged `stale`.
pub const STALE_AFTER_MS: i64 = 30 * 24 * 3600 * 1000;

/// Ids that SDKs and templates send when they have no real id.
const PLACEHOLDER_IDS: &[&str] = &["anonymous", "null", "undefined", "0", "-1", "", "none", "nil", "nan", "[object object]"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectCode {
    InvalidJson,
    MissingField,
    InvalidValue,
    UnknownType,
    PlaceholderId,
    NoUserId,
    TooLarge,
    NoConsent,
    DuplicateEventId,
}

impl RejectCode {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::InvalidJson => "invalid_json",
            RejectCode::MissingField => "missing_field",
            RejectCode::InvalidValue => "invalid_value",
            RejectCode::UnknownType => "unknown_type",
            RejectCode::PlaceholderId => "placeholder_id",
            RejectCode::NoUserId => "no_user_id",
            RejectCode::TooLarge => "too_large",
            RejectCode::NoConsent => "no_consent",
            RejectCode::DuplicateEventId => "duplicate_event_id",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: RejectCode,
    pub message: String,
}

impl Rejection {
    pub fn new(code: RejectCode, message: impl Into<String>) -> Rejection {
        Rejection { code, message: message.into() }
    }
}

type Result<T> = std::result::Result<T, Rejection>;

fn invalid(field: &str, what: &str) -> Rejection {
    Rejection::new(RejectCode::InvalidValue, format!("{field} {what}"))
}

fn missing(field: &str, hint: &str) -> Rejection {
    Rejection::new(RejectCode::MissingField, format!("{field} is required{hint}"))
}

/// What the server knows about the request an event came in.
#[derive(Debug, Clone)]
pub struct Receipt<'a> {
    pub app_id: &'a str,
    /// Server clock, epoch ms.
    pub received_at: i64,
    /// The batch's `sent_at`, epoch ms, by the device clock.
    pub sent_at: Option<i64>,
}

/// A valid event and the consent purposes it needs before it may be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedEvent {
    pub event: InputEvent,
    /// The event id as a number, for finding repeats cheaply.
    pub id: u128,
    pub needs_consent: Vec<&'static str>,
}

/// Parses and checks one event. `raw` is the event's own JSON text.
pub fn parse_event(raw: &str, receipt: &Receipt<'_>) -> Result<ParsedEvent> {
    if raw.len() > MAX_EVENT_BYTES {
        return Err(too_large(raw.len()));
    }
    let value = json::parse(raw).map_err(|e| Rejection::new(RejectCode::InvalidJson, format!("event is not valid JSON: {e}")))?;
    parse_event_value(value, receipt)
}

fn too_large(bytes: usize) -> Rejection {
    Rejection::new(RejectCode::TooLarge, format!("event is {bytes} bytes; the limit is {MAX_EVENT_BYTES} bytes (32 KB)"))
}

/// Validates an event already read as JSON (an element of a batch).
pub fn parse_event_value(value: Value<'_>, receipt: &Receipt<'_>) -> Result<ParsedEvent> {
    if value.raw.len() > MAX_EVENT_BYTES {
        return Err(too_large(value.raw.len()));
    }
    let Kind::Object(fields) = value.kind else {
        return Err(Rejection::new(RejectCode::InvalidJson, "event is not a JSON object"));
    };
    let [event_id, type_name, user, event_time, sent_at, context, properties] =
        fields.pick(["event_id", "type", "user", "event_time", "sent_at", "context", "properties"]);

    let (event_id, id) = match event_id.map(|v| v.kind) {
        None | Some(Kind::Null) => return Err(missing("event_id", " (a UUID the client makes once per event and reuses on retries)")),
        Some(Kind::Str(s)) => {
            let uuid = uuid::Uuid::try_parse(s.trim()).map_err(|_| invalid("event_id", &format!("{s:?} is not a UUID")))?;
            // Already canonical (as SDKs send it): kept as it came, not formatted again.
            let text =
                if s.len() == 36 && !s.bytes().any(|b| b.is_ascii_uppercase()) { s.into_owned() } else { uuid.hyphenated().to_string() };
            (text, uuid.as_u128())
        }
        Some(_) => return Err(invalid("event_id", "must be a string UUID")),
    };
    let type_name = match type_name.map(|v| v.kind) {
        None | Some(Kind::Null) => return Err(missing("type", "")),
        Some(Kind::Str(s)) => s,
        Some(_) => return Err(invalid("type", "must be a string")),
    };
    let Some(&(_, topic)) = EVENT_TYPES.iter().find(|(n, _)| *n == &*type_name) else {
        let known: Vec<&str> = EVENT_TYPES.iter().map(|(n, _)| *n).collect();
        return Err(Rejection::new(
            RejectCode::UnknownType,
            format!("type {type_name:?} is unknown; the known types are {}", known.join(", ")),
        ));
    };

    let user = parse_user(user)?;
    let times = parse_times(event_time, sent_at, receipt)?;
    let context = parse_context(context)?;
    let props = object(properties, "properties")?.unwrap_or_default();

    let mut needs_consent = Vec::new();
    macro_rules! event {
        ($ty:ident, $kind:expr, $props:expr) => {
            $ty {
                event_id,
                app_id: receipt.app_id.to_string(),
                kind: $kind,
                user,
                event_time: times.event_time,
                sent_at: times.sent_at,
                received_at: receipt.received_at,
                corrected_time: times.corrected,
                clock_skew_ms: times.skew,
                future_clamped: times.future_clamped,
                stale: times.stale,
                context,
                properties: $props,
            }
        };
    }
    let event = match topic {
        Topic::Views => {
            let kind = ViewType::from_name(&type_name).expect("table and enum agree");
            InputEvent::View(event!(ViewEvent, kind, view_properties(kind, props)?))
        }
        Topic::Carts => {
            let kind = CartType::from_name(&type_name).expect("table and enum agree");
            InputEvent::Cart(event!(CartEvent, kind, cart_properties(kind, props)?))
        }
        Topic::Orders => {
            let kind = OrderType::from_name(&type_name).expect("table and enum agree");
            InputEvent::Order(event!(OrderEvent, kind, order_properties(kind, props)?))
        }
        Topic::Identities => {
            let kind = IdentityType::from_name(&type_name).expect("table and enum agree");
            if matches!(kind, IdentityType::OaFollowed | IdentityType::OaUnfollowed | IdentityType::OaInteracted)
                && user.oa_user_id.is_none()
            {
                return Err(missing("user.oa_user_id", " for OA events (getUserInfo().idByOA)"));
            }
            let p = identity_properties(kind, props)?;
            if p.traits.is_some() {
                needs_consent.push(PURPOSE_PROFILE);
            }
            if p.phone.is_some() {
                needs_consent.push(PURPOSE_PHONE);
            }
            InputEvent::Identity(event!(IdentityEvent, kind, p))
        }
        Topic::Engagement => {
            let kind = EngagementType::from_name(&type_name).expect("table and enum agree");
            InputEvent::Engagement(event!(EngagementEvent, kind, engagement_properties(kind, props)?))
        }
        Topic::DeadLetter
        | Topic::Sessions
        | Topic::Interests
        | Topic::CartTriggers
        | Topic::Profiles
        | Topic::Audiences
        | Topic::Messages
        | Topic::CampaignResults
        | Topic::Activity => unreachable!("EVENT_TYPES maps only to input topics"),
    };
    Ok(ParsedEvent { event, id, needs_consent })
}

/// An optional member that must be an object.
fn object<'a>(v: Option<Value<'a>>, field: &str) -> Result<Option<Fields<'a>>> {
    match v.map(|v| v.kind) {
        None | Some(Kind::Null) => Ok(None),
        Some(Kind::Object(f)) => Ok(Some(f)),
        Some(_) => Err(invalid(field, "must be an object")),
    }
}

fn parse_user(user: Option<Value<'_>>) -> Result<User> {
    let Some(map) = object(user, "user")? else {
        return Err(Rejection::new(RejectCode::NoUserId, "user is required, with a zalo_id or an anonymous_id"));
    };
    let [zalo_id, anonymous_id, oa_user_id] = map.pick(["zalo_id", "anonymous_id", "oa_user_id"]);
    let id = |name: &str, v: Option<Value<'_>>| -> Result<Option<String>> {
        match v.map_or(Kind::Null, |v| v.kind) {
            Kind::Null => Ok(None),
            Kind::Str(s) => {
                let t = s.trim();
                if t.len() <= 15 && PLACEHOLDER_IDS.iter().any(|p| t.eq_ignore_ascii_case(p)) {
                    return Err(Rejection::new(
                        RejectCode::PlaceholderId,
                        format!("user.{name} is the placeholder {s:?}; send a real id or leave the field out"),
                    ));
                }
                if t.len() > 128 {
                    return Err(invalid(&format!("user.{name}"), "is longer than 128 characters"));
                }
                Ok(Some(t.to_string()))
            }
            Kind::Num(_) => {
                Err(invalid(&format!("user.{name}"), "must be a string: Zalo ids are longer than JavaScript numbers can hold exactly"))
            }
            _ => Err(invalid(&format!("user.{name}"), "must be a string")),
        }
    };
    let zalo_id = id("zalo_id", zalo_id)?;
    let anonymous_id = id("anonymous_id", anonymous_id)?;
    let oa_user_id = id("oa_user_id", oa_user_id)?;
    let key = zalo_id
        .clone()
        .or_else(|| anonymous_id.clone())
        .ok_or_else(|| Rejection::new(RejectCode::NoUserId, "user needs a zalo_id or an anonymous_id"))?;
    Ok(User { key, zalo_id, anonymous_id, oa_user_id })
}

struct Times {
    event_time: i64,
    sent_at: Option<i64>,
    corrected: i64,
    skew: i64,
    future_clamped: bool,
    stale: bool,
}

/// Parses an RFC 3339 timestamp, or epoch milliseconds, into epoch ms.
pub fn parse_timestamp(field: &str, v: Value<'_>) -> Result<i64> {
    match v.kind {
        Kind::Str(s) => DateTime::parse_from_rfc3339(s.trim())
            .map(|t| t.timestamp_millis())
            .map_err(|_| invalid(field, &format!("{s:?} is not an RFC 3339 time such as 2026-11-23T09:30:00+07:00"))),
        Kind::Num(n) => n.parse::<i64>().ok().filter(|ms| *ms > 0).ok_or_else(|| invalid(field, "as a number must be epoch milliseconds")),
        _ => Err(invalid(field, "must be an RFC 3339 string")),
    }
}

fn optional_time(field: &str, v: Option<Value<'_>>) -> Result<Option<i64>> {
    match v {
        Some(v) if !v.is_null() => parse_timestamp(field, v).map(Some),
        _ => Ok(None),
    }
}

fn parse_times(event_time: Option<Value<'_>>, event_sent_at: Option<Value<'_>>, r: &Receipt<'_>) -> Result<Times> {
    let sent_at = optional_time("sent_at", event_sent_at)?.or(r.sent_at);
    let event_time = optional_time("event_time", event_time)?;
    let (event_time, corrected, skew) = match (event_time, sent_at) {
        // The device clock may be off; what it measured between event and send is not.
        (Some(et), Some(sa)) => (et, r.received_at - (sa - et), r.received_at - sa),
        (Some(et), None) => (et, et, 0),
        (None, Some(sa)) => (r.received_at, r.received_at, r.received_at - sa),
        (None, None) => (r.received_at, r.received_at, 0),
    };
    let future_clamped = corrected > r.received_at;
    let corrected = corrected.min(r.received_at);
    Ok(Times { event_time, sent_at, corrected, skew, future_clamped, stale: r.received_at - corrected > STALE_AFTER_MS })
}

fn parse_context(ctx: Option<Value<'_>>) -> Result<Context> {
    let Some(map) = object(ctx, "context")? else { return Ok(Context::default()) };
    let mut c = Context::default();
    // One pass over what was sent; keys outside the contract are ignored.
    for (name, raw) in map.into_members() {
        let slot = match &*name {
            "screen" => &mut c.screen,
            "utm_source" => &mut c.utm_source,
            "utm_medium" => &mut c.utm_medium,
            "utm_campaign" => &mut c.utm_campaign,
            "utm_content" => &mut c.utm_content,
            "affiliate_id" => &mut c.affiliate_id,
            "referrer" => &mut c.referrer,
            "app_version" => &mut c.app_version,
            "zalo_version" => &mut c.zalo_version,
            "platform" => &mut c.platform,
            "os_version" => &mut c.os_version,
            "device_model" => &mut c.device_model,
            "locale" => &mut c.locale,
            "library" => &mut c.library,
            _ => continue,
        };
        *slot = scalar_text(raw.kind, "context", &name)?;
    }
    Ok(c)
}

// ---- property helpers: each takes its key out of the map; what remains goes to `custom` ----

/// A text value: strings, or numbers and booleans written as text (product ids are often numbers).
fn text(map: &mut Fields<'_>, scope: &str, key: &str) -> Result<Option<String>> {
    scalar_text(map.take_kind(key), scope, key)
}

fn scalar_text(v: Kind<'_>, scope: &str, key: &str) -> Result<Option<String>> {
    match v {
        Kind::Null => Ok(None),
        Kind::Str(s) => Ok(Some(s.into_owned())),
        Kind::Num(n) => Ok(Some(n.to_string())),
        Kind::Bool(b) => Ok(Some(b.to_string())),
        Kind::Object(_) | Kind::Array(_) => Err(invalid(&format!("{scope}.{key}"), "must be a string")),
    }
}

fn prop_text(map: &mut Fields<'_>, key: &str) -> Result<Option<String>> {
    text(map, "properties", key)
}

fn required_text(map: &mut Fields<'_>, key: &str) -> Result<String> {
    prop_text(map, key)?.filter(|s| !s.trim().is_empty()).ok_or_else(|| missing(&format!("properties.{key}"), ""))
}

/// A whole number at least `min`. Money fields say so in their message.
fn integer(map: &mut Fields<'_>, scope: &str, key: &str, min: i64, money: bool) -> Result<Option<i64>> {
    let field = || format!("{scope}.{key}");
    let what = if money { "must be a whole number of VND (dong), without decimals" } else { "must be a whole number" };
    let v = match map.take_kind(key) {
        Kind::Null => return Ok(None),
        // Whole numbers first; 1.5e3 or 2000.0 only when that fails.
        Kind::Num(n) => match n.parse::<i64>() {
            Ok(i) => i,
            Err(_) => match n.parse::<f64>() {
                Ok(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => f as i64,
                _ => return Err(invalid(&field(), what)),
            },
        },
        _ => return Err(invalid(&field(), what)),
    };
    if v < min {
        return Err(invalid(&field(), &format!("must be at least {min}, got {v}")));
    }
    Ok(Some(v))
}

fn money(map: &mut Fields<'_>, key: &str) -> Result<Option<i64>> {
    integer(map, "properties", key, 0, true)
}

fn required<T>(v: Option<T>, key: &str) -> Result<T> {
    v.ok_or_else(|| missing(&format!("properties.{key}"), ""))
}

fn items(map: &mut Fields<'_>) -> Result<Vec<Item>> {
    let list = match map.take_kind("items") {
        Kind::Null => return Ok(Vec::new()),
        Kind::Array(a) => a,
        _ => return Err(invalid("properties.items", "must be an array")),
    };
    list.into_iter()
        .enumerate()
        .map(|(i, v)| {
            let scope = format!("properties.items[{i}]");
            let Some(mut m) = object(Some(v), &scope)? else { return Err(invalid(&scope, "must be an object")) };
            let product_id = text(&mut m, &scope, "product_id")?.ok_or_else(|| missing(&format!("{scope}.product_id"), ""))?;
            Ok(Item {
                product_id,
                product_name: text(&mut m, &scope, "product_name")?,
                category: text(&mut m, &scope, "category")?,
                quantity: integer(&mut m, &scope, "quantity", 1, false)?.ok_or_else(|| missing(&format!("{scope}.quantity"), ""))?,
                price: integer(&mut m, &scope, "price", 0, true)?.ok_or_else(|| missing(&format!("{scope}.price"), ""))?,
            })
        })
        .collect()
}

/// Whatever the contract does not name, kept as JSON text so nothing the app sent is lost.
fn custom(map: Fields<'_>) -> Custom {
    map.into_rest().collect()
}

fn view_properties(kind: ViewType, mut m: Fields<'_>) -> Result<ViewProperties> {
    let p = ViewProperties {
        page_title: prop_text(&mut m, "page_title")?,
        product_id: prop_text(&mut m, "product_id")?,
        product_name: prop_text(&mut m, "product_name")?,
        category: prop_text(&mut m, "category")?,
        price: money(&mut m, "price")?,
        dwell_ms: integer(&mut m, "properties", "dwell_ms", 0, false)?,
        query: prop_text(&mut m, "query")?,
        results_count: integer(&mut m, "properties", "results_count", 0, false)?,
        share_channel: prop_text(&mut m, "share_channel")?,
        list_id: prop_text(&mut m, "list_id")?,
        custom: Custom::new(),
    };
    match kind {
        ViewType::ProductViewed | ViewType::ProductClicked | ViewType::ProductShared => {
            required(p.product_id.as_ref().filter(|s| !s.is_empty()), "product_id")?;
        }
        ViewType::Search => {
            required(p.query.as_ref(), "query")?;
        }
        ViewType::PageViewed => {}
    }
    Ok(ViewProperties { custom: custom(m), ..p })
}

fn cart_properties(kind: CartType, mut m: Fields<'_>) -> Result<CartProperties> {
    let cart_id = required_text(&mut m, "cart_id")?;
    let min_quantity = if kind == CartType::CartItemUpdated { 0 } else { 1 };
    let p = CartProperties {
        cart_id,
        product_id: prop_text(&mut m, "product_id")?,
        product_name: prop_text(&mut m, "product_name")?,
        category: prop_text(&mut m, "category")?,
        quantity: integer(&mut m, "properties", "quantity", min_quantity, false)?,
        price: money(&mut m, "price")?,
        cart_value: money(&mut m, "cart_value")?,
        items: items(&mut m)?,
        custom: Custom::new(),
    };
    match kind {
        CartType::CartItemAdded | CartType::CartItemRemoved => {
            required(p.product_id.as_ref(), "product_id")?;
            required(p.quantity, "quantity")?;
            required(p.price, "price")?;
        }
        CartType::CartItemUpdated => {
            required(p.product_id.as_ref(), "product_id")?;
            required(p.quantity, "quantity")?;
        }
        CartType::CartViewed | CartType::CheckoutStarted => {}
    }
    Ok(CartProperties { custom: custom(m), ..p })
}

fn order_properties(kind: OrderType, mut m: Fields<'_>) -> Result<OrderProperties> {
    let order_id = required_text(&mut m, "order_id")?;
    let p = OrderProperties {
        order_id,
        cart_id: prop_text(&mut m, "cart_id")?,
        items: items(&mut m)?,
        total: money(&mut m, "total")?,
        shipping_fee: money(&mut m, "shipping_fee")?,
        discount: money(&mut m, "discount")?,
        payment_method: prop_text(&mut m, "payment_method")?,
        voucher_code: prop_text(&mut m, "voucher_code")?,
        points_used: integer(&mut m, "properties", "points_used", 0, false)?,
        status: prop_text(&mut m, "status")?,
        refund_amount: money(&mut m, "refund_amount")?,
        reason: prop_text(&mut m, "reason")?,
        custom: Custom::new(),
    };
    match kind {
        OrderType::OrderPlaced => {
            required(p.total, "total")?;
            if p.items.is_empty() {
                return Err(missing("properties.items", " (at least one line) for order_placed"));
            }
        }
        OrderType::OrderPaid => {
            required(p.total, "total")?;
        }
        OrderType::OrderStatusChanged => {
            required(p.status.as_ref(), "status")?;
        }
        OrderType::OrderCancelled | OrderType::OrderRefunded => {}
    }
    Ok(OrderProperties { custom: custom(m), ..p })
}

fn identity_properties(kind: IdentityType, mut m: Fields<'_>) -> Result<IdentityProperties> {
    let mut traits = object(m.take("traits"), "properties.traits")?;
    // Segment-style SDKs put the phone among the traits.
    let phone_value = match m.take_kind("phone") {
        Kind::Null => traits.as_mut().map_or(Kind::Null, |t| t.take_kind("phone")),
        other => other,
    };
    let phone = match phone_value {
        Kind::Null => None,
        Kind::Str(s) => Some(normalize_vn_phone(&s).map_err(|e| invalid("properties.phone", &format!("is invalid: {e}")))?),
        _ => return Err(invalid("properties.phone", "must be a string")),
    };
    let traits = traits.map(parse_traits).transpose()?.filter(|t| *t != Traits::default());
    let purpose = prop_text(&mut m, "purpose")?;
    let granted = match m.take_kind("granted") {
        Kind::Null => None,
        Kind::Bool(b) => Some(b),
        _ => return Err(invalid("properties.granted", "must be true or false")),
    };
    let p = IdentityProperties {
        traits,
        phone,
        purpose,
        granted,
        policy_version: prop_text(&mut m, "policy_version")?,
        oa_id: prop_text(&mut m, "oa_id")?,
        interaction: prop_text(&mut m, "interaction")?,
        custom: Custom::new(),
    };
    match kind {
        IdentityType::Identify => {
            if p.traits.is_none() && p.phone.is_none() {
                return Err(missing("properties.traits or properties.phone", " for identify"));
            }
        }
        IdentityType::ConsentChanged => {
            let purpose = required(p.purpose.as_deref(), "purpose")?;
            if !CONSENT_PURPOSES.contains(&purpose) {
                return Err(invalid("properties.purpose", &format!("{purpose:?} is not one of {}", CONSENT_PURPOSES.join(", "))));
            }
            required(p.granted, "granted")?;
        }
        IdentityType::OaFollowed | IdentityType::OaUnfollowed | IdentityType::OaInteracted => {}
        // Not in the HTTP API's table of types: never reaches here from a request.
        IdentityType::UserForgotten => unreachable!("internal event types are refused before validation"),
    }
    Ok(IdentityProperties { custom: custom(m), ..p })
}

fn parse_traits(mut t: Fields<'_>) -> Result<Traits> {
    let scope = "properties.traits";
    let gender = text(&mut t, scope, "gender")?.map(|g| g.to_ascii_lowercase());
    if let Some(g) = &gender
        && !matches!(g.as_str(), "male" | "female" | "other")
    {
        return Err(invalid("properties.traits.gender", "must be male, female or other"));
    }
    let birthday = text(&mut t, scope, "birthday")?;
    if let Some(b) = &birthday
        && !valid_birthday(b)
    {
        return Err(invalid("properties.traits.birthday", "must be YYYY-MM-DD, or --MM-DD without the year"));
    }
    let email = text(&mut t, scope, "email")?;
    if let Some(e) = &email
        && !e.contains('@')
    {
        return Err(invalid("properties.traits.email", "is not an email address"));
    }
    Ok(Traits { name: text(&mut t, scope, "name")?, gender, birthday, email, city: text(&mut t, scope, "city")?, custom: custom(t) })
}

fn valid_birthday(b: &str) -> bool {
    if let Some(md) = b.strip_prefix("--") {
        return chrono::NaiveDate::parse_from_str(&format!("2000-{md}"), "%Y-%m-%d").is_ok();
    }
    chrono::NaiveDate::parse_from_str(b, "%Y-%m-%d").is_ok()
}

fn engagement_properties(kind: EngagementType, mut m: Fields<'_>) -> Result<EngagementProperties> {
    let p = EngagementProperties {
        game_id: prop_text(&mut m, "game_id")?,
        result: prop_text(&mut m, "result")?,
        reward: prop_text(&mut m, "reward")?,
        voucher_code: prop_text(&mut m, "voucher_code")?,
        points: integer(&mut m, "properties", "points", 1, false)?,
        reason: prop_text(&mut m, "reason")?,
        order_id: prop_text(&mut m, "order_id")?,
        product_id: prop_text(&mut m, "product_id")?,
        rating: integer(&mut m, "properties", "rating", 1, false)?,
        referral_code: prop_text(&mut m, "referral_code")?,
        custom: Custom::new(),
    };
    match kind {
        EngagementType::MinigamePlayed => {
            required(p.game_id.as_ref(), "game_id")?;
        }
        EngagementType::VoucherClaimed => {
            required(p.voucher_code.as_ref(), "voucher_code")?;
        }
        EngagementType::PointsEarned | EngagementType::PointsRedeemed => {
            required(p.points, "points")?;
        }
        EngagementType::ReviewSubmitted => {
            required(p.product_id.as_ref(), "product_id")?;
            if !(1..=5).contains(&required(p.rating, "rating")?) {
                return Err(invalid("properties.rating", "must be 1 to 5"));
            }
        }
        EngagementType::ReferralCompleted => {
            required(p.referral_code.as_ref(), "referral_code")?;
        }
    }
    Ok(EngagementProperties { custom: custom(m), ..p })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const NOW: i64 = 1_795_000_000_000;

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
        let InputEvent::View(e) = p.event else { panic!() };
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
        assert_eq!(parse(&v).unwrap().event.user().key, "dev-1");
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
        let InputEvent::Identity(e) = p.event else { panic!() };
        assert_eq!(e.properties.phone.as_deref(), Some("84987654321"));
        assert_eq!(e.properties.traits.unwrap().name.as_deref(), Some("Lan"));

        let p = parse(&base("identify", json!({"phone": "01681234567"}))).unwrap();
        assert_eq!(p.needs_consent, vec![PURPOSE_PHONE]);
        let InputEvent::Identity(e) = p.event else { panic!() };
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
        let e = parse_event(&v.to_string(), &r).unwrap().event;
        let InputEvent::View(e) = e else { panic!() };
        assert_eq!(e.corrected_time, NOW - 5_000);
        assert_eq!(e.clock_skew_ms, 600_000);
        assert!(!e.future_clamped && !e.stale);
    }

    #[test]
    fn future_times_are_clamped_and_old_ones_flagged() {
        let mut v = base("page_viewed", json!({}));
        v["event_time"] = json!(chrono::DateTime::from_timestamp_millis(NOW + 3_600_000).unwrap().to_rfc3339());
        let InputEvent::View(e) = parse(&v).unwrap().event else { panic!() };
        assert_eq!(e.corrected_time, NOW);
        assert!(e.future_clamped);

        v["event_time"] = json!(NOW - 31 * 24 * 3600 * 1000);
        let InputEvent::View(e) = parse(&v).unwrap().event else { panic!() };
        assert!(e.stale);
        assert_eq!(e.corrected_time, NOW - 31 * 24 * 3600 * 1000);
    }

    #[test]
    fn oversized_events_are_refused() {
        let v = base("page_viewed", json!({"blob": "x".repeat(MAX_EVENT_BYTES)}));
        assert_eq!(code(&v), RejectCode::TooLarge);
    }
}
