//! `type = "kafka"`: each batch as records of its signal's topic, the value the OTLP export
//! request it already is (or its OTLP/JSON form), split by partition key without decoding
//! ([`records`]). The producer (librdkafka) batches, compresses and retries; a batch counts as
//! delivered once every one of its records is acknowledged as `acks` asks. Up to `concurrency`
//! batches wait for their acknowledgements at once, so a round trip to the brokers does not
//! bound the rate.

pub mod config;
pub mod records;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use tokio::task::JoinHandle;

use super::registry::{ExporterType, Start};
use super::{BuildError, ExportError, Outcomes};
use crate::batch::{Batch, DecodeError};
use crate::config::Problem;
use crate::kafka::{KafkaEncoding, KafkaTopics};
use crate::queue;
use config::{KafkaExporterConfig, PartitionKey};

/// Produces each batch's records; [`KafkaExporter::drain`] waits for their acknowledgements.
struct KafkaExporter {
    producer: FutureProducer,
    topics: KafkaTopics,
    encoding: KafkaEncoding,
    partition_key: PartitionKey,
    delivery_timeout: Duration,
    concurrency: usize,
    outcomes: Outcomes,
}

fn failed(context: &str, error: KafkaError) -> ExportError {
    ExportError::Io { context: context.to_string(), source: std::io::Error::other(error) }
}

/// Waits for every acknowledgement of one batch's records; the first failure is the batch's,
/// with what went wrong (after the topic's name, which the caller adds).
async fn acknowledged(deliveries: Vec<DeliveryFuture>) -> Result<(), (&'static str, KafkaError)> {
    for delivery in deliveries {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((error, _))) => return Err(("did not take a record", error)),
            Err(_) => return Err(("lost a record: the producer went away", KafkaError::Canceled)),
        }
    }
    Ok(())
}

impl KafkaExporter {
    /// Drains the queue, keeping up to `concurrency` batches waiting for acknowledgements, then
    /// waits for the last of them and flushes the producer.
    async fn drain(mut self, mut rx: queue::Receiver) {
        let mut waiting = FuturesUnordered::new();
        loop {
            tokio::select! {
                biased;
                Some((batch, outcome)) = waiting.next(), if !waiting.is_empty() => {
                    self.settle_acknowledged(&rx, &batch, outcome);
                }
                received = rx.recv(), if waiting.len() < self.concurrency => {
                    let Some(batch) = received else { break };
                    match self.produce(&batch).await {
                        Ok(deliveries) => waiting.push(async move { (batch, acknowledged(deliveries).await) }),
                        Err(error) => self.settle(&rx, &batch, Err(error)),
                    }
                }
            }
        }
        while let Some((batch, outcome)) = waiting.next().await {
            self.settle_acknowledged(&rx, &batch, outcome);
        }
        let producer = self.producer.clone();
        let timeout = Timeout::After(self.delivery_timeout);
        let flushed = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
        if let Ok(Err(error)) = flushed {
            tracing::error!(exporter = %self.outcomes.name(), %error, "Flush at shutdown failed");
        }
        tracing::debug!(exporter = %self.outcomes.name(), "Exporter drained");
    }

    /// Hands every record of `batch` to the producer, waiting while its own queue is full.
    async fn produce(&self, batch: &Batch) -> Result<Vec<DeliveryFuture>, ExportError> {
        let signal = batch.signal();
        let records = records::split(signal, batch.payload(), batch.items(), self.partition_key)
            .map_err(|e| DecodeError(format!("cannot split the batch into records: {e}")))?;
        let topic = self.topics.of(signal);
        let mut deliveries = Vec::with_capacity(records.len());
        // The producer copies each value, so one buffer serves every record's JSON.
        let mut rendered = Vec::new();
        for record in &records {
            let value: &[u8] = match self.encoding {
                KafkaEncoding::OtlpProto => &record.payload,
                KafkaEncoding::OtlpJson => {
                    rendered.clear();
                    crate::batch::write_json(signal, &[&record.payload], &mut rendered)?;
                    &rendered
                }
            };
            loop {
                let mut produced = FutureRecord::<[u8], [u8]>::to(topic).payload(value);
                if let Some(key) = record.key {
                    produced = produced.key(key);
                }
                match self.producer.send_result(produced) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    // The producer's own queue is full: wait for it to drain (backpressure).
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((error, _)) => return Err(failed(&format!("cannot produce to `{topic}`"), error)),
                }
            }
        }
        Ok(deliveries)
    }

    /// Settles `batch` by its acknowledgements, a failure told as its topic's.
    fn settle_acknowledged(
        &mut self,
        rx: &queue::Receiver,
        batch: &Arc<Batch>,
        acknowledged: Result<(), (&'static str, KafkaError)>,
    ) {
        let topic = self.topics.of(batch.signal());
        let outcome = acknowledged.map_err(|(what, error)| failed(&format!("`{topic}` {what}"), error));
        self.settle(rx, batch, outcome);
    }

    /// Counts `batch` as sent or failed and settles it.
    fn settle(&mut self, rx: &queue::Receiver, batch: &Arc<Batch>, outcome: Result<(), ExportError>) {
        self.outcomes.count(batch, outcome);
        rx.settle(batch);
    }
}

impl ExporterType for KafkaExporterConfig {
    fn check(&self) -> Vec<Problem> {
        let mut problems = self.connection().check();
        if self.delivery_timeout.0 < Duration::from_millis(1) {
            problems.push((None, "`delivery_timeout` must be positive".into()));
        }
        if self.concurrency == 0 {
            problems.push((None, "`concurrency` must be at least 1".into()));
        }
        problems
    }

    fn secrets(&self) -> Vec<(&'static str, &serde_spanned::Spanned<crate::config::Credential>)> {
        self.connection().secrets()
    }

    async fn start(&self, start: Start<'_>) -> Result<JoinHandle<()>, BuildError> {
        let connection = self.connection();
        let mut client = connection
            .client_config(start.name.as_str())
            .map_err(|message| BuildError::client(start.name, message))?;
        client
            .set("acks", self.acks.as_str())
            .set("compression.type", self.compression.as_str())
            .set("message.timeout.ms", self.delivery_timeout.0.as_millis().to_string())
            // Each batch's records are produced together and then waited for: lingering for
            // more would only delay that wait (5 ms of linger capped a batch stream at 200 a
            // second); while a request is out, what is produced meanwhile gathers anyway.
            .set("linger.ms", "0");
        if self.allow_plaintext_credentials && self.sasl.is_some() && self.tls.is_none() {
            tracing::warn!(exporter = %start.name, "SASL credentials go to the brokers in clear text (allow_plaintext_credentials)");
        }
        let producer: FutureProducer = client
            .create()
            .map_err(|e| BuildError::client(start.name, format!("cannot create the Kafka producer: {e}")))?;
        let exporter = KafkaExporter {
            producer,
            topics: self.topics.clone(),
            encoding: self.encoding,
            partition_key: self.partition_key,
            delivery_timeout: self.delivery_timeout.0,
            concurrency: self.concurrency,
            outcomes: Outcomes::new(start.name, start.metrics),
        };
        Ok(tokio::spawn(exporter.drain(start.queue)))
    }
}
