//! The `redis-retry` command line: `redis-retry consume` runs the consumer as a service.
//!
//! Settings come from flags, then `REDIS_RETRY_*` environment variables, then defaults. A bad
//! setting ends the program with one message naming it and exit code 2.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::consumer::{ConsumerConfig, RedisRetryConsumer, DEFAULT_GROUP};
use crate::errors::SetupError;
use crate::producer::DEFAULT_TOPIC;

/// Exit code for a bad setting (as clap uses for bad flags).
pub const EXIT_CONFIG: u8 = 2;
/// Exit code for a failure while running.
pub const EXIT_FAILURE: u8 = 1;

/// Top-level command line.
#[derive(Debug, Parser)]
#[command(name = "redis-retry", version, about = "Re-applies failed Redis writes queued on Kafka")]
pub struct Cli {
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "REDIS_RETRY_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log filter, e.g. `info` or `redis_retry_runtime=debug`.
    #[arg(long, global = true, default_value = "info", env = "REDIS_RETRY_LOG")]
    pub log_level: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume the retry topics and apply the tasks to Redis until SIGINT or SIGTERM.
    Consume(ConsumeArgs),
}

/// Settings of `redis-retry consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "REDIS_RETRY_BROKERS", default_value = "localhost:9092")]
    pub brokers: String,
    /// Main topic; retry tiers are `<topic>.retry.<n>`, dead letters `<topic>.dlq`.
    #[arg(long, env = "REDIS_RETRY_TOPIC", default_value = DEFAULT_TOPIC)]
    pub topic: String,
    /// Consumer group.
    #[arg(long, env = "REDIS_RETRY_GROUP", default_value = DEFAULT_GROUP)]
    pub group: String,
    /// Redis to apply tasks to (`redis://`, `rediss://` for TLS, `redis://user:pass@host/db`).
    #[arg(long, env = "REDIS_RETRY_REDIS_URL", default_value = "redis://127.0.0.1:6379/")]
    pub redis_url: String,
    /// Number of retry tiers.
    #[arg(long, env = "REDIS_RETRY_RETRY_TIERS", default_value_t = 3)]
    pub retry_tiers: usize,
    /// Delay before the first retry (doubles per retry, ±20 % jitter), e.g. `1s`, `250ms`.
    #[arg(long, env = "REDIS_RETRY_RETRY_BASE_DELAY", default_value = "1s", value_parser = humantime::parse_duration)]
    pub retry_base_delay: Duration,
    /// Longest delay between retries.
    #[arg(long, env = "REDIS_RETRY_RETRY_MAX_DELAY", default_value = "5m", value_parser = humantime::parse_duration)]
    pub retry_max_delay: Duration,
    /// Tasks older than this are dead-lettered as expired.
    #[arg(long, env = "REDIS_RETRY_MAX_AGE", default_value = "24h", value_parser = humantime::parse_duration)]
    pub max_age: Duration,
    /// Larger messages are dead-lettered as oversize.
    #[arg(long, env = "REDIS_RETRY_MAX_TASK_BYTES", default_value_t = 1024 * 1024)]
    pub max_task_bytes: usize,
    /// Replay Lua tasks (off by default: a script body can do anything).
    #[arg(long, env = "REDIS_RETRY_ALLOW_LUA")]
    pub allow_lua: bool,
    /// Partitions of the topics it creates.
    #[arg(long, env = "REDIS_RETRY_PARTITIONS", default_value_t = 3)]
    pub partitions: i32,
    /// Replication factor of the topics it creates.
    #[arg(long, env = "REDIS_RETRY_REPLICATION", default_value_t = 1)]
    pub replication: i32,
    /// Do not create missing topics.
    #[arg(long, env = "REDIS_RETRY_NO_CREATE_TOPICS")]
    pub no_create_topics: bool,
    /// librdkafka property passed through, `key=value` (repeatable), e.g. `security.protocol=ssl`.
    #[arg(long = "kafka-property", short = 'X', value_name = "KEY=VALUE")]
    pub kafka_properties: Vec<String>,
}

impl ConsumeArgs {
    /// The consumer configuration these settings describe, checked.
    pub fn to_config(&self) -> Result<ConsumerConfig, SetupError> {
        let mut cfg = ConsumerConfig::new(&self.brokers)
            .topic(&self.topic)
            .group(&self.group)
            .retry_tiers(self.retry_tiers)
            .retry_base_delay(self.retry_base_delay)
            .retry_max_delay(self.retry_max_delay)
            .max_age(self.max_age)
            .max_task_bytes(self.max_task_bytes)
            .allow_lua(self.allow_lua)
            .partitions(self.partitions);
        cfg.replication = self.replication;
        cfg.create_topics = !self.no_create_topics;
        for kv in &self.kafka_properties {
            let (k, v) = kv.split_once('=').filter(|(k, _)| !k.trim().is_empty()).ok_or_else(|| {
                SetupError::Config(format!("--kafka-property: expected KEY=VALUE, got `{kv}`"))
            })?;
            cfg = cfg.property(k.trim(), v);
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Runs the command line; the binary's `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(msg) = init_logging(cli.log_format, &cli.log_level) {
        eprintln!("redis-retry: invalid configuration: --log-level: {msg}");
        return ExitCode::from(EXIT_CONFIG);
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
            Command::Consume(args) => consume(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(SetupError::Config(msg)) => {
            tracing::error!(error = %msg, "invalid configuration");
            eprintln!("redis-retry: invalid configuration: {msg}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            tracing::error!(error = %e, "redis-retry failed");
            eprintln!("redis-retry: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn init_logging(format: LogFormat, filter: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    result.map_err(|e| e.to_string())
}

async fn consume(args: ConsumeArgs) -> Result<(), SetupError> {
    let config = args.to_config()?;
    let client = redis::Client::open(args.redis_url.as_str())
        .map_err(|e| SetupError::Config(format!("--redis-url: {e}")))?;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let manager_config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    // Redis may still be down when the consumer starts; tasks wait in Kafka meanwhile.
    let mut backoff = Duration::from_millis(200);
    let redis = loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            conn = client.get_connection_manager_with_config(manager_config.clone()) => match conn {
                Ok(conn) => break conn,
                Err(e) if e.kind() == redis::ErrorKind::InvalidClientConfig
                    || e.kind() == redis::ErrorKind::AuthenticationFailed => {
                    return Err(SetupError::Config(format!("--redis-url: {e}")));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "redis not reachable yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    };
    let consumer = RedisRetryConsumer::new(config, redis)?;
    consumer.run(shutdown).await
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
