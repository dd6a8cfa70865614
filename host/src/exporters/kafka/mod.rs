//! `type = "kafka"`: each batch as records of its signal's topic, the value the OTLP export
//! request it already is (or its OTLP/JSON form), split by partition key without decoding
//! ([`records`]). The producer (librdkafka) batches, compresses and retries; a batch counts as
//! delivered once every one of its records is acknowledged as `acks` asks.

pub mod config;
pub mod records;

use std::time::Duration;

use futures::executor::block_on;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use tokio::task::JoinHandle;

use super::registry::{ExporterType, Start};
use super::{BuildError, ExportError, Exporter};
use crate::batch::{Batch, DecodeError};
use crate::config::{Problem, Signal};
use crate::kafka::{KafkaEncoding, KafkaTopics};
use config::{KafkaExporterConfig, PartitionKey};

/// Produces each batch's records and waits for their acknowledgements.
pub struct KafkaExporter {
    producer: FutureProducer,
    topics: KafkaTopics,
    encoding: KafkaEncoding,
    partition_key: PartitionKey,
    delivery_timeout: Duration,
}

fn failed(context: &str, error: KafkaError) -> ExportError {
    ExportError::Io { context: context.to_string(), source: std::io::Error::other(error) }
}

/// The OTLP/JSON form of `payload`, an encoded request of `signal`.
fn json(signal: Signal, payload: &[u8]) -> Result<Vec<u8>, ExportError> {
    let mut json = Vec::with_capacity(payload.len() * 2);
    crate::batch::write_json(signal, &[payload], &mut json)?;
    Ok(json)
}

impl Exporter for KafkaExporter {
    fn export(&mut self, batch: &Batch) -> Result<(), ExportError> {
        let signal = batch.signal();
        let records = records::split(signal, batch.payload(), batch.items(), self.partition_key)
            .map_err(|e| DecodeError(format!("cannot split the batch into records: {e}")))?;
        let topic = self.topics.of(signal);
        let mut deliveries = Vec::with_capacity(records.len());
        for record in &records {
            let rendered;
            let value: &[u8] = match self.encoding {
                KafkaEncoding::OtlpProto => &record.payload,
                KafkaEncoding::OtlpJson => {
                    rendered = json(signal, &record.payload)?;
                    &rendered
                }
            };
            loop {
                let mut produced = FutureRecord::<[u8], [u8]>::to(topic).payload(value);
                if let Some(key) = &record.key {
                    produced = produced.key(key.as_slice());
                }
                match self.producer.send_result(produced) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    // The producer's own queue is full: wait for it to drain (backpressure).
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err((error, _)) => return Err(failed(&format!("cannot produce to `{topic}`"), error)),
                }
            }
        }
        for delivery in deliveries {
            match block_on(delivery) {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => {
                    return Err(failed(&format!("`{topic}` did not take a record"), error));
                }
                Err(_) => {
                    let error = KafkaError::Canceled;
                    return Err(failed(&format!("`{topic}`: the producer went away"), error));
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ExportError> {
        self.producer
            .flush(Timeout::After(self.delivery_timeout))
            .map_err(|error| failed("cannot flush the producer", error))
    }
}

impl ExporterType for KafkaExporterConfig {
    fn check(&self) -> Vec<Problem> {
        let mut problems = self.connection().check();
        if self.delivery_timeout.0 < Duration::from_millis(1) {
            problems.push((None, "`delivery_timeout` must be positive".into()));
        }
        problems
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
            // A batch's records are produced together and then waited for: lingering for more
            // would only delay that wait (5 ms of linger capped a batch stream at 200 a second).
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
        };
        Ok(start.run(exporter))
    }
}
