//! The runtime's Prometheus metrics (`zcdp_process_*`), in the process-wide registry.

use std::sync::LazyLock;

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, register_histogram, register_int_counter,
    register_int_counter_vec, register_int_gauge_vec,
};

pub struct Metrics {
    pub records: IntCounterVec,
    pub duplicates: IntCounter,
    pub undecodable: IntCounter,
    pub late_events: IntCounterVec,
    pub lag: IntGaugeVec,
    pub outputs: IntCounterVec,
    pub timers_fired: IntCounterVec,
    pub timers_pending: IntGaugeVec,
    pub store_keys: IntGaugeVec,
    pub commit_seconds: Histogram,
    pub restore_records: IntCounter,
    pub restore_remaining: IntGaugeVec,
    pub tasks: IntGaugeVec,
    pub idle_expired: IntCounterVec,
    pub fetch_reseeks: IntCounterVec,
    pub bounded: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub changelog_records: IntCounterVec,
    pub changelog_bytes: IntCounterVec,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    records: register_int_counter_vec!(Opts::new("zcdp_process_records_total", "Input records processed, by topic"), &["topic"])
        .expect("metric"),
    changelog_records: register_int_counter_vec!(
        Opts::new("zcdp_process_changelog_records_total", "Records sent to the stores' changelogs, by store"),
        &["store"]
    )
    .expect("metric"),
    changelog_bytes: register_int_counter_vec!(
        Opts::new("zcdp_process_changelog_bytes_total", "Key and value bytes sent to the stores' changelogs, by store"),
        &["store"]
    )
    .expect("metric"),
    duplicates: register_int_counter!(
        "zcdp_process_duplicate_events_total",
        "Events dropped because their event_id was seen in the last 24 h"
    )
    .expect("metric"),
    undecodable: register_int_counter!(
        "zcdp_process_undecodable_records_total",
        "Input records that could not be decoded (sent to the dead-letter topic)"
    )
    .expect("metric"),
    late_events: register_int_counter_vec!(
        Opts::new("zcdp_process_late_events_total", "Events older than what their processor still holds open"),
        &["processor"]
    )
    .expect("metric"),
    lag: register_int_gauge_vec!(
        Opts::new("zcdp_process_lag_records", "Records between the member's position and the end of each input partition"),
        &["topic", "partition"]
    )
    .expect("metric"),
    outputs: register_int_counter_vec!(Opts::new("zcdp_process_outputs_total", "Records written to output topics"), &["topic"])
        .expect("metric"),
    timers_fired: register_int_counter_vec!(
        Opts::new("zcdp_process_timers_fired_total", "Timers fired, by what moved time past them"),
        &["by"]
    )
    .expect("metric"),
    timers_pending: register_int_gauge_vec!(Opts::new("zcdp_process_timers_pending", "Timers waiting, by task"), &["task"])
        .expect("metric"),
    store_keys: register_int_gauge_vec!(Opts::new("zcdp_process_store_keys", "Estimated keys in each store, by task"), &["store", "task"])
        .expect("metric"),
    commit_seconds: register_histogram!(
        HistogramOpts::new(
            "zcdp_process_commit_duration_seconds",
            "Time to commit all tasks: flush outputs and changelogs, checkpoint, commit offsets"
        )
        .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
    )
    .expect("metric"),
    restore_records: register_int_counter!("zcdp_process_restore_records_total", "Changelog records replayed into local stores")
        .expect("metric"),
    restore_remaining: register_int_gauge_vec!(
        Opts::new("zcdp_process_restore_remaining_records", "Changelog records still to replay, by task (0 when running)"),
        &["task"]
    )
    .expect("metric"),
    idle_expired: register_int_counter_vec!(
        Opts::new(
            "zcdp_process_idle_expired_total",
            "Times a task gave up waiting --max-task-idle for an input that might still receive earlier records"
        ),
        &["topic"]
    )
    .expect("metric"),
    fetch_reseeks: register_int_counter_vec!(
        Opts::new(
            "zcdp_process_fetch_reseeks_total",
            "Input partitions sought again because Kafka had records for them that did not arrive for 15 s"
        ),
        &["topic"]
    )
    .expect("metric"),
    bounded: register_int_counter_vec!(
        Opts::new(
            "zcdp_process_bounded_total",
            "Entries dropped (the oldest) or changes refused to keep one user's state within its bounds, by store and bound"
        ),
        &["store", "bound"]
    )
    .expect("metric"),
    dead_letters: register_int_counter_vec!(
        Opts::new(
            "zcdp_process_dead_letters_total",
            "Records the processors sent to zmp.deadletter.v1 instead of their topic or store, by reason"
        ),
        &["reason"]
    )
    .expect("metric"),
    tasks: register_int_gauge_vec!(Opts::new("zcdp_process_tasks", "Tasks of this member, by state"), &["state"]).expect("metric"),
});
