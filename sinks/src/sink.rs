//! The sink role: a consumer-group member that turns triggers into messages within Zalo's rules.
//!
//! It reads, co-partitioned by user, `zmp.cart-triggers.v1`, `zmp.orders.v1` and
//! `zmp.audiences.v1` through the group (`--sink-group`, range assignor), and follows
//! `zmp.profiles.v1` for the same partitions for what it knows of each recipient. For each
//! trigger it runs the campaigns that want it: the policy decides, and every decision is written
//! to `zmp.messages.v1` (same partition) before anything else happens.
//!
//! `zmp.messages.v1` is also the sink's memory. When a partition is assigned, the member reads
//! that partition of it from the start: the sends (for quotas and the frequency cap), every
//! trigger already decided (dedup), deferrals still waiting (night ban) — so dedup survives
//! restarts and rebalances. A send is recorded as `sending` (acknowledged by Kafka) before Zalo is
//! called: a member killed between the call and its answer leaves a `sending` record, which the
//! next owner closes as `unknown` and never sends again. At most once, never twice.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use prometheus::{IntCounterVec, IntGauge, register_int_counter_vec, register_int_gauge};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use serde_json::{Value, json};

use schemas::codec::decode;
use schemas::derived::{AudienceChange, CartTrigger, MessageEvent, MessageStatus, Profile, stable_id};
use schemas::event::InputEvent;
use schemas::kafka::Kafka;
use schemas::time::Clock;
use schemas::topics::Topic;

use crate::campaigns::{Campaign, Campaigns, ChannelName, Condition, Reentry, StepKind, content, held_out};
use crate::definitions::{self, CAMPAIGN, Catalog};
use crate::memory::{PartitionState, dedup_key, journey_key, member, oa_address, phone_address, profile_member, rebuild};
use crate::policy::{self, Decision, Recipient};
use crate::triggers::{self, Occurrence};
use crate::zalo::{ZaloClient, ZaloError};

#[derive(clap::Args, Debug, Clone)]
pub struct SinkArgs {
    /// Campaigns (TOML, see docs/messaging.md); without it, the shipped config/campaigns.toml.
    /// Its campaigns are the seed of `zmp.campaigns.v1` (every app's, unless the app's admin
    /// defines its own of the same name); its `[limits]` apply as they are.
    #[arg(long = "campaigns", env = "ZCDP_CAMPAIGNS")]
    pub campaigns: Option<PathBuf>,
    /// The sinks' consumer group.
    #[arg(long = "sink-group", env = "ZCDP_SINK_GROUP", default_value = "zcdp-sink")]
    pub group: String,
    /// How long a trigger waits for the user's profile to catch up with it before it is decided
    /// on what is known.
    #[arg(long = "profile-wait", env = "ZCDP_PROFILE_WAIT", default_value = "10s", value_parser = schemas::duration::parse_duration)]
    pub profile_wait: Duration,
}

impl Default for SinkArgs {
    fn default() -> Self {
        SinkArgs { campaigns: None, group: "zcdp-sink".into(), profile_wait: Duration::from_secs(10) }
    }
}

struct SinkMetrics {
    messages: IntCounterVec,
    cost: IntCounterVec,
    duplicates: IntCounterVec,
    ignored: IntCounterVec,
    deferred: IntGauge,
}

static METRICS: LazyLock<SinkMetrics> = LazyLock::new(|| SinkMetrics {
    messages: register_int_counter_vec!(
        "zcdp_sink_messages_total",
        "Messaging decisions and outcomes, by campaign, channel, status (sent, deferred, suppressed, failed, unknown) and reason",
        &["campaign", "channel", "status", "reason"]
    )
    .expect("metric"),
    cost: register_int_counter_vec!("zcdp_sink_cost_vnd_total", "What the sent messages cost, in VND", &["campaign", "channel"])
        .expect("metric"),
    duplicates: register_int_counter_vec!(
        "zcdp_sink_duplicate_triggers_total",
        "Triggers seen again after they were decided (replays, re-evaluated profiles): not acted on",
        &["trigger"]
    )
    .expect("metric"),
    ignored: register_int_counter_vec!(
        "zcdp_sink_triggers_ignored_total",
        "Triggers no campaign may act on, by trigger and reason (untrusted_source: e.g. an order status from the Mini App's write key)",
        &["trigger", "reason"]
    )
    .expect("metric"),
    deferred: register_int_gauge!("zcdp_sink_deferred_pending", "Messages deferred (night ban) and waiting").expect("metric"),
});

/// The group's inputs, co-partitioned by user.
const GROUP_TOPICS: [Topic; 3] = [Topic::CartTriggers, Topic::Orders, Topic::Audiences];

/// A trigger occurrence read from the group's inputs, waiting to be decided.
struct Job {
    partition: i32,
    topic: Topic,
    offset: i64,
    occurrence: Occurrence,
    /// Decide once the profile is at least this recent, or the wait is over.
    wait_until: tokio::time::Instant,
}

/// Assignment changes, handed from the rebalance callback to the loop.
#[derive(Default)]
struct Handover {
    assigned: Option<BTreeSet<i32>>,
    /// Offsets to commit on revoke: what the loop has finished.
    done: HashMap<(Topic, i32), i64>,
}

struct SinkContext {
    handover: Arc<Mutex<Handover>>,
}

impl ClientContext for SinkContext {}

impl ConsumerContext for SinkContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            // Everything decided so far is in zmp.messages.v1 already; committing the offsets only
            // spares the next owner re-reading (dedup would catch the repeats anyway).
            let h = self.handover.lock().expect("handover lock");
            if let Some(tpl) = offsets_tpl(&h.done)
                && let Err(e) = consumer.commit(&tpl, CommitMode::Sync)
            {
                tracing::warn!(error = %e, "commit on revoke failed; the next owner re-reads (and dedups) those triggers");
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut h = self.handover.lock().expect("handover lock");
        match rebalance {
            Rebalance::Assign(tpl) => {
                h.assigned = Some(tpl.elements().iter().map(|e| e.partition()).collect());
            }
            Rebalance::Revoke(_) => {
                h.assigned = Some(BTreeSet::new());
                h.done.clear();
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "sink rebalance error"),
        }
    }
}

fn offsets_tpl(done: &HashMap<(Topic, i32), i64>) -> Option<TopicPartitionList> {
    if done.is_empty() {
        return None;
    }
    let mut tpl = TopicPartitionList::new();
    for ((t, p), o) in done {
        tpl.add_partition_offset(t.name(), *p, Offset::Offset(*o)).ok()?;
    }
    Some(tpl)
}

/// A running sink member.
pub struct Sink {
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    stop: Arc<tokio::sync::Notify>,
}

impl Sink {
    /// `clients`: one per zcdp app with an OA ([`ZaloClient::cdp_app`]); an app's triggers are
    /// sent only through its own, and those of an app without one are suppressed `no_oa_for_app`.
    pub async fn start(kafka: &Kafka, args: &SinkArgs, clients: Vec<Arc<ZaloClient>>, clock: Clock) -> anyhow::Result<Sink> {
        let campaigns = Campaigns::load(args.campaigns.as_deref())?;
        let (catalog, follower) = Catalog::start(kafka, "sink", Duration::from_secs(60)).await?;
        let source = args.campaigns.as_ref().map_or("config/campaigns.toml".to_string(), |p| p.display().to_string());
        let mut seeded = definitions::seed(kafka, &catalog, CAMPAIGN, &campaigns.seeds, &source).await?;
        seeded +=
            definitions::seed(kafka, &catalog, definitions::LIMITS, &[("limits".into(), campaigns.limits_seed.clone())], &source).await?;
        if seeded > 0 {
            tracing::info!(seeded, source, "campaigns seeded in zmp.campaigns.v1");
        }
        let mut by_app = HashMap::new();
        for c in clients {
            if let Some(other) = by_app.insert(c.cdp_app.clone(), c) {
                anyhow::bail!("two Zalo clients for app {}", other.cdp_app);
            }
        }
        let handover = Arc::new(Mutex::new(Handover::default()));
        let consumer: StreamConsumer<SinkContext> = kafka
            .client_config()
            .set("group.id", &args.group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "range")
            .set("session.timeout.ms", "10000")
            .create_with_context(SinkContext { handover: handover.clone() })
            .context("creating the sink consumer")?;
        consumer.subscribe(&GROUP_TOPICS.map(|t| t.name())).context("subscribing the sink")?;
        let profiles: StreamConsumer = kafka
            .client_config()
            .set("group.id", format!("{}-profiles-{}", args.group, uuid::Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .create()
            .context("creating the sink's profile follower")?;
        let producer: FutureProducer = kafka.producer_config().create().context("creating the sink producer")?;
        let stop = Arc::new(tokio::sync::Notify::new());
        let mut engine = Engine {
            kafka: kafka.clone(),
            consumer,
            profiles,
            producer,
            clients: by_app,
            campaigns,
            catalog,
            clock,
            handover,
            parts: HashMap::new(),
            profile_pos: HashMap::new(),
            jobs: VecDeque::new(),
            in_flight: HashMap::new(),
            next_offsets: HashMap::new(),
            profile_wait: args.profile_wait,
        };
        let stop2 = stop.clone();
        let task = tokio::spawn(async move {
            let r = engine.run(stop2).await;
            follower.abort();
            r
        });
        Ok(Sink { task, stop })
    }

    /// Stops after the decision in progress, committing what was done.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.notify_one();
        self.task.await.context("the sink task panicked")?
    }

    /// Stops at once, like a crash: nothing more is written or committed (tests).
    pub fn kill(self) {
        self.task.abort();
    }

    pub fn finished(&self) -> bool {
        self.task.is_finished()
    }
}

struct Engine {
    kafka: Kafka,
    consumer: StreamConsumer<SinkContext>,
    profiles: StreamConsumer,
    producer: FutureProducer,
    /// By zcdp app: each app's own OA.
    clients: HashMap<String, Arc<ZaloClient>>,
    /// The file's limits (its campaigns are the seed of `catalog`).
    campaigns: Campaigns,
    /// The campaigns in force, followed from `zmp.campaigns.v1`.
    catalog: Arc<Catalog>,
    clock: Clock,
    handover: Arc<Mutex<Handover>>,
    parts: HashMap<i32, PartitionState>,
    profile_pos: HashMap<i32, i64>,
    jobs: VecDeque<Job>,
    /// Per input partition: offsets read but not yet decided.
    in_flight: HashMap<(Topic, i32), BTreeSet<i64>>,
    /// Per input partition: the offset after the last one read.
    next_offsets: HashMap<(Topic, i32), i64>,
    profile_wait: Duration,
}

impl Engine {
    async fn run(&mut self, stop: Arc<tokio::sync::Notify>) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut last_commit = tokio::time::Instant::now();
        loop {
            self.take_assignment().await?;
            tokio::select! {
                _ = stop.notified() => break,
                m = self.consumer.recv() => match m {
                    Ok(m) => {
                        let (topic, partition, offset) = (m.topic().to_string(), m.partition(), m.offset());
                        let payload = m.payload().map(<[u8]>::to_vec);
                        drop(m);
                        self.on_group_record(&topic, partition, offset, payload.as_deref())?;
                    }
                    Err(e) => tracing::warn!(error = %e, "sink consume error"),
                },
                m = self.profiles.recv(), if !self.profile_pos.is_empty() => match m {
                    Ok(m) => {
                        let (partition, offset) = (m.partition(), m.offset());
                        let profile = m.payload().and_then(|p| decode::<Profile>(p).ok());
                        let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
                        drop(m);
                        self.profile_pos.insert(partition, offset + 1);
                        if let Some(key) = key {
                            self.on_profile(partition, &key, profile).await?;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "sink profile consume error"),
                },
                _ = tick.tick() => {}
            }
            // A rebalance's callback ran inside recv(): no job or timer of a partition taken
            // away is acted on after it.
            self.take_assignment().await?;
            self.run_due_jobs().await?;
            self.run_timers().await?;
            if last_commit.elapsed() >= Duration::from_secs(1) {
                self.commit(CommitMode::Async);
                last_commit = tokio::time::Instant::now();
            }
        }
        self.commit(CommitMode::Sync);
        Ok(())
    }

    /// What may be committed per input partition: up to the first offset not yet decided.
    fn done_offsets(&self) -> HashMap<(Topic, i32), i64> {
        let mut out = HashMap::new();
        for (tp, next) in &self.next_offsets {
            let upto = self.in_flight.get(tp).and_then(|s| s.first().copied()).unwrap_or(*next);
            out.insert(*tp, upto);
        }
        out
    }

    fn commit(&mut self, mode: CommitMode) {
        let done = self.done_offsets();
        if let Some(tpl) = offsets_tpl(&done)
            && let Err(e) = self.consumer.commit(&tpl, mode)
        {
            tracing::debug!(error = %e, "sink commit failed; next time");
        }
        self.handover.lock().expect("handover lock").done = done;
    }

    /// Acts on an assignment the callback handed over: new partitions are rebuilt from
    /// `zmp.messages.v1` and `zmp.profiles.v1` before their triggers are decided.
    async fn take_assignment(&mut self) -> anyhow::Result<()> {
        let Some(assigned) = self.handover.lock().expect("handover lock").assigned.take() else { return Ok(()) };
        self.parts.retain(|p, _| assigned.contains(p));
        self.profile_pos.retain(|p, _| assigned.contains(p));
        self.jobs.retain(|j| assigned.contains(&j.partition));
        self.in_flight.retain(|(_, p), _| assigned.contains(p));
        self.next_offsets.retain(|(_, p), _| assigned.contains(p));
        let new: Vec<i32> = assigned.iter().copied().filter(|p| !self.parts.contains_key(p)).collect();
        if !new.is_empty() {
            tracing::info!(partitions = ?new, "sink: rebuilding state from zmp.messages.v1 and zmp.profiles.v1");
            let kafka = self.kafka.clone();
            let parts = new.clone();
            let (messages, profiles, audiences) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                let m = kafka.read_partitions_to_end(Topic::Messages.name(), Some(&parts), Duration::from_secs(300))?;
                let p = kafka.read_partitions_to_end(Topic::Profiles.name(), Some(&parts), Duration::from_secs(300))?;
                let a = kafka.read_partitions_to_end(Topic::Audiences.name(), Some(&parts), Duration::from_secs(300))?;
                Ok((m, p, a))
            })
            .await??;
            let audiences = audiences.0;
            let mut fresh: HashMap<i32, PartitionState> = new.iter().map(|p| (*p, PartitionState::default())).collect();
            let records = messages.0.iter().filter_map(|m| Some((m.partition(), decode::<MessageEvent>(m.payload()?).ok()?)));
            let open = rebuild(&mut fresh, records);
            for m in &profiles.0 {
                let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
                let profile = m.payload().and_then(|b| decode::<Profile>(b).ok());
                if let Some(who) = profile_member(&key, profile.as_ref()) {
                    fresh.get_mut(&m.partition()).expect("new partition").set_profile(&who, profile);
                }
            }
            // Who is in which segment now: the latest record of each key.
            for m in &audiences {
                if let (Some(c), Some(part)) = (m.payload().and_then(|b| decode::<AudienceChange>(b).ok()), fresh.get_mut(&m.partition())) {
                    part.set_member(&member(&c.app_id, &c.user_key), &c.segment, c.member);
                }
            }
            for part in fresh.values_mut() {
                part.reindex_addresses();
            }
            self.parts.extend(fresh);
            for (p, end) in &profiles.1 {
                self.profile_pos.insert(*p, *end);
            }
            // A send whose answer never came: not sent again (at most once).
            for (p, rec) in open {
                let mut closed = rec.clone();
                closed.set_status(MessageStatus::Unknown);
                closed.reason = Some("member_stopped_before_answer".into());
                closed.at = (self.clock)();
                self.write(p, &closed).await?;
            }
            // Time-based triggers of every known profile, and the welcome / follow checks.
            for p in &new {
                let users: Vec<String> = self.parts[p].users.keys().cloned().collect();
                for u in users {
                    self.profile_triggers(*p, &u).await?;
                }
            }
            METRICS.deferred.set(self.parts.values().map(|p| p.pending() as i64).sum());
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &self.profile_pos {
            tpl.add_partition_offset(Topic::Profiles.name(), *p, Offset::Offset(*o))?;
        }
        self.profiles.assign(&tpl).context("following zmp.profiles.v1")?;
        Ok(())
    }

    fn on_group_record(&mut self, topic: &str, partition: i32, offset: i64, payload: Option<&[u8]>) -> anyhow::Result<()> {
        let Some(t) = Topic::from_name(topic) else { return Ok(()) };
        self.next_offsets.insert((t, partition), offset + 1);
        let Some(payload) = payload else { return Ok(()) };
        let occurrence = match t {
            Topic::CartTriggers => match decode::<CartTrigger>(payload) {
                Ok(c) => triggers::cart::occurrence(&c),
                Err(_) => return Ok(()),
            },
            Topic::Orders => match schemas::codec::decode_input(Topic::Orders, payload) {
                Ok(InputEvent::Order(o)) => triggers::order::occurrence(&o),
                _ => return Ok(()),
            },
            Topic::Audiences => {
                let change = decode::<AudienceChange>(payload).ok();
                if let (Some(c), Some(part)) = (&change, self.parts.get_mut(&partition)) {
                    part.set_member(&member(&c.app_id, &c.user_key), &c.segment, c.member);
                }
                match change.as_ref().and_then(triggers::audience::occurrence) {
                    Some(o) => o,
                    None => return Ok(()),
                }
            }
            _ => return Ok(()),
        };
        if !self.catalog.any_for_trigger(occurrence.trigger) {
            return Ok(());
        }
        self.in_flight.entry((t, partition)).or_default().insert(offset);
        let wait_until = tokio::time::Instant::now() + self.profile_wait;
        self.jobs.push_back(Job { partition, topic: t, offset, occurrence, wait_until });
        Ok(())
    }

    async fn on_profile(&mut self, partition: i32, key: &str, profile: Option<Profile>) -> anyhow::Result<()> {
        let Some(part) = self.parts.get_mut(&partition) else { return Ok(()) };
        let Some(who) = profile_member(key, profile.as_ref()) else { return Ok(()) };
        part.set_profile(&who, profile);
        self.profile_triggers(partition, &who).await
    }

    /// The triggers a profile implies ([`triggers::profile`]): welcome and new follower at
    /// once; birthday and expected next purchase as timers.
    async fn profile_triggers(&mut self, partition: i32, who: &str) -> anyhow::Result<()> {
        let now = (self.clock)();
        let max_age = self.campaigns.max_trigger_age_ms;
        let Some(part) = self.parts.get_mut(&partition) else { return Ok(()) };
        part.timers.retain(|(_, u, _)| u != who);
        let Some(p) = part.profile(who).cloned() else { return Ok(()) };
        for (at, timer) in triggers::profile::timers(&p, now, max_age) {
            part.timers.insert((at, who.to_string(), timer));
        }
        for occurrence in triggers::profile::immediate(&p, &p.user_key, now, max_age) {
            self.decide_trigger(partition, occurrence).await?;
        }
        Ok(())
    }

    async fn run_timers(&mut self) -> anyhow::Result<()> {
        let now = (self.clock)();
        let mut due = Vec::new();
        for (p, part) in &mut self.parts {
            while let Some(first) = part.timers.first().cloned() {
                if first.0 > now {
                    break;
                }
                part.timers.pop_first();
                due.push((*p, first));
            }
        }
        for (p, (at, who, timer)) in due {
            let Some(profile) = self.parts.get(&p).and_then(|part| part.profile(&who)) else { continue };
            if let Some(occurrence) = triggers::profile::on_timer(timer, at, profile, &profile.user_key) {
                self.decide_trigger(p, occurrence).await?;
            }
        }
        // Deferrals whose time has come.
        let mut due = Vec::new();
        for (p, part) in &mut self.parts {
            while let Some(rec) = part.pop_due(now) {
                due.push((*p, rec));
            }
        }
        for (p, rec) in due {
            self.resume_deferred(p, rec).await?;
        }
        METRICS.deferred.set(self.parts.values().map(|p| p.pending() as i64).sum());
        Ok(())
    }

    async fn resume_deferred(&mut self, partition: i32, rec: MessageEvent) -> anyhow::Result<()> {
        // The version it was decided under (a journey keeps its version), unless the campaign
        // was removed or paused since: then it is not sent.
        let live = self.catalog.campaign(&rec.app_id, &rec.campaign);
        let gone = match &live {
            None => Some("campaign_removed"),
            Some(l) if l.paused() || !l.campaign.enabled => Some("campaign_paused"),
            // Its app's OA was taken out of the configuration since.
            Some(_) if !self.clients.contains_key(&rec.app_id) => Some("no_oa_for_app"),
            Some(_) => None,
        };
        let versioned = rec.campaign_version.and_then(|v| Some((v, self.catalog.campaign_version(&rec.app_id, &rec.campaign, v)?)));
        let (Some(live), None) = (live, gone) else {
            let mut closed = rec;
            closed.set_status(MessageStatus::Suppressed);
            closed.reason = gone.map(str::to_string);
            closed.retry_at = None;
            closed.at = (self.clock)();
            return self.write(partition, &closed).await;
        };
        let (version, campaign) = versioned.unwrap_or((live.version(), live.campaign));
        let (base, n) = journey_step_of(&rec.trigger_id);
        // The deferred record kept the variables the first attempt rendered (and the entry time).
        let vars: serde_json::Map<String, Value> = rec.data.as_deref().and_then(|d| serde_json::from_str(d).ok()).unwrap_or_default();
        let entry = vars.get(ENTRY_VAR).and_then(Value::as_i64).unwrap_or(rec.at);
        let occurrence = Occurrence {
            app: rec.app_id.clone(),
            user: rec.user_key.clone(),
            trigger: campaign.trigger,
            id: base.to_string(),
            at: entry,
            vars,
            segment: campaign.segment.clone(),
            // Its source was accepted when it was first decided.
            trust: schemas::event::Trust::Server,
        };
        if rec.is(MessageStatus::Waiting) {
            // A journey's wait is over: the journey goes on from the next step, and only once
            // that step has its record is the wait closed — a member stopped in between finds
            // the wait still open and walks on again (what was decided is passed over).
            self.run_journey(partition, &campaign, version, occurrence, n + 1, 0).await?;
            let mut closed = rec;
            closed.set_status(MessageStatus::Resumed);
            closed.retry_at = None;
            closed.data = None;
            closed.at = (self.clock)();
            return self.write(partition, &closed).await;
        }
        // A send deferred by the night ban: the channel it was deferred on (its fallback's?).
        let primary = match n {
            1 => Some(&campaign.primary),
            _ => campaign.step(n).and_then(|s| s.send.as_ref()).map(|s| &s.step),
        };
        let from = if primary.is_some_and(|p| p.channel.name() == rec.channel) { 0 } else { 1 };
        self.run_journey(partition, &campaign, version, occurrence, n, from).await
    }

    /// Decides the jobs whose profile has caught up (or whose wait is over), in arrival order.
    async fn run_due_jobs(&mut self) -> anyhow::Result<()> {
        let now = tokio::time::Instant::now();
        let mut i = 0;
        while i < self.jobs.len() {
            let j = &self.jobs[i];
            let ready = j.wait_until <= now
                || self
                    .parts
                    .get(&j.partition)
                    .and_then(|p| p.profile(&member(&j.occurrence.app, &j.occurrence.user)))
                    .is_some_and(|p| p.as_of >= j.occurrence.at);
            // Keep each user's triggers in order: a later job never overtakes an earlier one.
            if !ready
                || self
                    .jobs
                    .iter()
                    .take(i)
                    .any(|e| e.occurrence.user == j.occurrence.user && e.occurrence.app == j.occurrence.app && e.partition == j.partition)
            {
                i += 1;
                continue;
            }
            let job = self.jobs.remove(i).expect("index in range");
            if self.parts.contains_key(&job.partition) {
                self.decide_trigger(job.partition, job.occurrence).await?;
            }
            if let Some(s) = self.in_flight.get_mut(&(job.topic, job.partition)) {
                s.remove(&job.offset);
            }
        }
        Ok(())
    }

    /// Runs every campaign of the occurrence's trigger, unless the occurrence is too old.
    async fn decide_trigger(&mut self, partition: i32, occurrence: Occurrence) -> anyhow::Result<()> {
        let campaigns: Vec<definitions::Live> = self
            .catalog
            .for_trigger(&occurrence.app, occurrence.trigger)
            .into_iter()
            .filter(|l| l.campaign.segment.is_none() || l.campaign.segment == occurrence.segment)
            .filter(|l| {
                // Who may start it: an order's status from the Mini App's write key starts no
                // transactional message (by default only the shop's server does).
                let accepted = l.campaign.accepts(occurrence.trust);
                if !accepted {
                    METRICS.ignored.with_label_values(&[occurrence.trigger.name(), "untrusted_source"]).inc();
                }
                accepted
            })
            .collect();
        // Suppressed whole, before any policy: the trigger of an app without an OA here (an OA is
        // one app's: another app's customers never get its messages), or a stale one.
        let suppressed = if !self.clients.contains_key(&occurrence.app) {
            Some("no_oa_for_app")
        } else if (self.clock)() - occurrence.at > self.campaigns.max_trigger_age_ms {
            Some("stale_trigger")
        } else {
            None
        };
        for live in campaigns {
            let (c, version) = (live.campaign.as_ref(), live.version());
            if let Some(reason) = suppressed {
                let mid = message_id(&occurrence, &c.name, c.primary.channel);
                if self.decided(partition, &member(&occurrence.app, &occurrence.user), &mid) {
                    METRICS.duplicates.with_label_values(&[occurrence.trigger.name()]).inc();
                    continue;
                }
                let rec = self.record(&mid, c, version, &occurrence, c.primary.channel, MessageStatus::Suppressed, Some(reason));
                self.write(partition, &rec).await?;
                continue;
            }
            if !self.may_enter(partition, c, &occurrence) {
                METRICS.ignored.with_label_values(&[occurrence.trigger.name(), "no_reentry"]).inc();
                continue;
            }
            if c.holdout_percent.is_some_and(|p| held_out(&occurrence.app, &occurrence.user, &c.name, p)) {
                // The control group: nothing is sent and nothing counts against a quota; the
                // record makes the entry count (and dedups it like any decision, whatever the
                // campaign's channel becomes in a later version).
                let mid = step_message_id(&occurrence, &c.name, 1, HELD_OUT_CHANNEL);
                if self.decided(partition, &member(&occurrence.app, &occurrence.user), &mid) {
                    METRICS.duplicates.with_label_values(&[occurrence.trigger.name()]).inc();
                    continue;
                }
                let rec = self.record(&mid, c, version, &occurrence, c.primary.channel, MessageStatus::HeldOut, None);
                self.write(partition, &rec).await?;
                continue;
            }
            // A journey under way (this occurrence entered before: a replay, a re-derived
            // trigger) walks on under the version it entered with.
            let who = member(&occurrence.app, &occurrence.user);
            let entered = self
                .parts
                .get(&partition)
                .and_then(|p| p.user(&who))
                .and_then(|u| u.journey_versions.get(&journey_key(&c.name, &occurrence.id)).copied())
                .filter(|v| *v != version)
                .and_then(|v| Some((v, self.catalog.campaign_version(&occurrence.app, &c.name, v)?)));
            let (version, c) = match &entered {
                Some((v, old)) => (*v, old.as_ref()),
                None => (version, c),
            };
            let mut entering = occurrence.clone();
            entering.vars.insert(ENTRY_VAR.into(), json!(occurrence.at));
            self.run_journey(partition, c, version, entering, 1, 0).await?;
        }
        Ok(())
    }

    /// The campaign's re-entry rule: whether the user may enter it on this occurrence.
    fn may_enter(&self, partition: i32, c: &Campaign, occurrence: &Occurrence) -> bool {
        let who = member(&occurrence.app, &occurrence.user);
        let Some(last) = self.parts.get(&partition).and_then(|p| p.user(&who)).and_then(|u| u.entries.get(&c.name)) else {
            return true;
        };
        // The same occurrence again (a replay) is dedup's to catch.
        if last.1 == occurrence.id {
            return true;
        }
        match c.reentry() {
            Reentry::EveryTrigger => true,
            Reentry::Once => false,
            Reentry::After(ms) => (self.clock)() - last.0 >= ms,
        }
    }

    /// Whether the user placed an order after `entry` (a journey's exit goal, its `converted`),
    /// and by now (an order time ahead of the clock is not yet one).
    fn converted(&self, partition: i32, occurrence: &Occurrence, entry: i64) -> bool {
        let who = member(&occurrence.app, &occurrence.user);
        let now = (self.clock)();
        self.parts.get(&partition).and_then(|p| p.profile(&who)).and_then(|p| p.last_order_at).is_some_and(|t| t > entry && t <= now)
    }

    /// Runs a campaign's journey for one occurrence from step `n` (1: its first message; for a
    /// send, from its channel `from`: 0 the step's own, 1 its fallback) until a wait, a
    /// deferral or the end. A step already decided (a replay, a restart) is passed over, so the
    /// journey goes on from where it was, no step done twice and none lost. Before each step
    /// after the first, the exit goal: reached, the journey ends (`goal_reached`).
    async fn run_journey(
        &mut self,
        partition: i32,
        c: &Campaign,
        version: i64,
        occurrence: Occurrence,
        mut n: usize,
        mut from: usize,
    ) -> anyhow::Result<()> {
        let entry = occurrence.vars.get(ENTRY_VAR).and_then(Value::as_i64).unwrap_or(occurrence.at);
        let who = member(&occurrence.app, &occurrence.user);
        loop {
            let (step, fallback) = if n == 1 {
                (&c.primary, c.fallback.as_ref())
            } else {
                let Some(js) = c.step(n) else { return Ok(()) };
                let kind = match js.kind() {
                    Ok(k) => k,
                    // Checked when written; nothing to run.
                    Err(_) => return Ok(()),
                };
                if c.exit_goal.is_some() && self.converted(partition, &occurrence, entry) {
                    let mid = step_message_id(&occurrence, &c.name, n, JOURNEY_CHANNEL);
                    if !self.decided(partition, &who, &mid) {
                        let mut rec = self.journey_record(&mid, c, version, &occurrence, n, MessageStatus::Suppressed);
                        rec.reason = Some("goal_reached".into());
                        self.write(partition, &rec).await?;
                    }
                    return Ok(());
                }
                match kind {
                    StepKind::Send(s) => (&s.step, s.fallback.as_ref()),
                    StepKind::Wait(_) | StepKind::WaitUntil { .. } => {
                        let mid = step_message_id(&occurrence, &c.name, n, JOURNEY_CHANNEL);
                        if self.decided(partition, &who, &mid) {
                            n += 1;
                            continue;
                        }
                        if self.parts.get(&partition).is_some_and(|p| p.is_pending(&mid)) {
                            return Ok(());
                        }
                        let now = (self.clock)();
                        let until = match kind {
                            StepKind::Wait(ms) => now + ms,
                            StepKind::WaitUntil { hour, minute } => next_vn_time(now, hour, minute),
                            _ => unreachable!("a wait"),
                        };
                        let mut rec = self.journey_record(&mid, c, version, &occurrence, n, MessageStatus::Waiting);
                        rec.retry_at = Some(until);
                        rec.data = Some(Value::Object(occurrence.vars.clone()).to_string());
                        return self.write(partition, &rec).await;
                    }
                    StepKind::Branch(b) => {
                        // Taken once: a later walk (a replay, a re-derived trigger) follows it.
                        let mid = step_message_id(&occurrence, &c.name, n, JOURNEY_CHANNEL);
                        if let Some(taken) = self.parts.get(&partition).and_then(|p| p.user(&who)).and_then(|u| u.gotos.get(&mid).copied())
                        {
                            match taken {
                                Some(next) => {
                                    n = next;
                                    continue;
                                }
                                None => return Ok(()),
                            }
                        }
                        let holds = match &b.condition {
                            Condition::Converted => self.converted(partition, &occurrence, entry),
                            Condition::FollowsOa => recipient(self.parts.get(&partition).and_then(|p| p.profile(&who))).follows_oa,
                            Condition::HasPhone => recipient(self.parts.get(&partition).and_then(|p| p.profile(&who))).phone.is_some(),
                            Condition::InSegment(seg) => {
                                self.parts.get(&partition).and_then(|p| p.user(&who)).is_some_and(|u| u.segments.contains(seg))
                            }
                        };
                        let go = if holds { &b.then } else { &b.otherwise };
                        let target = go.as_ref().map_or(Some(n + 1), |g| g.target(n));
                        let mut rec = self.journey_record(&mid, c, version, &occurrence, n, MessageStatus::Resumed);
                        rec.reason = Some(target.map_or("goto:exit".to_string(), |t| format!("goto:{t}")));
                        self.write(partition, &rec).await?;
                        match target {
                            Some(next) => {
                                n = next;
                                continue;
                            }
                            None => return Ok(()),
                        }
                    }
                }
            };
            let sends: Vec<&crate::campaigns::Step> = std::iter::once(step).chain(fallback).collect();
            match self.run_campaign(partition, c, version, occurrence.clone(), n, &sends, from).await? {
                Ran::Done if !c.steps.is_empty() => {
                    n += 1;
                    from = 0;
                }
                Ran::Done | Ran::Waiting => return Ok(()),
            }
        }
    }

    /// A journey's own record (a wait, or its end at the goal) for step `n`.
    fn journey_record(
        &self,
        mid: &str,
        c: &Campaign,
        version: i64,
        occurrence: &Occurrence,
        n: usize,
        status: MessageStatus,
    ) -> MessageEvent {
        let mut rec = self.record(mid, c, version, occurrence, ChannelName::Zns, status, None);
        rec.channel = JOURNEY_CHANNEL.to_string();
        rec.trigger_id = step_trigger_id(&occurrence.id, n);
        rec
    }

    fn decided(&self, partition: i32, who: &str, mid: &str) -> bool {
        self.parts.get(&partition).is_some_and(|p| p.decided(who, mid))
    }

    /// A `zmp.messages.v1` record of one campaign's decision on one occurrence.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        mid: &str,
        c: &Campaign,
        version: i64,
        occurrence: &Occurrence,
        channel: ChannelName,
        status: MessageStatus,
        reason: Option<&str>,
    ) -> MessageEvent {
        MessageEvent {
            message_id: mid.to_string(),
            app_id: occurrence.app.clone(),
            user_key: occurrence.user.clone(),
            campaign: c.name.clone(),
            trigger: occurrence.trigger.name().to_string(),
            trigger_id: occurrence.id.clone(),
            channel: channel.name().to_string(),
            status: status.as_str().to_string(),
            reason: reason.map(str::to_string),
            promotional: c.promotional(),
            at: (self.clock)(),
            campaign_version: Some(version),
            ..Default::default()
        }
    }

    /// One campaign for one occurrence: the primary channel, then the fallback when the primary
    /// cannot reach the user. Each step: dedup, the policy, a record, and the send.
    /// One message of a campaign for one occurrence, step `n` of its journey: its channel, then
    /// the fallback when the channel cannot reach the user (`sends`, from `first`). Each: dedup,
    /// the policy, a record, and the send. `Waiting` when it was deferred (the night ban).
    #[allow(clippy::too_many_arguments)]
    async fn run_campaign(
        &mut self,
        partition: i32,
        c: &Campaign,
        version: i64,
        mut occurrence: Occurrence,
        n: usize,
        sends: &[&crate::campaigns::Step],
        first_step: usize,
    ) -> anyhow::Result<Ran> {
        let steps = sends;
        let mut vars = std::mem::take(&mut occurrence.vars);
        let user = occurrence.user.as_str();
        let who = member(&occurrence.app, user);
        let profile = self.parts.get(&partition).and_then(|p| p.profile(&who)).cloned();
        if let Some(p) = &profile {
            vars.entry("name").or_insert_with(|| json!(p.name.clone().unwrap_or_else(|| "bạn".into())));
            vars.entry("points_balance").or_insert_with(|| json!(p.points_balance.to_string()));
            vars.entry("orders").or_insert_with(|| json!(p.orders.to_string()));
        } else {
            vars.entry("name").or_insert_with(|| json!("bạn"));
        }
        vars.entry("user_key").or_insert_with(|| json!(user));
        vars.entry("campaign").or_insert_with(|| json!(c.name));
        let recipient = recipient(profile.as_ref());
        let trigger_id = step_trigger_id(&occurrence.id, n);
        for step in steps.iter().skip(first_step) {
            let channel = step.channel;
            let mid = step_message_id(&occurrence, &c.name, n, channel.name());
            if self.parts.get(&partition).is_some_and(|p| p.is_pending(&mid)) {
                // Deferred (the night ban): its resumption goes on from there.
                return Ok(Ran::Waiting);
            }
            if self.decided(partition, &who, &mid) {
                // Decided before (a replay, a restart): the fallback if it fell through to it,
                // else the step is done.
                if self.parts.get(&partition).and_then(|p| p.user(&who)).is_some_and(|u| u.fell_through.contains(&mid)) {
                    continue;
                }
                if n == 1 {
                    METRICS.duplicates.with_label_values(&[occurrence.trigger.name()]).inc();
                }
                return Ok(Ran::Done);
            }
            let now = (self.clock)();
            let key = dedup_key(&c.name, &trigger_id);
            let req = policy::Request {
                trigger_id: &key,
                campaign: &c.name,
                channel: channel.channel(),
                purpose: c.purpose.as_deref(),
                promotional: c.promotional(),
                at: now,
                zns_price: step.price_vnd,
            };
            let part = self.parts.get(&partition);
            let history = part.and_then(|p| p.user(&who)).map(|u| u.sent.as_slice()).unwrap_or_default();
            let address = if channel.oa_kind().is_some() {
                recipient.oa_user_id.as_deref().map(|id| oa_address(&occurrence.app, id))
            } else {
                recipient.phone.as_deref().map(|phone| phone_address(&occurrence.app, phone))
            };
            let to = Recipient {
                sent_to_address_last_day: address.zip(part).map_or(0, |(a, p)| p.sent_to_address(&a, now)),
                ..recipient.clone()
            };
            let decision = policy::decide(&req, &to, history, &self.campaigns.limits);
            let mut rec = self.record(&mid, c, version, &occurrence, channel, MessageStatus::Sending, None);
            rec.trigger_id = trigger_id.clone();
            rec.template_id = step.template_id.clone();
            match decision {
                Decision::Suppress(reason) => {
                    rec.set_status(MessageStatus::Suppressed);
                    rec.reason = Some(reason.code().into());
                    self.write(partition, &rec).await?;
                    if reason.worth_fallback() {
                        continue;
                    }
                    return Ok(Ran::Done);
                }
                Decision::Defer { until, reason } => {
                    rec.set_status(MessageStatus::Deferred);
                    rec.reason = Some(reason.code().into());
                    rec.retry_at = Some(until);
                    rec.data = Some(Value::Object(vars.clone()).to_string());
                    self.write(partition, &rec).await?;
                    return Ok(Ran::Waiting);
                }
                Decision::Send { cost_vnd } => {
                    rec.data = Some(Value::Object(vars.clone()).to_string());
                    self.write(partition, &rec).await?;
                    let content = content(step, &vars);
                    let client = self.clients.get(&occurrence.app).cloned().context("no OA for the app")?;
                    let result = match channel.oa_kind() {
                        Some(kind) => {
                            let uid = recipient.oa_user_id.clone().unwrap_or_default();
                            let mut content = content;
                            if kind == crate::zalo::OaKind::Transaction {
                                content.table = triggers::order::VARIABLES
                                    .iter()
                                    .filter_map(|k| vars.get(*k).and_then(Value::as_str).map(|v| (k.to_string(), v.to_string())))
                                    .collect();
                            }
                            client.send_oa(kind, &uid, &content).await
                        }
                        None => {
                            let phone = recipient.phone.clone().unwrap_or_default();
                            client.send_zns(&phone, &content, &tracking_id(&mid, user)).await
                        }
                    };
                    rec.data = None;
                    rec.at = (self.clock)();
                    match result {
                        Ok(accepted) => {
                            rec.set_status(MessageStatus::Sent);
                            rec.cost_vnd = cost_vnd;
                            rec.zalo_message_id = Some(accepted.message_id);
                            self.write(partition, &rec).await?;
                            return Ok(Ran::Done);
                        }
                        Err(ZaloError::TokenFile(why)) => {
                            // Sending on would rotate tokens that a restart cannot find. The
                            // `sending` record is closed `unknown` by the next owner.
                            anyhow::bail!("the Zalo token file cannot be written: {why}");
                        }
                        Err(e) if e.may_have_been_delivered() => {
                            // Zalo may have sent (and billed) it: never again, and no fallback.
                            // A ZNS delivery webhook carrying its tracking id still records it
                            // `delivered` (Zalo has no look-up by tracking id).
                            rec.set_status(MessageStatus::Unknown);
                            rec.reason = Some(match e {
                                ZaloError::Http(status) => format!("zalo_http_{status}"),
                                _ => "zalo_no_answer".to_string(),
                            });
                            self.write(partition, &rec).await?;
                            return Ok(Ran::Done);
                        }
                        Err(e) => {
                            rec.set_status(MessageStatus::Failed);
                            rec.zalo_error = e.code();
                            rec.reason = Some(short(&e));
                            self.write(partition, &rec).await?;
                            if e.code().is_some_and(policy::unreachable_by_oa) {
                                continue;
                            }
                            return Ok(Ran::Done);
                        }
                    }
                }
            }
        }
        Ok(Ran::Done)
    }

    /// Writes a record to `zmp.messages.v1` (the user's partition) and waits for Kafka's ack;
    /// then applies it to the state and the metrics.
    async fn write(&mut self, partition: i32, rec: &MessageEvent) -> anyhow::Result<()> {
        let payload = schemas::codec::encode(rec)?;
        let record = FutureRecord::to(Topic::Messages.name()).partition(partition).key(rec.user_key.as_str()).payload(&payload);
        self.producer
            .send(record, Duration::from_secs(60))
            .await
            .map_err(|(e, _)| anyhow::anyhow!("writing to zmp.messages.v1: {e}; the trigger is decided again after a restart"))?;
        if let Some(part) = self.parts.get_mut(&partition) {
            part.apply(rec);
        }
        if !rec.is(MessageStatus::Sending) {
            // Failures are labelled by Zalo's code, not its message: a bounded set of series.
            let reason = match (rec.status(), rec.zalo_error) {
                (Some(MessageStatus::Failed), Some(code)) => format!("zalo_error_{code}"),
                (Some(MessageStatus::Failed), None) => "zalo_unreachable".to_string(),
                _ => rec.reason.clone().unwrap_or_default(),
            };
            METRICS.messages.with_label_values(&[&rec.campaign, &rec.channel, &rec.status, &reason]).inc();
        }
        if rec.is(MessageStatus::Sent) {
            METRICS.cost.with_label_values(&[&rec.campaign, &rec.channel]).inc_by(rec.cost_vnd as u64);
        }
        tracing::debug!(campaign = %rec.campaign, channel = %rec.channel, status = %rec.status, reason = ?rec.reason, "message decision");
        Ok(())
    }
}

/// What the policy knows of a recipient: only a phone and an OA id a trusted source gave are
/// addresses; one a client typed in (or a profile from before trust was recorded) is noted as
/// unverified and never sent to.
pub fn recipient(p: Option<&Profile>) -> Recipient {
    let Some(p) = p else { return Recipient::default() };
    Recipient {
        granted: p.consents.iter().filter(|c| c.granted).map(|c| c.purpose.clone()).collect(),
        oa_user_id: p.oa_user_id.clone().filter(|_| p.oa_user_id_verified),
        oa_user_id_unverified: p.oa_user_id.is_some() && !p.oa_user_id_verified,
        follows_oa: p.oa_following,
        last_interaction: p.oa_last_interaction,
        phone: p.phone.clone().filter(|_| p.phone_verified),
        phone_unverified: p.phone.is_some() && !p.phone_verified,
        sent_to_address_last_day: 0,
    }
}

fn short(e: &ZaloError) -> String {
    e.to_string().chars().take(200).collect()
}

/// The stable id of one occurrence's message from one campaign on one channel.
pub fn message_id(occurrence: &Occurrence, campaign: &str, channel: ChannelName) -> String {
    stable_id(&[&occurrence.app, &occurrence.user, campaign, &occurrence.id, channel.name()])
}

/// What a step of a journey did: decided (go on), or waiting (a deferral: its record resumes it).
enum Ran {
    Done,
    Waiting,
}

/// The template variable that carries when the user entered the journey (epoch ms); kept in
/// the records that resume it (waits, deferrals).
const ENTRY_VAR: &str = "_journey_entry";

/// The channel of a journey's own records (its waits, its end at the goal).
pub const JOURNEY_CHANNEL: &str = "journey";

/// What a held-out entry's message id is made with, in place of a channel.
const HELD_OUT_CHANNEL: &str = "held_out";

/// The trigger id a journey's step `n` is recorded under: the occurrence's for the first
/// message (as before journeys), `<id>#step<n>` after it — one send per trigger and step, ever.
pub fn step_trigger_id(id: &str, n: usize) -> String {
    if n <= 1 { id.to_string() } else { format!("{id}#step{n}") }
}

/// The occurrence's trigger id and the step number of a record's `trigger_id`.
pub fn journey_step_of(trigger_id: &str) -> (&str, usize) {
    match trigger_id.rsplit_once("#step").and_then(|(base, n)| Some((base, n.parse::<usize>().ok()?))) {
        Some((base, n)) if n >= 2 => (base, n),
        _ => (trigger_id, 1),
    }
}

/// The stable id of step `n`'s message on `channel` (or of its wait, on [`JOURNEY_CHANNEL`]):
/// the first message's is [`message_id`]'s, as before journeys.
fn step_message_id(occurrence: &Occurrence, campaign: &str, n: usize, channel: &str) -> String {
    if n <= 1 {
        stable_id(&[&occurrence.app, &occurrence.user, campaign, &occurrence.id, channel])
    } else {
        stable_id(&[&occurrence.app, &occurrence.user, campaign, &step_trigger_id(&occurrence.id, n), channel])
    }
}

/// The first time after `now` that is `hour:minute` in Vietnam.
pub fn next_vn_time(now: i64, hour: i64, minute: i64) -> i64 {
    use schemas::time::{DAY_MS, HOUR_MS, VN_OFFSET_MS};
    let local = now + VN_OFFSET_MS;
    let day = local - local.rem_euclid(DAY_MS);
    let at = day + hour * HOUR_MS + minute * 60_000;
    (if at > local { at } else { at + DAY_MS }) - VN_OFFSET_MS
}

/// The ZNS tracking id (≤ 48 chars): the message id's first 16 hex, a dot, and the user key when
/// it fits, so the delivery webhook can be recorded on the user's partition.
pub fn tracking_id(mid: &str, user: &str) -> String {
    let head = &mid[..16.min(mid.len())];
    if head.len() + 1 + user.len() <= 48 { format!("{head}.{user}") } else { head.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_ids_carry_the_user_when_it_fits() {
        let mid = stable_id(&["x"]);
        assert_eq!(tracking_id(&mid, "8123456789012345678"), format!("{}.8123456789012345678", &mid[..16]));
        assert_eq!(tracking_id(&mid, &"u".repeat(40)).len(), 16);
    }
}
