//! The processors' flags, shared by `zcdp process` and `zcdp up`.

use std::path::PathBuf;
use std::time::Duration;

use schemas::duration::parse_duration;

#[derive(clap::Args, Debug, Clone)]
pub struct ProcessArgs {
    /// Names the consumer group (zcdp-<id>) and the changelog topics (zcdp.<id>.<store>.changelog).
    #[arg(long = "application-id", env = "ZCDP_APPLICATION_ID", default_value = "cdp")]
    pub application_id: String,
    /// Static group membership (group.instance.id): a member restarted within the session
    /// timeout gets its tasks back without a rebalance. Use a stable name, e.g. the pod name.
    #[arg(long = "instance-id", env = "ZCDP_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Where the tasks' RocksDB stores live.
    #[arg(long = "data-dir", env = "ZCDP_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// How often state, outputs and offsets are committed.
    #[arg(long = "commit-interval", env = "ZCDP_COMMIT_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub commit_interval: Duration,
    /// How often the latest profiles and interests of the users that changed are written to
    /// `zmp.profiles.v1` / `zmp.interests.v1` between commits (at most --commit-interval): how
    /// fresh the query API is. A crash makes the same records be written again (harmless: the
    /// same value under the same key).
    #[arg(long = "emit-interval", env = "ZCDP_EMIT_INTERVAL", default_value = "100ms", value_parser = parse_duration)]
    pub emit_interval: Duration,
    /// Inactivity that ends a session.
    #[arg(long = "session-gap", env = "ZCDP_SESSION_GAP", default_value = "30m", value_parser = parse_duration)]
    pub session_gap: Duration,
    /// Half-life of interest scores.
    #[arg(long = "interest-half-life", env = "ZCDP_INTEREST_HALF_LIFE", default_value = "7d", value_parser = parse_duration)]
    pub interest_half_life: Duration,
    /// Products, categories and search terms listed per user in zmp.interests.v1.
    #[arg(long = "interest-top-n", env = "ZCDP_INTEREST_TOP_N", default_value_t = 10)]
    pub interest_top_n: usize,
    /// Time after a cart's last activity at which, without an order, it counts as abandoned.
    #[arg(long = "cart-timeout", env = "ZCDP_CART_TIMEOUT", default_value = "60m", value_parser = parse_duration)]
    pub cart_timeout: Duration,
    /// When a task has read all its input, timers fire once the wall clock is this far past them.
    #[arg(long = "timer-grace", env = "ZCDP_TIMER_GRACE", default_value = "2s", value_parser = parse_duration)]
    pub timer_grace: Duration,
    /// How long a task holds a record back while another input may still receive earlier ones
    /// (not fetched yet, or read to its end while records produced with the held one are on
    /// their way), before it goes on without: longer gives a stricter event-time order across
    /// topics, shorter less latency.
    #[arg(long = "max-task-idle", env = "ZCDP_MAX_TASK_IDLE", default_value = "100ms", value_parser = parse_duration)]
    pub max_task_idle: Duration,
    /// Consumer group session timeout: how long a silent member keeps its tasks.
    #[arg(long = "session-timeout", env = "ZCDP_SESSION_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub session_timeout: Duration,
    /// Decoded user states kept in memory per task and store.
    #[arg(long = "state-cache", env = "ZCDP_STATE_CACHE", default_value_t = 50_000)]
    pub state_cache: usize,
    /// Segment definitions (TOML, see docs/segments.md); without it, the shipped
    /// config/segments.toml. Read once at start.
    #[arg(long = "segments", env = "ZCDP_SEGMENTS")]
    pub segments: Option<PathBuf>,
    /// An order within this time after a campaign's message to the same user is credited to the
    /// campaign (and recovers an abandoned cart the campaign decided on).
    #[arg(long = "attribution-window", env = "ZCDP_ATTRIBUTION_WINDOW", default_value = "72h", value_parser = parse_duration)]
    pub attribution_window: Duration,
}

impl Default for ProcessArgs {
    fn default() -> Self {
        ProcessArgs {
            application_id: "cdp".into(),
            instance_id: None,
            data_dir: PathBuf::from("./data"),
            commit_interval: Duration::from_secs(1),
            emit_interval: Duration::from_millis(100),
            session_gap: Duration::from_secs(30 * 60),
            interest_half_life: Duration::from_secs(7 * 86400),
            interest_top_n: 10,
            cart_timeout: Duration::from_secs(3600),
            timer_grace: Duration::from_secs(2),
            max_task_idle: Duration::from_millis(100),
            session_timeout: Duration::from_secs(30),
            state_cache: 50_000,
            segments: None,
            attribution_window: Duration::from_secs(72 * 3600),
        }
    }
}
