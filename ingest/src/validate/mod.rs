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
//!
//! - this file: rejections, the event as read and encoded ([`Encoded`], [`Events`]), the batch
//!   and single-event readers, the envelope (ids, type, user, context) of each event;
//! - `slots`: the member names of the contract and the slots an event is read into;
//! - `checks`: text, numbers, required members, times; the corrected [`Times`];
//! - `avro`: the Avro writes the checks make as they pass;
//! - `properties`: each family's properties and the cart and order lines.

mod avro;
mod checks;
mod properties;
mod slots;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use schemas::avro_write::write_long;
use schemas::event::*;
use schemas::topics::Topic;

use crate::json::{self, Reader, Tok};
use avro::{put_opt_str, put_str};
use checks::{Scope, put_text, trim};
use properties::{cart_properties, engagement_properties, identity_properties, order_properties, view_properties};
use slots::{EventIn, Members, cx, ev, us};

pub use checks::{
    MAX_COUNT, MAX_ID_BYTES, MAX_LONG_TEXT_BYTES, MAX_QUANTITY, MAX_TEXT_BYTES, MAX_VND, Times, optional_time, parse_timestamp,
};

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
    /// Under a session, an event naming another user.
    IdentityMismatch,
    /// Identify or consent for a Zalo user, without that user's session.
    SessionRequired,
    /// A phone from a client: phones come from the Graph exchange or the shop's server.
    PhoneNotVerified,
    /// OA events from a client: they come from Zalo's signed webhook or the shop's server.
    ZaloOnly,
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
            RejectCode::IdentityMismatch => "identity_mismatch",
            RejectCode::SessionRequired => "session_required",
            RejectCode::PhoneNotVerified => "phone_not_verified",
            RejectCode::ZaloOnly => "zalo_only",
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

/// The consent purposes an event's data needs, as bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs(u8);

impl Needs {
    const PROFILE: u8 = 1;
    const PHONE: u8 = 2;

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether the event carries a phone.
    pub fn phone(self) -> bool {
        self.0 & Needs::PHONE != 0
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
    /// The type, for identity events (what a client may send of them depends on who vouches).
    pub identity: Option<IdentityType>,
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

    /// The user's `zalo_id`, if the event names one.
    pub fn zalo_id<'b>(&self, buf: &'b [u8]) -> Option<&'b str> {
        self.zalo_id.as_ref().map(|r| text_at(buf, r))
    }

    /// The whole record in the Confluent wire format, into `out` (cleared first): who vouched
    /// for it is the last field.
    pub fn frame(&self, buf: &[u8], times: &Times, trust: Trust, out: &mut Vec<u8>) {
        out.clear();
        out.push(schemas::codec::MAGIC);
        out.extend_from_slice(&schemas::codec::writer_schema_id(self.topic).to_be_bytes());
        out.extend_from_slice(&buf[self.head.start as usize..self.head.end as usize]);
        times.write(out);
        out.extend_from_slice(&buf[self.tail.start as usize..self.tail.end as usize]);
        // An enum's index, zig-zag: one byte.
        out.push(trust.symbol() << 1);
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
            e.frame(&events.buf, &e.times(receipt.sent_at, receipt.received_at), Trust::Unverified, &mut payload);
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
        identity: None,
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
            enc.identity = Some(kind);
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
