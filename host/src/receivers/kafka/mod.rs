//! `type = "kafka"`: reads the signals' topics as one member of a consumer group and feeds each
//! record's value — an OTLP export request — to the pipelines, checked like any request.
//!
//! At least once, end to end: a record's offset is stored (and committed with the next
//! periodic commit, or at shutdown) only once every pipeline it feeds has accepted it — queued
//! it, or written it to disk where a pipeline writes to a disk queue. A host killed before that
//! leaves the offset uncommitted, and the partition's next owner reads the record again. A
//! full pipeline pauses consumption (the record is offered again until it fits) instead of
//! dropping; a record that is not a valid request can never be accepted, so it is counted as
//! refused (`malformed`), logged, and passed over.

pub mod config;

use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Statistics};
use tokio_util::sync::CancellationToken;

use super::ingest::{Ingest, IngestContext, Refusal};
use super::registry::{ReceiverType, Start, Started};
use crate::batch::Format;
use crate::config::{ComponentId, Problem, Signal};
use crate::kafka::{KafkaEncoding, KafkaTopics};
use crate::log_throttle::LogThrottle;
use crate::metrics::KafkaPartitionLabels;
use config::KafkaReceiverConfig;

/// How often librdkafka reports statistics, from which the lag gauge is set.
const STATISTICS_INTERVAL: Duration = Duration::from_secs(5);

/// The consumer's callbacks: rebalances to the log, statistics to the lag gauge.
struct Context {
    receiver: ComponentId,
    lag: Family<KafkaPartitionLabels, Gauge>,
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        for (topic, stats) in &statistics.topics {
            for (partition, stats) in &stats.partitions {
                // librdkafka reports -1 for partitions this member does not consume.
                if *partition < 0 || stats.consumer_lag < 0 {
                    continue;
                }
                let labels = KafkaPartitionLabels {
                    receiver: self.receiver.to_string(),
                    topic: topic.clone(),
                    partition: partition.to_string(),
                };
                self.lag.get_or_create(&labels).set(stats.consumer_lag);
            }
        }
    }
}

impl ConsumerContext for Context {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                let assigned: Vec<String> = partitions
                    .elements()
                    .iter()
                    .map(|p| format!("{}/{}", p.topic(), p.partition()))
                    .collect();
                tracing::info!(receiver = %self.receiver, partitions = %assigned.join(","), "Kafka partitions assigned");
            }
            Rebalance::Revoke(partitions) => {
                tracing::info!(receiver = %self.receiver, count = partitions.count(), "Kafka partitions revoked");
            }
            Rebalance::Error(error) => {
                tracing::warn!(receiver = %self.receiver, %error, "Kafka rebalance failed");
            }
        }
    }
}

impl ReceiverType for KafkaReceiverConfig {
    fn signals(&self) -> Vec<Signal> {
        self.signals.iter().map(|s| *s.get_ref()).collect()
    }

    fn check(&self, what: &str, _base_dir: &std::path::Path) -> Vec<Problem> {
        let mut problems: Vec<Problem> = self
            .connection()
            .check()
            .into_iter()
            .map(|(span, message)| (span, format!("{what}: {message}")))
            .collect();
        if self.group_id.get_ref().is_empty() {
            problems.push((Some(self.group_id.span()), format!("{what}: `group_id` is empty")));
        }
        if self.signals.is_empty() {
            problems.push((None, format!("{what}: `signals` names none")));
        }
        if !(Duration::from_millis(1)..=Duration::from_secs(300)).contains(&self.fetch_max_wait.0) {
            problems.push((None, format!("{what}: `fetch_max_wait` must be from 1ms to 5m")));
        }
        problems
    }

    fn secrets(&self) -> Vec<(&'static str, &serde_spanned::Spanned<crate::config::Credential>)> {
        self.connection().secrets()
    }

    async fn start(&self, start: Start<'_>) -> anyhow::Result<Started> {
        let consumer = self
            .consumer(start.id, start.metrics)
            .map_err(|e| anyhow::anyhow!("receiver `{}`: {e}", start.id))?;
        let topics: Vec<&str> = self.signals().into_iter().map(|s| self.topics.of(s)).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| anyhow::anyhow!("receiver `{}`: cannot subscribe to {topics:?}: {e}", start.id))?;
        tracing::info!(receiver = %start.id, group = %self.group_id.get_ref(), topics = %topics.join(","), "Consuming from Kafka");
        let context = IngestContext {
            feeds: start.feeds.clone(),
            metrics: start.metrics.clone(),
            memory: start.memory.clone(),
            auth: None,
        };
        let reader = Reader {
            receiver: start.id.clone(),
            ingest: Ingest::new(start.id, "kafka", context),
            topics: self.topics.clone(),
            format: match self.encoding {
                KafkaEncoding::OtlpProto => Format::Protobuf,
                KafkaEncoding::OtlpJson => Format::Json,
            },
            errors: LogThrottle::default(),
        };
        let task = tokio::spawn(reader.run(consumer, start.stop.clone()));
        Ok(Started { listeners: Vec::new(), sampler: Some(task) })
    }
}

impl KafkaReceiverConfig {
    fn consumer(
        &self,
        id: &ComponentId,
        metrics: &crate::metrics::Metrics,
    ) -> Result<StreamConsumer<Context>, String> {
        let mut client = self.connection().client_config(id.as_str())?;
        client
            .set("group.id", self.group_id.get_ref())
            .set("auto.offset.reset", self.initial_offset.as_str())
            .set("session.timeout.ms", self.session_timeout.0.as_millis().to_string())
            .set("fetch.wait.max.ms", self.fetch_max_wait.0.as_millis().to_string())
            // Offsets are stored by hand once a record is accepted; the periodic commit sends
            // only those.
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("statistics.interval.ms", STATISTICS_INTERVAL.as_millis().to_string());
        if self.allow_plaintext_credentials && self.sasl.is_some() && self.tls.is_none() {
            tracing::warn!(receiver = %id, "SASL credentials go to the brokers in clear text (allow_plaintext_credentials)");
        }
        let context = Context { receiver: id.clone(), lag: metrics.kafka_consumer_lag.clone() };
        client.create_with_context(context).map_err(|e| format!("cannot create the Kafka consumer: {e}"))
    }
}

/// The loop from the consumer to the pipelines.
struct Reader {
    receiver: ComponentId,
    ingest: Ingest,
    topics: KafkaTopics,
    format: Format,
    errors: LogThrottle,
}

impl Reader {
    async fn run(self, consumer: StreamConsumer<Context>, stop: CancellationToken) {
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => break,
                message = consumer.recv() => message,
            };
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    if let Some(suppressed) = self.errors.check() {
                        tracing::warn!(receiver = %self.receiver, %error, similar_errors_not_logged = suppressed, "Kafka consumer error");
                    }
                    continue;
                }
            };
            if let Some(signal) = self.topics.signal_of(message.topic()) {
                let body = Bytes::copy_from_slice(message.payload().unwrap_or_default());
                if !self.deliver(signal, body, &stop).await {
                    // Stopping before the pipelines took it: its offset stays uncommitted.
                    break;
                }
            }
            if let Err(error) = consumer.store_offset_from_message(&message) {
                tracing::warn!(receiver = %self.receiver, %error, "Cannot store a Kafka offset");
            }
        }
        // What was accepted is committed now, and leaving the group hands the partitions over
        // at once instead of after the session times out.
        if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(receiver = %self.receiver, %error, "No Kafka offsets to commit at shutdown");
        }
        consumer.unsubscribe();
        tracing::debug!(receiver = %self.receiver, "Kafka consumer stopped");
    }

    /// Offers `body` to the pipelines until they take it (or it proves malformed, which no
    /// retry mends); false if the host stops first.
    async fn deliver(&self, signal: Signal, body: Bytes, stop: &CancellationToken) -> bool {
        let mut wait = Duration::from_millis(20);
        loop {
            match self.ingest.accept(signal, self.format, body.clone(), None).await {
                Ok(_) | Err(Refusal::Malformed(_)) => return true,
                Err(Refusal::Busy(_) | Refusal::Memory | Refusal::NotStored(_)) => {
                    tokio::select! {
                        () = stop.cancelled() => return false,
                        () = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}
