//! The stream processors of zcdp, the runtime they run on, and the query API over what they
//! write.
//!
//! # Layout
//!
//! - `runtime/`: the engine — consumer-group members, tasks in event-time order, RocksDB stores,
//!   changelogs and checkpoints, timers, outputs, its metrics. It names no processor: it runs
//!   the [`Topology`] built here, by [`topology`];
//! - the processors, one file (or folder) each, in their timer-kind order:
//!   - `sessions`: sessions per user, to `zmp.sessions.v1`;
//!   - `interests`: decayed interest scores per user, to `zmp.interests.v1`;
//!   - `carts`: abandoned carts, to `zmp.cart-triggers.v1`;
//!   - `profiles/`: customer profiles, to `zmp.profiles.v1`, and segment entries and exits, to
//!     `zmp.audiences.v1`;
//!   - `campaign_results`: what each campaign's messages did, from `zmp.messages.v1`, to
//!     `zmp.campaign-results.v1`;
//!   - `activity`: events by type per minute, to `zmp.activity.v1`;
//! - `segments`: the segment definitions, shared by `profiles` and the query API;
//! - `query/`: the query API (`zcdp serve`) and the report page, over the compacted outputs;
//! - `config`: the processors' flags ([`ProcessArgs`]).

pub mod activity;
pub mod campaign_results;
pub mod carts;
pub mod config;
pub mod interests;
pub mod profiles;
pub mod query;
pub mod runtime;
pub mod segments;
pub mod sessions;

pub use config::ProcessArgs;
pub use runtime::{Member, TaskEvent, TaskObserver, Topology};

use runtime::Processor;

/// The processors every task runs, in timer-kind order (a processor's index is the kind of its
/// timers: append, never reorder), from the flags. Fails if the segments file does not load.
pub fn topology(args: &ProcessArgs) -> anyhow::Result<Topology> {
    let segments = segments::loaded(args.segments.as_deref())?;
    let (gap, half_life, top_n) = (args.session_gap.as_millis() as i64, args.interest_half_life.as_millis() as i64, args.interest_top_n);
    let (cart_timeout, window) = (args.cart_timeout.as_millis() as i64, args.attribution_window.as_millis() as i64);
    Topology::new(move || -> Vec<Box<dyn Processor>> {
        vec![
            Box::new(sessions::Sessions::new(gap)),
            Box::new(interests::Interests::new(half_life, top_n)),
            Box::new(carts::Carts::new(cart_timeout)),
            Box::new(profiles::Profiles::new(gap, cart_timeout, segments.clone())),
            Box::new(campaign_results::CampaignResults::new(window)),
            Box::new(activity::Activity::new()),
        ]
    })
}
