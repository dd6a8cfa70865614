//! What the Kafka exporter and receiver share: the brokers and how to reach them (SASL, TLS),
//! the topic each signal goes to, and how a record's value is encoded.
//!
//! A record's value is an encoded OTLP export request — the bytes a batch already holds — so
//! neither side decodes anything on the protobuf path. The client is librdkafka (through
//! `rdkafka`), which brings the protocol's batching, retries, compression and group
//! coordination.

use std::path::PathBuf;

use serde::Deserialize;
use serde_spanned::Spanned;

use crate::config::{ClientTlsConfig, Credential, Problem, Signal};
use crate::secret::Secret;

/// Declares a Kafka table: the keys the exporter's and the receiver's share — brokers, topics,
/// encoding, credentials — then the type's own. (serde's `flatten` would lose the keys' places
/// in the file and their `deny_unknown_fields`, so the shared keys are written in by this macro.)
///
/// ```toml
/// brokers = ["kafka-0.kafka:9092", "kafka-1.kafka:9092"]
/// topics = { traces = "otlp_spans" }            # metrics, logs keep otlp_metrics, otlp_logs
/// encoding = "otlp_proto"                       # or "otlp_json"
/// sasl = { mechanism = "SCRAM-SHA-512", username = "sluice", password = { file = "/run/secrets/kafka" } }
/// tls = { ca_file = "/etc/kafka/ca.pem" }
/// ```
macro_rules! kafka_table {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$field_meta:meta])* pub $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// Bootstrap brokers, `host:port`.
            pub brokers: serde_spanned::Spanned<Vec<String>>,
            /// The topic of each signal.
            #[serde(default)]
            pub topics: $crate::kafka::KafkaTopics,
            /// How a record's value is encoded.
            #[serde(default)]
            pub encoding: $crate::kafka::KafkaEncoding,
            /// SASL authentication.
            #[serde(default)]
            pub sasl: Option<$crate::kafka::KafkaSasl>,
            /// TLS to the brokers (on when this table is present).
            #[serde(default)]
            pub tls: Option<$crate::config::ClientTlsConfig>,
            /// Let SASL credentials go to brokers off loopback without TLS (a private link).
            /// Refused by default; one WARN at start when set.
            #[serde(default)]
            pub allow_plaintext_credentials: bool,
            $($(#[$field_meta])* pub $field: $ty,)*
        }

        impl $name {
            /// Its brokers, topics, encoding and credentials.
            pub fn connection(&self) -> $crate::kafka::KafkaConnection<'_> {
                $crate::kafka::KafkaConnection {
                    brokers: &self.brokers,
                    topics: &self.topics,
                    encoding: self.encoding,
                    sasl: self.sasl.as_ref(),
                    tls: self.tls.as_ref(),
                    allow_plaintext_credentials: self.allow_plaintext_credentials,
                }
            }
        }
    };
}

pub(crate) use kafka_table;

/// A Kafka table's brokers, topics, encoding and credentials (the keys `kafka_table!` declares).
#[derive(Debug, Clone, Copy)]
pub struct KafkaConnection<'a> {
    /// Bootstrap brokers.
    pub brokers: &'a Spanned<Vec<String>>,
    /// The topic of each signal.
    pub topics: &'a KafkaTopics,
    /// How a record's value is encoded.
    pub encoding: KafkaEncoding,
    /// SASL authentication.
    pub sasl: Option<&'a KafkaSasl>,
    /// TLS to the brokers.
    pub tls: Option<&'a ClientTlsConfig>,
    /// Whether SASL may go in clear text off loopback.
    pub allow_plaintext_credentials: bool,
}

/// `topics = { .. }`: the topic of each signal, named as the OpenTelemetry Collector names them
/// unless set.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaTopics {
    /// Spans' topic.
    pub traces: String,
    /// Metric data points' topic.
    pub metrics: String,
    /// Log records' topic.
    pub logs: String,
}

impl Default for KafkaTopics {
    fn default() -> Self {
        Self { traces: "otlp_spans".into(), metrics: "otlp_metrics".into(), logs: "otlp_logs".into() }
    }
}

impl KafkaTopics {
    /// The topic of `signal`.
    pub fn of(&self, signal: Signal) -> &str {
        match signal {
            Signal::Traces => &self.traces,
            Signal::Metrics => &self.metrics,
            Signal::Logs => &self.logs,
        }
    }

    /// The signal whose topic is `topic`, if any.
    pub fn signal_of(&self, topic: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|&signal| self.of(signal) == topic)
    }
}

/// A record's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaEncoding {
    /// The OTLP export request, protobuf (the Collector's `otlp_proto`).
    #[default]
    OtlpProto,
    /// The OTLP export request, OTLP/JSON (`otlp_json`).
    OtlpJson,
}

/// `sasl = { .. }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSasl {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: SaslMechanism,
    /// The user name: a literal, or `{ env = .. }` / `{ file = .. }`.
    pub username: Spanned<Credential>,
    /// The password: `{ env = .. }` or `{ file = .. }`, never the value.
    pub password: Spanned<Credential>,
}

/// The SASL mechanisms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    /// SASL/PLAIN.
    #[serde(rename = "PLAIN")]
    Plain,
    /// SCRAM with SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// SCRAM with SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl<'a> KafkaConnection<'a> {
    /// The SASL user name and password, which validation checks are there to read.
    pub fn secrets(&self) -> Vec<(&'static str, &'a Spanned<Credential>)> {
        self.sasl.map_or_else(Vec::new, |sasl| {
            vec![("the SASL user name", &sasl.username), ("the SASL password", &sasl.password)]
        })
    }

    /// Its own checks: brokers listed, secrets not written in the file, credentials not sent in
    /// clear text off loopback unless allowed, TLS files present and paired.
    pub fn check(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.brokers.get_ref().is_empty() {
            problems.push((Some(self.brokers.span()), "`brokers` lists no broker".into()));
        }
        for broker in self.brokers.get_ref() {
            if broker
                .rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            {
                problems.push((Some(self.brokers.span()), format!("broker `{broker}` is not host:port")));
            }
        }
        if let Some(sasl) = self.sasl {
            if matches!(sasl.password.get_ref(), Credential::Literal(_)) {
                problems
                    .push((Some(sasl.password.span()), crate::config::written_secret("the SASL password")));
            }
            if self.tls.is_none() && !self.allow_plaintext_credentials && !self.all_brokers_on_loopback() {
                problems.push((
                    Some(sasl.password.span()),
                    "SASL credentials would cross the network in clear text: add `tls = {}` (or set \
                     `allow_plaintext_credentials = true` for a private link)"
                        .into(),
                ));
            }
        }
        if let Some(tls) = self.tls {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                problems.push((
                    Some(self.brokers.span()),
                    "`tls.cert_file` and `tls.key_file` go together".into(),
                ));
            }
            for file in [&tls.ca_file, &tls.cert_file, &tls.key_file].into_iter().flatten() {
                if !file.get_ref().is_file() {
                    problems
                        .push((Some(file.span()), format!("{} does not exist", file.get_ref().display())));
                }
            }
        }
        let topics = Signal::ALL.map(|s| self.topics.of(s));
        if topics.iter().any(|t| t.is_empty()) {
            problems.push((None, "a topic name is empty".into()));
        }
        if topics[0] == topics[1] || topics[1] == topics[2] || topics[0] == topics[2] {
            problems.push((
                None,
                "each signal needs a topic of its own (a record's value does not say its signal)".into(),
            ));
        }
        problems
    }

    fn all_brokers_on_loopback(&self) -> bool {
        self.brokers.get_ref().iter().all(|broker| {
            let host = broker.rsplit_once(':').map_or(broker.as_str(), |(host, _)| host);
            crate::config::is_loopback_host(host)
        })
    }

    /// The librdkafka settings for these brokers and credentials (secrets read now).
    pub fn client_config(&self, component: &str) -> Result<rdkafka::ClientConfig, String> {
        let mut config = rdkafka::ClientConfig::new();
        config.set("bootstrap.servers", self.brokers.get_ref().join(","));
        config.set("client.id", format!("sluice-{component}"));
        let protocol = match (self.sasl, self.tls) {
            (None, None) => "plaintext",
            (None, Some(_)) => "ssl",
            (Some(_), None) => "sasl_plaintext",
            (Some(_), Some(_)) => "sasl_ssl",
        };
        config.set("security.protocol", protocol);
        if let Some(sasl) = self.sasl {
            let read = |credential: &Spanned<Credential>, what: &str| {
                Secret::new(credential.get_ref().clone())
                    .value()
                    .map_err(|e| format!("cannot read the SASL {what}: {e}"))
            };
            config.set("sasl.mechanism", sasl.mechanism.as_str());
            config.set("sasl.username", read(&sasl.username, "user name")?);
            config.set("sasl.password", read(&sasl.password, "password")?);
        }
        if let Some(tls) = self.tls {
            let path =
                |file: &Option<Spanned<PathBuf>>| file.as_ref().map(|f| f.get_ref().display().to_string());
            if let Some(ca) = path(&tls.ca_file) {
                config.set("ssl.ca.location", ca);
            }
            if let Some(cert) = path(&tls.cert_file) {
                config.set("ssl.certificate.location", cert);
            }
            if let Some(key) = path(&tls.key_file) {
                config.set("ssl.key.location", key);
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    kafka_table! {
        /// A table with only the shared keys.
        pub struct Shared {}
    }

    fn connection(toml_text: &str) -> Shared {
        toml_edit::de::from_str(toml_text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn topics_default_to_the_collectors_names_and_map_back_to_signals() {
        let kafka = connection("brokers = [\"127.0.0.1:9092\"]\ntopics = { logs = \"app-logs\" }");
        assert_eq!(kafka.topics.of(Signal::Traces), "otlp_spans");
        assert_eq!(kafka.topics.signal_of("app-logs"), Some(Signal::Logs));
        assert_eq!(kafka.topics.signal_of("otlp_logs"), None);
        assert!(kafka.connection().check().is_empty(), "{:?}", kafka.connection().check());
    }

    #[test]
    fn credentials_are_checked_before_anything_connects() {
        let problems = |text: &str| -> Vec<String> {
            connection(text).connection().check().into_iter().map(|(_, m)| m).collect()
        };
        let literal = problems(
            "brokers = [\"kafka.example.com:9092\"]\n\
             sasl = { mechanism = \"PLAIN\", username = \"u\", password = \"hunter2\" }",
        );
        assert!(literal.iter().any(|m| m.contains("is a secret")), "{literal:?}");
        assert!(literal.iter().any(|m| m.contains("clear text")), "{literal:?}");
        let local = problems(
            "brokers = [\"127.0.0.1:9092\"]\n\
             sasl = { mechanism = \"SCRAM-SHA-256\", username = \"u\", password = { env = \"P\" } }",
        );
        assert!(local.is_empty(), "loopback needs no TLS: {local:?}");
        let allowed = problems(
            "brokers = [\"kafka:9092\"]\nallow_plaintext_credentials = true\n\
             sasl = { mechanism = \"PLAIN\", username = \"u\", password = { env = \"P\" } }",
        );
        assert!(allowed.is_empty(), "{allowed:?}");
        assert!(problems("brokers = [\"nohost\"]").iter().any(|m| m.contains("host:port")));
        let shared = problems("brokers = [\"k:9092\"]\ntopics = { traces = \"otlp\", logs = \"otlp\" }");
        assert!(shared.iter().any(|m| m.contains("topic of its own")), "{shared:?}");
    }

    #[test]
    fn sasl_over_tls_reaches_librdkafka_with_the_password_read_from_its_file() {
        let folder = tempfile::tempdir().expect("a temporary folder");
        let secret = folder.path().join("kafka-password");
        std::fs::write(&secret, "s3cret\n").expect("writable");
        let kafka = connection(&format!(
            "brokers = [\"kafka-0:9093\", \"kafka-1:9093\"]\n\
             sasl = {{ mechanism = \"SCRAM-SHA-512\", username = \"agent\", password = {{ file = {secret:?} }} }}\n\
             tls = {{ ca_file = \"/etc/kafka/ca.pem\" }}"
        ));
        let config = kafka.connection().client_config("to_kafka").expect("configured");
        assert_eq!(config.get("bootstrap.servers"), Some("kafka-0:9093,kafka-1:9093"));
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("sasl.username"), Some("agent"));
        assert_eq!(
            config.get("sasl.password"),
            Some("s3cret"),
            "read from the file, trailing newline trimmed"
        );
        assert_eq!(config.get("ssl.ca.location"), Some("/etc/kafka/ca.pem"));
        let plain =
            connection("brokers = [\"127.0.0.1:9092\"]").connection().client_config("x").expect("configured");
        assert_eq!(plain.get("security.protocol"), Some("plaintext"));
        assert_eq!(plain.get("sasl.password"), None);
    }
}
