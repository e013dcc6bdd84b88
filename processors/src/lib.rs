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
    topology_with(args, segments::Source::Fixed(segments::loaded(args.segments.as_deref())?))
}

/// [`topology`] with the segments from `source` (the members of `zcdp process` and `zcdp up`:
/// `zmp.campaigns.v1`, followed live).
pub fn topology_with(args: &ProcessArgs, segments: segments::Source) -> anyhow::Result<Topology> {
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

/// The segments of a member that follows `zmp.campaigns.v1`: writes the segments file (or the
/// shipped one) there as the seed when it differs, and returns the live source with the
/// follower's task (to abort at stop).
pub async fn live_segments(
    kafka: &schemas::kafka::Kafka,
    args: &ProcessArgs,
) -> anyhow::Result<(segments::Source, tokio::task::JoinHandle<()>)> {
    use anyhow::Context as _;
    let text = match &args.segments {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading the segments file {}", p.display()))?,
        None => segments::SHIPPED.to_string(),
    };
    // Checked whole first, as before: a mistake stops the member with the segment named.
    segments::Segments::parse(&text).context("in the segments file")?;
    let seeds = segments::Segments::seeds(&text)?;
    let (catalog, follower) = sinks::definitions::Catalog::start(kafka, "process", std::time::Duration::from_secs(60)).await?;
    let source = args.segments.as_ref().map_or("config/segments.toml".to_string(), |p| p.display().to_string());
    let seeded = sinks::definitions::seed(kafka, &catalog, sinks::definitions::SEGMENT, &seeds, &source).await?;
    if seeded > 0 {
        tracing::info!(seeded, source, "segments seeded in zmp.campaigns.v1");
    }
    Ok((segments::Source::Live(std::sync::Arc::new(segments::LiveSegments::new(catalog))), follower))
}
