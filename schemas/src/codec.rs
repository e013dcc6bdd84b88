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
use apache_avro::writer::datum::GenericDatumWriter;
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
pub trait Record: Serialize + DeserializeOwned {
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

/// Writers and readers built once per schema version.
struct Codecs {
    writers: HashMap<Topic, (u32, GenericDatumWriter<'static>)>,
    readers: HashMap<u32, GenericDatumReader<'static>>,
}

static CODECS: LazyLock<Codecs> = LazyLock::new(|| {
    let reg = registry();
    let mut writers = HashMap::new();
    let mut readers = HashMap::new();
    for v in reg.all() {
        let latest = reg.latest(v.topic).expect("topic has a version");
        if latest.id == v.id {
            let w = GenericDatumWriter::builder(&v.schema)
                .human_readable(false)
                .build()
                .expect("writer for a parsed schema");
            writers.insert(v.topic, (v.id, w));
        }
        let r = GenericDatumReader::builder(&v.schema)
            .human_readable(false)
            .build()
            .expect("reader for a parsed schema");
        readers.insert(v.id, r);
    }
    Codecs { writers, readers }
});

/// The id records of `topic` are written with.
pub fn writer_schema_id(topic: Topic) -> u32 {
    CODECS.writers[&topic].0
}

/// Appends `record` to `buf` in the Confluent wire format.
pub fn encode_into<T: Record>(record: &T, buf: &mut Vec<u8>) -> Result<(), CodecError> {
    let (id, writer) = &CODECS.writers[&T::TOPIC];
    buf.push(MAGIC);
    buf.extend_from_slice(&id.to_be_bytes());
    writer.write_ser(buf, record)?;
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
    let (latest_id, _) = CODECS.writers[&T::TOPIC];
    if id == latest_id {
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

/// Decodes a record of any input topic.
pub fn decode_input(topic: Topic, bytes: &[u8]) -> Result<InputEvent, CodecError> {
    Ok(match topic {
        Topic::Views => InputEvent::View(decode(bytes)?),
        Topic::Carts => InputEvent::Cart(decode(bytes)?),
        Topic::Orders => InputEvent::Order(decode(bytes)?),
        Topic::Identities => InputEvent::Identity(decode(bytes)?),
        Topic::Engagement => InputEvent::Engagement(decode(bytes)?),
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
    fn bad_frames_are_refused_with_a_reason() {
        assert!(matches!(split_frame(&[0, 0]), Err(CodecError::TooShort(2))));
        assert!(matches!(split_frame(&[7, 0, 0, 0, 1]), Err(CodecError::BadMagic(7))));
        assert!(matches!(decode::<ViewEvent>(&[0, 0, 0, 3, 232, 0]), Err(CodecError::UnknownSchema(1000))));
        let dl = encode(&DeadLetter {
            received_at: 1, source: "t".into(), app_id: None, event_id: None, event_type: None,
            index: None, reason_code: "x".into(), reason: "y".into(), raw: b"{}".to_vec(),
        }).unwrap();
        assert!(matches!(decode::<ViewEvent>(&dl), Err(CodecError::WrongTopic { .. })));
    }
}
