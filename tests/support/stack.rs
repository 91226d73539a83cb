//! A whole redis-retry setup for one test: Redis, a broker, the topics, a producer and, on
//! demand, a consumer running in the test's runtime.

use std::future::Future;
use std::time::{Duration, Instant};

use redis_retry::{ConsumerConfig, ProducerConfig, RedisRetryConsumer, RetryProducer, SetupError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{unique, KafkaBroker, RedisServer};

/// tansu 0.6 answers a fetch that starts inside a record batch with nothing from that batch,
/// so a consumer resuming from a committed offset in the middle of a batch would skip the rest
/// of it (Kafka returns the whole batch and the client skips what it has seen). Producers of
/// these tests write one message per batch, so every committed offset starts a batch.
pub const ONE_MESSAGE_BATCHES: (&str, &str) = ("batch.num.messages", "1");

/// `config` writing one message per batch (see [`ONE_MESSAGE_BATCHES`]).
pub fn one_message_batches(config: ProducerConfig) -> ProducerConfig {
    config.property(ONE_MESSAGE_BATCHES.0, ONE_MESSAGE_BATCHES.1)
}

/// Redis + broker + topics + producer.
pub struct Stack {
    pub redis: RedisServer,
    pub kafka: KafkaBroker,
    pub topic: String,
    pub producer: RetryProducer,
    consumer: Option<RunningConsumer>,
}

/// The stop signal and the task of a consumer running in the background.
type RunningConsumer = (oneshot::Sender<()>, JoinHandle<Result<(), SetupError>>);

impl Stack {
    /// Starts Redis and a broker, creates the topics (main, tiers, DLQ) and a producer.
    pub async fn start() -> Stack {
        super::init_tracing();
        let redis = RedisServer::start();
        let kafka = KafkaBroker::start();
        let topic = unique("tasks");
        let producer =
            RetryProducer::new(&one_message_batches(ProducerConfig::new(kafka.bootstrap()).topic(&topic)))
                .expect("producer");
        producer.ensure_topics(1, 1).await.expect("create topics");
        Stack { redis, kafka, topic, producer, consumer: None }
    }

    /// A consumer configuration for this stack with short retry delays.
    pub fn consumer_config(&self) -> ConsumerConfig {
        ConsumerConfig::new(self.kafka.bootstrap())
            .topic(&self.topic)
            .group(unique("group"))
            .retry_base_delay(Duration::from_millis(300))
            .retry_max_delay(Duration::from_secs(2))
            .partitions(1)
            .property(ONE_MESSAGE_BATCHES.0, ONE_MESSAGE_BATCHES.1)
    }

    /// Runs a consumer with `config` against `redis_url` until [`stop_consumer`](Self::stop_consumer).
    pub async fn spawn_consumer(&mut self, config: ConsumerConfig, redis_url: &str) {
        let client = redis::Client::open(redis_url).expect("redis url");
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        let conn =
            client.get_connection_manager_with_config(manager_config).await.expect("connection manager");
        self.spawn_consumer_on(config, conn);
    }

    /// Runs a consumer with `config` that applies tasks through `conn`.
    pub fn spawn_consumer_on<C>(&mut self, config: ConsumerConfig, conn: C)
    where
        C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
    {
        let consumer = RedisRetryConsumer::new(config, conn).expect("consumer");
        let (tx, rx) = oneshot::channel();
        let handle = tokio::spawn(consumer.run(async move {
            let _ = rx.await;
        }));
        self.consumer = Some((tx, handle));
    }

    /// Stops the consumer started by [`spawn_consumer`](Self::spawn_consumer) and returns how it ended.
    pub async fn stop_consumer(&mut self) -> Result<(), SetupError> {
        let (tx, handle) = self.consumer.take().expect("no consumer running");
        let _ = tx.send(());
        tokio::time::timeout(Duration::from_secs(30), handle)
            .await
            .expect("consumer did not stop within 30 s")
            .expect("consumer task panicked")
    }

    /// Every task on the main topic (at most `n`, waiting at most `wait`).
    pub async fn tasks(&self, n: usize, wait: Duration) -> Vec<redis_retry::RedisTask> {
        self.kafka
            .read_messages(&self.topic, n, wait)
            .await
            .iter()
            .map(|m| {
                let payload = rdkafka::Message::payload(m).unwrap_or_default();
                redis_retry::RedisTask::from_json(payload).expect("a valid task on the main topic")
            })
            .collect()
    }

    /// A connection to the test's Redis.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        self.redis.conn().await
    }
}

/// A connection manager to Redis through `proxy`, with `timeout` for connecting and for each
/// reply, so that a cut-off shows at once.
pub async fn manager_through(proxy: &super::Proxy, timeout: Duration) -> redis::aio::ConnectionManager {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1);
    redis::Client::open(proxy.url())
        .expect("proxy url")
        .get_connection_manager_with_config(config)
        .await
        .expect("connection manager through the proxy")
}

/// Makes Redis answer every write with `NOREPLICAS` (it demands a replica it does not have),
/// or stop doing so: a Redis that is reachable but refuses writes for a while.
pub async fn refuse_writes(conn: &mut redis::aio::MultiplexedConnection, refuse: bool) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("min-replicas-to-write")
        .arg(u8::from(refuse))
        .query_async(conn)
        .await
        .expect("CONFIG SET min-replicas-to-write");
}

/// Polls `check` every 50 ms until it returns true; panics with `what` after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every key of the current database with its type, value and whether it has a TTL, sorted:
/// two databases with equal snapshots hold the same data.
pub async fn snapshot(conn: &mut redis::aio::MultiplexedConnection) -> Vec<(String, String, String, bool)> {
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(conn).await.expect("KEYS");
    keys.sort();
    let mut out = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query_async(conn).await.expect("TYPE");
        let value = match kind.as_str() {
            "string" => {
                let v: Vec<u8> = redis::cmd("GET").arg(&key).query_async(conn).await.expect("GET");
                format!("{v:?}")
            }
            "hash" => {
                let mut v: Vec<(Vec<u8>, Vec<u8>)> =
                    redis::cmd("HGETALL").arg(&key).query_async(conn).await.expect("HGETALL");
                v.sort();
                format!("{v:?}")
            }
            "set" => {
                let mut v: Vec<Vec<u8>> =
                    redis::cmd("SMEMBERS").arg(&key).query_async(conn).await.expect("SMEMBERS");
                v.sort();
                format!("{v:?}")
            }
            "list" => {
                let v: Vec<Vec<u8>> =
                    redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).query_async(conn).await.expect("LRANGE");
                format!("{v:?}")
            }
            "zset" => {
                let v: Vec<(Vec<u8>, f64)> = redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query_async(conn)
                    .await
                    .expect("ZRANGE");
                format!("{v:?}")
            }
            other => other.to_string(),
        };
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(conn).await.expect("PTTL");
        out.push((key, kind, value, ttl > 0));
    }
    out
}
