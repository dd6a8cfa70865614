//! `type = "kafka"` (receiver): its table.

use serde::Deserialize;
use serde_spanned::Spanned;

use crate::config::Signal;
use crate::config::units::HumanDuration;

crate::kafka::kafka_table! {
    /// `type = "kafka"`: reads the signals' topics as one member of a consumer group.
    ///
    /// ```toml
    /// [receivers.kafka]
    /// type = "kafka"
    /// brokers = ["kafka:9092"]
    /// group_id = "sluice-gateway"        # gateways in one group share the partitions
    /// signals = ["traces", "logs"]       # the topics read; all three by default
    /// ```
    pub struct KafkaReceiverConfig {
        /// The consumer group: the hosts in one group split the topics' partitions.
        #[serde(default = "default_group_id")]
        pub group_id: Spanned<String>,
        /// Where a group with no committed offset starts: `earliest` (default: nothing already
        /// in the topic is skipped) or `latest`.
        #[serde(default)]
        pub initial_offset: InitialOffset,
        /// The signals to read, each from its topic.
        #[serde(default = "crate::config::all_signals")]
        pub signals: Vec<Spanned<Signal>>,
        /// How long the group waits to hear from a member before it hands the member's
        /// partitions to the others (a killed host's records move after this long).
        #[serde(default = "default_session_timeout")]
        pub session_timeout: HumanDuration,
        /// The longest a broker may hold a fetch while it waits for more records (default
        /// 250ms; up to 5 minutes). Brokers that always hold a fetch this long (tansu does)
        /// read at most one fetch's worth per wait; lower it for them.
        #[serde(default = "default_fetch_max_wait")]
        pub fetch_max_wait: HumanDuration,
    }
}

fn default_fetch_max_wait() -> HumanDuration {
    HumanDuration(std::time::Duration::from_millis(250))
}

fn default_session_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(45))
}

fn default_group_id() -> Spanned<String> {
    Spanned::new(0..0, "sluice".to_string())
}

/// Where a new consumer group starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitialOffset {
    /// The oldest record each partition still holds.
    #[default]
    Earliest,
    /// Records written from now on.
    Latest,
}

impl InitialOffset {
    /// librdkafka's `auto.offset.reset`.
    pub fn as_str(self) -> &'static str {
        match self {
            InitialOffset::Earliest => "earliest",
            InitialOffset::Latest => "latest",
        }
    }
}
