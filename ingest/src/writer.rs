//! Writing records to Kafka and knowing when they are safe: acks=all, the idempotent producer,
//! and a bounded wait. Pure mechanism; which topic and key is decided by the caller.
//!
//! A request's records share one acknowledgement counter: each record carries it to the
//! delivery callback, which counts down and wakes the request when the last one is in. No
//! allocation or future per record.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use tokio::sync::Notify;

use schemas::kafka::Kafka;
use schemas::time::now_ms;

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

/// The records of one request still waiting for Kafka.
#[derive(Default)]
pub struct Pending {
    ack: Arc<Acks>,
    sent: usize,
}

/// The acknowledgement counter of one request.
#[derive(Default)]
pub struct Acks {
    outstanding: AtomicUsize,
    failure: Mutex<Option<KafkaError>>,
    done: Notify,
}

impl Pending {
    pub fn len(&self) -> usize {
        self.sent
    }
    pub fn is_empty(&self) -> bool {
        self.sent == 0
    }
}

/// Counts acknowledgements down, per request.
pub struct AckContext;

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Arc<Acks>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Arc<Acks>) {
        if let Err((e, _)) = result {
            ack.failure.lock().expect("ack lock").get_or_insert_with(|| e.clone());
        }
        if ack.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            ack.done.notify_one();
        }
    }
}

pub struct EventWriter {
    producer: ThreadedProducer<AckContext>,
    ack_timeout: Duration,
    /// Unix ms of the last successful metadata round trip; 0 before the first.
    last_contact_ms: AtomicI64,
}

impl EventWriter {
    pub fn new(kafka: &Kafka, linger: Duration, ack_timeout: Duration) -> anyhow::Result<Arc<EventWriter>> {
        let producer: ThreadedProducer<AckContext> = kafka
            .producer_config()
            .set("linger.ms", linger.as_millis().to_string())
            // librdkafka gives up on a record after this; keep it near the HTTP wait so a record
            // the client was told failed is rarely written later (if it is, event_id dedups it).
            .set("message.timeout.ms", (ack_timeout.as_millis() as u64 + 1000).to_string())
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576")
            .set("compression.type", "lz4")
            .create_with_context(AckContext)
            .context("creating the Kafka producer")?;
        Ok(Arc::new(EventWriter { producer, ack_timeout, last_contact_ms: AtomicI64::new(0) }))
    }

    /// Hands one record to the producer. It is safe only once [`EventWriter::wait`] says so.
    pub fn send(&self, pending: &mut Pending, topic: &str, key: &[u8], payload: &[u8], timestamp_ms: i64) -> Result<(), WriteError> {
        self.send_with_headers(pending, topic, key, payload, timestamp_ms, None)
    }

    /// [`EventWriter::send`] with record headers.
    pub fn send_with_headers(
        &self,
        pending: &mut Pending,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        timestamp_ms: i64,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), WriteError> {
        pending.ack.outstanding.fetch_add(1, Ordering::AcqRel);
        let mut record = BaseRecord::with_opaque_to(topic, pending.ack.clone()).key(key).payload(payload).timestamp(timestamp_ms);
        if let Some(h) = headers {
            record = record.headers(h);
        }
        match self.producer.send(record) {
            Ok(()) => {
                pending.sent += 1;
                Ok(())
            }
            Err((e, _)) => {
                pending.ack.outstanding.fetch_sub(1, Ordering::AcqRel);
                match e {
                    KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => Err(WriteError::QueueFull),
                    e => Err(WriteError::Kafka(e)),
                }
            }
        }
    }

    /// Waits until Kafka acknowledged every record of `pending`, or the bound passes.
    pub async fn wait(&self, pending: Pending) -> Result<Duration, WriteError> {
        let start = Instant::now();
        let ack = pending.ack;
        let all_in = async {
            loop {
                let notified = ack.done.notified();
                if ack.outstanding.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(self.ack_timeout, all_in).await.map_err(|_| WriteError::Timeout(self.ack_timeout))?;
        if let Some(e) = ack.failure.lock().expect("ack lock").take() {
            return Err(WriteError::Kafka(e));
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
