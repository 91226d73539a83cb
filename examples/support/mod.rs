//! What the examples share: a Redis (yours from `REDIS_URL`, or a `redis-server` started
//! here), a Kafka (yours from `KAFKA_BROKERS`, or librdkafka's in-process **demo** broker), and
//! a switch in front of Redis that cuts it off and brings it back.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Redis, Kafka and the switch.
pub struct Demo {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// Redis as the application sees it: through the switch.
    pub app_redis_url: String,
    /// Redis directly, for the consumer and for checking results.
    pub redis_url: String,
    /// Cuts the application off Redis.
    pub switch: Switch,
    _mock: Option<MockCluster<'static, DefaultProducerContext>>,
    _redis: Option<ChildGuard>,
}

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Demo {
    /// Sets everything up, saying what it uses.
    pub async fn start() -> Result<Demo, Box<dyn std::error::Error>> {
        let (redis_url, redis_addr, child) = match std::env::var("REDIS_URL") {
            Ok(url) if !url.is_empty() => {
                let info = redis::Client::open(url.as_str())?.get_connection_info().clone();
                let addr = match info.addr() {
                    redis::ConnectionAddr::Tcp(host, port) => tokio::net::lookup_host((host.as_str(), *port))
                        .await?
                        .next()
                        .ok_or("REDIS_URL host does not resolve")?,
                    _ => {
                        return Err(
                            "the examples need a plain redis:// URL to put the switch in front of".into()
                        )
                    }
                };
                println!("redis:  {url} (from REDIS_URL)");
                (url, addr, None)
            }
            _ => match start_redis_server() {
                Ok((child, port)) => {
                    let url = format!("redis://127.0.0.1:{port}/");
                    println!("redis:  redis-server started for this demo on port {port}");
                    (url, SocketAddr::from(([127, 0, 0, 1], port)), Some(ChildGuard(child)))
                }
                // No redis-server binary: a Redis already listening on the standard port will do.
                Err(e) if std::net::TcpStream::connect(("127.0.0.1", 6379)).is_ok() => {
                    println!("redis:  {e}; using the Redis on 127.0.0.1:6379 instead");
                    ("redis://127.0.0.1:6379/".to_string(), SocketAddr::from(([127, 0, 0, 1], 6379)), None)
                }
                Err(e) => return Err(e),
            },
        };
        let (brokers, mock) = match std::env::var("KAFKA_BROKERS") {
            Ok(b) if !b.is_empty() => {
                println!("kafka:  {b} (from KAFKA_BROKERS)");
                (b, None)
            }
            _ => {
                let mock = MockCluster::new(1)?;
                let brokers = mock.bootstrap_servers();
                println!("kafka:  librdkafka's in-process DEMO broker at {brokers} (set KAFKA_BROKERS for a real one)");
                (brokers, Some(mock))
            }
        };
        let switch = Switch::start(redis_addr).await?;
        let app_redis_url = format!("redis://{}/", switch.addr);
        Ok(Demo { brokers, app_redis_url, redis_url, switch, _mock: mock, _redis: child })
    }

    /// A unique topic name for this run, so runs against a shared broker do not meet.
    pub fn topic(&self, name: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!("{name}-{}-{nanos}", std::process::id())
    }

    /// Creates the main, retry-tier and dead-letter topics of `topics` (the demo broker through
    /// its own interface: it does not serve the admin API).
    pub async fn create_topics(
        &self,
        topics: &redis_retry::Topics,
    ) -> Result<(), Box<dyn std::error::Error>> {
        self.create_topics_with_partitions(topics, 1).await
    }

    /// Like [`create_topics`](Self::create_topics), with `partitions` partitions a topic.
    pub async fn create_topics_with_partitions(
        &self,
        topics: &redis_retry::Topics,
        partitions: i32,
    ) -> Result<(), Box<dyn std::error::Error>> {
        match &self._mock {
            Some(mock) => {
                for t in topics.all() {
                    mock.create_topic(t, partitions, 1)?;
                }
            }
            None => {
                let mut client = rdkafka::ClientConfig::new();
                client.set("bootstrap.servers", &self.brokers);
                redis_retry::producer::ensure_topics(&client, &topics.all(), partitions, 1).await?;
            }
        }
        Ok(())
    }

    /// The process id of the `redis-server` started for the demo, if it started one: a
    /// benchmark reads its CPU time to count Redis's share of the work.
    pub fn redis_pid(&self) -> Option<u32> {
        self._redis.as_ref().map(|child| child.0.id())
    }

    /// Which broker the demo uses, for a report's heading.
    pub fn broker_label(&self) -> String {
        match &self._mock {
            Some(_) => "librdkafka mock cluster (in-process)".to_string(),
            None => format!("KAFKA_BROKERS={}", self.brokers),
        }
    }

    /// A plain `StreamConsumer` of `topic` in the group `<topic>-group`, reading from the start
    /// and committing only when told: the baselines the benchmarks hold the consumer against.
    pub fn plain_consumer(
        &self,
        topic: &str,
    ) -> rdkafka::error::KafkaResult<rdkafka::consumer::StreamConsumer> {
        use rdkafka::consumer::Consumer;
        let consumer: rdkafka::consumer::StreamConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", format!("{topic}-group"))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            // As `RedisRetryConsumer` sets it, so both wait as long for an empty fetch.
            .set("fetch.wait.max.ms", "100")
            .create()?;
        consumer.subscribe(&[topic])?;
        Ok(consumer)
    }

    /// A second switch in front of the same Redis, to cut one client off while another's
    /// switch stays as it is.
    pub async fn another_switch(&self) -> Result<Switch, Box<dyn std::error::Error>> {
        let info = redis::Client::open(self.redis_url.as_str())?.get_connection_info().clone();
        let target = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => tokio::net::lookup_host((host.as_str(), *port))
                .await?
                .next()
                .ok_or("the Redis host does not resolve")?,
            _ => return Err("a switch needs a plain redis:// URL".into()),
        };
        Ok(Switch::start(target).await?)
    }

    /// A connection straight to Redis.
    pub async fn redis(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        redis::Client::open(self.redis_url.as_str())?.get_multiplexed_async_connection().await
    }

    /// The application's connection manager, through the switch, with short timeouts so a
    /// cut-off shows at once.
    pub async fn app_connection(&self) -> redis::RedisResult<redis::aio::ConnectionManager> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(1);
        redis::Client::open(self.app_redis_url.as_str())?.get_connection_manager_with_config(config).await
    }
}

fn start_redis_server() -> Result<(Child, u16), Box<dyn std::error::Error>> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start redis-server ({e}); install it or set REDIS_URL"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("redis-server did not start within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((child, port))
}

/// A TCP switch in front of Redis. Off: nothing listens (connections are refused) and open
/// connections are cut. On: traffic passes.
pub struct Switch {
    /// Where the application connects.
    pub addr: SocketAddr,
    on: watch::Sender<bool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    task: JoinHandle<()>,
}

impl Switch {
    async fn start(target: SocketAddr) -> std::io::Result<Switch> {
        let first = TcpListener::bind("127.0.0.1:0").await?;
        let addr = first.local_addr()?;
        let (on, mut state) = watch::channel(true);
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let conns = connections.clone();
        let task = tokio::spawn(async move {
            let mut listener = Some(first);
            loop {
                match listener.take() {
                    Some(l) => {
                        tokio::select! {
                            accepted = l.accept() => {
                                if let Ok((client, _)) = accepted {
                                    // Decided under the lock `off` holds while it cuts: a client
                                    // that reconnected just as the switch went off is dropped,
                                    // not let through behind its back.
                                    let mut open = conns.lock().unwrap_or_else(|e| e.into_inner());
                                    if *state.borrow() {
                                        open.push(tokio::spawn(forward(client, target)));
                                    }
                                }
                                listener = Some(l);
                            }
                            _ = state.changed() => {
                                listener = if *state.borrow() { Some(l) } else { None };
                            }
                        }
                    }
                    None => {
                        if state.changed().await.is_err() {
                            return;
                        }
                        if *state.borrow() {
                            listener = TcpListener::bind(addr).await.ok();
                        }
                    }
                }
            }
        });
        Ok(Switch { addr, on, connections, task })
    }

    /// Cuts Redis off: refuses new connections and drops the open ones.
    pub fn off(&self) {
        let mut open = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self.on.send(false);
        for c in open.drain(..) {
            c.abort();
        }
    }

    /// Lets traffic through again.
    pub fn on(&self) {
        let _ = self.on.send(true);
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.task.abort();
        self.off();
    }
}

async fn forward(mut client: TcpStream, target: SocketAddr) {
    if let Ok(mut server) = TcpStream::connect(target).await {
        // Without it a pipelined request of some tens of KiB waits about 40 ms for Nagle's
        // algorithm to meet a delayed ACK: a batching consumer behind the switch would be
        // capped near 20,000 tasks/s by the switch, not by itself.
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    }
}

/// Polls `check` until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
