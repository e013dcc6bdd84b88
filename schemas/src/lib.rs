//! The shared contract of zcdp: the Avro schemas and their Rust types, the Confluent wire format,
//! the topic catalogue, Vietnamese phone numbers, and the Kafka settings every role uses.
//!
//! Roles talk to each other only through topics; everything two roles must agree on lives here.
//!
//! # Layout
//!
//! - `topics`: the topic catalogue — every topic's name, key and cleanup, the input topics;
//! - `event`: the input events the gateway writes (one Rust type per topic's record);
//! - `derived`: the records the roles derive (sessions, profiles, triggers, messages and their
//!   [`derived::MessageStatus`], …);
//! - `codec`, `avro_write`, `registry`: the Confluent wire format, the Avro writer, the fixed
//!   schema ids (the `.avsc` files are under `schemas/avro/`);
//! - `kafka`: the Kafka settings and helpers every role uses, the embedded cluster;
//! - `keys`: the three kinds of API key per app, compared in constant time; `session`: signed
//!   sessions of Zalo-verified users; `phone`: Vietnamese phone numbers;
//! - `zalo`: the Zalo app's flags, webhook signatures and the Graph phone exchange;
//! - `time`: now, the clock, and Vietnam's days and months; `duration`: flag durations;
//! - `testing`: builders and helpers for tests.

pub mod avro_write;
pub mod codec;
pub mod derived;
pub mod duration;
pub mod event;
pub mod kafka;
pub mod keys;
pub mod migrate;
pub mod phone;
pub mod registry;
pub mod session;
pub mod testing;
pub mod time;
pub mod topics;
pub mod zalo;

pub use codec::{CodecError, Record};
pub use event::*;
pub use topics::{CATALOGUE, Topic, TopicSpec};
