//! Settings of the `redis-retry` binary, from four layers: command-line flags over
//! `REDIS_RETRY_*` environment variables over a TOML file (`--config`) over defaults.
//!
//! ```toml
//! brokers = "kafka-1:9092,kafka-2:9092"
//! redis_url = "rediss://:secret@cache:6380/0"
//! retry_base_delay = "500ms"
//! max_age = "1h"
//!
//! [kafka]                       # librdkafka properties, passed through
//! "security.protocol" = "SASL_SSL"
//! sasl.mechanism = "PLAIN"      # unquoted dotted keys work too
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Deserializer, Serialize};

use crate::consumer::{ConsumerConfig, DEFAULT_GROUP};
use crate::errors::SetupError;
use crate::producer::{ProducerConfig, DEFAULT_TOPIC};
use crate::signing::SigningKey;

/// Prefix of the environment variables: `REDIS_RETRY_BROKERS`, `REDIS_RETRY_RETRY_TIERS`, ...
pub const ENV_PREFIX: &str = "REDIS_RETRY_";

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Every setting, resolved.
///
/// ```
/// use redis_retry_runtime::config::Settings;
/// let s = Settings::default();
/// assert_eq!((s.topic.as_str(), s.group.as_str()), ("redis-retry-queue", "redis-retry-consumer-group"));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// Main topic; tiers are `<topic>.retry.<n>`, dead letters `<topic>.dlq`.
    pub topic: String,
    /// Consumer group.
    pub group: String,
    /// Redis the consumer applies tasks to.
    pub redis_url: String,
    /// Number of retry tiers.
    pub retry_tiers: usize,
    /// Delay before the first retry.
    #[serde(with = "humantime_serde")]
    pub retry_base_delay: Duration,
    /// Longest delay between retries.
    #[serde(with = "humantime_serde")]
    pub retry_max_delay: Duration,
    /// Older tasks are dead-lettered as expired.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Larger messages are dead-lettered as oversize.
    pub max_task_bytes: usize,
    /// Whether Lua tasks are replayed.
    pub allow_lua: bool,
    /// Create missing topics.
    pub create_topics: bool,
    /// Partitions of created topics.
    pub partitions: i32,
    /// Replication factor of created topics.
    pub replication: i32,
    /// Where `consume` serves Prometheus metrics and `/health` (off when absent).
    pub metrics_addr: Option<SocketAddr>,
    /// Log output format.
    pub log_format: LogFormat,
    /// Log filter (`info`, `redis_retry_runtime=debug`, ...).
    pub log_level: String,
    /// Shared secret (16 bytes or more) to sign tasks with and to check them against.
    pub signing_key: Option<String>,
    /// Directory of the local spool for tasks Kafka cannot take (none: no spool).
    pub spool_dir: Option<std::path::PathBuf>,
    /// Largest size of the spool file.
    pub spool_max_bytes: u64,
    /// librdkafka properties passed through (TLS, SASL, timeouts, ...).
    #[serde(deserialize_with = "flat_properties")]
    pub kafka: BTreeMap<String, String>,
}

impl Default for Settings {
    fn default() -> Self {
        let c = ConsumerConfig::new("localhost:9092");
        Settings {
            brokers: c.kafka.brokers,
            topic: DEFAULT_TOPIC.to_string(),
            group: DEFAULT_GROUP.to_string(),
            redis_url: "redis://127.0.0.1:6379/".to_string(),
            retry_tiers: c.kafka.retry_tiers,
            retry_base_delay: c.retry_base_delay,
            retry_max_delay: c.retry_max_delay,
            max_age: c.max_age,
            max_task_bytes: c.max_task_bytes,
            allow_lua: c.allow_lua,
            create_topics: c.create_topics,
            partitions: c.partitions,
            replication: c.replication,
            metrics_addr: None,
            log_format: LogFormat::Text,
            log_level: "info".to_string(),
            signing_key: None,
            spool_dir: None,
            spool_max_bytes: c.kafka.spool_max_bytes,
            kafka: BTreeMap::new(),
        }
    }
}

/// The names every layer may set; an environment variable outside this list is ignored.
const KEYS: &[&str] = &[
    "brokers",
    "topic",
    "group",
    "redis_url",
    "retry_tiers",
    "retry_base_delay",
    "retry_max_delay",
    "max_age",
    "max_task_bytes",
    "allow_lua",
    "create_topics",
    "partitions",
    "replication",
    "metrics_addr",
    "log_format",
    "log_level",
    "signing_key",
    "spool_dir",
    "spool_max_bytes",
];

impl Settings {
    /// Resolves the layers: `flags` (only what was given on the command line) over the
    /// environment over the file at `file` (when given) over defaults.
    ///
    /// ```
    /// use redis_retry_runtime::config::Settings;
    /// #[derive(serde::Serialize)]
    /// struct Flags { topic: &'static str }
    /// let s = Settings::resolve(None, &Flags { topic: "from-flag" }).unwrap();
    /// assert_eq!(s.topic, "from-flag");
    /// ```
    pub fn resolve(file: Option<&Path>, flags: &impl Serialize) -> Result<Settings, SetupError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(SetupError::Config(format!("--config: no such file {}", path.display())));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let settings: Settings = figment
            .merge(Env::prefixed(ENV_PREFIX).only(KEYS))
            .merge(Serialized::defaults(flags))
            .extract()
            .map_err(|e| SetupError::Config(describe(e)))?;
        if let Some(key) = &settings.signing_key {
            SigningKey::new(key)?;
        }
        settings.consumer_config()?;
        Ok(settings)
    }

    /// Kafka settings for producing.
    pub fn producer_config(&self) -> ProducerConfig {
        ProducerConfig {
            brokers: self.brokers.clone(),
            topic: self.topic.clone(),
            retry_tiers: self.retry_tiers,
            properties: self.kafka.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            // Checked when the settings were resolved.
            signing_key: self.signing_key.as_ref().and_then(|k| SigningKey::new(k).ok()),
            spool_dir: self.spool_dir.clone(),
            spool_max_bytes: self.spool_max_bytes,
        }
    }

    /// The consumer's configuration, checked.
    pub fn consumer_config(&self) -> Result<ConsumerConfig, SetupError> {
        let mut c = ConsumerConfig::new(&self.brokers)
            .group(&self.group)
            .retry_base_delay(self.retry_base_delay)
            .retry_max_delay(self.retry_max_delay)
            .max_age(self.max_age)
            .max_task_bytes(self.max_task_bytes)
            .allow_lua(self.allow_lua)
            .partitions(self.partitions);
        c.replication = self.replication;
        c.create_topics = self.create_topics;
        c.kafka = self.producer_config();
        c.validate()?;
        Ok(c)
    }

    /// The settings as TOML, with passwords masked: what `redis-retry config` prints.
    pub fn to_toml_masked(&self) -> String {
        let mut shown = self.clone();
        shown.redis_url = mask_url_password(&shown.redis_url);
        if shown.signing_key.is_some() {
            shown.signing_key = Some("***".to_string());
        }
        for (k, v) in shown.kafka.iter_mut() {
            if k.contains("password") || k.contains("secret") || k.ends_with(".key.pem") {
                *v = "***".to_string();
            }
        }
        toml_lines(&shown)
    }
}

/// One line per problem, naming the setting as the file spells it and where the bad value
/// came from (`REDIS_RETRY_RETRY_TIERS`, the file's path, the command line).
fn describe(errors: figment::Error) -> String {
    errors
        .into_iter()
        .map(|e| {
            let key = e.path.join(".").to_ascii_lowercase();
            let origin = match &e.metadata {
                Some(m) if m.name.contains("environment") => {
                    format!(" (from {ENV_PREFIX}{})", key.to_ascii_uppercase())
                }
                Some(m) => match &m.source {
                    Some(figment::Source::File(path)) => format!(" (in {})", path.display()),
                    _ if m.name.contains("Serialized") => " (from the command line)".to_string(),
                    _ => String::new(),
                },
                None => String::new(),
            };
            let key = if key.is_empty() { String::new() } else { format!("{key}: ") };
            format!("{key}{}{origin}", e.kind)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn mask_url_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

fn toml_lines(s: &Settings) -> String {
    let mut out = String::new();
    let json = serde_json::to_value(s).unwrap_or_default();
    if let Some(map) = json.as_object() {
        for (k, v) in map {
            if k == "kafka" || v.is_null() {
                continue;
            }
            out.push_str(&format!("{k} = {v}\n"));
        }
    }
    if !s.kafka.is_empty() {
        out.push_str("\n[kafka]\n");
        for (k, v) in &s.kafka {
            out.push_str(&format!("{:?} = {:?}\n", k, v));
        }
    }
    out
}

/// Reads `[kafka]` as flat `property = "value"` pairs: nested tables from unquoted dotted keys
/// (`sasl.mechanism = "PLAIN"`) are joined back with dots, and numbers and booleans become the
/// strings librdkafka expects.
fn flat_properties<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Prop {
        Text(String),
        Int(i64),
        Float(f64),
        Bool(bool),
        Table(BTreeMap<String, Prop>),
    }
    fn flatten(prefix: &str, map: BTreeMap<String, Prop>, out: &mut BTreeMap<String, String>) {
        for (k, v) in map {
            let key = if prefix.is_empty() { k } else { format!("{prefix}.{k}") };
            match v {
                Prop::Text(s) => {
                    out.insert(key, s);
                }
                Prop::Int(i) => {
                    out.insert(key, i.to_string());
                }
                Prop::Float(f) => {
                    out.insert(key, f.to_string());
                }
                Prop::Bool(b) => {
                    out.insert(key, b.to_string());
                }
                Prop::Table(t) => flatten(&key, t, out),
            }
        }
    }
    let raw: BTreeMap<String, Prop> = BTreeMap::deserialize(d)?;
    let mut out = BTreeMap::new();
    flatten("", raw, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Default)]
    struct NoFlags {}

    #[test]
    fn dotted_kafka_keys_are_flattened_and_values_stringified() {
        let dir = std::env::temp_dir().join(format!("redis-retry-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("flat.toml");
        std::fs::write(
            &path,
            "topic = \"from-file\"\n[kafka]\n\"security.protocol\" = \"SASL_SSL\"\nsasl.mechanism = \"PLAIN\"\nsocket.timeout.ms = 5000\n",
        )
        .unwrap();
        let s = Settings::resolve(Some(&path), &NoFlags {}).unwrap();
        assert_eq!(s.topic, "from-file");
        assert_eq!(s.kafka.get("security.protocol").map(String::as_str), Some("SASL_SSL"));
        assert_eq!(s.kafka.get("sasl.mechanism").map(String::as_str), Some("PLAIN"));
        assert_eq!(s.kafka.get("socket.timeout.ms").map(String::as_str), Some("5000"));
    }

    #[test]
    fn a_typo_in_the_file_names_the_key_and_the_file() {
        let dir = std::env::temp_dir().join(format!("redis-retry-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("typo.toml");
        std::fs::write(&path, "brokerz = \"x\"\n").unwrap();
        let err = Settings::resolve(Some(&path), &NoFlags {}).unwrap_err().to_string();
        assert!(err.contains("brokerz") && err.contains("typo.toml"), "{err}");
        std::fs::write(&path, "retry_base_delay = \"soon\"\n").unwrap();
        let err = Settings::resolve(Some(&path), &NoFlags {}).unwrap_err().to_string();
        assert!(err.contains("retry_base_delay"), "{err}");
    }

    #[test]
    fn passwords_are_masked_when_shown() {
        let mut s = Settings { redis_url: "redis://user:hunter2@cache:6379/0".into(), ..Settings::default() };
        s.kafka.insert("sasl.password".into(), "hunter3".into());
        let shown = s.to_toml_masked();
        assert!(!shown.contains("hunter2") && !shown.contains("hunter3"), "{shown}");
        assert!(shown.contains("redis://user:***@cache:6379/0"), "{shown}");
    }
}
