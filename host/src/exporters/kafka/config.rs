//! `type = "kafka"` (exporter): its table.

use serde::Deserialize;

use crate::config::units::HumanDuration;

crate::kafka::kafka_table! {
    /// `type = "kafka"`: each batch as records of a topic per signal.
    ///
    /// ```toml
    /// [exporters.kafka]
    /// type = "kafka"
    /// brokers = ["kafka:9092"]
    /// partition_key = "trace_id"        # a trace stays in one partition; or "service", "none"
    /// compression = "zstd"
    /// ```
    pub struct KafkaExporterConfig {
        /// Which items share a record, and the record's key (which picks its partition).
        #[serde(default)]
        pub partition_key: PartitionKey,
        /// How the producer compresses record batches: `none` (default), `gzip`, `snappy`,
        /// `lz4` or `zstd`.
        #[serde(default)]
        pub compression: KafkaCompression,
        /// Which brokers must have a record before it counts as delivered: `all` (default),
        /// `leader` or `none`.
        #[serde(default)]
        pub acks: Acks,
        /// How long the producer keeps retrying a record before it is given up (counted in
        /// `sluice_exporter_failed_items_total`).
        #[serde(default = "default_delivery_timeout")]
        pub delivery_timeout: HumanDuration,
        /// Batches produced and waiting for their acknowledgements at once (default 16). The
        /// queue fills once this many wait.
        #[serde(default = "default_concurrency")]
        pub concurrency: usize,
    }
}

fn default_concurrency() -> usize {
    16
}

fn default_delivery_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(120))
}

/// How a batch becomes records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionKey {
    /// One record per trace ID, keyed by it, so a trace stays in one partition (log records by
    /// their trace ID too, those without one by `service.name`; metrics by `service.name`).
    #[default]
    TraceId,
    /// One record per `service.name`, keyed by it.
    Service,
    /// The batch as one record without a key (the producer spreads records over partitions).
    None,
}

/// The producer's compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaCompression {
    /// None.
    #[default]
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl KafkaCompression {
    /// librdkafka's `compression.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            KafkaCompression::None => "none",
            KafkaCompression::Gzip => "gzip",
            KafkaCompression::Snappy => "snappy",
            KafkaCompression::Lz4 => "lz4",
            KafkaCompression::Zstd => "zstd",
        }
    }
}

/// Which acknowledgement a produce request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Acks {
    /// Every in-sync replica.
    #[default]
    All,
    /// The partition's leader.
    Leader,
    /// None: sent is delivered (loss goes unseen).
    None,
}

impl Acks {
    /// librdkafka's `acks`.
    pub fn as_str(self) -> &'static str {
        match self {
            Acks::All => "all",
            Acks::Leader => "1",
            Acks::None => "0",
        }
    }
}
