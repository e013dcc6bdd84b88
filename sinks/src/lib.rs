//! Acting on what the processors found: the messaging policy and Zalo's rules so far. Campaigns,
//! the Zalo OA / ZNS clients, the simulator and the `zcdp sink` role come next (issue 5).
//!
//! - `zalo_rules`: every fact about Zalo's limits, windows, quotas and costs, in one table;
//! - `policy`: the decision before every send — sent, deferred or suppressed with a reason;
//! - `simulator`: Zalo's OA, OAuth and ZNS endpoints with their rules, for tests and `zcdp up`.

pub mod policy;
pub mod simulator;
pub mod zalo_rules;
