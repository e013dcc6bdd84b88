//! Acting on what the processors found: campaigns, the messaging policy, Zalo's rules, the Zalo
//! OA / ZNS clients, the sink role, the audience exporter, and the Zalo simulator.
//!
//! # Layout
//!
//! A trigger goes down this list: the sink reads it, `triggers` makes it an occurrence,
//! `campaigns` picks what to send, `policy` decides, `zalo` sends.
//!
//! - `sink`: the consumer-group member — the loop that reads triggers and profiles, records every
//!   decision in `zmp.messages.v1` before acting, and sends;
//! - `triggers/`: what starts a campaign, one file per kind (cart, order, audience, profile):
//!   what each carries and the template variables it fills;
//! - `memory`: the sink's per-partition and per-user memory, rebuilt from `zmp.messages.v1`;
//! - `campaigns`: a campaign's definition (trigger → channel → template, fallback, holdout),
//!   checked whole; the config file, which is the seed;
//! - `definitions`: campaigns and segments as versioned data in `zmp.campaigns.v1`, followed by
//!   every reader, so an edit applies without a restart;
//! - `policy`: the decision before every send — sent, deferred or suppressed with a reason;
//! - `zalo_rules`: every fact about Zalo's limits, windows, quotas, costs and error codes;
//! - `zalo`: the HTTP clients, token store and rate limiter;
//! - `audiences`: the audience exporter (segment members for ad platforms);
//! - `simulator`: Zalo's OA, OAuth, ZNS and Graph endpoints with their rules, for tests and `zcdp up`.

pub mod audiences;
pub mod campaigns;
pub mod definitions;
pub mod memory;
pub mod policy;
pub mod simulator;
pub mod sink;
pub mod triggers;
pub mod zalo;
pub mod zalo_rules;

/// The sinks' clock is the shared one, injectable so tests can stand at 23:00 in Vietnam.
pub use schemas::time::{Clock, system_clock};
