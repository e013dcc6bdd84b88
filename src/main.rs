//! `zcdp`: one command line over every role of the pipeline. `zcdp up` runs them all in one
//! process on an embedded Kafka cluster; with `--brokers` each role runs alone against a real
//! cluster, as many members as the operator wants.

mod bench;
mod server;
mod shoppers;
mod shutdown;
mod simulate;
mod up;

use clap::{Parser, Subcommand};

/// The gateway and the processors allocate per event; mimalloc is several times faster than
/// glibc's allocator at that across threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use ingest::IngestArgs;
use schemas::kafka::KafkaArgs;

#[derive(Parser, Debug)]
#[command(name = "zcdp", version, about = "Customer-data pipeline for Zalo Mini Apps", long_about = None)]
struct Cli {
    /// Log filter, e.g. info, debug, zcdp=debug,rdkafka=warn.
    #[arg(long, env = "ZCDP_LOG", default_value = "info", global = true)]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Every role in one process: the embedded Kafka cluster (or --brokers), the gateway, the
    /// processors, the query API, and with --demo, simulated shoppers.
    Up(up::UpArgs),
    /// The ingest gateway alone, against a real cluster.
    Ingest(IngestRoleArgs),
    /// One member of the processors' consumer group, running every processor (the list:
    /// `processors::topology`, in processors/src/lib.rs).
    Process(ProcessRoleArgs),
    /// One messaging sink member of the consumer group: campaigns, the policy, Zalo OA and ZNS sends.
    Sink(SinkRoleArgs),
    /// The Zalo simulator: OAuth, OA v3, ZNS and Graph endpoints with Zalo's rules, and webhooks.
    #[command(name = "zalo-sim")]
    ZaloSim(ZaloSimArgs),
    /// The query API alone: profiles, recommendations and engagement from a local view of the
    /// compacted topics. Add replicas to scale.
    Serve(ServeRoleArgs),
    /// Segment audiences: export a segment's current members, or keep member files current.
    Audiences {
        #[command(subcommand)]
        action: AudiencesAction,
    },
    /// Users: erase one (the right to be forgotten).
    Users {
        #[command(subcommand)]
        action: UsersAction,
    },
    /// The topic catalogue: list it, or create it on a real cluster.
    Topics {
        #[command(subcommand)]
        action: TopicsAction,
    },
    /// Post realistic Mini App traffic to a gateway.
    Simulate(simulate::SimulateArgs),
    /// Measure throughput against the raw rdkafka baseline in the same run.
    Bench {
        #[command(subcommand)]
        which: bench::BenchCommand,
    },
}

#[derive(clap::Args, Debug)]
struct IngestRoleArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    ingest: IngestArgs,
    #[command(flatten)]
    http: HttpArgs,
}

#[derive(clap::Args, Debug)]
struct SinkRoleArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    sink: sinks::sink::SinkArgs,
    #[command(flatten)]
    zalo: schemas::zalo::ZaloArgs,
    /// Serves GET /metrics and /healthz.
    #[command(flatten)]
    http: HttpArgs,
}

#[derive(clap::Args, Debug)]
pub struct ZaloSimArgs {
    /// Address the simulator listens on.
    #[arg(long, env = "ZCDP_ZALO_SIM_HTTP", default_value = "127.0.0.1:8090")]
    pub http: String,
    /// Where to post webhook events (follows, messages, ZNS delivery receipts): the gateway's
    /// /webhooks/zalo.
    #[arg(long = "webhook-url", env = "ZCDP_ZALO_SIM_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// The OA's package (its monthly promotion quota): basic, advanced, trial, premium.
    #[arg(long, env = "ZCDP_ZALO_SIM_PACKAGE", default_value = "basic")]
    pub package: String,
    #[arg(long = "app-id", env = "ZCDP_ZALO_SIM_APP_ID", default_value = "sim-app")]
    pub app_id: String,
    #[arg(long = "app-secret", env = "ZCDP_ZALO_SIM_APP_SECRET", default_value = "sim-secret")]
    pub app_secret: String,
    #[arg(long = "oa-secret", env = "ZCDP_ZALO_SIM_OA_SECRET", default_value = "sim-oa-secret")]
    pub oa_secret: String,
    /// The refresh token that works first.
    #[arg(long = "refresh-token", env = "ZCDP_ZALO_SIM_REFRESH_TOKEN", default_value = "sim-refresh-0")]
    pub refresh_token: String,
    /// Requests a minute before -32.
    #[arg(long = "rate-limit", env = "ZCDP_ZALO_SIM_RATE_LIMIT", default_value_t = 4000)]
    pub rate_limit: u32,
}

#[derive(clap::Args, Debug)]
struct ProcessRoleArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    process: processors::ProcessArgs,
    /// Serves GET /metrics and /healthz.
    #[command(flatten)]
    http: HttpArgs,
}

#[derive(clap::Args, Debug)]
struct ServeRoleArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    query: processors::query::QueryArgs,
    #[command(flatten)]
    keys: schemas::keys::KeyArgs,
    #[command(flatten)]
    session: schemas::session::SessionArgs,
    /// The segments file the processors use (default: the shipped one), to refuse unknown names.
    #[arg(long, env = "ZCDP_SEGMENTS")]
    segments: Option<std::path::PathBuf>,
    #[command(flatten)]
    http: HttpArgs,
}

/// The HTTP listener's flags, shared by every role that serves.
#[derive(clap::Args, Debug, Clone)]
pub struct HttpArgs {
    /// Address the HTTP API listens on.
    #[arg(long, env = "ZCDP_HTTP", default_value = "127.0.0.1:8080")]
    pub http: String,
    /// Origins allowed to call the API from a browser (CORS), comma-separated; * for any.
    #[arg(long = "cors-origins", env = "ZCDP_CORS_ORIGINS", value_delimiter = ',', default_value = "*")]
    pub cors_origins: Vec<String>,
    /// Serve GET /metrics on this address instead of the public one (e.g. 127.0.0.1:9100, where
    /// only Prometheus reaches it): the metrics show campaign revenue and cost.
    #[arg(long = "metrics-http", env = "ZCDP_METRICS_HTTP")]
    pub metrics_http: Option<String>,
    /// Time a client has to send a request's headers; also the longest a kept-alive connection
    /// may sit idle.
    #[arg(long = "http-header-timeout", env = "ZCDP_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = schemas::duration::parse_duration)]
    pub header_timeout: std::time::Duration,
    /// Time a client has to send a request's whole body, once its headers are in.
    #[arg(long = "http-body-timeout", env = "ZCDP_HTTP_BODY_TIMEOUT", default_value = "30s", value_parser = schemas::duration::parse_duration)]
    pub body_timeout: std::time::Duration,
    /// Connections served at once; more wait until one closes. Keep it under the open-file limit
    /// (`ulimit -n`).
    #[arg(long = "http-max-connections", env = "ZCDP_HTTP_MAX_CONNECTIONS", default_value_t = 1000)]
    pub max_connections: usize,
}

#[derive(Subcommand, Debug)]
enum UsersAction {
    /// Erase a user from every store and write tombstones to every compacted topic.
    Forget {
        /// The user key: the Zalo id, or the anonymous id.
        user: String,
        /// The user's app.
        #[arg(long)]
        app: String,
        #[command(flatten)]
        kafka: KafkaArgs,
    },
}

#[derive(Subcommand, Debug)]
enum AudiencesAction {
    /// Write the current members of SEGMENT (from zmp.audiences.v1) to stdout or --output.
    Export {
        /// The segment's name, as in the segments file.
        segment: String,
        #[arg(long, value_enum, default_value = "csv")]
        format: sinks::audiences::Format,
        /// Only this app's members (default: every app's).
        #[arg(long)]
        app: Option<String>,
        /// Write here instead of stdout (replaced atomically).
        #[arg(long)]
        output: Option<std::path::PathBuf>,
        /// The segments file the processors use, to check the name (default: the shipped one).
        #[arg(long, env = "ZCDP_SEGMENTS")]
        segments: Option<std::path::PathBuf>,
        #[command(flatten)]
        kafka: KafkaArgs,
    },
    /// Keep every segment's member files current in DIR, with a log of adds and removes.
    Sync {
        /// The export directory: <dir>/<app>/<segment>/{members.csv, zalo_ids.txt, meta_sha256.txt, google_sha256.txt, changes.csv}.
        #[arg(long, env = "ZCDP_EXPORT_DIR")]
        dir: std::path::PathBuf,
        /// Only this app's members (default: every app's).
        #[arg(long)]
        app: Option<String>,
        #[command(flatten)]
        kafka: KafkaArgs,
    },
}

#[derive(Subcommand, Debug)]
enum TopicsAction {
    /// Print the catalogue: name, key, cleanup policy.
    List,
    /// Create the catalogue's topics on the cluster of --brokers (existing ones are left alone).
    Create {
        #[command(flatten)]
        kafka: KafkaArgs,
    },
    /// Compare the catalogue's topics on the cluster of --brokers with what `topics create` makes
    /// (partitions, cleanup, retention, min.insync.replicas); exits non-zero on any difference.
    Check {
        #[command(flatten)]
        kafka: KafkaArgs,
    },
    /// Once, when upgrading from a version whose profiles, interests and audiences were keyed by
    /// user alone: moves those records to the keys that hold the app (app/user,
    /// app/segment/user) and deletes the old keys. Stop the processors and sinks first.
    MigrateKeys {
        #[command(flatten)]
        kafka: KafkaArgs,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Up(args) => up::run(args).await,
            Command::Ingest(args) => up::run_ingest(args.kafka, args.ingest, args.http).await,
            Command::Process(args) => up::run_process(args.kafka, args.process, args.http).await,
            Command::Sink(args) => up::run_sink(args.kafka, args.sink, args.zalo, args.http).await,
            Command::ZaloSim(args) => up::run_zalo_sim(args).await,
            Command::Serve(args) => up::run_serve(args.kafka, args.query, args.keys, args.session, args.segments, args.http).await,
            Command::Audiences { action: AudiencesAction::Export { segment, format, app, output, segments, kafka } } => {
                export_audience(&segment, format, app.as_deref(), output.as_deref(), segments.as_deref(), &kafka).await
            }
            Command::Audiences { action: AudiencesAction::Sync { dir, app, kafka } } => {
                let kafka = schemas::kafka::Kafka::external(&kafka)?;
                let export = sinks::audiences::ExportDir::new(&dir, app.as_deref())?;
                println!("zcdp: keeping segment files in {}; Ctrl-C to stop", dir.display());
                let shutdown = shutdown::Shutdown::default();
                shutdown.on_signals();
                tokio::select! {
                    r = export.follow(kafka, std::time::Duration::from_secs(1)) => r,
                    _ = shutdown.wait() => Ok(()),
                }
            }
            Command::Users { action: UsersAction::Forget { user, app, kafka } } => {
                let kafka = schemas::kafka::Kafka::external(&kafka)?;
                let producer: rdkafka::producer::FutureProducer = kafka.producer_config().create()?;
                let id = processors::query::request_forget(&producer, &app, &user, "zcdp users forget").await?;
                println!("zcdp: erasure of user {user} of app {app} requested (request {id}); the processors apply it as they reach it");
                Ok(())
            }
            Command::Topics { action: TopicsAction::List } => {
                for s in schemas::CATALOGUE {
                    println!(
                        "{:<24} key={:<12} cleanup={:<8} {}",
                        s.name,
                        format!("{:?}", s.key).to_lowercase(),
                        s.cleanup.as_config(),
                        s.doc
                    );
                }
                Ok(())
            }
            Command::Topics { action: TopicsAction::Create { kafka } } => {
                let kafka = schemas::kafka::Kafka::external(&kafka)?;
                kafka.ensure_catalogue().await?;
                println!("created or verified {} topics on {}", schemas::CATALOGUE.len(), kafka.bootstrap);
                Ok(())
            }
            Command::Topics { action: TopicsAction::MigrateKeys { kafka } } => {
                let kafka = schemas::kafka::Kafka::external(&kafka)?;
                for m in schemas::migrate::migrate_app_keys(&kafka).await? {
                    println!("{}: {} records moved to app keys, {} old keys deleted", m.topic, m.moved, m.deleted);
                }
                Ok(())
            }
            Command::Topics { action: TopicsAction::Check { kafka } } => {
                let kafka = schemas::kafka::Kafka::external(&kafka)?;
                let drift = kafka.check_catalogue().await?;
                if drift.is_empty() {
                    println!("all {} topics on {} match the catalogue", schemas::CATALOGUE.len(), kafka.bootstrap);
                    return Ok(());
                }
                println!("| topic | setting | expected | on the cluster |");
                println!("|---|---|---|---|");
                for d in &drift {
                    println!("| {} | {} | {} | {} |", d.topic, d.what, d.expected, d.actual);
                }
                anyhow::bail!("{} difference(s) between the cluster's topics and the catalogue", drift.len())
            }
            Command::Simulate(args) => {
                let shutdown = shutdown::Shutdown::default();
                shutdown.on_signals();
                let tally = simulate::run(&args, shutdown).await?;
                println!(
                    "sent {} events: {} visits, {} carts, {} orders, {} abandoned",
                    tally.events, tally.visits, tally.carts, tally.orders, tally.abandoned
                );
                Ok(())
            }
            Command::Bench { which } => bench::run(which).await,
        }
    })
}

/// `zcdp audiences export`.
async fn export_audience(
    segment: &str,
    format: sinks::audiences::Format,
    app: Option<&str>,
    output: Option<&std::path::Path>,
    segments: Option<&std::path::Path>,
    kafka: &KafkaArgs,
) -> anyhow::Result<()> {
    let defined = processors::segments::Segments::load(segments)?;
    if !defined.list.iter().any(|s| s.name == segment) {
        let names: Vec<&str> = defined.list.iter().map(|s| s.name.as_str()).collect();
        anyhow::bail!("no segment {segment:?} in the segments file; defined: {}", names.join(", "));
    }
    let kafka = schemas::kafka::Kafka::external(kafka)?;
    let latest = tokio::task::spawn_blocking(move || sinks::audiences::latest(&kafka)).await??;
    let members = sinks::audiences::members(&latest, segment, app);
    let (written, skipped) = match output {
        None => sinks::audiences::write(format, &members, &mut std::io::stdout().lock())?,
        Some(path) => sinks::audiences::export_to(format, &members, path)?,
    };
    eprintln!(
        "zcdp: segment {segment}: {} members, {written} written{}",
        members.len(),
        if skipped > 0 { format!(", {skipped} without the id this format needs") } else { String::new() }
    );
    Ok(())
}
