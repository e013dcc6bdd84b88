//! `zcdp up` (every role in one process) and the single-role runners that share its pieces.

use std::io::Write as _;

use anyhow::Context as _;
use std::time::Duration;

use ingest::{Gateway, IngestArgs};
use processors::query::{QueryApi, QueryArgs};
use processors::{Member, ProcessArgs};
use schemas::kafka::{Kafka, KafkaArgs};
use schemas::keys::{Access, KeyArgs, Keys};
use schemas::session::{SessionArgs, Sessions};

use crate::HttpArgs;
use crate::server;
use crate::shutdown::Shutdown;
use crate::simulate::{self, SimulateArgs};
use sinks::simulator::{SimConfig, Simulator};
use sinks::sink::{Sink, SinkArgs};
use sinks::zalo::ZaloClient;

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub ingest: IngestArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub process: ProcessArgs,
    #[command(flatten)]
    pub query: QueryArgs,
    #[command(flatten)]
    pub sink: SinkArgs,
    /// Send simulated shopper traffic through the HTTP API.
    #[arg(long, env = "ZCDP_DEMO")]
    pub demo: bool,
    /// Events a second of the --demo traffic.
    #[arg(long = "demo-rate", env = "ZCDP_DEMO_RATE", default_value_t = 50)]
    pub demo_rate: u32,
    /// Stop the --demo traffic after this many events (default: until zcdp stops).
    #[arg(long = "demo-events", env = "ZCDP_DEMO_EVENTS")]
    pub demo_events: Option<u64>,
    /// Keep every segment's member files current in this directory (see `zcdp audiences sync`).
    #[arg(long = "export-dir", env = "ZCDP_EXPORT_DIR")]
    pub export_dir: Option<std::path::PathBuf>,
    /// Brokers of the embedded cluster (ignored with --brokers).
    #[arg(long = "embedded-brokers", env = "ZCDP_EMBEDDED_BROKERS", default_value_t = 1)]
    pub embedded_brokers: i32,
}

/// Prints a line to stdout at once: start-up lines are read by people and by scripts.
fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let shutdown = Shutdown::default();
    shutdown.on_signals();
    let kafka = Kafka::from_args_or_embedded(&args.kafka, args.embedded_brokers)?;
    if kafka.is_embedded() {
        say("zcdp: starting an embedded Kafka cluster. It is EPHEMERAL: everything is kept in memory and lost when zcdp stops, \
             and each partition keeps only about 5 MB or 100,000 message sets (older records are dropped). Use --brokers for a real cluster.".into());
    }
    say(format!("zcdp: Kafka bootstrap: {}", kafka.bootstrap));
    kafka.ensure_catalogue().await?;

    let mut process = args.process.clone();
    if args.demo && process.cart_timeout == ProcessArgs::default().cart_timeout {
        // Demo shoppers should see their abandoned-cart message within minutes, not an hour.
        process.cart_timeout = Duration::from_secs(120);
        say("zcdp: demo: carts count as abandoned after 2 minutes (--cart-timeout to change)".into());
    }
    let run_dir = if kafka.is_embedded() {
        // The embedded cluster starts empty, so its state starts empty too, in a directory of
        // this run (another `zcdp up` may be running beside it).
        let dir = embedded_state_dir(&args.process.data_dir)?;
        process.data_dir = dir.clone();
        Some(dir)
    } else {
        None
    };
    // Segments as data: the file is the seed of zmp.campaigns.v1, and the members follow it.
    let (segments, segment_follower) = processors::live_segments(&kafka, &process).await?;
    let topology = processors::topology_with(&process, segments)?;
    let names = topology.processor_names().iter().map(|n| n.replace('_', " ")).collect::<Vec<_>>().join(", ");
    // Ready means processing: the first order after the keys are printed must not wait for the
    // consumer group's first assignment (about 3 s), so this waits for a task to run (on the
    // embedded cluster this member has them all, and they start together).
    let (first_task, started) = tokio::sync::watch::channel(false);
    let observer: processors::TaskObserver = std::sync::Arc::new(move |_: &str, _: i32, ev: processors::TaskEvent| {
        if ev == processors::TaskEvent::Started {
            first_task.send_replace(true);
        }
    });
    let member = Member::start(&kafka, &process, topology, Some(observer)).await?;
    let mut started = started;
    if tokio::time::timeout(Duration::from_secs(30), started.wait_for(|s| *s)).await.is_err() {
        tracing::warn!("no processor task running 30 s after start (another member of the group holds them?); going on");
    }
    say(format!("zcdp: processors running ({names}); state in {}", process.data_dir.display()));

    let (listener, addr) = server::bind(&args.http.http).await?;
    // Without a real Zalo app, the Zalo simulator stands in for Zalo, on its own port, posting its
    // webhooks to this gateway.
    let mut ingest_args = args.ingest.clone();
    let (keys, session_secret) =
        up_keys(&args.ingest.keys, args.ingest.session.session_secret.as_deref(), args.demo, &args.process.data_dir)?;
    ingest_args.keys = keys.clone();
    ingest_args.session.session_secret = Some(session_secret.clone());
    let mut sim_base = None;
    let token_file_of_run = if ingest_args.zalo.configured() {
        None
    } else {
        let sim = Simulator::new(
            SimConfig { webhook_url: Some(format!("http://{addr}/webhooks/zalo")), ..SimConfig::default() },
            sinks::system_clock(),
        );
        let (base, _handle) = sim.serve("127.0.0.1:0").await?;
        let cfg = SimConfig::default();
        let z = &mut ingest_args.zalo;
        z.app_id = Some(cfg.app_id);
        z.app_secret = Some(cfg.secret_key);
        z.oa_secret = Some(cfg.oa_secret);
        z.refresh_token = Some(cfg.initial_refresh_token);
        // The simulator starts from its first refresh token each run: so does the token file.
        let file = process.data_dir.join(format!("zalo-sim-tokens-{}.json", std::process::id()));
        let _ = std::fs::remove_file(&file);
        z.token_file = file.clone();
        for url in [&mut z.oa_url, &mut z.zns_url, &mut z.oauth_url, &mut z.graph_url] {
            *url = base.clone();
        }
        say(format!(
            "zcdp: Zalo simulator on {base} (no --zalo-app-id given): every OA / ZNS message goes there; GET {base}/sim/received lists them"
        ));
        sim_base = Some(base);
        Some(file)
    };
    let gateway = Gateway::start(&kafka, &ingest_args).await?;
    let (clients, apps) = zalo_clients(&ingest_args.zalo)?;
    let sink = Sink::start(&kafka, &args.sink, clients, sinks::system_clock()).await?;
    say(format!(
        "zcdp: messaging sink running (campaigns: {}; sends each app's triggers through its own OA: {apps})",
        args.sink.campaigns.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "the shipped config/campaigns.toml".into()),
    ));
    // The view's records beside the processors' state: per run on the embedded cluster, kept
    // (and resumed from) on a real one.
    let mut query_args = args.query.clone();
    query_args.view_dir.get_or_insert_with(|| process.data_dir.join("query-view"));
    let query = QueryApi::start(
        &kafka,
        &query_args,
        Keys::parse(&keys)?,
        Sessions::new(&session_secret, args.ingest.session.session_ttl),
        args.process.segments.as_deref(),
    )?;
    let app = server::with_ops(gateway.router().merge(query.routes()), &args.http);
    let http = tokio::spawn(server::serve(listener, app, server::Limits::of(&args.http), shutdown.clone()));
    let metrics_apart = server::serve_metrics_apart(&args.http, shutdown.clone()).await?;
    say(format!(
        "zcdp: HTTP API on http://{addr}  (POST /v1/batch, /v1/events, /v1/session, /v1/users/phone; GET /v1/me/profile, /v1/me/recommendations, /v1/users/{{id}}/profile, /v1/users/{{id}}/recommendations, /v1/segments, /v1/segments/{{name}}/members, /v1/engagement, /v1/activity, /v1/campaigns, /report, /metrics, /readyz, /schemas/ids/{{id}}; DELETE /v1/users/{{id}}; /v1/admin/campaigns, /v1/admin/segments with the admin key)"
    ));
    say(format!("zcdp: report page: http://{addr}/report (sign in with the admin key)"));
    // One line per key, exactly `<kind> key for app <app>: <key>`: people and scripts read them.
    for (kind, list) in [("write", &keys.write_keys), ("secret", &keys.secret_keys), ("admin", &keys.admin_keys)] {
        for spec in list.iter().flat_map(|s| s.split(',')) {
            if let Some((app, key)) = spec.trim().split_once(':') {
                say(format!("{kind} key for app {app}: {key}"));
            }
        }
    }

    let demo = args.demo.then(|| {
        say(format!("zcdp: demo traffic: {} events a second of simulated shoppers", args.demo_rate));
        let sim = SimulateArgs {
            target: format!("http://{addr}"),
            rate: args.demo_rate,
            write_key: keys.write_keys.first().and_then(|k| k.split_once(':')).map(|(_, k)| k.to_string()).unwrap_or_default(),
            // The demo plays the shop's backend too: its orders come with the secret key.
            secret_key: keys.secret_keys.first().and_then(|k| k.split_once(':')).map(|(_, k)| k.to_string()),
            users: 500,
            events: args.demo_events,
            seed: rand::random(),
            zalo_sim: sim_base.clone(),
        };
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let tally = simulate::run(&sim, shutdown).await?;
            say(format!(
                "zcdp: demo sent {} events ({} carts, {} orders, {} abandoned, {} shoppers back after a message)",
                tally.events, tally.carts, tally.orders, tally.abandoned, tally.returned
            ));
            anyhow::Ok(tally)
        })
    });
    let export = match &args.export_dir {
        Some(dir) => {
            let export = sinks::audiences::ExportDir::new(dir, None)?;
            say(format!("zcdp: segment files kept in {}", dir.display()));
            let kafka = kafka.clone();
            Some(tokio::spawn(async move {
                if let Err(e) = export.follow(kafka, Duration::from_secs(1)).await {
                    tracing::error!(error = format!("{e:#}"), "audience export stopped");
                }
            }))
        }
        None => None,
    };
    say("zcdp: running; Ctrl-C to stop".into());

    // Every role is watched: one that stops on its own stops `zcdp up`, which says which and
    // exits non-zero, rather than serving on with messaging or the processors silently dead.
    let mut stopped_role: Option<&str> = None;
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        let why = if member.finished() {
            Some(("the processors", "see the error above".to_string()))
        } else if sink.finished() {
            Some(("the messaging sink", "see the error above".to_string()))
        } else {
            query.stopped().map(|why| ("the query view", why))
        };
        if let Some((role, why)) = why {
            say(format!("zcdp: {role} stopped ({why}); shutting down"));
            stopped_role = Some(role);
            shutdown.trigger();
            break;
        }
    }
    say("zcdp: shutting down: finishing requests, flushing Kafka".into());
    if let Some(demo) = demo {
        match demo.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = format!("{e:#}"), "demo traffic stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "demo traffic task failed"),
        }
    }
    http.await??;
    if let Some(m) = metrics_apart {
        m.await??;
    }
    let sink_result = sink.stop().await;
    if let Err(e) = &sink_result {
        tracing::error!(error = format!("{e:#}"), "the sink stopped with an error");
    }
    if let Some(f) = token_file_of_run {
        let _ = std::fs::remove_file(f);
    }
    if let Some(e) = export {
        e.abort();
        let _ = e.await;
    }
    query.shutdown().await;
    gateway.shutdown(Duration::from_secs(10)).await;
    let failed = member.finished();
    let member_result = tokio::task::spawn_blocking(move || member.stop()).await?.context(if failed {
        "the processors failed"
    } else {
        "stopping the processors"
    });
    segment_follower.abort();
    if let Some(dir) = run_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    member_result?;
    sink_result.context("the messaging sink failed")?;
    if let Some(role) = stopped_role {
        anyhow::bail!("{role} stopped; zcdp up stopped with it");
    }
    say("zcdp: stopped".into());
    Ok(())
}

/// The keys and session secret `zcdp up` runs with. Each kind given by its flag is used as
/// given; for each kind not given: with `--demo`, the fixed demo key of app `demo`; else a random
/// key, made on the first start and kept in `<data-dir>/keys.json` (readable by its owner only)
/// for the next. The session secret likewise.
fn up_keys(given: &KeyArgs, session_secret: Option<&str>, demo: bool, data_dir: &std::path::Path) -> anyhow::Result<(KeyArgs, String)> {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Kept {
        app: String,
        write: String,
        secret: String,
        admin: String,
        session_secret: String,
    }
    let path = data_dir.join("keys.json");
    let kept = || -> anyhow::Result<Kept> {
        if let Ok(text) = std::fs::read_to_string(&path) {
            return serde_json::from_str(&text).with_context(|| format!("reading the keys kept in {}", path.display()));
        }
        let k = Kept {
            app: "demo".into(),
            write: schemas::keys::generate(Access::Write),
            secret: schemas::keys::generate(Access::Secret),
            admin: schemas::keys::generate(Access::Admin),
            session_secret: schemas::keys::generate(Access::Admin).replace("zcdp_admin_", "zcdp_session_"),
        };
        std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        let tmp = path.with_extension("partial");
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
            f.write_all(serde_json::to_string_pretty(&k)?.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path).with_context(|| format!("keeping the keys in {}", path.display()))?;
        Ok(k)
    };
    let demo_keys = KeyArgs::demo();
    let mut keys = given.clone();
    keys.secret_keys.append(&mut keys.read_keys);
    let mut cache: Option<Kept> = None;
    for (list, demo_list, kind) in [
        (&mut keys.write_keys, &demo_keys.write_keys, Access::Write),
        (&mut keys.secret_keys, &demo_keys.secret_keys, Access::Secret),
        (&mut keys.admin_keys, &demo_keys.admin_keys, Access::Admin),
    ] {
        if !list.is_empty() {
            continue;
        }
        if demo {
            list.clone_from(demo_list);
        } else {
            let k = match cache.take() {
                Some(k) => k,
                None => kept()?,
            };
            let key = match kind {
                Access::Write => &k.write,
                Access::Secret => &k.secret,
                Access::Admin => &k.admin,
            };
            list.push(format!("{}:{key}", k.app));
            cache = Some(k);
        }
    }
    let session = match (session_secret, demo) {
        (Some(s), _) => s.to_string(),
        (None, true) => ingest::DEMO_SESSION_SECRET.to_string(),
        (None, false) => match cache {
            Some(k) => k.session_secret,
            None => kept()?.session_secret,
        },
    };
    Keys::parse(&keys)?;
    Ok((keys, session))
}

/// `<data-dir>/embedded-<pid>`, new for this run; directories of earlier runs whose process is
/// gone are removed.
fn embedded_state_dir(data_dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    for entry in std::fs::read_dir(data_dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("embedded-")
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let dir = data_dir.join(format!("embedded-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(dir)
}

/// Trips shutdown if the member's thread ends on its own (an error it cannot get past).
fn watch_member(member: &Member, shutdown: Shutdown) -> tokio::task::JoinHandle<()> {
    let ended = member.ended_flag();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if ended.load(std::sync::atomic::Ordering::Acquire) {
                tracing::error!("the processors stopped; shutting down");
                shutdown.trigger();
                return;
            }
        }
    })
}

/// `zcdp process`: one processor member of the consumer group, on a real cluster.
pub async fn run_process(kafka: KafkaArgs, process: ProcessArgs, http: HttpArgs) -> anyhow::Result<()> {
    let shutdown = Shutdown::default();
    shutdown.on_signals();
    let kafka = Kafka::external(&kafka)?;
    // Metrics (lag, records, restore progress, timers, store sizes) and liveness, from the start:
    // a member restoring large stores is alive and says how far it is.
    let (listener, addr) = server::bind(&http.http).await?;
    let routes = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok\n" }));
    let ops = tokio::spawn(server::serve(listener, server::with_ops(routes, &http), server::Limits::of(&http), shutdown.clone()));
    let _metrics_apart = server::serve_metrics_apart(&http, shutdown.clone()).await?;
    say(format!("zcdp: metrics on http://{addr}/metrics  (GET /healthz)"));
    let (segments, segment_follower) = processors::live_segments(&kafka, &process).await?;
    let member = tokio::select! {
        m = Member::start(&kafka, &process, processors::topology_with(&process, segments)?, None) => m?,
        _ = shutdown.wait() => return Ok(()),
    };
    tracing::info!(member = %member.name, bootstrap = %kafka.bootstrap, "processor member running");
    say(format!("zcdp: processor member {} running on {}; Ctrl-C to stop", member.name, kafka.bootstrap));
    let watch = watch_member(&member, shutdown.clone());
    shutdown.wait().await;
    watch.abort();
    let stopped = tokio::task::spawn_blocking(move || member.stop()).await?;
    segment_follower.abort();
    ops.await??;
    stopped
}

/// `zcdp serve`: the query API alone, on a real cluster.
pub async fn run_serve(
    kafka: KafkaArgs,
    query: QueryArgs,
    keys: KeyArgs,
    session: SessionArgs,
    segments: Option<std::path::PathBuf>,
    http: HttpArgs,
) -> anyhow::Result<()> {
    let keys = Keys::for_production(&keys, "serve", &[Access::Secret])?;
    let sessions = Sessions::for_production(&session, "serve")?;
    let shutdown = Shutdown::default();
    shutdown.on_signals();
    let kafka = Kafka::external(&kafka)?;
    let api = QueryApi::start(&kafka, &query, keys, sessions, segments.as_deref())?;
    let (listener, addr) = server::bind(&http.http).await?;
    say(format!(
        "zcdp: query API on http://{addr}  (GET /v1/me/profile, /v1/me/recommendations, /v1/users/{{id}}/profile, /v1/users/{{id}}/recommendations, /v1/segments, /v1/segments/{{name}}/members, /v1/engagement, /v1/activity, /v1/campaigns, /report, /readyz, /metrics; DELETE /v1/users/{{id}}; /v1/admin/campaigns, /v1/admin/segments with the admin key)"
    ));
    let routes = api.routes().merge(api.probes(ingest::http::OPENAPI));
    let _metrics_apart = server::serve_metrics_apart(&http, shutdown.clone()).await?;
    let served = server::serve(listener, server::with_ops(routes, &http), server::Limits::of(&http), shutdown).await;
    api.shutdown().await;
    served
}

/// `zcdp sink`: one messaging sink member of the consumer group, on a real cluster.
pub async fn run_sink(kafka: KafkaArgs, sink: SinkArgs, zalo: schemas::zalo::ZaloArgs, http: HttpArgs) -> anyhow::Result<()> {
    zalo.check_for_production("sink")?;
    let shutdown = Shutdown::default();
    shutdown.on_signals();
    let kafka = Kafka::external(&kafka)?;
    let (clients, apps) = zalo_clients(&zalo)?;
    let (listener, addr) = server::bind(&http.http).await?;
    let routes = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok\n" }));
    let ops = tokio::spawn(server::serve(listener, server::with_ops(routes, &http), server::Limits::of(&http), shutdown.clone()));
    let _metrics_apart = server::serve_metrics_apart(&http, shutdown.clone()).await?;
    let sink = Sink::start(&kafka, &sink, clients, sinks::system_clock()).await?;
    say(format!(
        "zcdp: sink member running on {}, sending each app's triggers through its own OA ({apps}; other apps' are suppressed no_oa_for_app); metrics on http://{addr}/metrics; Ctrl-C to stop",
        kafka.bootstrap
    ));
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => if sink.finished() { break },
        }
    }
    shutdown.trigger();
    let stopped = sink.stop().await;
    ops.await??;
    stopped
}

/// One Zalo client per zcdp app with an OA ([`schemas::zalo::ZaloArgs::apps`]), and their names
/// for the start line.
fn zalo_clients(zalo: &schemas::zalo::ZaloArgs) -> anyhow::Result<(Vec<std::sync::Arc<ZaloClient>>, String)> {
    let apps = zalo.apps()?;
    let clients = apps
        .iter()
        .map(|args| {
            let config = sinks::zalo::ClientConfig {
                args,
                clock: sinks::system_clock(),
                rate_window: Duration::from_secs(60),
                timeout: Duration::from_secs(10),
            };
            ZaloClient::new(config).map(std::sync::Arc::new).with_context(|| format!("the Zalo app of zcdp app {}", args.cdp_app))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let names = apps.iter().map(|a| a.cdp_app.as_str()).collect::<Vec<_>>().join(", ");
    Ok((clients, names))
}

/// `zcdp zalo-sim`: the Zalo simulator alone.
pub async fn run_zalo_sim(args: crate::ZaloSimArgs) -> anyhow::Result<()> {
    let shutdown = Shutdown::default();
    shutdown.on_signals();
    let package = sinks::zalo_rules::OaPackage::parse(&args.package)
        .with_context(|| format!("--package {:?}: use basic, advanced, trial or premium", args.package))?;
    let cfg = SimConfig {
        app_id: args.app_id,
        secret_key: args.app_secret,
        oa_secret: args.oa_secret,
        initial_refresh_token: args.refresh_token,
        package,
        rate_limit_per_minute: args.rate_limit,
        webhook_url: args.webhook_url,
        ..SimConfig::default()
    };
    let sim = Simulator::new(cfg, sinks::system_clock());
    let (base, handle) = sim.serve(&args.http).await?;
    say(format!(
        "zcdp: Zalo simulator on {base}  (OAuth /v4/oa/access_token, OA /v3.0/oa/message/*, ZNS /message/template, Graph /v2.0/me/info; GET /sim/received)"
    ));
    shutdown.wait().await;
    handle.abort();
    Ok(())
}

/// `zcdp ingest`: the gateway alone, on a real cluster.
pub async fn run_ingest(kafka: KafkaArgs, ingest: IngestArgs, http: HttpArgs) -> anyhow::Result<()> {
    Keys::for_production(&ingest.keys, "ingest", &[Access::Write])?;
    Sessions::for_production(&ingest.session, "ingest")?;
    ingest.zalo.check_secrets_for_production("ingest")?;
    let shutdown = Shutdown::default();
    shutdown.on_signals();
    let kafka = Kafka::external(&kafka)?;
    let gateway = Gateway::start(&kafka, &ingest).await?;
    let (listener, addr) = server::bind(&http.http).await?;
    tracing::info!(%addr, bootstrap = %kafka.bootstrap, "gateway listening");
    let _metrics_apart = server::serve_metrics_apart(&http, shutdown.clone()).await?;
    server::serve(listener, server::with_ops(gateway.router(), &http), server::Limits::of(&http), shutdown).await?;
    gateway.shutdown(Duration::from_secs(10)).await;
    Ok(())
}
