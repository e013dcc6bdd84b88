//! The Confluent wire format: byte 0 is the magic 0, bytes 1..5 the schema id (big-endian), then
//! the Avro binary datum. Any Confluent deserializer reads our records once it can fetch the
//! schema by id (the gateway serves `GET /schemas/ids/{id}`).
//!
//! Writing always uses the topic's newest schema. Reading takes the fast path (serde straight
//! from the bytes) when the record was written with the newest schema, and resolves an older
//! writer schema against the newest one otherwise.

use std::collections::HashMap;
use std::sync::LazyLock;

use apache_avro::reader::datum::GenericDatumReader;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::event::*;
use crate::registry::{SchemaVersion, registry};
use crate::topics::Topic;

pub const MAGIC: u8 = 0;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("record too short for the Confluent wire format ({0} bytes)")]
    TooShort(usize),
    #[error("record starts with byte {0}, not the Confluent magic byte 0")]
    BadMagic(u8),
    #[error("schema id {0} is unknown to this build of zcdp")]
    UnknownSchema(u32),
    #[error("schema id {id} belongs to {found}, not {expected}")]
    WrongTopic { id: u32, found: Topic, expected: Topic },
    #[error("{0} is not an input topic")]
    NotAnInput(Topic),
    #[error("avro: {0}")]
    Avro(#[from] apache_avro::Error),
}

/// A type written to one topic with that topic's value schema.
pub trait Record: Serialize + DeserializeOwned + crate::avro_write::AvroWrite {
    const TOPIC: Topic;
}

impl Record for ViewEvent {
    const TOPIC: Topic = Topic::Views;
}
impl Record for CartEvent {
    const TOPIC: Topic = Topic::Carts;
}
impl Record for OrderEvent {
    const TOPIC: Topic = Topic::Orders;
}
impl Record for IdentityEvent {
    const TOPIC: Topic = Topic::Identities;
}
impl Record for EngagementEvent {
    const TOPIC: Topic = Topic::Engagement;
}
impl Record for DeadLetter {
    const TOPIC: Topic = Topic::DeadLetter;
}

/// Readers built once per schema version, and the id each topic's records are written with.
struct Codecs {
    /// The writer schema's id by `Topic as usize`: read for every record written or decoded, so
    /// an index rather than a hash lookup.
    writer_ids: Vec<Option<u32>>,
    readers: HashMap<u32, GenericDatumReader<'static>>,
}

static CODECS: LazyLock<Codecs> = LazyLock::new(|| {
    let reg = registry();
    let mut writer_ids = Vec::new();
    let mut readers = HashMap::new();
    for v in reg.all() {
        let latest = reg.latest(v.topic).expect("topic has a version");
        if latest.id == v.id {
            let at = v.topic as usize;
            if writer_ids.len() <= at {
                writer_ids.resize(at + 1, None);
            }
            writer_ids[at] = Some(v.id);
        }
        let r = GenericDatumReader::builder(&v.schema).human_readable(false).build().expect("reader for a parsed schema");
        readers.insert(v.id, r);
    }
    Codecs { writer_ids, readers }
});

/// The id records of `topic` are written with.
pub fn writer_schema_id(topic: Topic) -> u32 {
    CODECS.writer_ids.get(topic as usize).copied().flatten().unwrap_or_else(|| panic!("no writer schema for {}", topic.name()))
}

/// Appends `record` to `buf` in the Confluent wire format.
pub fn encode_into<T: Record>(record: &T, buf: &mut Vec<u8>) -> Result<(), CodecError> {
    let id = writer_schema_id(T::TOPIC);
    buf.push(MAGIC);
    buf.extend_from_slice(&id.to_be_bytes());
    record.write_avro(buf);
    Ok(())
}

pub fn encode<T: Record>(record: &T) -> Result<Vec<u8>, CodecError> {
    let mut buf = Vec::with_capacity(256);
    encode_into(record, &mut buf)?;
    Ok(buf)
}

/// Splits a Confluent-framed record into its schema id and Avro body.
pub fn split_frame(bytes: &[u8]) -> Result<(u32, &[u8]), CodecError> {
    if bytes.len() < 5 {
        return Err(CodecError::TooShort(bytes.len()));
    }
    if bytes[0] != MAGIC {
        return Err(CodecError::BadMagic(bytes[0]));
    }
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    Ok((id, &bytes[5..]))
}

pub fn decode<T: Record>(bytes: &[u8]) -> Result<T, CodecError> {
    let (id, mut body) = split_frame(bytes)?;
    if id == writer_schema_id(T::TOPIC) {
        return Ok(CODECS.readers[&id].read_deser(&mut body)?);
    }
    let version: &SchemaVersion = registry().by_id(id).ok_or(CodecError::UnknownSchema(id))?;
    if version.topic != T::TOPIC {
        return Err(CodecError::WrongTopic { id, found: version.topic, expected: T::TOPIC });
    }
    // An older writer schema: decode generically, resolve to the newest, then map to T.
    let latest = registry().latest(T::TOPIC).expect("topic has a version");
    let value = CODECS.readers[&id].read_value(&mut body)?;
    let value = value.resolve(&latest.schema)?;
    Ok(apache_avro::from_value(&value)?)
}

/// The `type` symbol index of an input event record, read without decoding the rest: the
/// envelope starts with `event_id` and `app_id` (strings), then `type` (an enum). `None` when
/// the record is not framed as expected.
pub fn peek_type_index(bytes: &[u8]) -> Option<u32> {
    fn long(b: &[u8], pos: &mut usize) -> Option<i64> {
        let mut z: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = *b.get(*pos)?;
            *pos += 1;
            z |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
        }
        None
    }
    let (_, body) = split_frame(bytes).ok()?;
    let mut pos = 0;
    for _ in 0..2 {
        let len = usize::try_from(long(body, &mut pos)?).ok()?;
        pos = pos.checked_add(len)?;
    }
    u32::try_from(long(body, &mut pos)?).ok()
}

/// Decodes a record of any input topic.
pub fn decode_input(topic: Topic, bytes: &[u8]) -> Result<InputEvent, CodecError> {
    Ok(match topic {
        Topic::Views => InputEvent::View(decode(bytes)?),
        Topic::Carts => InputEvent::Cart(decode(bytes)?),
        Topic::Orders => InputEvent::Order(decode(bytes)?),
        Topic::Identities => InputEvent::Identity(decode(bytes)?),
        Topic::Engagement => InputEvent::Engagement(decode(bytes)?),
        Topic::Messages => InputEvent::Message(Box::new(crate::event::MessageInput::new(decode(bytes)?))),
        other => return Err(CodecError::NotAnInput(other)),
    })
}

/// Encodes any input event for its own topic.
pub fn encode_input_into(event: &InputEvent, buf: &mut Vec<u8>) -> Result<(), CodecError> {
    match event {
        InputEvent::View(e) => encode_into(e, buf),
        InputEvent::Cart(e) => encode_into(e, buf),
        InputEvent::Order(e) => encode_into(e, buf),
        InputEvent::Identity(e) => encode_into(e, buf),
        InputEvent::Engagement(e) => encode_into(e, buf),
        InputEvent::Message(m) => encode_into(&m.message, buf),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sample_events;

    #[test]
    fn every_input_type_round_trips_through_its_schema() {
        for event in sample_events() {
            let mut buf = Vec::new();
            encode_input_into(&event, &mut buf).unwrap_or_else(|e| panic!("{}: {e}", event.type_name()));
            assert_eq!(buf[0], MAGIC);
            let (id, _) = split_frame(&buf).unwrap();
            assert_eq!(id, writer_schema_id(event.topic()));
            let back = decode_input(event.topic(), &buf).unwrap();
            assert_eq!(back, event);
        }
    }

    /// The direct writer produces exactly the bytes apache-avro produces from the `.avsc`.
    fn same_bytes_as_apache_avro<T: Record>(record: &T) {
        let latest = registry().latest(T::TOPIC).unwrap();
        let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&latest.schema).human_readable(false).build().unwrap();
        let mut reference = vec![MAGIC];
        reference.extend_from_slice(&latest.id.to_be_bytes());
        writer.write_ser(&mut reference, record).unwrap();
        assert_eq!(encode(record).unwrap(), reference, "{}", T::TOPIC);
    }

    #[test]
    fn direct_writer_matches_apache_avro_for_every_record_type() {
        for event in sample_events() {
            match &event {
                InputEvent::View(e) => same_bytes_as_apache_avro(e),
                InputEvent::Cart(e) => same_bytes_as_apache_avro(e),
                InputEvent::Order(e) => same_bytes_as_apache_avro(e),
                InputEvent::Identity(e) => same_bytes_as_apache_avro(e),
                InputEvent::Engagement(e) => same_bytes_as_apache_avro(e),
                InputEvent::Message(m) => same_bytes_as_apache_avro(&m.message),
            }
        }
        same_bytes_as_apache_avro(&DeadLetter {
            received_at: -5,
            source: "s".into(),
            app_id: Some("a".into()),
            event_id: None,
            event_type: Some("t".into()),
            index: Some(300),
            reason_code: "c".into(),
            reason: "r".into(),
            raw: vec![0, 255, 7],
        });
        use crate::derived::*;
        let user = User { key: "k".into(), zalo_id: Some("z".into()), ..Default::default() };
        same_bytes_as_apache_avro(&Session {
            session_id: "s".into(),
            user: user.clone(),
            products_viewed: vec!["a".into(), "b".into()],
            start: 1,
            end: 1 << 40,
            converted: true,
            utm_source: Some("x".into()),
            ..Default::default()
        });
        same_bytes_as_apache_avro(&UserInterests {
            products: vec![Score { id: "p".into(), score: 1.25 }],
            terms: vec![Score { id: "t".into(), score: -0.5 }],
            as_of: 99,
            ..Default::default()
        });
        same_bytes_as_apache_avro(&Profile {
            anonymous_ids: vec!["a1".into()],
            consents: vec![Consent { purpose: "profile".into(), granted: true, changed_at: 5, policy_version: Some("v".into()) }],
            phone: Some("84901234567".into()),
            oa_following: true,
            recency_score: 5,
            frequency_score: -3,
            monetary_score: 300,
            lifecycle: "new".into(),
            next_purchase_expected: Some(1 << 41),
            first_touch: Some(Touch { utm_source: Some("zalo".into()), at: 7, conversions: 2, revenue: 90_000, ..Default::default() }),
            ..Default::default()
        });
        same_bytes_as_apache_avro(&CampaignResult {
            app_id: "demo".into(),
            campaign: "cart".into(),
            partition: 3,
            as_of: 1 << 41,
            suppressed: vec![ReasonCount { reason: "no_consent".into(), count: 2 }, ReasonCount { reason: "night_ban".into(), count: 300 }],
            cost_vnd: 330,
            revenue_vnd: -1,
            carts_recovered: 1,
            ..Default::default()
        });
        same_bytes_as_apache_avro(&Activity {
            app_id: "demo".into(),
            partition: 0,
            as_of: 60_000,
            minutes: vec![MinuteCount { minute: 60_000, event_type: "page_viewed".into(), count: 7 }],
            totals: vec![TypeCount { event_type: "page_viewed".into(), count: 70 }],
        });
        same_bytes_as_apache_avro(&AudienceChange {
            segment: "high_value".into(),
            member: true,
            at: 9,
            phone_sha256: Some("ab".into()),
            ..Default::default()
        });
        same_bytes_as_apache_avro(&MessageEvent {
            message_id: "m".into(),
            status: "deferred".into(),
            reason: Some("night_ban".into()),
            zalo_error: Some(-234),
            cost_vnd: 165,
            promotional: true,
            retry_at: Some(1 << 40),
            data: Some("{}".into()),
            ..Default::default()
        });
        same_bytes_as_apache_avro(&CartTrigger {
            user,
            items: vec![Item { product_id: "p".into(), quantity: 2, price: 35_000, category: Some("c".into()), ..Default::default() }],
            last_viewed_product: Some(ViewedProduct { product_id: "p".into(), price: Some(5), viewed_at: 3, ..Default::default() }),
            ..Default::default()
        });
    }

    /// A generic Avro reader (no serde, the schema from the registry alone) sees the same
    /// fields: what a downstream subscriber's stock deserializer does.
    #[test]
    fn generic_reader_sees_the_posted_fields() {
        use apache_avro::types::Value;
        let event = sample_events().into_iter().find(|e| e.type_name() == "order_placed").unwrap();
        let mut buf = Vec::new();
        encode_input_into(&event, &mut buf).unwrap();
        let (id, mut body) = split_frame(&buf).unwrap();
        let schema = apache_avro::Schema::parse_str(&registry().by_id(id).unwrap().schema_json()).unwrap();
        let value = GenericDatumReader::builder(&schema).build().unwrap().read_value(&mut body).unwrap();
        let Value::Record(fields) = value else { panic!("not a record") };
        let get = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(get("event_id"), Value::String(event.event_id().to_string()));
        assert_eq!(get("type"), Value::Enum(0, "order_placed".into()));
        let Value::Record(props) = get("properties") else { panic!() };
        let total = props.iter().find(|(n, _)| n == "total").unwrap().1.clone();
        assert_eq!(total, Value::Union(1, Box::new(Value::Long(1_250_000))));
    }

    #[test]
    fn the_type_can_be_read_without_decoding() {
        for event in sample_events() {
            let mut buf = Vec::new();
            encode_input_into(&event, &mut buf).unwrap();
            let expected = match &event {
                InputEvent::View(e) => e.kind as u32,
                InputEvent::Cart(e) => e.kind as u32,
                InputEvent::Order(e) => e.kind as u32,
                InputEvent::Identity(e) => e.kind as u32,
                InputEvent::Engagement(e) => e.kind as u32,
                // Messages have no type enum at the front.
                InputEvent::Message(_) => continue,
            };
            assert_eq!(peek_type_index(&buf), Some(expected), "{}", event.type_name());
        }
        assert_eq!(peek_type_index(&[0, 0, 0, 0, 1]), None);
    }

    #[test]
    fn bad_frames_are_refused_with_a_reason() {
        assert!(matches!(split_frame(&[0, 0]), Err(CodecError::TooShort(2))));
        assert!(matches!(split_frame(&[7, 0, 0, 0, 1]), Err(CodecError::BadMagic(7))));
        assert!(matches!(decode::<ViewEvent>(&[0, 0, 0, 3, 232, 0]), Err(CodecError::UnknownSchema(1000))));
        let dl = encode(&DeadLetter {
            received_at: 1,
            source: "t".into(),
            app_id: None,
            event_id: None,
            event_type: None,
            index: None,
            reason_code: "x".into(),
            reason: "y".into(),
            raw: b"{}".to_vec(),
        })
        .unwrap();
        assert!(matches!(decode::<ViewEvent>(&dl), Err(CodecError::WrongTopic { .. })));
    }
}
