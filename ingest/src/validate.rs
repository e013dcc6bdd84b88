//! From the JSON a Mini App posts to the Avro record written to Kafka: every check the HTTP
//! contract promises, each failure with a reason code and a sentence a front-end developer can
//! act on.
//!
//! One pass, nothing built that is not written: an event's members are read into slots (strings
//! borrowed from the body), checked, and written as Avro straight into the request's buffer in
//! schema order. Only the time fields wait: the batch's `sent_at` may come after its events, so
//! each record is kept as the part before the times and the part after them, and framed with
//! the times once the whole body is read ([`Encoded::frame`]).
//!
//! This module is pure: no I/O, no state. Consent, which needs state, is decided by the caller
//! from [`Encoded::needs_consent`].

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use chrono::DateTime;

use schemas::avro_write::write_long;
use schemas::event::*;
use schemas::phone::normalize_vn_phone;
use schemas::topics::Topic;

use crate::json::{self, Reader, Tok};

/// Largest accepted event, serialized.
pub const MAX_EVENT_BYTES: usize = 32 * 1024;
/// Most events a batch may hold.
pub const MAX_BATCH_EVENTS: usize = 1000;
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

fn invalid(field: impl fmt::Display, what: &str) -> Rejection {
    Rejection::new(RejectCode::InvalidValue, format!("{field} {what}"))
}

fn missing(field: impl fmt::Display, hint: &str) -> Rejection {
    Rejection::new(RejectCode::MissingField, format!("{field} is required{hint}"))
}

fn not_json(e: json::Error) -> Rejection {
    Rejection::new(RejectCode::InvalidJson, format!("event is not valid JSON: {e}"))
}

fn too_large(bytes: usize) -> Rejection {
    Rejection::new(RejectCode::TooLarge, format!("event is {bytes} bytes; the limit is {MAX_EVENT_BYTES} bytes (32 KB)"))
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

// ---- the members the contract names ----------------------------------------------------------

/// Declares the member names of one kind of object: a constant per name (its slot), `NAMES`,
/// `COUNT` and `index`, a `match` on the name.
macro_rules! member_names {
    ($m:ident { $($c:ident = $s:literal),* $(,)? }) => {
        #[allow(non_upper_case_globals, dead_code)]
        mod $m {
            pub const NAMES: &[&str] = &[$($s),*];
            pub const COUNT: usize = NAMES.len();
            member_names!(@slot 0usize; $($c)*);
            pub fn index(member_name: &str) -> Option<usize> {
                match member_name { $($s => Some($c),)* _ => None }
            }
        }
    };
    (@slot $n:expr; $c:ident $($rest:ident)*) => {
        pub const $c: usize = $n;
        member_names!(@slot $n + 1; $($rest)*);
    };
    (@slot $n:expr;) => {};
}

member_names!(ev { event_id = "event_id", type_ = "type", user = "user", event_time = "event_time", sent_at = "sent_at",
    context = "context", properties = "properties" });
member_names!(us { zalo_id = "zalo_id", anonymous_id = "anonymous_id", oa_user_id = "oa_user_id" });
// In the schema's order: the record is written slot by slot.
member_names!(cx { screen = "screen", utm_source = "utm_source", utm_medium = "utm_medium", utm_campaign = "utm_campaign",
    utm_content = "utm_content", affiliate_id = "affiliate_id", referrer = "referrer", app_version = "app_version",
    zalo_version = "zalo_version", platform = "platform", os_version = "os_version", device_model = "device_model",
    locale = "locale", library = "library" });
// Every property any type names; what a type does not name goes to its `custom` map.
member_names!(pr { page_title = "page_title", product_id = "product_id", product_name = "product_name", category = "category",
    price = "price", dwell_ms = "dwell_ms", query = "query", results_count = "results_count", share_channel = "share_channel",
    list_id = "list_id", cart_id = "cart_id", quantity = "quantity", cart_value = "cart_value", items = "items",
    order_id = "order_id", total = "total", shipping_fee = "shipping_fee", discount = "discount",
    payment_method = "payment_method", voucher_code = "voucher_code", points_used = "points_used", status = "status",
    refund_amount = "refund_amount", reason = "reason", traits = "traits", phone = "phone", purpose = "purpose",
    granted = "granted", policy_version = "policy_version", oa_id = "oa_id", interaction = "interaction",
    game_id = "game_id", result = "result", reward = "reward", points = "points", rating = "rating",
    referral_code = "referral_code" });
member_names!(tr { name = "name", gender = "gender", birthday = "birthday", email = "email", city = "city", phone = "phone" });
member_names!(it { product_id = "product_id", product_name = "product_name", category = "category", quantity = "quantity",
    price = "price" });

/// An object's members by slot; members it does not name are dropped, or kept in `rest` when the
/// object has a `custom` map. A repeated name keeps its last value, as JSON parsers do.
#[derive(Debug)]
struct Members<'a, const N: usize> {
    slots: [Option<Tok<'a>>; N],
    rest: Vec<(Cow<'a, str>, Tok<'a>)>,
}

impl<'a, const N: usize> Members<'a, N> {
    fn new() -> Self {
        Members { slots: [const { None }; N], rest: Vec::new() }
    }

    /// Reads the object the reader is at into these slots (empty ones, but for a repeated
    /// member). Objects and arrays inside stay raw text.
    fn read_into(&mut self, r: &mut Reader<'a>, index: fn(&str) -> Option<usize>, keep_rest: bool) -> std::result::Result<(), json::Error> {
        if r.open_object()? {
            loop {
                let key = r.key()?;
                match index(&key) {
                    Some(i) => self.slots[i] = Some(r.token()?),
                    None if keep_rest => {
                        let v = r.token()?;
                        self.rest.retain(|(k, _)| *k != key);
                        self.rest.push((key, v));
                    }
                    None => r.skip()?,
                }
                if !r.next_member()? {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Reads an object kept as raw text by [`Reader::token`] (already checked once).
    fn parse(raw: &'a str, index: fn(&str) -> Option<usize>, keep_rest: bool) -> Result<Self> {
        let mut m = Members::new();
        m.read_into(&mut Reader::new(raw), index, keep_rest).map_err(not_json)?;
        Ok(m)
    }

    fn take(&mut self, slot: usize) -> Tok<'a> {
        self.slots[slot].take().unwrap_or(Tok::Null)
    }

    /// Takes what no field took, for the `custom` map: name → the value as text. The slots are
    /// empty afterwards.
    fn rest(&mut self, names: &[&'static str]) -> Vec<(Cow<'a, str>, Cow<'a, str>)> {
        let mut out: Vec<(Cow<'a, str>, Cow<'a, str>)> = Vec::new();
        for (i, v) in self.slots.iter_mut().enumerate() {
            if let Some(v) = v.take() {
                out.push((Cow::Borrowed(names[i]), v.into_text()));
            }
        }
        out.extend(self.rest.drain(..).map(|(k, v)| (k, v.into_text())));
        out
    }

    fn clear(&mut self) {
        self.slots.fill(None);
        self.rest.clear();
    }
}

/// What a member that should be an object was.
#[derive(Debug, Default)]
enum Shape<'a> {
    #[default]
    Absent,
    /// An object, read into its slots.
    Object,
    Other(Tok<'a>),
}

/// A member that should be an object: its shape and, when it is one, its members.
#[derive(Debug)]
struct Nested<'a, const N: usize> {
    shape: Shape<'a>,
    members: Members<'a, N>,
}

impl<'a, const N: usize> Nested<'a, N> {
    fn new() -> Self {
        Nested { shape: Shape::Absent, members: Members::new() }
    }

    fn read(&mut self, r: &mut Reader<'a>, index: fn(&str) -> Option<usize>, keep_rest: bool) -> std::result::Result<(), json::Error> {
        if matches!(self.shape, Shape::Object) {
            self.members.clear();
        }
        if r.peek() == Some(b'{') {
            self.shape = Shape::Object;
            self.members.read_into(r, index, keep_rest)
        } else {
            self.shape = Shape::Other(r.token()?);
            Ok(())
        }
    }

    /// The members; `None` when absent or null; a rejection naming `field` when not an object.
    fn object(&mut self, field: &str) -> Result<Option<&mut Members<'a, N>>> {
        match std::mem::take(&mut self.shape) {
            Shape::Absent | Shape::Other(Tok::Null) => Ok(None),
            Shape::Object => Ok(Some(&mut self.members)),
            Shape::Other(_) => Err(invalid(field, "must be an object")),
        }
    }

    fn clear(&mut self) {
        self.shape = Shape::Absent;
        self.members.clear();
    }
}

/// One event as read: scalars in slots, user, context and properties read into theirs. Kept
/// from one event to the next (its slots are about 2 KB): every slot is taken by the checks, and
/// all of them are cleared when an event is rejected.
#[derive(Debug)]
struct EventIn<'a> {
    top: Members<'a, { ev::COUNT }>,
    user: Nested<'a, { us::COUNT }>,
    context: Nested<'a, { cx::COUNT }>,
    properties: Nested<'a, { pr::COUNT }>,
}

impl<'a> EventIn<'a> {
    fn new() -> Box<Self> {
        Box::new(EventIn { top: Members::new(), user: Nested::new(), context: Nested::new(), properties: Nested::new() })
    }

    /// Reads the event object the reader is at.
    fn read(&mut self, r: &mut Reader<'a>) -> std::result::Result<(), json::Error> {
        if r.open_object()? {
            loop {
                let key = r.key()?;
                match ev::index(&key) {
                    Some(ev::user) => self.user.read(r, us::index, false)?,
                    Some(ev::context) => self.context.read(r, cx::index, false)?,
                    Some(ev::properties) => self.properties.read(r, pr::index, true)?,
                    Some(i) => self.top.slots[i] = Some(r.token()?),
                    None => r.skip()?,
                }
                if !r.next_member()? {
                    break;
                }
            }
        }
        Ok(())
    }

    fn clear(&mut self) {
        self.top.clear();
        self.user.clear();
        self.context.clear();
        self.properties.clear();
    }

    fn is_clear(&self) -> bool {
        let empty = |slots: &[Option<Tok<'_>>], rest: usize| slots.iter().all(Option::is_none) && rest == 0;
        empty(&self.top.slots, self.top.rest.len())
            && empty(&self.user.members.slots, 0)
            && empty(&self.context.members.slots, 0)
            && empty(&self.properties.members.slots, self.properties.members.rest.len())
            && [&self.user.shape, &self.context.shape, &self.properties.shape].iter().all(|s| matches!(s, Shape::Absent))
    }
}

// ---- Avro, written as the checks pass ------------------------------------------------------

fn put_str(out: &mut Vec<u8>, s: &str) -> Range<u32> {
    write_long(s.len() as i64, out);
    let start = out.len() as u32;
    out.extend_from_slice(s.as_bytes());
    start..out.len() as u32
}

/// A `["null", string]` union.
fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) -> Option<Range<u32>> {
    match s {
        None => {
            out.push(0);
            None
        }
        Some(s) => {
            out.push(2);
            Some(put_str(out, s))
        }
    }
}

/// A `["null", long]` union.
fn put_opt_long(out: &mut Vec<u8>, v: Option<i64>) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(2);
            write_long(v, out);
        }
    }
}

/// An Avro array (or map) of `count` items already written from `at`: one block, then the end.
fn close_block(out: &mut Vec<u8>, at: usize, count: usize) {
    match count {
        0 => {}
        // A count below 64 is one byte (zig-zag doubles it).
        1..64 => out.insert(at, (count as u8) << 1),
        _ => {
            let mut head = Vec::new();
            write_long(count as i64, &mut head);
            out.splice(at..at, head);
        }
    }
    out.push(0);
}

/// The `custom` map: keys in order, so the same properties always give the same bytes.
fn put_custom(out: &mut Vec<u8>, mut entries: Vec<(Cow<'_, str>, Cow<'_, str>)>) {
    let at = out.len();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (k, v) in &entries {
        put_str(out, k);
        put_str(out, v);
    }
    close_block(out, at, entries.len());
}

// ---- checks ------------------------------------------------------------------------------

/// Where a member is, for messages: `properties.price`, `properties.items[2].quantity`.
#[derive(Clone, Copy)]
enum Scope {
    Properties,
    Context,
    Traits,
    Item(usize),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Properties => f.write_str("properties"),
            Scope::Context => f.write_str("context"),
            Scope::Traits => f.write_str("properties.traits"),
            Scope::Item(i) => write!(f, "properties.items[{i}]"),
        }
    }
}

/// A text value: strings, or numbers and booleans written as text (product ids are often numbers).
fn text<'a>(v: Tok<'a>, scope: Scope, key: &str) -> Result<Option<Cow<'a, str>>> {
    match v {
        Tok::Null => Ok(None),
        Tok::Object(_) | Tok::Array(_) => Err(invalid(format_args!("{scope}.{key}"), "must be a string")),
        scalar => Ok(Some(scalar.into_text())),
    }
}

/// A text value (as [`text`]) written straight into the record as a `["null", string]` union;
/// its length in bytes when it was there. It repeats `text`'s rule rather than calling it and
/// `put_opt_str`: the `Option<Cow>` in between cost ~1,200 instructions an event (callgrind).
#[inline(always)]
fn put_text(out: &mut Vec<u8>, v: Tok<'_>, scope: Scope, key: &str) -> Result<Option<usize>> {
    match v {
        Tok::Null => {
            out.push(0);
            Ok(None)
        }
        Tok::Object(_) | Tok::Array(_) => Err(invalid(format_args!("{scope}.{key}"), "must be a string")),
        scalar => {
            let s = scalar.into_text();
            out.push(2);
            put_str(out, &s);
            Ok(Some(s.len()))
        }
    }
}

/// A whole number at least `min`. Money fields say so in their message.
fn integer(v: Tok<'_>, scope: Scope, key: &str, min: i64, money: bool) -> Result<Option<i64>> {
    let field = format_args!("{scope}.{key}");
    let what = if money { "must be a whole number of VND (dong), without decimals" } else { "must be a whole number" };
    let v = match v {
        Tok::Null => return Ok(None),
        // Whole numbers first; 1.5e3 or 2000.0 only when that fails.
        Tok::Num(n) => match n.parse::<i64>() {
            Ok(i) => i,
            Err(_) => match n.parse::<f64>() {
                Ok(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => f as i64,
                _ => return Err(invalid(field, what)),
            },
        },
        _ => return Err(invalid(field, what)),
    };
    if v < min {
        return Err(invalid(field, &format!("must be at least {min}, got {v}")));
    }
    Ok(Some(v))
}

fn required<T>(v: Option<T>, key: &str) -> Result<T> {
    v.ok_or_else(|| missing(format_args!("properties.{key}"), ""))
}

/// Parses an RFC 3339 timestamp, or epoch milliseconds, into epoch ms.
pub fn parse_timestamp(field: &str, v: Tok<'_>) -> Result<i64> {
    match v {
        Tok::Str(s) => rfc3339_millis(trim(&s))
            .map(Ok)
            .unwrap_or_else(|| DateTime::parse_from_rfc3339(trim(&s)).map(|t| t.timestamp_millis()))
            .map_err(|_| invalid(field, &format!("{s:?} is not an RFC 3339 time such as 2026-11-23T09:30:00+07:00"))),
        Tok::Num(n) => n.parse::<i64>().ok().filter(|ms| *ms > 0).ok_or_else(|| invalid(field, "as a number must be epoch milliseconds")),
        _ => Err(invalid(field, "must be an RFC 3339 string")),
    }
}

/// `str::trim`, without its Unicode decoding when both ends are visible ASCII (nearly always;
/// no whitespace is ASCII-graphic).
fn trim(s: &str) -> &str {
    match (s.as_bytes().first(), s.as_bytes().last()) {
        (Some(a), Some(z)) if a.is_ascii_graphic() && z.is_ascii_graphic() => s,
        _ => s.trim(),
    }
}

/// Epoch milliseconds of an RFC 3339 time in the shape SDKs send —
/// `YYYY-MM-DDTHH:MM:SS`, up to nine fraction digits, `Z` or `±HH:MM` — with every field in
/// range; `None` for anything else, which chrono then reads (or refuses). The same value chrono
/// gives, a test checks; about a tenth of its cost, and every event has a time.
fn rfc3339_millis(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0i64, |n, d| d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0')))
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&month) || day < 1 || day > month_days[month as usize - 1] || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if b[i] == b'.' {
        let digits = b[i + 1..].iter().take_while(|d| d.is_ascii_digit()).count();
        if !(1..=9).contains(&digits) {
            return None;
        }
        millis = b[i + 1..i + 1 + digits.min(3)].iter().fold(0, |n, d| n * 10 + i64::from(d - b'0'));
        millis *= [100, 10, 1][digits.min(3) - 1];
        i += 1 + digits;
    }
    let offset_secs = match &b[i..] {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'-' { -(h * 3600 + m * 60) } else { h * 3600 + m * 60 }
        }
        _ => return None,
    };
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(secs * 1000 + millis)
}

/// A time that may be absent or null.
pub fn optional_time(field: &str, v: Tok<'_>) -> Result<Option<i64>> {
    match v {
        Tok::Null => Ok(None),
        v => parse_timestamp(field, v).map(Some),
    }
}

/// The envelope's time fields, in schema order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    pub event_time: i64,
    pub sent_at: Option<i64>,
    pub received_at: i64,
    pub corrected: i64,
    pub skew: i64,
    pub future_clamped: bool,
    pub stale: bool,
}

impl Times {
    fn new(event_time: Option<i64>, sent_at: Option<i64>, received_at: i64) -> Times {
        let (event_time, corrected, skew) = match (event_time, sent_at) {
            // The device clock may be off; what it measured between event and send is not.
            (Some(et), Some(sa)) => (et, received_at - (sa - et), received_at - sa),
            (Some(et), None) => (et, et, 0),
            (None, Some(sa)) => (received_at, received_at, received_at - sa),
            (None, None) => (received_at, received_at, 0),
        };
        Times {
            event_time,
            sent_at,
            received_at,
            corrected: corrected.min(received_at),
            skew,
            future_clamped: corrected > received_at,
            stale: received_at - corrected > STALE_AFTER_MS,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        write_long(self.event_time, out);
        put_opt_long(out, self.sent_at);
        write_long(self.received_at, out);
        write_long(self.corrected, out);
        write_long(self.skew, out);
        out.push(u8::from(self.future_clamped));
        out.push(u8::from(self.stale));
    }
}

/// The consent purposes an event's data needs, as bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs(u8);

impl Needs {
    const PROFILE: u8 = 1;
    const PHONE: u8 = 2;

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The purposes, profile first.
    pub fn purposes(self) -> impl Iterator<Item = &'static str> {
        [(Needs::PROFILE, PURPOSE_PROFILE), (Needs::PHONE, PURPOSE_PHONE)].into_iter().filter(move |(b, _)| self.0 & b != 0).map(|(_, p)| p)
    }
}

/// An accepted event, encoded in the request's buffer but for its time fields.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub topic: Topic,
    /// The event id as a number, for finding repeats cheaply.
    pub id: u128,
    pub needs_consent: Needs,
    /// A `consent_changed`: the purpose and whether it was granted.
    pub consent: Option<(&'static str, bool)>,
    /// The record before the times (from the event id to the user) and after them.
    head: Range<u32>,
    tail: Range<u32>,
    key: Range<u32>,
    zalo_id: Option<Range<u32>>,
    anonymous_id: Option<Range<u32>>,
    event_time: Option<i64>,
    /// The event's own `sent_at`, which overrides the batch's.
    sent_at: Option<i64>,
}

fn text_at<'b>(buf: &'b [u8], r: &Range<u32>) -> &'b str {
    std::str::from_utf8(&buf[r.start as usize..r.end as usize]).expect("written from a str")
}

impl Encoded {
    /// The partition key: the user's `zalo_id`, else `anonymous_id`.
    pub fn key<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        &buf[self.key.start as usize..self.key.end as usize]
    }

    /// The user's ids that consent is recorded under.
    pub fn user_ids<'b>(&self, buf: &'b [u8]) -> [Option<&'b str>; 2] {
        [self.zalo_id.as_ref().map(|r| text_at(buf, r)), self.anonymous_id.as_ref().map(|r| text_at(buf, r))]
    }

    /// The event's times, given the batch's `sent_at` (by the device clock) and the receipt time.
    pub fn times(&self, batch_sent_at: Option<i64>, received_at: i64) -> Times {
        Times::new(self.event_time, self.sent_at.or(batch_sent_at), received_at)
    }

    /// The whole record in the Confluent wire format, into `out` (cleared first).
    pub fn frame(&self, buf: &[u8], times: &Times, out: &mut Vec<u8>) {
        out.clear();
        out.push(schemas::codec::MAGIC);
        out.extend_from_slice(&schemas::codec::writer_schema_id(self.topic).to_be_bytes());
        out.extend_from_slice(&buf[self.head.start as usize..self.head.end as usize]);
        times.write(out);
        out.extend_from_slice(&buf[self.tail.start as usize..self.tail.end as usize]);
    }
}

/// One event of a request, read and checked.
#[derive(Debug)]
pub enum Checked<'a> {
    Accepted(&'a str, Encoded),
    /// Refused: its raw text and why.
    Rejected(&'a str, Rejection),
}

/// The events of one request, read and checked in one pass. Accepted ones are in `buf`.
#[derive(Debug)]
pub struct Events<'a> {
    pub buf: Vec<u8>,
    slots: Box<EventIn<'a>>,
    pub checked: Vec<Checked<'a>>,
    /// The first event over [`MAX_EVENT_BYTES`]: its index and size.
    pub too_large: Option<(usize, usize)>,
}

impl<'a> Events<'a> {
    pub fn with_capacity(events: usize) -> Events<'a> {
        Events { buf: Vec::with_capacity(events * 256), slots: EventIn::new(), checked: Vec::with_capacity(events), too_large: None }
    }

    pub fn len(&self) -> usize {
        self.checked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.checked.is_empty()
    }

    /// Reads the event the reader is at and checks it for app `app_id`. Fails only when the text
    /// is not JSON; a bad event is kept as rejected.
    pub fn read(&mut self, r: &mut Reader<'a>, app_id: &str) -> std::result::Result<(), json::Error> {
        let start = r.pos();
        let object = r.peek() == Some(b'{');
        let read = if object { self.slots.read(r) } else { r.skip() };
        if let Err(e) = read {
            self.slots.clear();
            return Err(e);
        }
        let raw = r.since(start);
        let at = self.buf.len();
        let checked = if raw.len() > MAX_EVENT_BYTES {
            self.too_large.get_or_insert((self.checked.len(), raw.len()));
            Err(too_large(raw.len()))
        } else if !object {
            Err(Rejection::new(RejectCode::InvalidJson, "event is not a JSON object"))
        } else {
            encode_event(&mut self.slots, app_id, &mut self.buf)
        };
        match checked {
            Ok(e) => {
                debug_assert!(self.slots.is_clear(), "every member read is written or refused");
                self.checked.push(Checked::Accepted(raw, e));
            }
            Err(why) => {
                self.slots.clear();
                self.buf.truncate(at);
                self.checked.push(Checked::Rejected(raw, why));
            }
        }
        Ok(())
    }
}

/// A batch body, read: its events (checked and encoded, up to the limit), how many there were,
/// and its `sent_at`.
pub struct BatchBody<'a> {
    pub events: Events<'a>,
    pub count: usize,
    pub sent_at: Option<Tok<'a>>,
}

/// Reads `{"sent_at": …, "events": […]}`, members in any order; the reason when it is not that.
pub fn read_batch<'a>(text: &'a str, app: &str) -> std::result::Result<BatchBody<'a>, String> {
    let not_json = |e: json::Error| format!("body is not a JSON batch: {e}");
    let mut r = Reader::new(text);
    if r.peek() != Some(b'{') {
        r.skip().and_then(|()| r.finish()).map_err(not_json)?;
        return Err("body is not a JSON object".into());
    }
    let mut batch: Option<BatchBody<'a>> = None;
    let mut sent_at = None;
    if r.open_object().map_err(not_json)? {
        loop {
            match &*r.key().map_err(not_json)? {
                "events" if r.peek() == Some(b'[') => {
                    // A repeated member counts as its last copy, as with any other.
                    let mut b = BatchBody { events: Events::with_capacity(256), count: 0, sent_at: None };
                    if r.open_array().map_err(not_json)? {
                        loop {
                            // Past the limit the answer is 413: the rest is only checked as JSON.
                            if b.count < MAX_BATCH_EVENTS {
                                b.events.read(&mut r, app).map_err(not_json)?;
                            } else {
                                r.skip().map_err(not_json)?;
                            }
                            b.count += 1;
                            if !r.next_element().map_err(not_json)? {
                                break;
                            }
                        }
                    }
                    batch = Some(b);
                }
                "events" => {
                    r.skip().map_err(not_json)?;
                    batch = None;
                }
                "sent_at" => sent_at = Some(r.token().map_err(not_json)?),
                _ => r.skip().map_err(not_json)?,
            }
            if !r.next_member().map_err(not_json)? {
                break;
            }
        }
    }
    r.finish().map_err(not_json)?;
    let mut batch = batch.ok_or_else(|| "body has no \"events\" array".to_string())?;
    batch.sent_at = sent_at;
    Ok(batch)
}

/// One event's text, read and checked; the error when it is not JSON.
pub fn read_one<'a>(text: &'a str, app: &str) -> std::result::Result<Events<'a>, json::Error> {
    let mut r = Reader::new(text);
    let mut events = Events::with_capacity(1);
    events.read(&mut r, app)?;
    r.finish()?;
    Ok(events)
}

/// One valid event, framed: what a caller outside a request needs (tests, the bench, tools).
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedEvent {
    pub topic: Topic,
    pub key: String,
    /// The Confluent-framed Avro record.
    pub payload: Vec<u8>,
    pub id: u128,
    pub needs_consent: Vec<&'static str>,
    pub consent: Option<(&'static str, bool)>,
}

impl ParsedEvent {
    /// The record decoded again, as the processors will read it.
    pub fn event(&self) -> InputEvent {
        schemas::codec::decode_input(self.topic, &self.payload).expect("the gateway's records decode with their schema")
    }
}

/// Parses and checks one event. `raw` is the event's own JSON text.
pub fn parse_event(raw: &str, receipt: &Receipt<'_>) -> Result<ParsedEvent> {
    if raw.len() > MAX_EVENT_BYTES {
        return Err(too_large(raw.len()));
    }
    let mut events = read_one(raw, receipt.app_id).map_err(not_json)?;
    match events.checked.pop().expect("one event read") {
        Checked::Rejected(_, why) => Err(why),
        Checked::Accepted(_, e) => {
            let mut payload = Vec::with_capacity(e.head.len() + e.tail.len() + 48);
            e.frame(&events.buf, &e.times(receipt.sent_at, receipt.received_at), &mut payload);
            Ok(ParsedEvent {
                topic: e.topic,
                key: String::from_utf8_lossy(e.key(&events.buf)).into_owned(),
                payload,
                id: e.id,
                needs_consent: e.needs_consent.purposes().collect(),
                consent: e.consent,
            })
        }
    }
}

/// An event's `type`, as the enum of its topic.
#[derive(Debug, Clone, Copy)]
enum EventType {
    View(ViewType),
    Cart(CartType),
    Order(OrderType),
    Identity(IdentityType),
    Engagement(EngagementType),
}

impl EventType {
    /// The type a client may send under `name` (the types of [`EVENT_TYPES`]; a schemas test
    /// checks the enums name the same ones), without scanning the table.
    fn of(name: &str) -> Option<EventType> {
        (ViewType::from_name(name).map(EventType::View))
            .or_else(|| CartType::from_name(name).map(EventType::Cart))
            .or_else(|| OrderType::from_name(name).map(EventType::Order))
            .or_else(|| IdentityType::from_name(name).filter(|t| !t.is_internal()).map(EventType::Identity))
            .or_else(|| EngagementType::from_name(name).map(EventType::Engagement))
    }

    fn topic(self) -> Topic {
        match self {
            EventType::View(_) => Topic::Views,
            EventType::Cart(_) => Topic::Carts,
            EventType::Order(_) => Topic::Orders,
            EventType::Identity(_) => Topic::Identities,
            EventType::Engagement(_) => Topic::Engagement,
        }
    }

    /// The Avro enum symbol's index: the variants are in symbol order.
    fn symbol(self) -> i64 {
        match self {
            EventType::View(t) => t as i64,
            EventType::Cart(t) => t as i64,
            EventType::Order(t) => t as i64,
            EventType::Identity(t) => t as i64,
            EventType::Engagement(t) => t as i64,
        }
    }
}

/// Checks one event read into slots and writes it to `out`. On a rejection `out` holds a partial
/// record the caller cuts off.
fn encode_event(e: &mut EventIn<'_>, app_id: &str, out: &mut Vec<u8>) -> Result<Encoded> {
    let head_start = out.len() as u32;
    let id = match e.top.take(ev::event_id) {
        Tok::Null => return Err(missing("event_id", " (a UUID the client makes once per event and reuses on retries)")),
        Tok::Str(s) => {
            let uuid = uuid::Uuid::try_parse(trim(&s)).map_err(|_| invalid("event_id", &format!("{s:?} is not a UUID")))?;
            // Canonical form: hyphenated lower case (as SDKs send it, so usually the same bytes).
            put_str(out, uuid.hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()));
            uuid.as_u128()
        }
        _ => return Err(invalid("event_id", "must be a string UUID")),
    };
    put_str(out, app_id);
    let type_name = match e.top.take(ev::type_) {
        Tok::Null => return Err(missing("type", "")),
        Tok::Str(s) => s,
        _ => return Err(invalid("type", "must be a string")),
    };
    let Some(kind) = EventType::of(&type_name) else {
        let known: Vec<&str> = EVENT_TYPES.iter().map(|(n, _)| *n).collect();
        return Err(Rejection::new(
            RejectCode::UnknownType,
            format!("type {type_name:?} is unknown; the known types are {}", known.join(", ")),
        ));
    };
    let topic = kind.topic();
    write_long(kind.symbol(), out);

    // The user.
    let Some(user) = e.user.object("user")? else {
        return Err(Rejection::new(RejectCode::NoUserId, "user is required, with a zalo_id or an anonymous_id"));
    };
    let zalo_id = user_id("zalo_id", user.take(us::zalo_id))?;
    let anonymous_id = user_id("anonymous_id", user.take(us::anonymous_id))?;
    let oa_user_id = user_id("oa_user_id", user.take(us::oa_user_id))?;
    let key = zalo_id
        .as_deref()
        .or(anonymous_id.as_deref())
        .ok_or_else(|| Rejection::new(RejectCode::NoUserId, "user needs a zalo_id or an anonymous_id"))?;
    let key = put_str(out, key);
    let zalo_id = put_opt_str(out, zalo_id.as_deref());
    let anonymous_id = put_opt_str(out, anonymous_id.as_deref());
    put_opt_str(out, oa_user_id.as_deref());
    let head = head_start..out.len() as u32;

    let sent_at = optional_time("sent_at", e.top.take(ev::sent_at))?;
    let event_time = optional_time("event_time", e.top.take(ev::event_time))?;

    // The context: the names it knows, in schema order; others are ignored.
    let tail_start = out.len() as u32;
    match e.context.object("context")? {
        None => out.extend_from_slice(&[0; cx::COUNT]),
        Some(c) => {
            for (slot, name) in cx::NAMES.iter().enumerate() {
                put_text(out, c.take(slot), Scope::Context, name)?;
            }
        }
    }

    // Empty slots only when there are no properties (they are 1.2 KB to set and drop).
    let mut absent;
    let props = match e.properties.object("properties")? {
        Some(p) => p,
        None => {
            absent = Members::new();
            &mut absent
        }
    };
    let mut enc = Encoded {
        topic,
        id,
        needs_consent: Needs::default(),
        consent: None,
        head,
        tail: 0..0,
        key,
        zalo_id,
        anonymous_id,
        event_time,
        sent_at,
    };
    match kind {
        EventType::View(kind) => view_properties(kind, props, out)?,
        EventType::Cart(kind) => cart_properties(kind, props, out)?,
        EventType::Order(kind) => order_properties(kind, props, out)?,
        EventType::Identity(kind) => {
            if matches!(kind, IdentityType::OaFollowed | IdentityType::OaUnfollowed | IdentityType::OaInteracted) && oa_user_id.is_none() {
                return Err(missing("user.oa_user_id", " for OA events (getUserInfo().idByOA)"));
            }
            (enc.needs_consent, enc.consent) = identity_properties(kind, props, out)?;
        }
        EventType::Engagement(kind) => engagement_properties(kind, props, out)?,
    }
    enc.tail = tail_start..out.len() as u32;
    Ok(enc)
}

/// A user id: trimmed, not a placeholder, not too long.
fn user_id<'a>(name: &str, v: Tok<'a>) -> Result<Option<Cow<'a, str>>> {
    let s = match v {
        Tok::Null => return Ok(None),
        Tok::Str(s) => s,
        Tok::Num(_) => {
            return Err(invalid(
                format_args!("user.{name}"),
                "must be a string: Zalo ids are longer than JavaScript numbers can hold exactly",
            ));
        }
        _ => return Err(invalid(format_args!("user.{name}"), "must be a string")),
    };
    let t = trim(&s);
    if t.len() <= 15 && PLACEHOLDER_IDS.iter().any(|p| t.eq_ignore_ascii_case(p)) {
        return Err(Rejection::new(
            RejectCode::PlaceholderId,
            format!("user.{name} is the placeholder {s:?}; send a real id or leave the field out"),
        ));
    }
    if t.len() > 128 {
        return Err(invalid(format_args!("user.{name}"), "is longer than 128 characters"));
    }
    Ok(Some(match s {
        Cow::Borrowed(b) => Cow::Borrowed(trim(b)),
        Cow::Owned(o) => Cow::Owned(trim(&o).to_string()),
    }))
}

/// Property helpers: each takes its member out of the slots; what is left goes to `custom`.
type Props<'a> = Members<'a, { pr::COUNT }>;

fn prop_text<'a>(m: &mut Props<'a>, slot: usize) -> Result<Option<Cow<'a, str>>> {
    text(m.take(slot), Scope::Properties, pr::NAMES[slot])
}

/// A text property written straight into the record; its length when it was there.
fn put_prop(m: &mut Props<'_>, slot: usize, out: &mut Vec<u8>) -> Result<Option<usize>> {
    put_text(out, m.take(slot), Scope::Properties, pr::NAMES[slot])
}

fn required_text<'a>(m: &mut Props<'a>, slot: usize) -> Result<Cow<'a, str>> {
    prop_text(m, slot)?.filter(|s| !trim(s).is_empty()).ok_or_else(|| missing(format_args!("properties.{}", pr::NAMES[slot]), ""))
}

fn prop_integer(m: &mut Props<'_>, slot: usize, min: i64) -> Result<Option<i64>> {
    integer(m.take(slot), Scope::Properties, pr::NAMES[slot], min, false)
}

fn money(m: &mut Props<'_>, slot: usize) -> Result<Option<i64>> {
    integer(m.take(slot), Scope::Properties, pr::NAMES[slot], 0, true)
}

fn custom(m: &mut Props<'_>, out: &mut Vec<u8>) {
    put_custom(out, m.rest(pr::NAMES));
}

/// `properties.items`: each line checked and written; the number of lines.
fn items(m: &mut Props<'_>, out: &mut Vec<u8>) -> Result<usize> {
    let at = out.len();
    let raw = match m.take(pr::items) {
        Tok::Null => {
            out.push(0);
            return Ok(0);
        }
        Tok::Array(raw) => raw,
        _ => return Err(invalid("properties.items", "must be an array")),
    };
    let mut r = Reader::new(raw);
    let mut n = 0;
    if r.open_array().map_err(not_json)? {
        loop {
            let scope = Scope::Item(n);
            let Tok::Object(obj) = r.token().map_err(not_json)? else { return Err(invalid(scope, "must be an object")) };
            let mut item = Members::<{ it::COUNT }>::parse(obj, it::index, false)?;
            let product_id = text(item.take(it::product_id), scope, "product_id")?;
            let product_id = product_id.ok_or_else(|| missing(format_args!("{scope}.product_id"), ""))?;
            let product_name = text(item.take(it::product_name), scope, "product_name")?;
            let category = text(item.take(it::category), scope, "category")?;
            let quantity = integer(item.take(it::quantity), scope, "quantity", 1, false)?;
            let quantity = quantity.ok_or_else(|| missing(format_args!("{scope}.quantity"), ""))?;
            let price = integer(item.take(it::price), scope, "price", 0, true)?;
            let price = price.ok_or_else(|| missing(format_args!("{scope}.price"), ""))?;
            put_str(out, &product_id);
            put_opt_str(out, product_name.as_deref());
            put_opt_str(out, category.as_deref());
            write_long(quantity, out);
            write_long(price, out);
            n += 1;
            if !r.next_element().map_err(not_json)? {
                break;
            }
        }
    }
    close_block(out, at, n);
    Ok(n)
}

fn view_properties(kind: ViewType, m: &mut Props<'_>, out: &mut Vec<u8>) -> Result<()> {
    // Written as they are checked (a rejected event's bytes are cut off), in schema order.
    put_prop(m, pr::page_title, out)?;
    let product_id = put_prop(m, pr::product_id, out)?;
    put_prop(m, pr::product_name, out)?;
    put_prop(m, pr::category, out)?;
    put_opt_long(out, money(m, pr::price)?);
    put_opt_long(out, prop_integer(m, pr::dwell_ms, 0)?);
    let query = put_prop(m, pr::query, out)?;
    put_opt_long(out, prop_integer(m, pr::results_count, 0)?);
    put_prop(m, pr::share_channel, out)?;
    put_prop(m, pr::list_id, out)?;
    match kind {
        ViewType::ProductViewed | ViewType::ProductClicked | ViewType::ProductShared => {
            required(product_id.filter(|len| *len > 0), "product_id")?;
        }
        ViewType::Search => {
            required(query, "query")?;
        }
        ViewType::PageViewed => {}
    }
    custom(m, out);
    Ok(())
}

fn cart_properties(kind: CartType, m: &mut Props<'_>, out: &mut Vec<u8>) -> Result<()> {
    let cart_id = required_text(m, pr::cart_id)?;
    put_str(out, &cart_id);
    let product_id = put_prop(m, pr::product_id, out)?;
    put_prop(m, pr::product_name, out)?;
    put_prop(m, pr::category, out)?;
    let min_quantity = if kind == CartType::CartItemUpdated { 0 } else { 1 };
    let quantity = prop_integer(m, pr::quantity, min_quantity)?;
    put_opt_long(out, quantity);
    let price = money(m, pr::price)?;
    put_opt_long(out, price);
    put_opt_long(out, money(m, pr::cart_value)?);
    items(m, out)?;
    match kind {
        CartType::CartItemAdded | CartType::CartItemRemoved => {
            required(product_id, "product_id")?;
            required(quantity, "quantity")?;
            required(price, "price")?;
        }
        CartType::CartItemUpdated => {
            required(product_id, "product_id")?;
            required(quantity, "quantity")?;
        }
        CartType::CartViewed | CartType::CheckoutStarted => {}
    }
    custom(m, out);
    Ok(())
}

fn order_properties(kind: OrderType, m: &mut Props<'_>, out: &mut Vec<u8>) -> Result<()> {
    let order_id = required_text(m, pr::order_id)?;
    let cart_id = prop_text(m, pr::cart_id)?;
    put_str(out, &order_id);
    put_opt_str(out, cart_id.as_deref());
    let lines = items(m, out)?;
    let total = money(m, pr::total)?;
    put_opt_long(out, total);
    put_opt_long(out, money(m, pr::shipping_fee)?);
    put_opt_long(out, money(m, pr::discount)?);
    put_prop(m, pr::payment_method, out)?;
    put_prop(m, pr::voucher_code, out)?;
    put_opt_long(out, prop_integer(m, pr::points_used, 0)?);
    let status = prop_text(m, pr::status)?;
    put_opt_str(out, status.as_deref());
    put_opt_long(out, money(m, pr::refund_amount)?);
    put_prop(m, pr::reason, out)?;
    match kind {
        OrderType::OrderPlaced => {
            required(total, "total")?;
            if lines == 0 {
                return Err(missing("properties.items", " (at least one line) for order_placed"));
            }
        }
        OrderType::OrderPaid => {
            required(total, "total")?;
        }
        OrderType::OrderStatusChanged => {
            required(status.as_ref(), "status")?;
        }
        OrderType::OrderCancelled | OrderType::OrderRefunded => {}
    }
    custom(m, out);
    Ok(())
}

/// Writes the identity properties; what consent their data needs, and the consent decision.
fn identity_properties(kind: IdentityType, m: &mut Props<'_>, out: &mut Vec<u8>) -> Result<(Needs, Option<(&'static str, bool)>)> {
    let mut traits = match m.take(pr::traits) {
        Tok::Null => None,
        Tok::Object(raw) => Some(Members::<{ tr::COUNT }>::parse(raw, tr::index, true)?),
        _ => return Err(invalid("properties.traits", "must be an object")),
    };
    // Segment-style SDKs put the phone among the traits.
    let phone_value = match m.take(pr::phone) {
        Tok::Null => traits.as_mut().map_or(Tok::Null, |t| t.take(tr::phone)),
        other => other,
    };
    let phone = match phone_value {
        Tok::Null => None,
        Tok::Str(s) => Some(normalize_vn_phone(&s).map_err(|e| invalid("properties.phone", &format!("is invalid: {e}")))?),
        _ => return Err(invalid("properties.phone", "must be a string")),
    };
    let mut needs = Needs::default();
    match traits {
        None => out.push(0),
        Some(mut t) => {
            let gender = text(t.take(tr::gender), Scope::Traits, "gender")?.map(|g| g.to_ascii_lowercase());
            if let Some(g) = &gender
                && !matches!(g.as_str(), "male" | "female" | "other")
            {
                return Err(invalid("properties.traits.gender", "must be male, female or other"));
            }
            let birthday = text(t.take(tr::birthday), Scope::Traits, "birthday")?;
            if let Some(b) = &birthday
                && !valid_birthday(b)
            {
                return Err(invalid("properties.traits.birthday", "must be YYYY-MM-DD, or --MM-DD without the year"));
            }
            let email = text(t.take(tr::email), Scope::Traits, "email")?;
            if let Some(e) = &email
                && !e.contains('@')
            {
                return Err(invalid("properties.traits.email", "is not an email address"));
            }
            let name = text(t.take(tr::name), Scope::Traits, "name")?;
            let city = text(t.take(tr::city), Scope::Traits, "city")?;
            let rest = t.rest(tr::NAMES);
            // Traits with nothing in them are no traits.
            if name.is_none() && gender.is_none() && birthday.is_none() && email.is_none() && city.is_none() && rest.is_empty() {
                out.push(0);
            } else {
                needs.0 |= Needs::PROFILE;
                out.push(2);
                put_opt_str(out, name.as_deref());
                put_opt_str(out, gender.as_deref());
                put_opt_str(out, birthday.as_deref());
                put_opt_str(out, email.as_deref());
                put_opt_str(out, city.as_deref());
                put_custom(out, rest);
            }
        }
    }
    if phone.is_some() {
        needs.0 |= Needs::PHONE;
    }
    put_opt_str(out, phone.as_deref());
    let purpose = prop_text(m, pr::purpose)?;
    put_opt_str(out, purpose.as_deref());
    let granted = match m.take(pr::granted) {
        Tok::Null => None,
        Tok::Bool(b) => Some(b),
        _ => return Err(invalid("properties.granted", "must be true or false")),
    };
    match granted {
        None => out.push(0),
        Some(b) => out.extend_from_slice(&[2, u8::from(b)]),
    }
    put_prop(m, pr::policy_version, out)?;
    put_prop(m, pr::oa_id, out)?;
    put_prop(m, pr::interaction, out)?;
    let mut consent = None;
    match kind {
        IdentityType::Identify => {
            if needs.is_empty() {
                return Err(missing("properties.traits or properties.phone", " for identify"));
            }
        }
        IdentityType::ConsentChanged => {
            let purpose = required(purpose.as_deref(), "purpose")?;
            let Some(known) = CONSENT_PURPOSES.iter().find(|p| **p == purpose) else {
                return Err(invalid("properties.purpose", &format!("{purpose:?} is not one of {}", CONSENT_PURPOSES.join(", "))));
            };
            consent = Some((*known, required(granted, "granted")?));
        }
        IdentityType::OaFollowed | IdentityType::OaUnfollowed | IdentityType::OaInteracted => {}
        // Not in the HTTP API's table of types: never reaches here from a request.
        IdentityType::UserForgotten => unreachable!("internal event types are refused before validation"),
    }
    custom(m, out);
    Ok((needs, consent))
}

fn valid_birthday(b: &str) -> bool {
    if let Some(md) = b.strip_prefix("--") {
        return chrono::NaiveDate::parse_from_str(&format!("2000-{md}"), "%Y-%m-%d").is_ok();
    }
    chrono::NaiveDate::parse_from_str(b, "%Y-%m-%d").is_ok()
}

fn engagement_properties(kind: EngagementType, m: &mut Props<'_>, out: &mut Vec<u8>) -> Result<()> {
    let game_id = prop_text(m, pr::game_id)?;
    put_opt_str(out, game_id.as_deref());
    put_prop(m, pr::result, out)?;
    put_prop(m, pr::reward, out)?;
    let voucher_code = prop_text(m, pr::voucher_code)?;
    put_opt_str(out, voucher_code.as_deref());
    let points = prop_integer(m, pr::points, 1)?;
    put_opt_long(out, points);
    put_prop(m, pr::reason, out)?;
    put_prop(m, pr::order_id, out)?;
    let product_id = prop_text(m, pr::product_id)?;
    put_opt_str(out, product_id.as_deref());
    let rating = prop_integer(m, pr::rating, 1)?;
    put_opt_long(out, rating);
    let referral_code = prop_text(m, pr::referral_code)?;
    put_opt_str(out, referral_code.as_deref());
    match kind {
        EngagementType::MinigamePlayed => {
            required(game_id.as_ref(), "game_id")?;
        }
        EngagementType::VoucherClaimed => {
            required(voucher_code.as_ref(), "voucher_code")?;
        }
        EngagementType::PointsEarned | EngagementType::PointsRedeemed => {
            required(points, "points")?;
        }
        EngagementType::ReviewSubmitted => {
            required(product_id.as_ref(), "product_id")?;
            if !(1..=5).contains(&required(rating, "rating")?) {
                return Err(invalid("properties.rating", "must be 1 to 5"));
            }
        }
        EngagementType::ReferralCompleted => {
            required(referral_code.as_ref(), "referral_code")?;
        }
    }
    custom(m, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
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
                    e.frame(&batch.events.buf, &e.times(None, NOW), &mut payload);
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
}
