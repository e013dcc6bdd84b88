//! Writing records to Kafka and knowing when they are safe: acks=all, the idempotent producer,
//! and a bounded wait. Pure mechanism; which topic and key is decided by the caller.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::future::join_all;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use schemas::kafka::Kafka;

/// Why records could not be made safe in time.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("Kafka did not acknowledge within {0:?}")]
    Timeout(Duration),
    #[error("the producer queue is full")]
    QueueFull,
    #[error("Kafka is unreachable")]
    Unreachable,
    #[error("Kafka refused the record: {0}")]
    Kafka(KafkaError),
}

pub struct EventWriter {
    producer: FutureProducer,
    ack_timeout: Duration,
    /// Unix ms of the last successful metadata round trip; 0 before the first.
    last_contact_ms: AtomicI64,
}

/// A batch of records handed to the producer, not yet acknowledged.
#[derive(Default)]
pub struct Pending {
    futures: Vec<DeliveryFuture>,
}

impl Pending {
    pub fn len(&self) -> usize {
        self.futures.len()
    }
    pub fn is_empty(&self) -> bool {
        self.futures.is_empty()
    }
}

impl EventWriter {
    pub fn new(kafka: &Kafka, linger: Duration, ack_timeout: Duration) -> anyhow::Result<Arc<EventWriter>> {
        let producer: FutureProducer = kafka
            .producer_config()
            .set("linger.ms", linger.as_millis().to_string())
            // librdkafka gives up on a record after this; keep it near the HTTP wait so a record
            // the client was told failed is rarely written later (if it is, event_id dedups it).
            .set("message.timeout.ms", (ack_timeout.as_millis() as u64 + 1000).to_string())
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576")
            .set("compression.type", "lz4")
            .create()
            .context("creating the Kafka producer")?;
        Ok(Arc::new(EventWriter { producer, ack_timeout, last_contact_ms: AtomicI64::new(0) }))
    }

    /// Hands one record to the producer. It is safe only once [`EventWriter::wait`] says so.
    pub fn send(&self, pending: &mut Pending, topic: &str, key: &[u8], payload: &[u8], timestamp_ms: i64) -> Result<(), WriteError> {
        let record = FutureRecord::to(topic).key(key).payload(payload).timestamp(timestamp_ms);
        match self.producer.send_result(record) {
            Ok(f) => {
                pending.futures.push(f);
                Ok(())
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => Err(WriteError::QueueFull),
            Err((e, _)) => Err(WriteError::Kafka(e)),
        }
    }

    /// Waits until Kafka acknowledged every record of `pending`, or the bound passes.
    pub async fn wait(&self, pending: Pending) -> Result<Duration, WriteError> {
        let start = Instant::now();
        let results = tokio::time::timeout(self.ack_timeout, join_all(pending.futures))
            .await
            .map_err(|_| WriteError::Timeout(self.ack_timeout))?;
        for r in results {
            match r {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(WriteError::Kafka(e)),
                Err(_) => return Err(WriteError::Kafka(KafkaError::Canceled)),
            }
        }
        Ok(start.elapsed())
    }

    /// Records in the producer not yet acknowledged.
    pub fn in_flight(&self) -> i32 {
        self.producer.in_flight_count()
    }

    /// Whether a broker answered recently (see [`EventWriter::probe`]).
    pub fn reachable(&self) -> bool {
        let last = self.last_contact_ms.load(Ordering::Acquire);
        last > 0 && now_ms() - last < 6_000
    }

    /// Asks the cluster for metadata; remembers when it last answered.
    pub async fn probe(self: &Arc<Self>) -> bool {
        let me = self.clone();
        let ok = tokio::task::spawn_blocking(move || {
            me.producer.client().fetch_metadata(Some(schemas::Topic::Views.name()), Duration::from_secs(2)).is_ok()
        })
        .await
        .unwrap_or(false);
        if ok {
            self.last_contact_ms.store(now_ms(), Ordering::Release);
        }
        ok
    }

    /// Sends everything still queued; for shutdown.
    pub fn flush(&self, within: Duration) -> Result<(), KafkaError> {
        self.producer.flush(within)
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
