//! The shared contract of zcdp: the Avro schemas and their Rust types, the Confluent wire format,
//! the topic catalogue, Vietnamese phone numbers, and the Kafka settings every role uses.
//!
//! Roles talk to each other only through topics; everything two roles must agree on lives here.

pub mod avro_write;
pub mod codec;
pub mod derived;
pub mod duration;
pub mod event;
pub mod kafka;
pub mod keys;
pub mod phone;
pub mod registry;
pub mod testing;
pub mod topics;
pub mod zalo;

pub use codec::{CodecError, Record};
pub use event::*;
pub use topics::{CATALOGUE, Topic, TopicSpec};
