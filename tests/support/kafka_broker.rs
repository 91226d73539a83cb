use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::process::{accepts_tcp, find_executable, free_port, loopback, ServerProcess};
use super::unique;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const PORT_ATTEMPTS: usize = 3;
/// Tansu holds every Fetch for fetch.wait.max.ms (half of it when that is
/// 250 ms or more) even when data is waiting, unlike Kafka, which answers as
/// soon as fetch.min.bytes are there. librdkafka's 500 ms default would make
/// each read in a test take a quarter to half a second.
const FETCH_WAIT_MS: &str = "50";
const INSTALL_HINT: &str = "cargo install --locked tansu --version 0.6.0 --features dynostore";

/// A Kafka-protocol broker: the one in KAFKA_BROKERS when that is set (no
/// process is managed; stop/restart panic), otherwise a `tansu` child process
/// with in-memory storage on a free 127.0.0.1 port.
pub struct KafkaBroker {
    bootstrap: String,
    tansu: Option<Tansu>,
}

struct Tansu {
    port: u16,
    /// Unique per broker so readiness can tell our broker from another
    /// test's that won a race for the port.
    cluster_id: String,
    process: ServerProcess,
}

impl KafkaBroker {
    /// Starts (or connects to KAFKA_BROKERS) and waits until metadata can be
    /// fetched.
    pub fn start() -> KafkaBroker {
        if let Some(brokers) = std::env::var("KAFKA_BROKERS").ok().filter(|b| !b.trim().is_empty()) {
            let deadline = Instant::now() + STARTUP_TIMEOUT;
            while !answers_metadata(&brokers, None) {
                assert!(
                    Instant::now() < deadline,
                    "KAFKA_BROKERS={brokers} did not answer a metadata request within {STARTUP_TIMEOUT:?}"
                );
            }
            return KafkaBroker { bootstrap: brokers, tansu: None };
        }

        let program = tansu_program();
        let mut process = ServerProcess::new("tansu", program);
        // Tansu reads its settings from these too; one meant for something
        // else in the test's environment must not reach it.
        for name in ["SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT", "DATA_LAKE"] {
            process.env(name, None);
        }
        // RUST_LOG is usually set to debug the code under test, and tansu's
        // debug output is large; TANSU_RUST_LOG asks for it explicitly.
        process.env("RUST_LOG", std::env::var_os("TANSU_RUST_LOG"));
        let cluster_id = unique("tansu");
        for attempt in 1..=PORT_ATTEMPTS {
            let port = free_port();
            let bootstrap = format!("127.0.0.1:{port}");
            process.spawn(&tansu_args(port, &cluster_id));
            let ready = process.wait_ready(STARTUP_TIMEOUT, || {
                accepts_tcp(loopback(port)) && answers_metadata(&bootstrap, Some(&cluster_id))
            });
            match ready {
                Ok(()) => return KafkaBroker { bootstrap, tansu: Some(Tansu { port, cluster_id, process }) },
                Err(_) if attempt < PORT_ATTEMPTS && process.lost_port_race() => process.kill(),
                Err(reason) => {
                    let message = process.startup_failure(&reason);
                    process.kill();
                    panic!("{message}");
                }
            }
        }
        unreachable!("the last attempt either returns or panics")
    }

    /// False for a broker from KAFKA_BROKERS, which cannot be stopped or
    /// restarted; tests that need that skip themselves.
    pub fn is_managed(&self) -> bool {
        self.tansu.is_some()
    }

    /// "127.0.0.1:PORT" (or KAFKA_BROKERS as given).
    pub fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }

    /// Kills the broker (SIGKILL) and reaps it; the port number is kept for
    /// `restart`.
    pub fn stop(&mut self) {
        self.managed("stop").process.kill();
    }

    /// Starts again on the same port. Storage is in memory, so every topic,
    /// message and committed offset is gone.
    pub fn restart(&mut self) {
        self.stop();
        let bootstrap = self.bootstrap.clone();
        let tansu = self.managed("restart");
        let mut last_failure = String::new();
        // The port cannot change now, so a lost bind race is retried on it.
        for _ in 0..PORT_ATTEMPTS * 10 {
            tansu.process.spawn(&tansu_args(tansu.port, &tansu.cluster_id));
            let (port, cluster_id) = (tansu.port, tansu.cluster_id.clone());
            let ready = tansu.process.wait_ready(STARTUP_TIMEOUT, || {
                accepts_tcp(loopback(port)) && answers_metadata(&bootstrap, Some(&cluster_id))
            });
            match ready {
                Ok(()) => return,
                Err(reason) => {
                    let lost_race = tansu.process.lost_port_race();
                    last_failure = tansu.process.startup_failure(&reason);
                    tansu.process.kill();
                    if !lost_race {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        panic!("restarting tansu on port {}: {last_failure}", tansu.port);
    }

    /// `bootstrap.servers` plus settings that keep harness clients quick to
    /// notice a restarted broker; a base for clients a test configures itself.
    pub fn client_config(&self) -> ClientConfig {
        client_config(&self.bootstrap)
    }

    /// Creates the topics (replication 1). Tansu does not auto-create topics,
    /// so tests create every topic they use. Already-existing is fine.
    pub async fn create_topics(&self, names: &[&str], partitions: i32) {
        let admin: AdminClient<DefaultClientContext> =
            self.client_config().create().expect("create Kafka admin client");
        let topics: Vec<NewTopic> =
            names.iter().map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(1))).collect();
        let options = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(10)))
            .request_timeout(Some(Duration::from_secs(10)));
        let results = tokio::time::timeout(Duration::from_secs(15), admin.create_topics(&topics, &options))
            .await
            .unwrap_or_else(|_| panic!("create_topics {names:?} timed out"))
            .unwrap_or_else(|err| panic!("create_topics {names:?}: {err}"));
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => panic!("creating topic {topic}: {code}"),
            }
        }
    }

    /// A consumer in `group` that starts at the earliest offset and commits
    /// only when told to. Subscribing or assigning is up to the test.
    pub fn consumer(&self, group: &str) -> StreamConsumer {
        self.client_config()
            .set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", FETCH_WAIT_MS)
            .create()
            .unwrap_or_else(|err| panic!("create Kafka consumer in group {group}: {err}"))
    }

    /// Reads messages from every partition of `topic` from the beginning
    /// until `n` have arrived or `timeout` passes, and returns what arrived.
    /// Order is kept within a partition, not across partitions. The consumer
    /// is assigned partitions rather than subscribed, so its (unique) group
    /// never joins or commits and a group rebalance cannot eat the timeout.
    pub async fn read_messages(&self, topic: &str, n: usize, timeout: Duration) -> Vec<OwnedMessage> {
        let consumer: BaseConsumer = self
            .client_config()
            .set("group.id", unique("harness-read"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", FETCH_WAIT_MS)
            .create()
            .expect("create Kafka consumer");
        let topic = topic.to_owned();
        // librdkafka's calls block, so they run off the test's runtime, which
        // may be a single thread that also has to drive the code under test.
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + timeout;
            let mut messages = Vec::new();
            let Some(partitions) = wait_for_partitions(&consumer, &topic, deadline) else {
                return messages;
            };
            let mut assignment = TopicPartitionList::new();
            // An absolute offset skips the ListOffsets round trip that
            // Offset::Beginning needs, which librdkafka first tries before the
            // broker connection is up and then retries only after 500 ms. A
            // broker whose log no longer starts at 0 answers out-of-range and
            // auto.offset.reset=earliest moves to its start.
            for partition in partitions {
                assignment.add_partition_offset(&topic, partition, Offset::Offset(0)).expect("valid offset");
            }
            consumer.assign(&assignment).expect("assign partitions");
            while messages.len() < n {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                // Errors are transient (a broker briefly unreachable) and
                // librdkafka's to retry; the deadline bounds them.
                if let Some(Ok(message)) = consumer.poll(left.min(Duration::from_millis(100))) {
                    messages.push(message.detach());
                }
            }
            messages
        })
        .await
        .expect("read_messages worker panicked")
    }

    /// A producer that waits for acks=all, with delivery bounded to 10 s so a
    /// dead broker fails a send instead of hanging the test.
    pub fn producer(&self) -> FutureProducer {
        self.client_config()
            .set("acks", "all")
            .set("message.timeout.ms", "10000")
            .create()
            .expect("create Kafka producer")
    }

    /// Produces one message and waits for its ack; panics with the error
    /// otherwise.
    pub async fn produce(&self, topic: &str, key: Option<&[u8]>, payload: &[u8]) {
        let producer = self.producer();
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Err((err, _)) = producer.send(record, Duration::from_secs(10)).await {
            panic!("producing to {topic} via {}: {err}", self.bootstrap);
        }
    }

    pub fn log_path(&self) -> Option<&std::path::Path> {
        self.tansu.as_ref().map(|t| t.process.log_path())
    }

    fn managed(&mut self, action: &str) -> &mut Tansu {
        let bootstrap = &self.bootstrap;
        self.tansu.as_mut().unwrap_or_else(|| {
            panic!(
                "cannot {action} the Kafka broker: it comes from KAFKA_BROKERS={bootstrap}, \
                 not from this harness; unset KAFKA_BROKERS to run this test"
            )
        })
    }
}

fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        // librdkafka's default backoff grows to 10 s, longer than a test
        // wants to wait after `restart`.
        .set("reconnect.backoff.max.ms", "500");
    config
}

/// One metadata round trip; with `cluster_id`, also that the answer comes
/// from that cluster.
fn answers_metadata(bootstrap: &str, cluster_id: Option<&str>) -> bool {
    let Ok(consumer) = client_config(bootstrap).create::<BaseConsumer>() else {
        return false;
    };
    let timeout = Duration::from_secs(2);
    if consumer.fetch_metadata(None, timeout).is_err() {
        return false;
    }
    match cluster_id {
        None => true,
        Some(expected) => consumer.client().fetch_cluster_id(timeout).as_deref() == Some(expected),
    }
}

/// The partition ids of `topic` once its metadata lists it (it may be
/// created concurrently), or None at `deadline`.
fn wait_for_partitions(consumer: &BaseConsumer, topic: &str, deadline: Instant) -> Option<Vec<i32>> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        if let Ok(metadata) = consumer.fetch_metadata(Some(topic), left.min(Duration::from_secs(2))) {
            let found = metadata.topics().iter().find(|t| t.name() == topic && t.error().is_none());
            if let Some(found) = found.filter(|t| !t.partitions().is_empty()) {
                return Some(found.partitions().iter().map(|p| p.id()).collect());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tansu_program() -> PathBuf {
    if let Some(explicit) = std::env::var_os("TANSU_BIN") {
        return PathBuf::from(explicit);
    }
    let mut fallbacks = Vec::new();
    if let Some(cargo_home) = std::env::var_os("CARGO_HOME") {
        fallbacks.push(PathBuf::from(cargo_home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        fallbacks.push(PathBuf::from(home).join(".cargo").join("bin"));
    }
    find_executable("tansu", &fallbacks).unwrap_or_else(|| {
        panic!(
            "the `tansu` Kafka broker is not installed (looked in PATH and {fallbacks:?}); \
             install it with `{INSTALL_HINT}`, or set KAFKA_BROKERS to use a running broker"
        )
    })
}

fn tansu_args(port: u16, cluster_id: &str) -> Vec<OsString> {
    let url = format!("tcp://127.0.0.1:{port}");
    [
        "broker",
        "--cluster-id",
        cluster_id,
        "--listener-url",
        &url,
        "--advertised-listener-url",
        &url,
        "--storage-engine",
        "memory://tansu/",
    ]
    .iter()
    .map(OsString::from)
    .collect()
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        if let Some(tansu) = &mut self.tansu {
            tansu.process.kill();
        }
    }
}
