//! The campaign results as Prometheus gauges (`zcdp_campaign_*`), set by the query API from
//! `zmp.campaign-results.v1`: totals over every partition, by app and campaign.

use std::sync::LazyLock;

use prometheus::{IntGaugeVec, Opts, register_int_gauge_vec};

/// The gauges, by app and campaign (and reason, for suppressions).
pub struct CampaignMetrics {
    pub sent: IntGaugeVec,
    pub suppressed: IntGaugeVec,
    pub delivered: IntGaugeVec,
    pub cost: IntGaugeVec,
    pub conversions: IntGaugeVec,
    pub revenue: IntGaugeVec,
    pub revenue_per_vnd: prometheus::GaugeVec,
    pub carts_triggered: IntGaugeVec,
    pub carts_recovered: IntGaugeVec,
}

pub static CAMPAIGN_METRICS: LazyLock<CampaignMetrics> = LazyLock::new(|| {
    let gauge = |name: &str, help: &str| register_int_gauge_vec!(Opts::new(name, help), &["app", "campaign"]).expect("metric");
    CampaignMetrics {
        sent: gauge("zcdp_campaign_sent", "Messages sent by the campaign"),
        suppressed: register_int_gauge_vec!(
            Opts::new("zcdp_campaign_suppressed", "Messages the policy held back, by reason code"),
            &["app", "campaign", "reason"]
        )
        .expect("metric"),
        delivered: gauge("zcdp_campaign_delivered", "ZNS delivery receipts for the campaign's messages"),
        cost: gauge("zcdp_campaign_cost_vnd", "What the campaign's messages cost, in VND"),
        conversions: gauge("zcdp_campaign_conversions", "Orders credited to the campaign (within the attribution window)"),
        revenue: gauge("zcdp_campaign_revenue_vnd", "Revenue of the orders credited to the campaign, in VND"),
        revenue_per_vnd: prometheus::register_gauge_vec!(
            Opts::new("zcdp_campaign_revenue_per_vnd", "Credited revenue per VND spent (0 while nothing was spent)"),
            &["app", "campaign"]
        )
        .expect("metric"),
        carts_triggered: gauge("zcdp_campaign_carts_triggered", "Abandoned carts the campaign decided on"),
        carts_recovered: gauge("zcdp_campaign_carts_recovered", "Of those, carts followed by an order within the window"),
    }
});

/// The view's own measures.
pub struct ViewMetrics {
    /// Seconds an engagement refresh takes (every app's snapshot from its tally).
    pub refresh_seconds: prometheus::Histogram,
    /// Records the view read from Kafka since it started.
    pub records_read: prometheus::IntCounter,
}

pub static VIEW_METRICS: LazyLock<ViewMetrics> = LazyLock::new(|| ViewMetrics {
    refresh_seconds: prometheus::register_histogram!(
        prometheus::HistogramOpts::new(
            "zcdp_query_engagement_refresh_seconds",
            "Time to take every app's engagement snapshot from the view's tallies"
        )
        .buckets(vec![0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0])
    )
    .expect("metric"),
    records_read: prometheus::register_int_counter!(
        "zcdp_query_view_records_read_total",
        "Records the query view read from Kafka since it started (a resumed view reads only what is newer)"
    )
    .expect("metric"),
});
