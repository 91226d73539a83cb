//! Settings of the `redis-retry` binary, from four layers: command-line flags over
//! `REDIS_RETRY_*` environment variables over a TOML file (`--config`) over defaults.
//!
//! ```toml
//! brokers = "kafka-1:9092,kafka-2:9092"
//! redis_url = "rediss://:secret@cache:6380/0"
//! # or the seed nodes of a Redis Cluster:
//! # redis_url = "redis://cache-1:7000,redis://cache-2:7000"
//! # redis_cluster = true
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
use redis::IntoConnectionInfo;
use serde::{Deserialize, Deserializer, Serialize};

use redis_retry_runtime::consumer::{ConsumerConfig, DEFAULT_GROUP};
use redis_retry_runtime::errors::SetupError;
use redis_retry_runtime::producer::{ProducerConfig, DEFAULT_TOPIC};
use redis_retry_runtime::signing::SigningKey;

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// Main topic; tiers are `<topic>.retry.<n>`, dead letters `<topic>.dlq`.
    pub topic: String,
    /// Consumer group.
    pub group: String,
    /// Redis the consumer applies tasks to; with `redis_cluster`, the comma-separated seed
    /// nodes of a Redis Cluster.
    pub redis_url: String,
    /// Whether `redis_url` names a Redis Cluster (its seed nodes) rather than one server.
    pub redis_cluster: bool,
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
    /// The most messages applied together in one pipeline.
    pub max_batch: usize,
    /// How long a Lua task may run before the consumer kills it (`SCRIPT KILL`) and
    /// dead-letters it as `script_timeout`.
    #[serde(with = "humantime_serde")]
    pub script_timeout: Duration,
    /// How long the consumer waits for each Redis reply: past it, a task that Redis does not
    /// answer while it answers a probe counts as failed (`timed_out` once its retries are spent).
    #[serde(with = "humantime_serde")]
    pub redis_response_timeout: Duration,
    /// Create missing topics.
    pub create_topics: bool,
    /// Partitions of created topics.
    pub partitions: i32,
    /// Replication factor of created topics.
    pub replication: i32,
    /// Where `consume` serves Prometheus metrics, `/health` and the web console (off when
    /// absent).
    pub metrics_addr: Option<SocketAddr>,
    /// Token that lets the web console act on dead letters (read-only without one).
    pub console_token: Option<String>,
    /// Log output format.
    pub log_format: LogFormat,
    /// Log filter (`info`, `redis_retry_runtime=debug`, ...).
    pub log_level: String,
    /// Shared secret (16 bytes or more) to sign tasks with and to check them against.
    pub signing_key: Option<String>,
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
            redis_cluster: false,
            retry_tiers: c.kafka.retry_tiers,
            retry_base_delay: c.retry_base_delay,
            retry_max_delay: c.retry_max_delay,
            max_age: c.max_age,
            max_task_bytes: c.max_task_bytes,
            allow_lua: c.allow_lua,
            max_batch: c.max_batch,
            script_timeout: c.script_timeout,
            redis_response_timeout: Duration::from_secs(5),
            create_topics: c.create_topics,
            partitions: c.partitions,
            replication: c.replication,
            metrics_addr: None,
            console_token: None,
            log_format: LogFormat::Text,
            log_level: "info".to_string(),
            signing_key: None,
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
    "redis_cluster",
    "retry_tiers",
    "retry_base_delay",
    "retry_max_delay",
    "max_age",
    "max_task_bytes",
    "allow_lua",
    "max_batch",
    "script_timeout",
    "redis_response_timeout",
    "create_topics",
    "partitions",
    "replication",
    "metrics_addr",
    "console_token",
    "log_format",
    "log_level",
    "signing_key",
];

impl Settings {
    /// Resolves the layers: `flags` (only what was given on the command line) over the
    /// environment over the file at `file` (when given) over defaults.
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
        if let Some(token) = &settings.console_token {
            check_console_token(token)?;
        }
        settings.consumer_config()?;
        settings.redis_target()?;
        if settings.redis_response_timeout.is_zero()
            || settings.redis_response_timeout > Duration::from_secs(600)
        {
            return Err(SetupError::Config(format!(
                "redis_response_timeout: must be above zero and at most 10 min, got {:?}",
                settings.redis_response_timeout
            )));
        }
        Ok(settings)
    }

    /// The Redis that `consume` applies tasks to, checked: `redis_url` as one server, or with
    /// `redis_cluster` as the comma-separated seed nodes of a Redis Cluster (which share their
    /// password, TLS and protocol, and have only database 0).
    pub fn redis_target(&self) -> Result<RedisTarget, SetupError> {
        let bad = |msg: String| SetupError::Config(format!("redis_url: {msg}"));
        if !self.redis_cluster {
            return self
                .redis_url
                .as_str()
                .into_connection_info()
                .map(|node| RedisTarget::Single(Box::new(node)))
                .map_err(|e| {
                    // A password may hold a comma, so a list is only suspected once parsing failed.
                    if self.redis_url.contains(',') {
                        bad(format!(
                            "{e}; a comma-separated list names the seed nodes of a Redis Cluster: \
                         set redis_cluster (--redis-cluster, REDIS_RETRY_REDIS_CLUSTER=true)"
                        ))
                    } else {
                        bad(e.to_string())
                    }
                });
        }
        let mut nodes = Vec::new();
        for (i, url) in self.redis_url.split(',').map(str::trim).enumerate() {
            let which = || format!("Redis Cluster seed node {} `{}`", i + 1, mask_url_password(url));
            if url.is_empty() {
                return Err(bad(format!(
                    "{} is empty (with redis_cluster, a comma-separated list)",
                    which()
                )));
            }
            let info = url.into_connection_info().map_err(|e| bad(format!("{}: {e}", which())))?;
            if info.redis_settings().db() != 0 {
                return Err(bad(format!("{}: a Redis Cluster has only database 0", which())));
            }
            nodes.push(info);
        }
        // The client checks what the seeds must agree on (password, TLS, protocol, no sockets).
        redis::cluster::ClusterClient::builder(nodes.clone())
            .build()
            .map_err(|e| bad(format!("with redis_cluster: {e}")))?;
        Ok(RedisTarget::Cluster(nodes))
    }

    /// Kafka settings for producing.
    pub fn producer_config(&self) -> ProducerConfig {
        // The binary publishes only with waited sends (enqueue, DLQ replay, retry tiers),
        // which report failure to their caller; the spool is for services' fire-and-forget
        // capture path (`ProducerConfig::spool_dir`).
        let mut config = ProducerConfig::new(&self.brokers).topic(&self.topic).retry_tiers(self.retry_tiers);
        for (k, v) in &self.kafka {
            config = config.property(k, v);
        }
        // Checked when the settings were resolved.
        match self.signing_key.as_ref().and_then(|k| SigningKey::new(k).ok()) {
            Some(key) => config.signing_key(key),
            None => config,
        }
    }

    /// The consumer's configuration, checked.
    pub fn consumer_config(&self) -> Result<ConsumerConfig, SetupError> {
        let c = ConsumerConfig::new(&self.brokers)
            .group(&self.group)
            .retry_base_delay(self.retry_base_delay)
            .retry_max_delay(self.retry_max_delay)
            .max_age(self.max_age)
            .max_task_bytes(self.max_task_bytes)
            .allow_lua(self.allow_lua)
            .max_batch(self.max_batch)
            .script_timeout(self.script_timeout)
            .partitions(self.partitions)
            .replication(self.replication)
            .create_topics(self.create_topics)
            .kafka(self.producer_config());
        c.validate()?;
        Ok(c)
    }

    /// The settings as TOML, with passwords masked: what `redis-retry config` prints.
    pub fn to_toml_masked(&self) -> String {
        let mut shown = self.clone();
        shown.redis_url = if self.redis_cluster {
            self.redis_url.split(',').map(mask_url_password).collect::<Vec<_>>().join(",")
        } else {
            mask_url_password(&self.redis_url)
        };
        if shown.signing_key.is_some() {
            shown.signing_key = Some("***".to_string());
        }
        if shown.console_token.is_some() {
            shown.console_token = Some("***".to_string());
        }
        for (k, v) in shown.kafka.iter_mut() {
            if k.contains("password") || k.contains("secret") || k.ends_with(".key.pem") {
                *v = "***".to_string();
            }
        }
        toml_lines(&shown)
    }
}

/// The shortest console token: it guards replays and purges, so a guessable word will not do.
pub const CONSOLE_TOKEN_MIN_LEN: usize = 16;

/// A console token must be long enough to resist guessing, and travel in an HTTP header
/// as it was written (no spaces or control characters to be trimmed or refused on the way).
/// The message never repeats the token.
fn check_console_token(token: &str) -> Result<(), SetupError> {
    if token.chars().count() < CONSOLE_TOKEN_MIN_LEN {
        return Err(SetupError::Config(format!(
            "console_token: must be at least {CONSOLE_TOKEN_MIN_LEN} characters, got {}",
            token.chars().count()
        )));
    }
    if !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err(SetupError::Config(
            "console_token: only visible ASCII characters (no spaces, no control characters)".to_string(),
        ));
    }
    Ok(())
}

/// The Redis `consume` applies tasks to: see [`Settings::redis_target`].
#[derive(Debug, Clone)]
pub enum RedisTarget {
    /// One server (`redis_url`), boxed: the variants would differ in size tenfold.
    Single(Box<redis::ConnectionInfo>),
    /// The seed nodes of a Redis Cluster (`redis_url` with `redis_cluster`); the client finds
    /// the other nodes and the slot map from them.
    Cluster(Vec<redis::ConnectionInfo>),
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
    // A binary crate runs no doc tests: the examples that stood in the docs live here.
    #[test]
    fn defaults_are_the_seeds_topic_and_group() {
        let s = Settings::default();
        assert_eq!((s.topic.as_str(), s.group.as_str()), ("redis-retry-queue", "redis-retry-consumer-group"));
    }

    #[test]
    fn a_flag_overrides_the_defaults() {
        #[derive(serde::Serialize)]
        struct Flags {
            topic: &'static str,
        }
        let s = Settings::resolve(None, &Flags { topic: "from-flag" }).unwrap();
        assert_eq!(s.topic, "from-flag");
    }

    #[test]
    fn a_comma_separated_redis_url_needs_redis_cluster() {
        let s = Settings {
            redis_url: "redis://a:7000,redis://b:7001".into(),
            redis_cluster: true,
            ..Settings::default()
        };
        assert!(matches!(s.redis_target(), Ok(RedisTarget::Cluster(nodes)) if nodes.len() == 2));
        let s = Settings { redis_cluster: false, ..s };
        assert!(s.redis_target().unwrap_err().to_string().contains("redis_cluster"));
    }

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
    fn redis_cluster_comes_from_the_file_and_names_its_seeds() {
        let dir = std::env::temp_dir().join(format!("redis-retry-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cluster.toml");
        std::fs::write(&path, "redis_url = \"redis://a:7000, redis://b:7001\"\nredis_cluster = true\n")
            .unwrap();
        let s = Settings::resolve(Some(&path), &NoFlags {}).unwrap();
        assert!(s.redis_cluster);
        match s.redis_target().unwrap() {
            RedisTarget::Cluster(nodes) => {
                let addrs: Vec<String> = nodes.iter().map(|n| n.addr().to_string()).collect();
                assert_eq!(addrs, ["a:7000", "b:7001"]);
            }
            other => panic!("expected a cluster, got {other:?}"),
        }
        #[derive(Serialize)]
        struct Flags {
            redis_cluster: bool,
        }
        let s = Settings::resolve(Some(&path), &Flags { redis_cluster: false }).unwrap_err().to_string();
        assert!(s.contains("redis_url") && s.contains("redis_cluster"), "a list needs the setting: {s}");
    }

    #[test]
    fn bad_cluster_seeds_name_redis_url_and_the_node() {
        let cases = [
            ("redis://a:7000,nosuch://b", "seed node 2"),
            ("redis://a:7000,,redis://b:7001", "seed node 2 `` is empty"),
            ("redis://a:7000/3", "only database 0"),
            ("redis://:one@a:7000,redis://:two@b:7000", "different password"),
            ("redis://a:7000,rediss://b:7000", "different TLS"),
            ("", "seed node 1"),
        ];
        for (url, expected) in cases {
            let s = Settings { redis_url: url.into(), redis_cluster: true, ..Settings::default() };
            let err = s.redis_target().unwrap_err().to_string();
            assert!(err.contains("redis_url") && err.contains(expected), "{url}: {err}");
        }
        let s = Settings {
            redis_url: "redis://:hunter2@a:7000,nosuch://:hunter2@b".into(),
            redis_cluster: true,
            ..Settings::default()
        };
        let err = s.redis_target().unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "a password in the message: {err}");
    }

    #[test]
    fn a_single_url_with_a_comma_in_its_password_is_one_server() {
        let s = Settings { redis_url: "redis://:pa,ss@cache:6379/2".into(), ..Settings::default() };
        assert!(matches!(s.redis_target(), Ok(RedisTarget::Single(_))));
    }

    #[test]
    fn passwords_are_masked_when_shown() {
        let mut s = Settings { redis_url: "redis://user:hunter2@cache:6379/0".into(), ..Settings::default() };
        s.kafka.insert("sasl.password".into(), "hunter3".into());
        let shown = s.to_toml_masked();
        assert!(!shown.contains("hunter2") && !shown.contains("hunter3"), "{shown}");
        assert!(shown.contains("redis://user:***@cache:6379/0"), "{shown}");
        let cluster = Settings {
            redis_url: "redis://:hunter2@a:7000,redis://:hunter2@b:7001".into(),
            redis_cluster: true,
            ..Settings::default()
        };
        let shown = cluster.to_toml_masked();
        assert!(shown.contains(r#"redis_url = "redis://:***@a:7000,redis://:***@b:7001""#), "{shown}");
        assert!(shown.contains("redis_cluster = true"), "{shown}");
    }
}
