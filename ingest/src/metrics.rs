//! The gateway's Prometheus metrics, registered in the process-wide default registry that every
//! role's `/metrics` serves.

use std::sync::LazyLock;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, register_histogram, register_histogram_vec,
    register_int_counter_vec, register_int_gauge,
};

pub struct Metrics {
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    pub accepted: IntCounterVec,
    pub rejected: IntCounterVec,
    pub produce_seconds: Histogram,
    pub producer_queue: IntGauge,
    pub consent_users: IntGauge,
    pub webhooks: IntCounterVec,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    requests: register_int_counter_vec!(
        Opts::new("zcdp_ingest_requests_total", "HTTP requests by endpoint and status code"),
        &["endpoint", "status"]
    )
    .expect("metric"),
    request_seconds: register_histogram_vec!(
        HistogramOpts::new("zcdp_ingest_request_duration_seconds", "Time to answer an ingest request, Kafka acknowledgement included")
            .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        &["endpoint"]
    )
    .expect("metric"),
    accepted: register_int_counter_vec!(
        Opts::new("zcdp_ingest_events_accepted_total", "Events acknowledged by Kafka, by app and topic"),
        &["app", "topic"]
    )
    .expect("metric"),
    rejected: register_int_counter_vec!(
        Opts::new("zcdp_ingest_events_rejected_total", "Events (or whole requests) rejected, by reason code"),
        &["reason"]
    )
    .expect("metric"),
    produce_seconds: register_histogram!(
        HistogramOpts::new(
            "zcdp_ingest_produce_latency_seconds",
            "From handing a request's records to the producer until Kafka acknowledged all of them"
        )
        .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
    )
    .expect("metric"),
    producer_queue: register_int_gauge!(
        "zcdp_ingest_producer_queue_messages",
        "Messages in the producer waiting to be sent or acknowledged"
    )
    .expect("metric"),
    webhooks: register_int_counter_vec!(
        Opts::new("zcdp_ingest_webhooks_total", "Zalo webhook events, by outcome (accepted, bad_signature, refused)"),
        &["outcome"]
    )
    .expect("metric"),
    consent_users: register_int_gauge!(
        "zcdp_ingest_consent_users",
        "Users with at least one consent decision in the gateway's consent view"
    )
    .expect("metric"),
});
