//! Acting on what the processors found: campaigns, the messaging policy, Zalo's rules, the Zalo
//! OA / ZNS clients, the sink role, and the Zalo simulator.
//!
//! - `zalo_rules`: every fact about Zalo's limits, windows, quotas and costs, in one table;
//! - `policy`: the decision before every send — sent, deferred or suppressed with a reason;
//! - `campaigns`: the campaigns config (trigger → channel → template, fallback);
//! - `zalo`: the HTTP clients, token store and rate limiter;
//! - `sink`: the consumer-group member that turns triggers into decisions and sends;
//! - `simulator`: Zalo's OA, OAuth, ZNS and Graph endpoints with their rules, for tests and `zcdp up`.

use std::sync::Arc;

pub mod campaigns;
pub mod policy;
pub mod simulator;
pub mod sink;
pub mod zalo;
pub mod zalo_rules;

/// Milliseconds since the epoch; injectable so tests can stand at 23:00 in Vietnam.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0))
}
