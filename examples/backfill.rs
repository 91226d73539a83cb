//! A read path that backfills the cache (seed §1.1): when the backfill write fails, the
//! request still succeeds from the database, the failure is logged and counted, and nothing is
//! queued — the next read simply tries again.
//!
//! `#[redis_retry(mode = "log", read_path)]` says so; without `read_path`, the attribute on a
//! method that only reads would not compile (reads are never retried).
//!
//! ```sh
//! cargo run --example backfill
//! ```

mod support;

use std::collections::HashMap;

use redis::AsyncCommands;
use redis_retry::{redis_retry, ProducerConfig, RetryConnection, RetryProducer};
use support::Demo;

struct UserRepository {
    db: HashMap<String, String>,
    redis: RetryConnection<redis::aio::ConnectionManager>,
}

impl UserRepository {
    #[redis_retry(source = "UserRepository.GetUserInfo", mode = "log", read_path)]
    async fn get_user_info(&self, user_uuid: &str) -> Result<String, String> {
        let key = format!("user:info:{user_uuid}");
        let mut redis = self.redis.clone();
        if let Ok(Some(hit)) = redis.get::<_, Option<String>>(&key).await {
            return Ok(format!("{hit} (from cache)"));
        }
        let row = self.db.get(user_uuid).cloned().ok_or("no such user")?;
        // Fire and forget: a failed backfill must not fail the read.
        if let Err(e) = redis.set_ex::<_, _, ()>(&key, &row, 600).await {
            println!("   backfill of {key} failed ({e}): logged, not queued");
        }
        Ok(format!("{row} (from database)"))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("warn").with_target(false).without_time().compact().init();
    let demo = Demo::start().await?;
    let topic = demo.topic("backfill");
    let producer_config = ProducerConfig::new(&demo.brokers).topic(&topic);
    demo.create_topics(&producer_config.topics()).await?;
    let producer = RetryProducer::new(&producer_config)?;
    let repo = UserRepository {
        db: HashMap::from([("u1".to_string(), "alice".to_string())]),
        redis: RetryConnection::new(demo.app_connection().await?).with_producer(producer),
    };

    println!("\n1. Redis is cut off; the read is served by the database:");
    demo.switch.off();
    let first = repo.get_user_info("u1").await?;
    println!("   get_user_info(u1) -> {first}");

    println!("\n2. Redis is back; the next read backfills the cache, the one after hits it:");
    demo.switch.on();
    let second = repo.get_user_info("u1").await?;
    let third = repo.get_user_info("u1").await?;
    println!("   get_user_info(u1) -> {second}");
    println!("   get_user_info(u1) -> {third}");

    let queued = queued_tasks(&demo.brokers, &topic).await?;
    println!("\n3. tasks queued for retry: {queued} (a read path queues nothing)");
    if !first.ends_with("(from database)") || !third.ends_with("(from cache)") || queued != 0 {
        return Err("the read path did not behave as described".into());
    }
    println!("OK");
    Ok(())
}

/// How many messages the main topic holds.
async fn queued_tasks(brokers: &str, topic: &str) -> Result<i64, Box<dyn std::error::Error>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "backfill-check")
        .create()?;
    let topic = topic.to_string();
    let total = tokio::task::spawn_blocking(move || -> Result<i64, rdkafka::error::KafkaError> {
        let (low, high) = consumer.fetch_watermarks(&topic, 0, std::time::Duration::from_secs(5))?;
        Ok(high - low)
    })
    .await??;
    Ok(total)
}
