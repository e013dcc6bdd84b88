//! The member's producer for outputs, changelogs and checkpoints. It remembers, per changelog
//! partition, the highest offset Kafka acknowledged (a checkpoint records where each store's
//! committed changes end) and whether any write failed (then nothing may be committed).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::bail;
use rdkafka::ClientContext;
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use schemas::kafka::Kafka;

/// Largest record the processors write, changelog or output: half of what the producer accepts
/// (`message.max.bytes`, 1,000,000), so the broker's default limit (1 MiB a batch) takes it
/// with its framing. Per-user bounds keep every record far below; a change or an output over it
/// goes to `zmp.deadletter.v1` with its key instead.
pub const MAX_RECORD_BYTES: usize = 512 * 1024;

/// A record Kafka refused for good (too large for the producer or the broker, or invalid):
/// retrying cannot help, so it is dead-lettered with its key rather than stopping the member.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub topic: String,
    pub partition: i32,
    pub key: Vec<u8>,
    pub error: String,
}

#[derive(Default)]
pub struct Tracking {
    acked: Mutex<HashMap<(String, i32), i64>>,
    failures: AtomicU64,
    last_failure: Mutex<Option<String>>,
    rejected: Mutex<Vec<Rejected>>,
}

/// Errors about the record itself, not the cluster: the same record fails the same way again.
fn refused_for_good(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidRecord
    )
}

impl ClientContext for Tracking {}

impl ProducerContext for Tracking {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                let mut acked = self.acked.lock().expect("tracking lock");
                let slot = acked.entry((m.topic().to_string(), m.partition())).or_insert(-1);
                *slot = (*slot).max(m.offset());
            }
            Err((e, m)) if e.rdkafka_error_code().is_some_and(refused_for_good) => {
                self.rejected.lock().expect("tracking lock").push(Rejected {
                    topic: m.topic().to_string(),
                    partition: m.partition(),
                    key: m.key().unwrap_or_default().to_vec(),
                    error: e.to_string(),
                });
            }
            Err((e, m)) => {
                self.failures.fetch_add(1, Ordering::AcqRel);
                *self.last_failure.lock().expect("tracking lock") = Some(format!("{}/{}: {e}", m.topic(), m.partition()));
            }
        }
    }
}

pub struct OutputProducer {
    producer: ThreadedProducer<Tracking>,
}

impl OutputProducer {
    pub fn new(kafka: &Kafka) -> anyhow::Result<OutputProducer> {
        let producer = kafka
            .producer_config()
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.messages", "1000000")
            .set("message.timeout.ms", "60000")
            .set("message.max.bytes", "1000000")
            .create_with_context(Tracking::default())?;
        Ok(OutputProducer { producer })
    }

    /// Queues a record; waits while the queue is full.
    pub fn send(&self, topic: &str, partition: Option<i32>, key: &[u8], payload: Option<&[u8]>) -> anyhow::Result<()> {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).key(key).headers(OwnedHeaders::new());
        if let Some(p) = payload {
            record = record.payload(p);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, r)) if e.rdkafka_error_code().is_some_and(refused_for_good) => {
                    self.producer.context().rejected.lock().expect("tracking lock").push(Rejected {
                        topic: topic.to_string(),
                        partition: r.partition.unwrap_or(-1),
                        key: key.to_vec(),
                        error: e.to_string(),
                    });
                    return Ok(());
                }
                Err((e, _)) => bail!("producing to {topic}: {e}"),
            }
        }
    }

    /// Waits until everything queued is acknowledged; fails if anything was not.
    ///
    /// librdkafka's own flush, called with the whole timeout: it waits in steps of at most 10 ms.
    /// rust-rdkafka's `flush` polls the producer's queue for up to 100 ms at a time, and with a
    /// `ThreadedProducer` its thread takes the delivery reports, so every flush took 100 ms
    /// however little it waited for: two per commit, with the processor thread stalled.
    pub fn flush(&self, within: Duration) -> anyhow::Result<()> {
        let ms = within.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: the producer's handle is valid while `self.producer` lives; rd_kafka_flush
        // may be called from any thread.
        let err = unsafe { rdkafka_sys::rd_kafka_flush(self.producer.client().native_ptr(), ms) };
        if err != rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            bail!(
                "{} record(s) not acknowledged by Kafka within {within:?}: {}",
                self.producer.in_flight_count(),
                RDKafkaErrorCode::from(err)
            );
        }
        self.check()
    }

    pub fn check(&self) -> anyhow::Result<()> {
        let failures = self.producer.context().failures.load(Ordering::Acquire);
        if failures > 0 {
            let last = self.producer.context().last_failure.lock().expect("tracking lock").clone().unwrap_or_default();
            bail!("{failures} record(s) could not be written to Kafka (last: {last}); not committing");
        }
        Ok(())
    }

    /// The records Kafka refused for good since the last call.
    pub fn take_rejected(&self) -> Vec<Rejected> {
        std::mem::take(&mut *self.producer.context().rejected.lock().expect("tracking lock"))
    }

    /// The offset after the last acknowledged record of a partition, if any was written.
    pub fn acked_end(&self, topic: &str, partition: i32) -> Option<i64> {
        self.producer.context().acked.lock().expect("tracking lock").get(&(topic.to_string(), partition)).map(|o| o + 1)
    }
}
