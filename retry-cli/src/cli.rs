//! The `redis-retry` command line: the consumer service and the operator's tools.
//!
//! Settings come from flags, then `REDIS_RETRY_*` environment variables, then the TOML file
//! given with `--config`, then defaults ([`config`](crate::config)). A bad setting ends the
//! program with one message naming it and exit code 2.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::config::{LogFormat, RedisTarget, Settings};
use redis_retry_runtime::consumer::{shutdown_signal, ConsumerConfig, RedisRetryConsumer};
use redis_retry_runtime::dlq::{Dlq, DlqEntry, Filter};
use redis_retry_runtime::errors::SetupError;
use redis_retry_runtime::producer::RetryProducer;
use redis_retry_runtime::task::RedisTask;

/// Exit code for a bad setting (as clap uses for bad flags).
pub const EXIT_CONFIG: u8 = 2;
/// Exit code for a failure while running, or input lines that were rejected.
pub const EXIT_FAILURE: u8 = 1;

/// Top-level command line.
#[derive(Debug, Parser)]
#[command(name = "redis-retry", version, about = "Re-applies failed Redis writes queued on Kafka")]
pub struct Cli {
    /// TOML file with settings (flags and REDIS_RETRY_* variables override it).
    #[arg(long, global = true, env = "REDIS_RETRY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Logging.
    #[command(flatten)]
    pub log: LogFlags,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Logging flags, accepted by every subcommand.
#[derive(Debug, Default, Args, Serialize)]
pub struct LogFlags {
    /// Log output format [env: REDIS_RETRY_LOG_FORMAT] [default: text].
    #[arg(long, global = true, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `redis_retry_runtime=debug` [env: REDIS_RETRY_LOG_LEVEL] [default: info].
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
}

/// Where the tasks live.
#[derive(Debug, Default, Args, Serialize)]
pub struct KafkaFlags {
    /// Kafka bootstrap servers [env: REDIS_RETRY_BROKERS] [default: localhost:9092].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brokers: Option<String>,
    /// Main topic; tiers are `<topic>.retry.<n>`, dead letters `<topic>.dlq` [env: REDIS_RETRY_TOPIC] [default: redis-retry-queue].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Consumer group [env: REDIS_RETRY_GROUP] [default: redis-retry-consumer-group].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Number of retry tiers [env: REDIS_RETRY_RETRY_TIERS] [default: 3].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_tiers: Option<usize>,
    /// Partitions of topics it creates [env: REDIS_RETRY_PARTITIONS] [default: 3].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    /// Replication factor of topics it creates [env: REDIS_RETRY_REPLICATION] [default: 1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication: Option<i32>,
    /// librdkafka property, `key=value` (repeatable), e.g. `-X security.protocol=ssl`.
    #[arg(long = "kafka-property", short = 'X', value_name = "KEY=VALUE", value_parser = key_value)]
    #[serde(rename = "kafka", serialize_with = "as_map", skip_serializing_if = "Vec::is_empty")]
    pub kafka_properties: Vec<(String, String)>,
    /// Key of 16+ bytes: check HMAC-SHA256 signatures, sign re-publishes [env: REDIS_RETRY_SIGNING_KEY].
    /// Other users can read a command line: prefer --signing-key-file.
    #[arg(long, value_name = "KEY", conflicts_with = "signing_key_file")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<String>,
    /// File holding the signing key (a trailing newline is ignored).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub signing_key_file: Option<PathBuf>,
}

/// How the consumer applies tasks.
#[derive(Debug, Default, Args, Serialize)]
pub struct ConsumeFlags {
    /// Redis to apply tasks to (`redis://`, `rediss://` for TLS, `redis://user:pass@host/db`) [env: REDIS_RETRY_REDIS_URL] [default: redis://127.0.0.1:6379/].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// `--redis-url` lists the seed nodes of a Redis Cluster, comma-separated (`redis://a:7000,redis://b:7000`) [env: REDIS_RETRY_REDIS_CLUSTER] [default: false].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_cluster: Option<bool>,
    /// Delay before the first retry (doubles per retry, ±20 % jitter), e.g. `1s`, `250ms` [env: REDIS_RETRY_RETRY_BASE_DELAY] [default: 1s].
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub retry_base_delay: Option<Duration>,
    /// Longest delay between retries [env: REDIS_RETRY_RETRY_MAX_DELAY] [default: 5m].
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub retry_max_delay: Option<Duration>,
    /// Tasks older than this are dead-lettered as expired [env: REDIS_RETRY_MAX_AGE] [default: 24h].
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
    /// Larger messages are dead-lettered as oversize [env: REDIS_RETRY_MAX_TASK_BYTES] [default: 1048576].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_task_bytes: Option<usize>,
    /// Replay Lua tasks (a script body can do anything) [env: REDIS_RETRY_ALLOW_LUA] [default: false].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_lua: Option<bool>,
    /// The most messages applied together in one pipeline to Redis [env: REDIS_RETRY_MAX_BATCH] [default: 1024].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_batch: Option<usize>,
    /// How long a Lua task may run before it is killed (SCRIPT KILL) and dead-lettered as script_timeout [env: REDIS_RETRY_SCRIPT_TIMEOUT] [default: 5s].
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub script_timeout: Option<Duration>,
    /// How long to wait for each Redis reply; a task Redis does not answer in time while it answers a probe counts as failed [env: REDIS_RETRY_REDIS_RESPONSE_TIMEOUT] [default: 5s].
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub redis_response_timeout: Option<Duration>,
    /// Create missing topics at start [env: REDIS_RETRY_CREATE_TOPICS] [default: true].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_topics: Option<bool>,
    /// Serve Prometheus metrics on /metrics, a health check on /health and the web console on / at this address, e.g. 127.0.0.1:9464 [env: REDIS_RETRY_METRICS_ADDR].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<SocketAddr>,
    /// Token (16+ characters) that lets the web console replay and purge dead letters; without one it is read-only [env: REDIS_RETRY_CONSOLE_TOKEN].
    /// Other users can read a command line: prefer --console-token-file.
    #[arg(long, value_name = "TOKEN", conflicts_with = "console_token_file")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console_token: Option<String>,
    /// File holding the console token (a trailing newline is ignored).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub console_token_file: Option<PathBuf>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume the retry topics and apply the tasks to Redis until SIGINT or SIGTERM.
    Consume {
        /// Kafka settings.
        #[command(flatten)]
        kafka: KafkaFlags,
        /// Consumer settings.
        #[command(flatten)]
        consume: ConsumeFlags,
    },
    /// Inspect and act on the dead-letter topic.
    Dlq {
        /// What to do with it.
        #[command(subcommand)]
        action: DlqCommand,
    },
    /// Publish tasks given as JSON lines on standard input (each one checked first).
    Enqueue {
        /// Kafka settings.
        #[command(flatten)]
        kafka: KafkaFlags,
    },
    /// Manage the topics.
    Topics {
        /// What to do with them.
        #[command(subcommand)]
        action: TopicsCommand,
    },
    /// Print the settings as resolved from flags, environment, file and defaults.
    Config {
        /// Kafka settings.
        #[command(flatten)]
        kafka: KafkaFlags,
        /// Consumer settings.
        #[command(flatten)]
        consume: ConsumeFlags,
    },
}

/// `redis-retry dlq ...`
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters: reason, source, command, key, age, attempts (never values).
    List {
        /// Kafka settings.
        #[command(flatten)]
        kafka: KafkaFlags,
        /// Show at most this many.
        #[arg(long)]
        limit: Option<usize>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send dead letters back to the main topic as fresh tasks.
    Replay {
        /// Kafka settings.
        #[command(flatten)]
        kafka: KafkaFlags,
        /// Only entries with FIELD=PATTERN (reason, source, key, command; `*` ends a prefix),
        /// age>DURATION, age<DURATION, or at=PARTITION:OFFSET[,...] (positions `dlq list --json` shows).
        #[arg(long, value_name = "CONDITION")]
        filter: Vec<String>,
    },
    /// Drop dead letters for good.
    Purge {
        /// Kafka settings.
        #[command(flatten)]
        kafka: KafkaFlags,
        /// Only entries with FIELD=PATTERN (reason, source, key, command; `*` ends a prefix),
        /// age>DURATION, age<DURATION, or at=PARTITION:OFFSET[,...] (positions `dlq list --json` shows).
        #[arg(long, value_name = "CONDITION")]
        filter: Vec<String>,
    },
}

/// `redis-retry topics ...`
#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create the main, retry-tier and dead-letter topics where missing.
    Ensure {
        /// Kafka settings.
        #[command(flatten)]
        kafka: KafkaFlags,
    },
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

fn as_map<S: serde::Serializer>(pairs: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    pairs.iter().cloned().collect::<BTreeMap<_, _>>().serialize(s)
}

/// The command-line layer of the settings: only what was given.
#[derive(Serialize)]
struct FlagLayer<'a> {
    #[serde(flatten)]
    log: &'a LogFlags,
    #[serde(flatten)]
    kafka: Option<&'a KafkaFlags>,
    #[serde(flatten)]
    consume: Option<&'a ConsumeFlags>,
    /// Read from `--signing-key-file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    signing_key: Option<String>,
    /// Read from `--console-token-file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    console_token: Option<String>,
}

impl Cli {
    fn flag_layer(&self) -> FlagLayer<'_> {
        let (kafka, consume) = match &self.command {
            Command::Consume { kafka, consume } | Command::Config { kafka, consume } => {
                (Some(kafka), Some(consume))
            }
            Command::Enqueue { kafka }
            | Command::Topics { action: TopicsCommand::Ensure { kafka } }
            | Command::Dlq { action: DlqCommand::List { kafka, .. } }
            | Command::Dlq { action: DlqCommand::Replay { kafka, .. } }
            | Command::Dlq { action: DlqCommand::Purge { kafka, .. } } => (Some(kafka), None),
        };
        FlagLayer { log: &self.log, kafka, consume, signing_key: None, console_token: None }
    }
}

/// The key in `--signing-key-file`, if given.
fn signing_key_from_file(layer: &FlagLayer<'_>) -> Result<Option<String>, SetupError> {
    let path = layer.kafka.and_then(|k| k.signing_key_file.as_deref());
    secret_from_file("--signing-key-file", path)
}

/// The token in `--console-token-file`, if given.
fn console_token_from_file(layer: &FlagLayer<'_>) -> Result<Option<String>, SetupError> {
    secret_from_file("--console-token-file", layer.consume.and_then(|c| c.console_token_file.as_deref()))
}

/// A secret kept in a file so that it never shows on a command line; the error names the
/// flag and the path, never the contents.
fn secret_from_file(flag: &str, path: Option<&std::path::Path>) -> Result<Option<String>, SetupError> {
    let Some(path) = path else { return Ok(None) };
    let secret = std::fs::read_to_string(path)
        .map_err(|e| SetupError::Config(format!("{flag}: cannot read {}: {e}", path.display())))?;
    Ok(Some(secret.trim_end_matches(['\n', '\r']).to_string()))
}

/// Runs the command line; the binary's `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut layer = cli.flag_layer();
    layer.signing_key = match signing_key_from_file(&layer) {
        Ok(key) => key,
        Err(e) => return config_error(&e),
    };
    layer.console_token = match console_token_from_file(&layer) {
        Ok(token) => token,
        Err(e) => return config_error(&e),
    };
    let settings = match Settings::resolve(cli.config.as_deref(), &layer) {
        Ok(s) => s,
        Err(e) => return config_error(&e),
    };
    if let Err(msg) = init_logging(settings.log_format, &settings.log_level) {
        return config_error(&SetupError::Config(format!("log_level: {msg}")));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("redis-retry: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Consume { .. } => consume(&settings).await.map(|()| ExitCode::SUCCESS),
            Command::Config { .. } => {
                print!("{}", settings.to_toml_masked());
                Ok(ExitCode::SUCCESS)
            }
            Command::Enqueue { .. } => enqueue(&settings).await,
            Command::Topics { action: TopicsCommand::Ensure { .. } } => ensure_topics(&settings).await,
            Command::Dlq { action } => dlq(&settings, action).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e @ SetupError::Config(_)) => config_error(&e),
        Err(e) => {
            tracing::error!(error = %e, "redis-retry failed");
            eprintln!("redis-retry: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn config_error(e: &SetupError) -> ExitCode {
    eprintln!("redis-retry: {e}");
    ExitCode::from(EXIT_CONFIG)
}

fn init_logging(format: LogFormat, filter: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
    // Colour codes belong on a terminal only: in a file or a collector they are noise, and
    // NO_COLOR (no-color.org) turns them off there too.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.fmt_fields(EscapedFields).try_init(),
    };
    result.map_err(|e| e.to_string())
}

/// Text-log fields with control characters escaped: a task's source, keys or an error text can
/// hold newlines and ANSI escapes, which would otherwise start a forged log line or repaint
/// the operator's terminal.
struct EscapedFields;

impl<'w> tracing_subscriber::fmt::FormatFields<'w> for EscapedFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: tracing_subscriber::fmt::format::Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = EscapingVisitor { writer: &mut writer, result: Ok(()), first: true };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapingVisitor<'a, 'w> {
    writer: &'a mut tracing_subscriber::fmt::format::Writer<'w>,
    result: std::fmt::Result,
    first: bool,
}

impl tracing::field::Visit for EscapingVisitor<'_, '_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        // As the default formatter does: a string field is quoted, the message is not.
        if field.name() == "message" {
            self.write(field, value);
        } else {
            self.write(field, &format!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.write(field, &format!("{value:?}"));
    }
}

impl EscapingVisitor<'_, '_> {
    fn write(&mut self, field: &tracing::field::Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        let sep = if self.first { "" } else { " " };
        self.first = false;
        let value = escape_controls(value);
        self.result = if name == "message" {
            write!(self.writer, "{sep}{value}")
        } else if name.starts_with("log.") {
            // Fields the log-crate bridge adds repeat what the line already shows.
            Ok(())
        } else {
            write!(self.writer, "{sep}{}={value}", name.trim_start_matches("r#"))
        };
    }
}

/// `text` with control characters (newlines, escapes, ...) written as escapes (`\n`,
/// `\u{1b}`), so that it stays on its line and cannot steer a terminal.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// How long `consume` waits for a Redis connection before it counts Redis as unreachable (it
/// then waits for Redis without spending the task's retries).
const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

async fn consume(settings: &Settings) -> Result<(), SetupError> {
    let config = settings.consumer_config()?;
    let target = settings.redis_target()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    if settings.console_token.is_some() && settings.metrics_addr.is_none() {
        tracing::warn!("console_token is set but metrics_addr is not: no console is served");
    }
    let metrics = match settings.metrics_addr {
        Some(addr) => Some(Served {
            listener: crate::exporter::bind(addr).await?,
            metrics: crate::exporter::install_recorder()?,
            console_token: settings.console_token.clone().map(crate::console::Token::new),
        }),
        None => None,
    };
    match target {
        RedisTarget::Single(node) => {
            let client =
                redis::Client::open(*node).map_err(|e| SetupError::Config(format!("redis_url: {e}")))?;
            let manager_config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(REDIS_CONNECT_TIMEOUT))
                .set_response_timeout(Some(settings.redis_response_timeout))
                // Reconnecting to a Redis that refuses is one cheap connect; a long gap between
                // tries would only delay the backlog once Redis is back.
                .set_max_delay(Duration::from_millis(500));
            // The control connection's probes and kills bound their own waits.
            let control_config = manager_config.clone().set_response_timeout(None);
            let connect = || async {
                let redis = client.get_connection_manager_with_config(manager_config.clone()).await?;
                let control = client.get_connection_manager_with_config(control_config.clone()).await?;
                Ok((redis, control))
            };
            match connect_when_reachable(connect, &stopped).await? {
                Some((redis, control)) => run_consumer(config, redis, control, metrics, stopped).await,
                None => Ok(()),
            }
        }
        RedisTarget::Cluster(seeds) => {
            // The cluster client routes each command to the node serving its slot and follows
            // MOVED/ASK redirections itself; the timeouts bound each node's connection and reply.
            let client = redis::cluster::ClusterClient::builder(seeds)
                .connection_timeout(REDIS_CONNECT_TIMEOUT)
                .response_timeout(settings.redis_response_timeout)
                .build()
                .map_err(|e| SetupError::Config(format!("redis_url: with redis_cluster: {e}")))?;
            let connect =
                || async { Ok((client.get_async_connection().await?, client.get_async_connection().await?)) };
            match connect_when_reachable(connect, &stopped).await? {
                Some((redis, control)) => run_consumer(config, redis, control, metrics, stopped).await,
                None => Ok(()),
            }
        }
    }
}

/// Connects, retrying with backoff while Redis is unreachable: it may still be down when the
/// consumer starts, and tasks wait in Kafka meanwhile. `None` when asked to stop first; an error
/// only for what waiting cannot fix (a bad URL, refused credentials).
async fn connect_when_reachable<C, Conn, Stop, Stopped>(
    mut connect: impl FnMut() -> Conn,
    stopped: &Stop,
) -> Result<Option<C>, SetupError>
where
    Conn: std::future::Future<Output = redis::RedisResult<C>>,
    Stop: Fn() -> Stopped,
    Stopped: std::future::Future<Output = ()>,
{
    let mut backoff = Duration::from_millis(200);
    loop {
        let attempt = tokio::select! {
            _ = stopped() => return Ok(None),
            conn = connect() => conn,
        };
        match attempt {
            Ok(conn) => return Ok(Some(conn)),
            Err(e)
                if e.kind() == redis::ErrorKind::InvalidClientConfig
                    || e.kind() == redis::ErrorKind::AuthenticationFailed =>
            {
                return Err(SetupError::Config(format!("redis_url: {e}")));
            }
            Err(e) => {
                tracing::warn!(error = %e, "redis not reachable yet; retrying");
                tokio::select! {
                    _ = stopped() => return Ok(None),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// What `consume --metrics-addr` serves: metrics, `/health` and the console.
struct Served {
    listener: tokio::net::TcpListener,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    console_token: Option<crate::console::Token>,
}

/// Runs the consumer on `redis` (one server or a cluster) until `stopped`, serving metrics,
/// `/health` and the console when asked to.
async fn run_consumer<C, Stop, Stopped>(
    config: ConsumerConfig,
    redis: C,
    control: C,
    served: Option<Served>,
    stopped: Stop,
) -> Result<(), SetupError>
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
    Stop: Fn() -> Stopped,
    Stopped: std::future::Future<Output = ()> + Send + 'static,
{
    let (kafka, group) = (config.kafka.clone(), config.group.clone());
    let consumer = RedisRetryConsumer::new(config, redis)?.with_control_connection(control);
    if let Some(Served { listener, metrics, console_token }) = served {
        let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
        let console = crate::console::Console::new(
            kafka,
            group,
            console_token,
            loopback,
            consumer.health(),
            metrics.clone(),
        )?;
        let server = crate::exporter::serve(listener, metrics, consumer.health(), console, stopped());
        tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, "metrics server stopped");
            }
        });
    }
    consumer.run(stopped()).await
}

async fn enqueue(settings: &Settings) -> Result<ExitCode, SetupError> {
    let producer = RetryProducer::new(&settings.producer_config())?;
    let stdin = std::io::stdin();
    let (mut sent, mut rejected) = (0usize, 0usize);
    let mut pending = Vec::new();
    for (i, line) in stdin.lock().lines().enumerate() {
        let line = line.map_err(|e| SetupError::Runtime(format!("reading standard input: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        match RedisTask::from_json(line.as_bytes()) {
            Ok(task) => {
                let producer = producer.clone();
                pending.push((i + 1, tokio::spawn(async move { producer.publish_and_wait(&task).await })));
            }
            Err(e) => {
                rejected += 1;
                eprintln!("line {}: rejected: {e}", i + 1);
            }
        }
    }
    for (line, send) in pending {
        match send.await {
            Ok(Ok(())) => sent += 1,
            Ok(Err(e)) => {
                rejected += 1;
                eprintln!("line {line}: kafka refused it: {e}");
            }
            Err(e) => {
                rejected += 1;
                eprintln!("line {line}: {e}");
            }
        }
    }
    println!("enqueued {sent}, rejected {rejected}");
    Ok(if rejected == 0 { ExitCode::SUCCESS } else { ExitCode::from(EXIT_FAILURE) })
}

async fn ensure_topics(settings: &Settings) -> Result<ExitCode, SetupError> {
    let producer = RetryProducer::new(&settings.producer_config())?;
    producer.ensure_topics(settings.partitions, settings.replication).await?;
    for t in producer.topics().all() {
        println!("{t}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn dlq(settings: &Settings, action: DlqCommand) -> Result<ExitCode, SetupError> {
    let dlq = Dlq::new(&settings.producer_config(), &settings.group);
    match action {
        DlqCommand::List { limit, json, .. } => {
            let entries = dlq.list(limit).await?;
            let mut out = std::io::stdout().lock();
            if json {
                for e in &entries {
                    let _ = writeln!(out, "{}", entry_json(e));
                }
            } else {
                let _ = writeln!(
                    out,
                    "{}",
                    table_row(["REASON", "SOURCE", "COMMAND", "KEY", "AGE", "ATTEMPTS", "ERROR"])
                );
                for e in &entries {
                    let _ = writeln!(out, "{}", table_row(entry_columns(e)));
                }
                let _ = writeln!(out, "{} dead letter(s)", entries.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Replay { filter, .. } => {
            let filter = Filter::parse(&filter).map_err(SetupError::Config)?;
            let (report, finish) = progress("replaying");
            let outcome = dlq.replay(&filter, report).await?;
            finish();
            println!("replayed {}, kept {}", outcome.chosen, outcome.kept);
            Ok(report_missing(&outcome))
        }
        DlqCommand::Purge { filter, .. } => {
            let filter = Filter::parse(&filter).map_err(SetupError::Config)?;
            let (report, finish) = progress("purging");
            let outcome = dlq.purge(&filter, report).await?;
            finish();
            println!("purged {}, kept {}", outcome.chosen, outcome.kept);
            Ok(report_missing(&outcome))
        }
    }
}

/// Positions the operator named that were gone (acted on meanwhile) fail the command: what
/// they asked for was not done, though nothing else was done in its place.
fn report_missing(outcome: &redis_retry_runtime::dlq::Outcome) -> ExitCode {
    if outcome.missing.is_empty() {
        return ExitCode::SUCCESS;
    }
    let gone: Vec<String> = outcome.missing.iter().map(|(p, o)| format!("{p}:{o}")).collect();
    eprintln!(
        "not in the dead-letter set any more (acted on meanwhile; nothing done to them): {}",
        gone.join(",")
    );
    ExitCode::from(EXIT_FAILURE)
}

fn entry_columns(e: &DlqEntry) -> [String; 7] {
    let key = e.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_else(|| "-".into());
    let age = e.age().map(|a| humantime::format_duration(Duration::from_secs(a.as_secs())).to_string());
    [
        escape_controls(&e.reason).into_owned(),
        escape_controls(e.source()).into_owned(),
        escape_controls(&e.command()).into_owned(),
        escape_controls(&key).into_owned(),
        age.unwrap_or_else(|| "-".into()),
        e.attempts().to_string(),
        // The last column: nothing after it to keep aligned, so it is never cut.
        escape_controls(&e.error).into_owned(),
    ]
}

fn entry_json(e: &DlqEntry) -> String {
    // JSON escapes control characters itself, and never cuts a field.
    let [reason, source, command, key, age, _, _] = entry_columns(e);
    serde_json::json!({
        "partition": e.partition, "offset": e.offset, "reason": reason, "source": source,
        "command": command, "key": key, "age": age, "attempts": e.attempts(),
        "error": e.error, "task_id": e.task.as_ref().map(|t| t.id.clone()).unwrap_or_default(),
    })
    .to_string()
}

fn table_row<S: AsRef<str>>(cols: [S; 7]) -> String {
    let widths = [16, 32, 40, 32, 12, 8, 0];
    cols.iter()
        .zip(widths)
        .map(|(c, w)| format!("{:<w$}", c.as_ref(), w = w))
        .collect::<Vec<_>>()
        .join(" ")
        .trim_end()
        .to_string()
}

/// A progress reporter: a bar on a terminal, a plain line every 10 % otherwise.
fn progress(what: &'static str) -> (impl FnMut(usize, usize), impl FnOnce()) {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_message(what);
        bar
    });
    let finisher = bar.clone();
    let mut last_decile = usize::MAX;
    let report = move |done: usize, total: usize| match &bar {
        Some(bar) => {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
        None => {
            let decile = done * 10 / total.max(1);
            if decile != last_decile || done == total {
                last_decile = decile;
                eprintln!("{what}: {done}/{total}");
            }
        }
    };
    let finish = move || {
        if let Some(bar) = finisher {
            bar.finish_and_clear();
        }
    };
    (report, finish)
}
