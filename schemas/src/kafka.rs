//! Kafka connection settings shared by every role, the embedded in-process cluster, and topic
//! creation for both.
//!
//! Every role takes the same `--brokers` and `--kafka-option` flags. Without `--brokers`,
//! `zcdp up` starts librdkafka's mock cluster in-process: a real Kafka protocol endpoint any
//! client can connect to, but memory-only and bounded (see [`EmbeddedCluster`]).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::topics::{CATALOGUE, TopicSpec};

/// `min.insync.replicas` for a topic of `replication_factor` replicas: two where there are two or
/// more, so an acknowledged write (acks=all) is on two brokers; one where there is one.
pub fn min_insync_replicas(replication_factor: i32) -> i32 {
    replication_factor.clamp(1, 2)
}

/// One way a topic on the cluster differs from the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDrift {
    pub topic: String,
    pub what: String,
    pub expected: String,
    pub actual: String,
}

impl TopicDrift {
    fn of(spec: &TopicSpec, what: &str, expected: String, actual: String) -> TopicDrift {
        TopicDrift { topic: spec.name.to_string(), what: what.to_string(), expected, actual }
    }
}

/// A topic's shape on the cluster: its partitions, and the fewest replicas any of them has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicLayout {
    pub partitions: i32,
    pub replicas: i32,
}

/// Connection flags shared by every role.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct KafkaArgs {
    /// Bootstrap servers of a real Kafka cluster (host:port,…). Without it `zcdp up` runs an
    /// embedded, in-memory cluster.
    #[arg(long, env = "ZCDP_BROKERS")]
    pub brokers: Option<String>,
    /// Extra librdkafka client properties as key=value, repeatable or comma-separated, e.g.
    /// security.protocol=SASL_SSL,sasl.mechanism=SCRAM-SHA-512,sasl.username=zcdp. A piece
    /// without `=` continues the value before it, so debug=consumer,fetch works.
    #[arg(long = "kafka-option", env = "ZCDP_KAFKA_OPTIONS", value_delimiter = ',', value_name = "KEY=VALUE", hide_env_values = true)]
    pub kafka_options: Vec<String>,
    /// Partitions of every co-partitioned topic when zcdp creates them.
    #[arg(long, env = "ZCDP_PARTITIONS", default_value_t = crate::topics::DEFAULT_PARTITIONS)]
    pub partitions: i32,
    /// Replication factor when zcdp creates topics on a real cluster.
    #[arg(long, env = "ZCDP_REPLICATION_FACTOR", default_value_t = 3)]
    pub replication_factor: i32,
}

/// Whole topics read from their beginning ([`Kafka::tail`]), and whether everything they held
/// when it started has been read.
pub struct Tail {
    pub consumer: rdkafka::consumer::StreamConsumer,
    /// (topic, partition) → the high watermark at the start, until read up to it.
    remaining: std::collections::HashMap<(String, i32), i64>,
}

impl Tail {
    pub fn caught_up(&self) -> bool {
        self.remaining.is_empty()
    }

    /// The next record, waiting at most `within`; consume errors are logged and skipped.
    pub async fn next(&self, within: Duration) -> Option<rdkafka::message::BorrowedMessage<'_>> {
        match tokio::time::timeout(within, self.consumer.recv()).await {
            Ok(Ok(m)) => Some(m),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "consume error");
                None
            }
            Err(_) => None,
        }
    }

    /// Notes a record read; true when it was the last one missing for the catch-up.
    pub fn saw(&mut self, topic: &str, partition: i32, offset: i64) -> bool {
        if self.remaining.is_empty() {
            return false;
        }
        let key = (topic.to_string(), partition);
        if self.remaining.get(&key).is_some_and(|high| offset + 1 >= *high) {
            self.remaining.remove(&key);
        }
        self.remaining.is_empty()
    }
}

/// Where the cluster is and how to talk to it; cheap to clone, shared by every role in a process.
#[derive(Clone)]
pub struct Kafka {
    pub bootstrap: String,
    options: Vec<(String, String)>,
    pub partitions: i32,
    pub replication_factor: i32,
    embedded: Option<Arc<EmbeddedCluster>>,
}

impl std::fmt::Debug for Kafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kafka").field("bootstrap", &self.bootstrap).field("embedded", &self.embedded.is_some()).finish()
    }
}

/// `key=value` pieces (clap split them at commas); a piece without `=` belongs to the value
/// before it, as in `debug=consumer,fetch`.
fn parse_options(pieces: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let mut options: Vec<(String, String)> = Vec::new();
    for piece in pieces {
        match (piece.split_once('='), options.last_mut()) {
            (Some((k, v)), _) if !k.trim().is_empty() => options.push((k.trim().to_string(), v.trim().to_string())),
            (None, Some((_, v))) => {
                v.push(',');
                v.push_str(piece.trim());
            }
            _ => bail!("--kafka-option {piece:?} is not key=value"),
        }
    }
    Ok(options)
}

impl Kafka {
    /// Connects to the real cluster named by `--brokers`.
    pub fn external(args: &KafkaArgs) -> anyhow::Result<Kafka> {
        let Some(brokers) = args.brokers.clone() else {
            bail!("--brokers (or ZCDP_BROKERS) is required for this role; `zcdp up` runs an embedded cluster instead");
        };
        Self::with_bootstrap(brokers, args, None)
    }

    /// The cluster of `--brokers`, or a new embedded one when it is not given.
    pub fn from_args_or_embedded(args: &KafkaArgs, embedded_brokers: i32) -> anyhow::Result<Kafka> {
        match &args.brokers {
            Some(_) => Self::external(args),
            None => {
                let cluster = Arc::new(EmbeddedCluster::start(embedded_brokers)?);
                Self::with_bootstrap(cluster.bootstrap(), args, Some(cluster))
            }
        }
    }

    /// Settings for an already running embedded cluster (tests share one across roles).
    pub fn embedded(cluster: Arc<EmbeddedCluster>, partitions: i32) -> Kafka {
        Kafka { bootstrap: cluster.bootstrap(), options: Vec::new(), partitions, replication_factor: 1, embedded: Some(cluster) }
    }

    fn with_bootstrap(bootstrap: String, args: &KafkaArgs, embedded: Option<Arc<EmbeddedCluster>>) -> anyhow::Result<Kafka> {
        let options = parse_options(&args.kafka_options)?;
        if args.partitions < 1 {
            bail!("--partitions must be at least 1, got {}", args.partitions);
        }
        let replication_factor = if embedded.is_some() { 1 } else { args.replication_factor };
        Ok(Kafka { bootstrap, options, partitions: args.partitions, replication_factor, embedded })
    }

    pub fn is_embedded(&self) -> bool {
        self.embedded.is_some()
    }

    /// The embedded cluster, for fault injection in tests.
    pub fn embedded_cluster(&self) -> Option<&Arc<EmbeddedCluster>> {
        self.embedded.as_ref()
    }

    /// Reads every record of `topic` from its start up to its end as of the call. Blocking: call it
    /// from `spawn_blocking` in async code.
    pub fn read_to_end(&self, topic: &str, within: std::time::Duration) -> anyhow::Result<Vec<rdkafka::message::OwnedMessage>> {
        Ok(self.read_partitions_to_end(topic, None, within)?.0)
    }

    /// Reads `partitions` of `topic` (all without) from their start up to their end as of the
    /// call; returns the records and each partition's end offset (where to go on from). Blocking.
    pub fn read_partitions_to_end(
        &self,
        topic: &str,
        partitions: Option<&[i32]>,
        within: std::time::Duration,
    ) -> anyhow::Result<(Vec<rdkafka::message::OwnedMessage>, std::collections::HashMap<i32, i64>)> {
        use rdkafka::Message;
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use std::collections::HashMap;

        let consumer: BaseConsumer = self
            .client_config()
            .set("group.id", format!("zcdp-reader-{}", uuid::Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .create()?;
        let chosen: Vec<i32> = match partitions {
            Some(p) => p.to_vec(),
            None => {
                let md = consumer.fetch_metadata(Some(topic), within)?;
                md.topics()[0].partitions().iter().map(|p| p.id()).collect()
            }
        };
        let mut remaining: HashMap<i32, i64> = HashMap::new();
        let mut ends: HashMap<i32, i64> = HashMap::new();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in chosen {
            let (low, high) = consumer.fetch_watermarks(topic, p, within)?;
            if high > low {
                remaining.insert(p, high);
            }
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)?;
        }
        if remaining.is_empty() {
            return Ok((Vec::new(), ends));
        }
        consumer.assign(&tpl)?;
        let deadline = std::time::Instant::now() + within;
        let mut out = Vec::new();
        while !remaining.is_empty() {
            anyhow::ensure!(std::time::Instant::now() < deadline, "{topic}: not read to its end within {within:?}; left: {remaining:?}");
            match consumer.poll(std::time::Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let Some(high) = remaining.get(&m.partition()).copied() else { continue };
                    if m.offset() + 1 >= high {
                        remaining.remove(&m.partition());
                    }
                    if m.offset() < high {
                        out.push(m.detach());
                    }
                }
                Some(Err(e)) => anyhow::bail!("reading {topic}: {e}"),
                None => {}
            }
        }
        Ok((out, ends))
    }

    /// A consumer of whole topics from their beginning, outside any group's offsets (a view, an
    /// export): `purpose` names it in errors and in its group id.
    pub fn tail(&self, topics: &[&str], purpose: &str) -> anyhow::Result<Tail> {
        Ok(self.tail_from(topics, purpose, &std::collections::HashMap::new())?.expect("no kept offsets to refuse"))
    }

    /// [`Kafka::tail`], but each (topic, partition) in `from` is read from that offset instead of
    /// its beginning (a view that kept what it read). `None` when a kept offset cannot be where
    /// this cluster's partition is (before its first offset, after its last, or a partition it
    /// does not have): the kept records are not this topic's, and the caller starts over.
    pub fn tail_from(
        &self,
        topics: &[&str],
        purpose: &str,
        from: &std::collections::HashMap<(String, i32), i64>,
    ) -> anyhow::Result<Option<Tail>> {
        let consumer: rdkafka::consumer::StreamConsumer = self
            .client_config()
            .set("group.id", format!("zcdp-{purpose}-{}", uuid::Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            // A follower serves reads (the query view, the consent view): a record is worth
            // having at once. librdkafka's default lets a fetch wait 500 ms for more data; Kafka
            // answers as soon as a record comes, but the embedded cluster waits the full time.
            // Shorter waits cost idle fetches (1 / wait a second per broker), so: 20 ms on the
            // embedded cluster, 100 ms on a real one (in case a broker behaves like it).
            .set("fetch.wait.max.ms", if self.embedded.is_some() { "20" } else { "100" })
            .create()
            .with_context(|| format!("creating the {purpose} consumer"))?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        let mut remaining = std::collections::HashMap::new();
        let mut placed = 0;
        for &topic in topics {
            let md =
                consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).with_context(|| format!("reading metadata of {topic}"))?;
            let t = md.topics().first().with_context(|| format!("{topic} missing from metadata"))?;
            for p in t.partitions() {
                let (low, high) = consumer
                    .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                    .with_context(|| format!("reading watermarks of {topic}/{}", p.id()))?;
                let (start, offset) = match from.get(&(topic.to_string(), p.id())) {
                    Some(&o) if o < low || o > high => return Ok(None),
                    Some(&o) => {
                        placed += 1;
                        (o, rdkafka::Offset::Offset(o))
                    }
                    None => (low, rdkafka::Offset::Beginning),
                };
                tpl.add_partition_offset(topic, p.id(), offset)?;
                // An empty or fully-expired partition, or one read to its end, has nothing to
                // wait for.
                if high > start {
                    remaining.insert((topic.to_string(), p.id()), high);
                }
            }
        }
        if placed < from.len() {
            return Ok(None);
        }
        consumer.assign(&tpl)?;
        Ok(Some(Tail { consumer, remaining }))
    }

    /// A client config with the bootstrap servers and the operator's extra properties.
    pub fn client_config(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in &self.options {
            cfg.set(k, v);
        }
        cfg
    }

    /// A producer config every zcdp writer uses: nothing acknowledged before every in-sync
    /// replica has it, no duplicates from producer retries, and the Java client's partitioner
    /// so that records keyed by user land on the same partition number whichever client wrote
    /// them (co-partitioning across topics depends on it).
    pub fn producer_config(&self) -> ClientConfig {
        let mut cfg = self.client_config();
        cfg.set("acks", "all").set("enable.idempotence", "true").set("partitioner", "murmur2_random");
        cfg
    }

    /// Creates the topics of the catalogue that do not exist yet, and checks that the ones that
    /// do have the partition count the co-partitioning needs.
    pub async fn ensure_catalogue(&self) -> anyhow::Result<()> {
        let topics: Vec<(&str, &TopicSpec)> = CATALOGUE.iter().map(|s| (s.name, s)).collect();
        let mut created = Vec::new();
        match &self.embedded {
            Some(cluster) => {
                for (name, _) in &topics {
                    cluster.create_topic(name, self.partitions)?;
                    created.push(name.to_string());
                }
            }
            None => {
                // Only what is missing: an operator may have created the topics and withheld the
                // right to create more.
                let names: Vec<&str> = topics.iter().map(|(n, _)| *n).collect();
                let existing = self.partition_counts(&names).await?;
                let missing: Vec<(&str, &TopicSpec)> = topics.iter().zip(&existing).filter(|(_, c)| c.is_none()).map(|(t, _)| *t).collect();
                let admin: AdminClient<DefaultClientContext> = self.client_config().create().context("creating the Kafka admin client")?;
                let retention: Vec<Option<String>> = missing.iter().map(|(_, s)| s.retention_ms.map(|ms| ms.to_string())).collect();
                let min_isr = min_insync_replicas(self.replication_factor).to_string();
                let new: Vec<NewTopic> = missing
                    .iter()
                    .zip(&retention)
                    .map(|((name, spec), retention)| {
                        let mut t = NewTopic::new(name, self.partitions, TopicReplication::Fixed(self.replication_factor))
                            .set("cleanup.policy", spec.cleanup.as_config())
                            .set("min.insync.replicas", &min_isr)
                            .set("unclean.leader.election.enable", "false");
                        if let Some(r) = retention {
                            t = t.set("retention.ms", r);
                        }
                        t
                    })
                    .collect();
                let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
                let results =
                    if new.is_empty() { Vec::new() } else { admin.create_topics(new.iter(), &opts).await.context("CreateTopics")? };
                for r in results {
                    match r {
                        Ok(name) => created.push(name),
                        Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err((name, code)) => bail!("creating topic {name}: {code}"),
                    }
                }
            }
        }
        tracing::info!(count = created.len(), "topics created");
        let names: Vec<&str> = topics.iter().map(|(n, _)| *n).collect();
        self.wait_for_topics(&names, Duration::from_secs(30)).await?;
        Ok(())
    }

    /// How the catalogue's topics on the cluster differ from what `zcdp topics create` makes:
    /// missing topics, partition counts, cleanup policy, retention, `min.insync.replicas` (below
    /// min(2, the topic's replication factor) an acknowledged write can be lost with one
    /// broker's disk) and unclean leader election. Empty when they all agree.
    pub async fn check_catalogue(&self) -> anyhow::Result<Vec<TopicDrift>> {
        let names: Vec<&str> = CATALOGUE.iter().map(|s| s.name).collect();
        let layouts = self.topic_layouts(&names).await.context("reading the cluster's metadata")?;
        let mut drift = Vec::new();
        let mut present = Vec::new();
        for (spec, layout) in CATALOGUE.iter().zip(layouts) {
            match layout {
                None => drift.push(TopicDrift::of(spec, "exists", "yes".into(), "missing".into())),
                Some(TopicLayout { partitions, replicas }) => {
                    if partitions != self.partitions {
                        drift.push(TopicDrift::of(spec, "partitions", self.partitions.to_string(), partitions.to_string()));
                    }
                    present.push((spec, replicas));
                }
            }
        }
        let admin: AdminClient<DefaultClientContext> = self.client_config().create().context("creating the Kafka admin client")?;
        let resources: Vec<ResourceSpecifier<'_>> = present.iter().map(|(s, _)| ResourceSpecifier::Topic(s.name)).collect();
        let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
        let described =
            if resources.is_empty() { Vec::new() } else { admin.describe_configs(&resources, &opts).await.context("DescribeConfigs")? };
        for ((spec, replicas), result) in present.iter().zip(described) {
            let d = |what: &str, expected: String, actual: String| TopicDrift::of(spec, what, expected, actual);
            let config = match result {
                Ok(c) => c,
                Err(code) => {
                    drift.push(d("configs", "readable".into(), format!("DescribeConfigs failed: {code}")));
                    continue;
                }
            };
            let value = |name: &str| config.get(name).and_then(|e| e.value.clone());
            let cleanup = value("cleanup.policy").unwrap_or_else(|| "delete".into());
            if cleanup.replace(' ', "") != spec.cleanup.as_config() {
                drift.push(d("cleanup.policy", spec.cleanup.as_config().into(), cleanup));
            }
            if let Some(ms) = spec.retention_ms {
                let actual = value("retention.ms").unwrap_or_else(|| "(cluster default)".into());
                if actual != ms.to_string() {
                    drift.push(d("retention.ms", ms.to_string(), actual));
                }
            }
            let want = min_insync_replicas(*replicas);
            let isr = value("min.insync.replicas").unwrap_or_else(|| "1".into());
            if isr.parse::<i32>().map_or(true, |n| n < want) {
                drift.push(d("min.insync.replicas", format!("{want} (replication factor {replicas})"), isr));
            }
            if value("unclean.leader.election.enable").as_deref() == Some("true") {
                drift.push(d("unclean.leader.election.enable", "false".into(), "true".into()));
            }
        }
        Ok(drift)
    }

    /// Creates a changelog topic unless it exists: compacted, so it keeps the latest value of
    /// every key; with `retention_ms`, old records also expire (`compact,delete`). Records stay
    /// uncompacted for an hour, so a restore never sees a key's committed value replaced by one
    /// from a commit that did not finish.
    pub async fn ensure_changelog(&self, name: &str, partitions: i32, retention_ms: Option<i64>) -> anyhow::Result<()> {
        match &self.embedded {
            Some(cluster) => cluster.create_topic(name, partitions)?,
            None if self.partition_counts(&[name]).await?[0].is_some() => {}
            None => {
                let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
                let retention = retention_ms.map(|ms| ms.to_string());
                let min_isr = min_insync_replicas(self.replication_factor).to_string();
                let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(self.replication_factor))
                    .set("cleanup.policy", if retention.is_some() { "compact,delete" } else { "compact" })
                    .set("min.compaction.lag.ms", "3600000")
                    .set("min.insync.replicas", &min_isr)
                    .set("unclean.leader.election.enable", "false");
                if let Some(r) = &retention {
                    t = t.set("retention.ms", r);
                }
                let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
                for r in admin.create_topics([&t], &opts).await? {
                    match r {
                        Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err((name, code)) => bail!("creating topic {name}: {code}"),
                    }
                }
            }
        }
        self.wait_for_topics(&[name], Duration::from_secs(30)).await
    }

    /// Partition counts of the named topics as the cluster reports them (None: missing).
    pub async fn partition_counts(&self, names: &[&str]) -> anyhow::Result<Vec<Option<i32>>> {
        Ok(self.topic_layouts(names).await?.into_iter().map(|l| l.map(|l| l.partitions)).collect())
    }

    /// Partitions and replicas of the named topics as the cluster reports them (None: missing).
    pub async fn topic_layouts(&self, names: &[&str]) -> anyhow::Result<Vec<Option<TopicLayout>>> {
        let cfg = self.client_config();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = cfg.create()?;
            let md = consumer.fetch_metadata(None, Duration::from_secs(10))?;
            Ok(names
                .iter()
                .map(|n| {
                    md.topics().iter().find(|t| t.name() == n && t.error().is_none()).map(|t| TopicLayout {
                        partitions: t.partitions().len() as i32,
                        replicas: t.partitions().iter().map(|p| p.replicas().len()).min().unwrap_or(0) as i32,
                    })
                })
                .collect())
        })
        .await?
    }

    async fn wait_for_topics(&self, names: &[&str], within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let counts = self.partition_counts(names).await;
            match counts {
                Ok(c) if c.iter().all(Option::is_some) => return Ok(()),
                Ok(c) if tokio::time::Instant::now() >= deadline => {
                    let missing: Vec<&&str> = names.iter().zip(&c).filter(|(_, c)| c.is_none()).map(|(n, _)| n).collect();
                    bail!("topics not visible after {within:?}: {missing:?}");
                }
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e.context("fetching metadata")),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// librdkafka's in-process mock cluster.
///
/// It speaks the Kafka protocol on loopback ports, so any Kafka client can read its topics
/// while the process runs. It keeps everything in memory: nothing survives a restart, and
/// each partition keeps at most about 5 MB or 100,000 message sets (`rdkafka_mock.c`), the
/// oldest dropped first.
pub struct EmbeddedCluster {
    mock: MockCluster<'static, DefaultProducerContext>,
}

// SAFETY: the mock-cluster calls we make (`rd_kafka_mock_*`) hand their work to the mock
// cluster's own thread as ops and wait for the reply; librdkafka documents them as callable from
// any thread. The handle is never mutated from Rust after creation.
unsafe impl Send for EmbeddedCluster {}
unsafe impl Sync for EmbeddedCluster {}

impl EmbeddedCluster {
    pub fn start(brokers: i32) -> anyhow::Result<EmbeddedCluster> {
        let mock = MockCluster::new(brokers).context("starting the embedded Kafka cluster")?;
        Ok(EmbeddedCluster { mock })
    }

    pub fn bootstrap(&self) -> String {
        self.mock.bootstrap_servers()
    }

    /// Creates a topic; one that exists already is left as it is.
    pub fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        match self.mock.create_topic(name, partitions, 1) {
            Ok(()) => Ok(()),
            Err(rdkafka::error::KafkaError::MockCluster(RDKafkaErrorCode::TopicAlreadyExists)) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("creating topic {name} on the embedded cluster")),
        }
    }

    /// The mock cluster itself, for fault injection (brokers down, request errors, leaders).
    pub fn mock(&self) -> &MockCluster<'static, DefaultProducerContext> {
        &self.mock
    }
}

/// The partition the producers' partitioner (`murmur2_random`, the Java client's default) puts a
/// non-empty key in: `(murmur2(key) & 0x7fffffff) % partitions`. The user-keyed topics are
/// partitioned so; the app-keyed records are written to the partition of their user key.
pub fn key_partition(key: &[u8], partitions: i32) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ key.len() as u32;
    let mut chunks = key.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        for (i, b) in rest.iter().enumerate().rev() {
            h ^= u32::from(*b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    ((h & 0x7fff_ffff) % partitions.max(1) as u32) as i32
}

#[cfg(test)]
mod tests {
    use super::{key_partition, parse_options};

    fn pieces(s: &[&str]) -> Vec<String> {
        s.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn kafka_options_keep_commas_inside_values() {
        let got = parse_options(&pieces(&["security.protocol=SASL_SSL", "debug=consumer", "fetch", "sasl.username=zcdp"])).unwrap();
        let want = [("security.protocol", "SASL_SSL"), ("debug", "consumer,fetch"), ("sasl.username", "zcdp")];
        assert_eq!(got, want.map(|(k, v)| (k.to_string(), v.to_string())));
    }

    #[test]
    fn kafka_options_without_a_key_are_refused() {
        for bad in [&["fetch"][..], &["=x"][..]] {
            let err = parse_options(&pieces(bad)).unwrap_err().to_string();
            assert!(err.contains("is not key=value"), "{err}");
        }
    }

    /// Kafka's `UtilsTest.testMurmur2` vectors (Java's signed results, here & 0x7fffffff and
    /// taken modulo a large prime to stay within i32).
    #[test]
    fn key_partitions_follow_kafkas_murmur2() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
            (b"abc", 479470107),
        ];
        for (key, java) in cases {
            let want = ((java as u32 & 0x7fff_ffff) % 2_147_483_647) as i32;
            assert_eq!(key_partition(key, i32::MAX), want, "{}", String::from_utf8_lossy(key));
        }
    }
}
