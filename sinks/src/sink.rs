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

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use prometheus::{IntCounterVec, IntGauge, register_int_counter_vec, register_int_gauge};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use serde_json::{Map, Value, json};

use schemas::codec::decode;
use schemas::derived::{AudienceChange, CartTrigger, MessageEvent, Profile, stable_id};
use schemas::event::{InputEvent, OrderType};
use schemas::kafka::Kafka;
use schemas::topics::Topic;

use crate::Clock;
use crate::campaigns::{Campaign, Campaigns, ChannelName, Trigger, content};
use crate::policy::{self, Decision, Reason, Recipient, Sent};
use crate::zalo::{ZaloClient, ZaloError};
use crate::zalo_rules::{DAY_MS, VN_OFFSET_MS, oa_error};

#[derive(clap::Args, Debug, Clone)]
pub struct SinkArgs {
    /// Campaigns (TOML, see docs/messaging.md); without it, the shipped config/campaigns.toml.
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
    deferred: register_int_gauge!("zcdp_sink_deferred_pending", "Messages deferred (night ban) and waiting").expect("metric"),
});

/// The group's inputs, co-partitioned by user.
const GROUP_TOPICS: [Topic; 3] = [Topic::CartTriggers, Topic::Orders, Topic::Audiences];

#[derive(Default)]
struct UserState {
    profile: Option<Profile>,
    sent: Vec<Sent>,
    /// Message ids decided for good (sent, suppressed, failed, unknown) or being sent.
    decided: HashSet<String>,
}

#[derive(Default)]
struct Part {
    users: HashMap<String, UserState>,
    /// (retry_at, message id) → the deferred record.
    deferred: std::collections::BTreeMap<(i64, String), MessageEvent>,
    /// (when, user, kind): birthday and next-purchase checks.
    timers: BTreeSet<(i64, String, u8)>,
}

const TIMER_BIRTHDAY: u8 = 0;
const TIMER_NEXT_PURCHASE: u8 = 1;

/// A trigger occurrence waiting to be decided.
struct Job {
    partition: i32,
    topic: Topic,
    offset: i64,
    app: String,
    user: String,
    trigger: Trigger,
    trigger_id: String,
    /// When it happened (event time): for the age check and the profile wait.
    at: i64,
    vars: Map<String, Value>,
    segment: Option<String>,
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
    pub async fn start(kafka: &Kafka, args: &SinkArgs, client: Arc<ZaloClient>, clock: Clock) -> anyhow::Result<Sink> {
        let campaigns = Campaigns::load(args.campaigns.as_deref())?;
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
            client,
            campaigns,
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
        let task = tokio::spawn(async move { engine.run(stop2).await });
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
    client: Arc<ZaloClient>,
    campaigns: Campaigns,
    clock: Clock,
    handover: Arc<Mutex<Handover>>,
    parts: HashMap<i32, Part>,
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
            let (messages, profiles) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                let m = kafka.read_partitions_to_end(Topic::Messages.name(), Some(&parts), Duration::from_secs(300))?;
                let p = kafka.read_partitions_to_end(Topic::Profiles.name(), Some(&parts), Duration::from_secs(300))?;
                Ok((m, p))
            })
            .await??;
            for p in &new {
                self.parts.insert(*p, Part::default());
            }
            let mut open: Vec<(i32, MessageEvent)> = Vec::new();
            for m in &messages.0 {
                let Some(rec) = m.payload().and_then(|b| decode::<MessageEvent>(b).ok()) else { continue };
                let part = self.parts.get_mut(&m.partition()).expect("new partition");
                replay(part, &rec);
                if rec.status == "sending" {
                    open.push((m.partition(), rec));
                } else {
                    open.retain(|(_, o)| o.message_id != rec.message_id);
                }
            }
            for m in &profiles.0 {
                let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
                let profile = m.payload().and_then(|b| decode::<Profile>(b).ok());
                self.parts.get_mut(&m.partition()).expect("new partition").users.entry(key).or_default().profile = profile;
            }
            for (p, end) in &profiles.1 {
                self.profile_pos.insert(*p, *end);
            }
            // A send whose answer never came: not sent again (at most once).
            for (p, rec) in open {
                let mut closed = rec.clone();
                closed.status = "unknown".into();
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
            METRICS.deferred.set(self.parts.values().map(|p| p.deferred.len() as i64).sum());
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
        let wait_until = tokio::time::Instant::now() + self.profile_wait;
        let job =
            |app: &str, user: &str, trigger: Trigger, trigger_id: String, at: i64, vars: Map<String, Value>, segment: Option<String>| Job {
                partition,
                topic: t,
                offset,
                app: app.to_string(),
                user: user.to_string(),
                trigger,
                trigger_id,
                at,
                vars,
                segment,
                wait_until,
            };
        let job = match t {
            Topic::CartTriggers => {
                let Ok(c) = decode::<CartTrigger>(payload) else { return Ok(()) };
                let product = c.last_viewed_product.as_ref();
                let first = c.items.first();
                let vars = obj(json!({
                    "cart_id": c.cart_id,
                    "cart_value": vnd(c.value),
                    "item_count": c.items.iter().map(|i| i.quantity).sum::<i64>().to_string(),
                    "product_name": first.and_then(|i| i.product_name.clone()).or(product.and_then(|p| p.product_name.clone()))
                        .or(first.map(|i| i.product_id.clone())).unwrap_or_default(),
                    "product_id": first.map(|i| i.product_id.clone()).unwrap_or_default(),
                }));
                job(&c.app_id, &c.user.key, Trigger::CartAbandoned, c.trigger_id.clone(), c.last_activity, vars, None)
            }
            Topic::Orders => {
                let Ok(InputEvent::Order(o)) = schemas::codec::decode_input(Topic::Orders, payload) else { return Ok(()) };
                let status = match o.kind {
                    OrderType::OrderPlaced => "đã đặt thành công".to_string(),
                    OrderType::OrderPaid => "đã thanh toán".to_string(),
                    OrderType::OrderStatusChanged => o.properties.status.clone().unwrap_or_else(|| "đã cập nhật".into()),
                    OrderType::OrderCancelled => "đã huỷ".to_string(),
                    OrderType::OrderRefunded => "đã hoàn tiền".to_string(),
                };
                let vars = obj(json!({"order_id": o.properties.order_id, "order_status": status,
                    "order_total": o.properties.total.map(vnd).unwrap_or_default()}));
                job(&o.app_id, &o.user.key, Trigger::OrderStatus, o.event_id.clone(), o.event_time, vars, None)
            }
            Topic::Audiences => {
                let Ok(a) = decode::<AudienceChange>(payload) else { return Ok(()) };
                if !a.member {
                    return Ok(());
                }
                let id = stable_id(&[&a.app_id, &a.user_key, "segment", &a.segment, &a.at.to_string()]);
                let vars = obj(json!({"segment": a.segment}));
                job(&a.app_id, &a.user_key, Trigger::SegmentEntered, id, a.at, vars, Some(a.segment.clone()))
            }
            _ => return Ok(()),
        };
        if self.campaigns.for_trigger(job.trigger).next().is_none() {
            return Ok(());
        }
        self.in_flight.entry((t, partition)).or_default().insert(offset);
        self.jobs.push_back(job);
        Ok(())
    }

    async fn on_profile(&mut self, partition: i32, key: &str, profile: Option<Profile>) -> anyhow::Result<()> {
        let Some(part) = self.parts.get_mut(&partition) else { return Ok(()) };
        part.users.entry(key.to_string()).or_default().profile = profile;
        self.profile_triggers(partition, key).await
    }

    /// The triggers a profile implies: welcome and new follower at once; birthday and expected
    /// next purchase as timers.
    async fn profile_triggers(&mut self, partition: i32, user: &str) -> anyhow::Result<()> {
        let now = (self.clock)();
        let max_age = self.campaigns.max_trigger_age_ms;
        let Some(part) = self.parts.get_mut(&partition) else { return Ok(()) };
        let Some(p) = part.users.get(user).and_then(|u| u.profile.clone()) else {
            part.timers.retain(|(_, u, _)| u != user);
            return Ok(());
        };
        part.timers.retain(|(_, u, _)| u != user);
        if let Some(at) = next_birthday(p.birthday.as_deref(), now - max_age) {
            part.timers.insert((at, user.to_string(), TIMER_BIRTHDAY));
        }
        if let Some(at) = p.next_purchase_expected
            && p.last_order_at.is_none_or(|o| at > o)
            && now - at <= max_age
        {
            part.timers.insert((at, user.to_string(), TIMER_NEXT_PURCHASE));
        }
        let mut found = Vec::new();
        if p.sessions >= 1 && now - p.first_seen <= max_age {
            found.push((Trigger::Welcome, stable_id(&[&p.app_id, user, "welcome"]), p.first_seen, Map::new()));
        }
        if p.oa_following
            && let Some(at) = p.oa_followed_at
            && now - at <= max_age
        {
            found.push((Trigger::OaFollowed, stable_id(&[&p.app_id, user, "oa_followed", &at.to_string()]), at, Map::new()));
        }
        for (trigger, id, at, vars) in found {
            self.decide_trigger(partition, &p.app_id, user, trigger, &id, at, vars, None).await?;
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
        for (p, (at, user, kind)) in due {
            let Some(profile) = self.parts.get(&p).and_then(|part| part.users.get(&user)).and_then(|u| u.profile.clone()) else {
                continue;
            };
            if kind == TIMER_BIRTHDAY {
                let year = (at + VN_OFFSET_MS).div_euclid(DAY_MS * 365).to_string();
                let id = stable_id(&[&profile.app_id, &user, "birthday", &year]);
                self.decide_trigger(p, &profile.app_id, &user, Trigger::Birthday, &id, at, Map::new(), None).await?;
            } else if profile.next_purchase_expected == Some(at) && profile.last_order_at.is_none_or(|o| o < at) {
                let id = stable_id(&[&profile.app_id, &user, "next_purchase", &at.to_string()]);
                let date = chrono::DateTime::from_timestamp_millis(at + VN_OFFSET_MS).map(|d| d.format("%d/%m/%Y").to_string());
                let vars = obj(json!({"expected_date": date.unwrap_or_default()}));
                self.decide_trigger(p, &profile.app_id, &user, Trigger::NextPurchase, &id, at, vars, None).await?;
            }
        }
        // Deferrals whose time has come.
        let mut due = Vec::new();
        for (p, part) in &mut self.parts {
            while let Some((k, _)) = part.deferred.first_key_value() {
                if k.0 > now {
                    break;
                }
                let (_, rec) = part.deferred.pop_first().expect("first");
                due.push((*p, rec));
            }
        }
        for (p, rec) in due {
            self.resume_deferred(p, rec).await?;
        }
        METRICS.deferred.set(self.parts.values().map(|p| p.deferred.len() as i64).sum());
        Ok(())
    }

    async fn resume_deferred(&mut self, partition: i32, rec: MessageEvent) -> anyhow::Result<()> {
        let Some(campaign) = self.campaigns.by_name(&rec.campaign).cloned() else {
            let mut gone = rec;
            gone.status = "suppressed".into();
            gone.reason = Some("campaign_removed".into());
            gone.retry_at = None;
            gone.at = (self.clock)();
            return self.write(partition, &gone).await;
        };
        let step = if campaign.primary.channel.name() == rec.channel { 0 } else { 1 };
        let vars: Map<String, Value> = rec.data.as_deref().and_then(|d| serde_json::from_str(d).ok()).unwrap_or_default();
        let trigger = campaign.trigger;
        self.run_campaign(partition, &rec.app_id, &rec.user_key, &campaign, trigger, &rec.trigger_id, vars, step).await
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
                    .and_then(|p| p.users.get(&j.user))
                    .and_then(|u| u.profile.as_ref())
                    .is_some_and(|p| p.as_of >= j.at);
            // Keep each user's triggers in order: a later job never overtakes an earlier one.
            if !ready || self.jobs.iter().take(i).any(|e| e.user == self.jobs[i].user && e.partition == self.jobs[i].partition) {
                i += 1;
                continue;
            }
            let job = self.jobs.remove(i).expect("index in range");
            if self.parts.contains_key(&job.partition) {
                self.decide_trigger(
                    job.partition,
                    &job.app,
                    &job.user,
                    job.trigger,
                    &job.trigger_id,
                    job.at,
                    job.vars,
                    job.segment.as_deref(),
                )
                .await?;
            }
            if let Some(s) = self.in_flight.get_mut(&(job.topic, job.partition)) {
                s.remove(&job.offset);
            }
        }
        Ok(())
    }

    /// Runs every campaign of `trigger`, unless the trigger is too old.
    #[allow(clippy::too_many_arguments)]
    async fn decide_trigger(
        &mut self,
        partition: i32,
        app: &str,
        user: &str,
        trigger: Trigger,
        trigger_id: &str,
        at: i64,
        vars: Map<String, Value>,
        segment: Option<&str>,
    ) -> anyhow::Result<()> {
        let campaigns: Vec<Campaign> =
            self.campaigns.for_trigger(trigger).filter(|c| c.segment.is_none() || c.segment.as_deref() == segment).cloned().collect();
        let stale = (self.clock)() - at > self.campaigns.max_trigger_age_ms;
        for c in campaigns {
            if stale {
                let mid = message_id(app, user, &c.name, trigger_id, c.primary.channel);
                if self.decided(partition, user, &mid) {
                    METRICS.duplicates.with_label_values(&[trigger.name()]).inc();
                    continue;
                }
                let rec = self.record(&mid, app, user, &c, trigger, trigger_id, c.primary.channel, "suppressed", Some("stale_trigger"));
                self.write(partition, &rec).await?;
                continue;
            }
            self.run_campaign(partition, app, user, &c, trigger, trigger_id, vars.clone(), 0).await?;
        }
        Ok(())
    }

    fn decided(&self, partition: i32, user: &str, mid: &str) -> bool {
        self.parts.get(&partition).and_then(|p| p.users.get(user)).is_some_and(|u| u.decided.contains(mid))
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        mid: &str,
        app: &str,
        user: &str,
        c: &Campaign,
        trigger: Trigger,
        trigger_id: &str,
        channel: ChannelName,
        status: &str,
        reason: Option<&str>,
    ) -> MessageEvent {
        MessageEvent {
            message_id: mid.to_string(),
            app_id: app.to_string(),
            user_key: user.to_string(),
            campaign: c.name.clone(),
            trigger: trigger.name().to_string(),
            trigger_id: trigger_id.to_string(),
            channel: channel.name().to_string(),
            status: status.to_string(),
            reason: reason.map(str::to_string),
            promotional: c.promotional(),
            at: (self.clock)(),
            ..Default::default()
        }
    }

    /// One campaign for one trigger: the primary channel, then the fallback when the primary
    /// cannot reach the user. Each step: dedup, the policy, a record, and the send.
    #[allow(clippy::too_many_arguments)]
    async fn run_campaign(
        &mut self,
        partition: i32,
        app: &str,
        user: &str,
        c: &Campaign,
        trigger: Trigger,
        trigger_id: &str,
        mut vars: Map<String, Value>,
        first_step: usize,
    ) -> anyhow::Result<()> {
        let steps: Vec<_> = std::iter::once(&c.primary).chain(c.fallback.iter()).collect();
        let profile = self.parts.get(&partition).and_then(|p| p.users.get(user)).and_then(|u| u.profile.clone());
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
        for step in steps.into_iter().skip(first_step) {
            let channel = step.channel;
            let mid = message_id(app, user, &c.name, trigger_id, channel);
            if self.decided(partition, user, &mid) {
                METRICS.duplicates.with_label_values(&[trigger.name()]).inc();
                return Ok(());
            }
            let now = (self.clock)();
            let key = format!("{}/{trigger_id}", c.name);
            let req = policy::Request {
                trigger_id: &key,
                campaign: &c.name,
                channel: channel.channel(),
                purpose: c.purpose.as_deref(),
                promotional: c.promotional(),
                at: now,
                zns_price: step.price_vnd,
            };
            let history = self.parts.get(&partition).and_then(|p| p.users.get(user)).map(|u| u.sent.as_slice()).unwrap_or_default();
            let decision = policy::decide(&req, &recipient, history, &self.campaigns.limits);
            let mut rec = self.record(&mid, app, user, c, trigger, trigger_id, channel, "", None);
            rec.template_id = step.template_id.clone();
            match decision {
                Decision::Suppress(reason) => {
                    rec.status = "suppressed".into();
                    rec.reason = Some(reason.code().into());
                    self.write(partition, &rec).await?;
                    if matches!(
                        reason,
                        Reason::NotFollower | Reason::OutsideUidWindow | Reason::MonthlyPromotionQuota | Reason::DailyPromotionQuota
                    ) {
                        continue;
                    }
                    return Ok(());
                }
                Decision::Defer { until, reason } => {
                    rec.status = "deferred".into();
                    rec.reason = Some(reason.code().into());
                    rec.retry_at = Some(until);
                    rec.data = Some(Value::Object(vars.clone()).to_string());
                    return self.write(partition, &rec).await;
                }
                Decision::Send { cost_vnd } => {
                    rec.status = "sending".into();
                    rec.data = Some(Value::Object(vars.clone()).to_string());
                    self.write(partition, &rec).await?;
                    let content = content(step, &vars);
                    let result = match channel.oa_kind() {
                        Some(kind) => {
                            let uid = recipient.oa_user_id.clone().unwrap_or_default();
                            let mut content = content;
                            if kind == crate::zalo::OaKind::Transaction {
                                content.table = ["order_id", "order_status", "order_total"]
                                    .iter()
                                    .filter_map(|k| vars.get(*k).and_then(Value::as_str).map(|v| (k.to_string(), v.to_string())))
                                    .collect();
                            }
                            self.client.send_oa(kind, &uid, &content).await
                        }
                        None => {
                            let phone = recipient.phone.clone().unwrap_or_default();
                            self.client.send_zns(&phone, &content, &tracking_id(&mid, user)).await
                        }
                    };
                    rec.data = None;
                    rec.at = (self.clock)();
                    match result {
                        Ok(accepted) => {
                            rec.status = "sent".into();
                            rec.cost_vnd = cost_vnd;
                            rec.zalo_message_id = Some(accepted.message_id);
                            self.write(partition, &rec).await?;
                            return Ok(());
                        }
                        Err(e) => {
                            rec.status = "failed".into();
                            rec.zalo_error = e.code();
                            rec.reason = Some(short(&e));
                            self.write(partition, &rec).await?;
                            if unreachable_by_oa(&e) {
                                continue;
                            }
                            return Ok(());
                        }
                    }
                }
            }
        }
        Ok(())
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
            replay(part, rec);
        }
        if rec.status != "sending" {
            // Failures are labelled by Zalo's code, not its message: a bounded set of series.
            let reason = match (rec.status.as_str(), rec.zalo_error) {
                ("failed", Some(code)) => format!("zalo_error_{code}"),
                ("failed", None) => "zalo_unreachable".to_string(),
                _ => rec.reason.clone().unwrap_or_default(),
            };
            METRICS.messages.with_label_values(&[&rec.campaign, &rec.channel, &rec.status, &reason]).inc();
        }
        if rec.status == "sent" {
            METRICS.cost.with_label_values(&[&rec.campaign, &rec.channel]).inc_by(rec.cost_vnd as u64);
        }
        tracing::debug!(campaign = %rec.campaign, channel = %rec.channel, status = %rec.status, reason = ?rec.reason, "message decision");
        Ok(())
    }
}

/// Applies one `zmp.messages.v1` record to a partition's state (rebuild and live alike).
fn replay(part: &mut Part, rec: &MessageEvent) {
    let u = part.users.entry(rec.user_key.clone()).or_default();
    match rec.status.as_str() {
        "deferred" => {
            if let Some(at) = rec.retry_at
                && !u.decided.contains(&rec.message_id)
            {
                part.deferred.insert((at, rec.message_id.clone()), rec.clone());
            }
            return;
        }
        "delivered" => return,
        "sent" => {
            if let Some(ch) = ChannelName::parse(&rec.channel) {
                u.sent.push(Sent {
                    at: rec.at,
                    channel: ch.channel(),
                    promotional: rec.promotional,
                    trigger_id: format!("{}/{}", rec.campaign, rec.trigger_id),
                });
                // The policy looks back a month at most.
                let horizon = rec.at - 40 * DAY_MS;
                u.sent.retain(|s| s.at >= horizon);
            }
        }
        _ => {}
    }
    u.decided.insert(rec.message_id.clone());
    part.deferred.retain(|(_, m), _| m != &rec.message_id);
}

fn recipient(p: Option<&Profile>) -> Recipient {
    let Some(p) = p else { return Recipient::default() };
    Recipient {
        granted: p.consents.iter().filter(|c| c.granted).map(|c| c.purpose.clone()).collect(),
        oa_user_id: p.oa_user_id.clone(),
        follows_oa: p.oa_following,
        last_interaction: p.oa_last_interaction,
        phone: p.phone.clone(),
    }
}

/// Zalo refused the recipient on an OA channel: worth the fallback.
fn unreachable_by_oa(e: &ZaloError) -> bool {
    matches!(e.code(), Some(oa_error::NOT_FOLLOWER | oa_error::NO_INTERACTION_7_DAYS | oa_error::OUT_OF_QUOTA | -227 | -232 | -244))
}

fn short(e: &ZaloError) -> String {
    e.to_string().chars().take(200).collect()
}

/// The stable id of one trigger of one campaign on one channel.
pub fn message_id(app: &str, user: &str, campaign: &str, trigger_id: &str, channel: ChannelName) -> String {
    stable_id(&[app, user, campaign, trigger_id, channel.name()])
}

/// The ZNS tracking id (≤ 48 chars): the message id's first 16 hex, a dot, and the user key when
/// it fits, so the delivery webhook can be recorded on the user's partition.
pub fn tracking_id(mid: &str, user: &str) -> String {
    let head = &mid[..16.min(mid.len())];
    if head.len() + 1 + user.len() <= 48 { format!("{head}.{user}") } else { head.to_string() }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// 350000 → "350.000" (Vietnamese thousands separator).
pub fn vnd(v: i64) -> String {
    let digits = v.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('.');
        }
        out.push(c);
    }
    if v < 0 { format!("-{out}") } else { out }
}

/// 09:00 Vietnam time on the user's next birthday at or after `from` (birthday `YYYY-MM-DD`
/// or `MM-DD`).
fn next_birthday(birthday: Option<&str>, from: i64) -> Option<i64> {
    use chrono::{Datelike, NaiveDate};
    let b = birthday?;
    let md = b.rsplitn(3, '-').take(2).collect::<Vec<_>>();
    let (day, month): (u32, u32) = (md.first()?.parse().ok()?, md.get(1)?.parse().ok()?);
    let local = chrono::DateTime::from_timestamp_millis(from + VN_OFFSET_MS)?.date_naive();
    for year in [local.year(), local.year() + 1] {
        // 29 February: celebrated on 1 March in other years.
        let date = NaiveDate::from_ymd_opt(year, month, day).or_else(|| NaiveDate::from_ymd_opt(year, 3, 1))?;
        let at = date.and_hms_opt(9, 0, 0)?.and_utc().timestamp_millis() - VN_OFFSET_MS;
        if at >= from {
            return Some(at);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zalo_rules::HOUR_MS;

    #[test]
    fn money_and_tracking_ids() {
        assert_eq!(vnd(350_000), "350.000");
        assert_eq!(vnd(1_250_000), "1.250.000");
        assert_eq!(vnd(999), "999");
        let mid = stable_id(&["x"]);
        assert_eq!(tracking_id(&mid, "8123456789012345678"), format!("{}.8123456789012345678", &mid[..16]));
        assert_eq!(tracking_id(&mid, &"u".repeat(40)).len(), 16);
    }

    #[test]
    fn birthdays_are_at_nine_in_vietnam() {
        // 2026-11-23T10:00+07:00.
        let now = 1_795_402_800_000;
        let at = next_birthday(Some("1990-12-01"), now).unwrap();
        assert_eq!(at, now - HOUR_MS + 8 * DAY_MS, "2026-12-01 09:00+07:00");
        let next_year = next_birthday(Some("11-20"), now).unwrap();
        assert!(next_year > now + 300 * DAY_MS);
        assert_eq!(next_birthday(Some("garbage"), now), None);
    }
}
