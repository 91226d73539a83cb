//! Tests of the integration-test harness itself, against real servers.

mod support;

use std::future::Future;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, AsyncConnectionConfig};
use support::{KafkaBroker, Proxy, ProxyMode, RedisServer};

/// Every await in these tests goes through this so that a harness bug shows
/// up as a failed test, not a hung one.
async fn bounded<F: Future>(what: &str, limit: Duration, future: F) -> F::Output {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
}

const SHORT: Duration = Duration::from_secs(5);

/// A connection without the crate's 500 ms response timeout, for requests
/// the test expects to be slow or blocked on purpose.
async fn patient_conn(url: &str) -> MultiplexedConnection {
    let config = AsyncConnectionConfig::new().set_connection_timeout(Some(SHORT)).set_response_timeout(None);
    let client = redis::Client::open(url).expect("valid redis URL");
    bounded("connect", SHORT, client.get_multiplexed_async_connection_with_config(&config))
        .await
        .unwrap_or_else(|err| panic!("connect to {url}: {err}"))
}

async fn ping(conn: &mut MultiplexedConnection) -> redis::RedisResult<String> {
    redis::cmd("PING").query_async(conn).await
}

#[tokio::test]
async fn redis_set_get_then_stop_refuses_and_restart_serves_same_port_empty() {
    support::init_tracing();
    let mut redis = RedisServer::start();
    let port = redis.port();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}/"));
    assert_eq!(redis.addr().port(), port);

    let mut conn = bounded("connect", SHORT, redis.conn()).await;
    let () = bounded("SET", SHORT, conn.set("greeting", "hello")).await.expect("SET");
    let value: String = bounded("GET", SHORT, conn.get("greeting")).await.expect("GET");
    assert_eq!(value, "hello");

    redis.stop();
    let err = bounded("connect to stopped redis", SHORT, redis.client().get_multiplexed_async_connection())
        .await
        .expect_err("connecting to a stopped server must fail");
    assert!(err.is_connection_refusal(), "expected a refusal, got {err:?}");

    redis.restart();
    assert_eq!(redis.port(), port, "restart must keep the port");
    let mut conn = bounded("reconnect", SHORT, redis.conn()).await;
    let gone: Option<String> = bounded("GET", SHORT, conn.get("greeting")).await.expect("GET after restart");
    assert_eq!(gone, None, "nothing is persisted across a restart");
    let () = bounded("SET", SHORT, conn.set("greeting", "again")).await.expect("SET after restart");
}

#[test]
fn dropping_servers_and_proxy_frees_their_ports() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(redis.addr());
    let broker = KafkaBroker::start();
    let mut addrs = vec![redis.addr(), proxy.addr()];
    if broker.is_managed() {
        addrs.push(broker.bootstrap().parse().expect("bootstrap is host:port"));
    }
    drop(broker);
    drop(proxy);
    drop(redis);
    for addr in addrs {
        let err = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            .expect_err("nothing may listen after drop");
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{addr}: {err}");
    }
}

fn idempotent_producer(broker: &KafkaBroker) -> FutureProducer {
    broker
        .client_config()
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "10000")
        .create()
        .expect("create idempotent producer")
}

fn header_value<'a>(headers: &'a OwnedHeaders, key: &str) -> Option<&'a [u8]> {
    headers.iter().find(|h| h.key == key).and_then(|h| h.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_round_trips_keys_headers_and_resumes_group_from_committed_offset() {
    support::init_tracing();
    let broker = KafkaBroker::start();
    let topic = support::unique("harness-topic");
    bounded("create_topics", Duration::from_secs(20), broker.create_topics(&[&topic], 1)).await;
    // Creating it again is a no-op, as the harness promises.
    bounded("create_topics again", Duration::from_secs(20), broker.create_topics(&[&topic], 1)).await;

    let producer = idempotent_producer(&broker);
    for i in 0..3 {
        let key = format!("key-{i}");
        let payload = format!("payload-{i}");
        let attempt = i.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header { key: "attempt", value: Some(attempt.as_bytes()) })
            .insert(Header { key: "empty", value: None::<&[u8]> });
        let record = FutureRecord::to(&topic).key(&key).payload(&payload).headers(headers);
        let sent =
            bounded("produce", Duration::from_secs(15), producer.send(record, Duration::from_secs(10))).await;
        let delivery = sent.unwrap_or_else(|(err, _)| panic!("producing message {i}: {err}"));
        assert_eq!(delivery.offset, i64::from(i), "offsets are dense from 0");
    }
    bounded("plain produce", Duration::from_secs(15), broker.produce(&topic, None, b"no-key")).await;

    let messages = broker.read_messages(&topic, 4, Duration::from_secs(15)).await;
    assert_eq!(messages.len(), 4, "read {messages:?}");
    for (i, message) in messages.iter().take(3).enumerate() {
        assert_eq!(message.offset(), i as i64);
        assert_eq!(message.key(), Some(format!("key-{i}").as_bytes()));
        assert_eq!(message.payload(), Some(format!("payload-{i}").as_bytes()));
        let headers = message.headers().expect("headers survive the broker");
        assert_eq!(headers.count(), 2);
        assert_eq!(header_value(headers, "attempt"), Some(i.to_string().as_bytes()));
        assert!(headers.iter().any(|h| h.key == "empty" && h.value.is_none()));
    }
    assert_eq!(messages[3].key(), None);
    assert_eq!(messages[3].payload(), Some(&b"no-key"[..]));

    // A group member commits after the second message; the next member of
    // the same group must start at the third.
    let group = support::unique("harness-group");
    {
        let consumer = broker.consumer(&group);
        consumer.subscribe(&[&topic]).expect("subscribe");
        let mut stream = consumer.stream();
        let first = bounded("first message", Duration::from_secs(20), stream.next())
            .await
            .expect("stream ended")
            .expect("consume");
        assert_eq!(first.offset(), 0);
        let second =
            bounded("second message", SHORT, stream.next()).await.expect("stream ended").expect("consume");
        assert_eq!(second.offset(), 1);
        consumer.commit_message(&second, CommitMode::Sync).expect("commit");
        drop(stream);
        let committed = consumer.committed(Duration::from_secs(5)).expect("read committed offsets");
        let offset = committed.find_partition(&topic, 0).expect("partition 0 committed").offset();
        assert_eq!(offset, rdkafka::Offset::Offset(2));
    }
    let consumer = broker.consumer(&group);
    consumer.subscribe(&[&topic]).expect("subscribe again");
    let resumed = bounded("resumed message", Duration::from_secs(20), consumer.recv())
        .await
        .expect("consume after rejoin");
    assert_eq!(resumed.offset(), 2);
    assert_eq!(resumed.key(), Some(&b"key-2"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_keeps_port_and_forgets_topics() {
    let mut broker = KafkaBroker::start();
    if !broker.is_managed() {
        eprintln!("skipped: the broker from KAFKA_BROKERS cannot be restarted");
        return;
    }
    let bootstrap = broker.bootstrap();
    let topic = support::unique("harness-restart");
    bounded("create", Duration::from_secs(20), broker.create_topics(&[&topic], 2)).await;
    bounded("produce", Duration::from_secs(15), broker.produce(&topic, Some(b"k"), b"v")).await;

    broker.restart();
    assert_eq!(broker.bootstrap(), bootstrap);
    let read = broker.read_messages(&topic, 1, Duration::from_millis(1500)).await;
    assert!(read.is_empty(), "in-memory storage must start empty: {read:?}");
    bounded("create", Duration::from_secs(20), broker.create_topics(&[&topic], 2)).await;
    bounded("produce", Duration::from_secs(15), broker.produce(&topic, Some(b"k"), b"v2")).await;
    let read = broker.read_messages(&topic, 1, Duration::from_secs(10)).await;
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].payload(), Some(&b"v2"[..]));
}

#[tokio::test]
async fn proxy_forwards_cut_fails_in_flight_and_refuses_then_restore_reconnects() {
    support::init_tracing();
    let redis = RedisServer::start();
    let proxy = Proxy::start(redis.addr());
    assert_eq!(proxy.url(), format!("redis://127.0.0.1:{}/", proxy.port()));

    let mut through_proxy = patient_conn(&proxy.url()).await;
    let () = bounded("SET", SHORT, through_proxy.set("via", "proxy")).await.expect("SET through the proxy");
    let mut direct = bounded("direct connect", SHORT, redis.conn()).await;
    let value: String = bounded("GET", SHORT, direct.get("via")).await.expect("GET directly");
    assert_eq!(value, "proxy");
    assert_eq!(proxy.connections(), 1);

    // BLPOP parks the request on the server, so it is certainly in flight
    // when the connection is cut.
    let mut blocked_conn = through_proxy.clone();
    let in_flight = tokio::spawn(async move {
        let popped: redis::RedisResult<Option<(String, String)>> =
            blocked_conn.blpop("never-pushed", 10.0).await;
        popped
    });
    bounded("BLPOP reaching the server", SHORT, async {
        loop {
            let info: String =
                redis::cmd("INFO").arg("clients").query_async(&mut direct).await.expect("INFO clients");
            if info.contains("blocked_clients:1") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    let cut_at = Instant::now();
    proxy.cut();
    assert_eq!(proxy.connections(), 0);
    let failed = bounded("in-flight BLPOP failing", SHORT, in_flight).await.expect("BLPOP task");
    let err = failed.expect_err("a cut connection cannot answer");
    assert!(
        cut_at.elapsed() < Duration::from_secs(2),
        "the cut must fail the request at once, not at its 10 s block timeout"
    );
    assert!(!err.is_timeout(), "expected a connection error, got {err:?}");

    let refused = bounded(
        "connect while cut",
        SHORT,
        redis::Client::open(proxy.url()).expect("valid URL").get_multiplexed_async_connection(),
    )
    .await
    .expect_err("the proxy is cut");
    assert!(refused.is_connection_refusal(), "got {refused:?}");

    proxy.restore();
    let mut fresh = patient_conn(&proxy.url()).await;
    let value: String =
        bounded("GET after restore", SHORT, fresh.get("via")).await.expect("GET after restore");
    assert_eq!(value, "proxy", "the server itself was never touched");
}

/// Plain threads and std sockets: the proxy needs no runtime from the test,
/// and raw reads show the RST that a protocol client would blur into
/// "connection closed".
#[test]
fn proxy_reset_all_sends_rst_to_both_sides() {
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let proxy = Proxy::start(upstream.local_addr().expect("upstream address"));
    let mut client = TcpStream::connect(proxy.addr()).expect("connect through the proxy");
    client.write_all(b"hello").expect("write");

    upstream.set_nonblocking(true).expect("non-blocking accept");
    let deadline = Instant::now() + SHORT;
    let mut server = loop {
        match upstream.accept() {
            Ok((server, _)) => break server,
            Err(err) if err.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(err) => panic!("the proxy never connected upstream: {err}"),
        }
    };
    server.set_nonblocking(false).expect("blocking reads");
    for stream in [&client, &server] {
        stream.set_read_timeout(Some(SHORT)).expect("read timeout");
    }
    let mut hello = [0u8; 5];
    server.read_exact(&mut hello).expect("forwarded bytes");
    assert_eq!(&hello, b"hello");
    assert_eq!(proxy.connections(), 1);

    proxy.reset_all();
    assert_eq!(proxy.connections(), 0);
    for (side, stream) in [("client", &mut client), ("upstream", &mut server)] {
        let err = stream.read(&mut hello).expect_err("a reset socket cannot be read");
        assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{side}: {err}");
    }
}

#[tokio::test]
async fn proxy_blackhole_times_out_requests_and_restore_resumes_stalled_connection() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(redis.addr());
    let mut conn = patient_conn(&proxy.url()).await;
    assert_eq!(ping(&mut conn).await.expect("PING"), "PONG");

    proxy.set_mode(ProxyMode::Blackhole);
    let stalled = tokio::time::timeout(Duration::from_millis(300), ping(&mut conn)).await;
    assert!(stalled.is_err(), "a blackholed request must not answer: {stalled:?}");

    // A new connection is accepted but never answered.
    let config = AsyncConnectionConfig::new().set_connection_timeout(Some(Duration::from_millis(300)));
    let new_conn = bounded(
        "connect while blackholed",
        SHORT,
        redis::Client::open(proxy.url())
            .expect("valid URL")
            .get_multiplexed_async_connection_with_config(&config),
    )
    .await;
    assert!(new_conn.is_err(), "the handshake cannot complete in a blackhole");

    proxy.restore();
    let pong =
        bounded("PING after restore", SHORT, ping(&mut conn)).await.expect("the stalled connection resumes");
    assert_eq!(pong, "PONG");
}

#[tokio::test]
async fn proxy_delay_adds_latency_each_way() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(redis.addr());
    let delay = Duration::from_millis(200);
    proxy.set_mode(ProxyMode::Delay(delay));
    let mut conn = patient_conn(&proxy.url()).await;

    let started = Instant::now();
    let pong = bounded("delayed PING", SHORT, ping(&mut conn)).await.expect("PING");
    let took = started.elapsed();
    assert_eq!(pong, "PONG");
    // Request and reply are each delayed; only a lower bound is reliable on
    // a shared machine.
    assert!(took >= 2 * delay, "PING took {took:?}, expected at least {:?}", 2 * delay);
}
