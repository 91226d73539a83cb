//! `mode = "invalidate"` for cache-aside keys: a cache write that fails is queued as a `DEL` of
//! the keys it touched, not as the write itself. However late the retry runs, it can only make
//! the next read go to the database; it can never put back a value that has since changed.
//!
//! The run shows the hazard `replay` would have: the price changes twice, the first cache
//! write fails during an outage and its retry lands after the second, successful one.
//!
//! ```sh
//! cargo run --example invalidate
//! ```

mod support;

use std::sync::Mutex;
use std::time::Duration;

use redis::AsyncCommands;
use redis_retry::{
    redis_retry, ConsumerConfig, ProducerConfig, RedisRetryConsumer, RetryConnection, RetryProducer,
};
use support::{eventually, Demo};

struct ProductRepository {
    db_price: Mutex<u32>,
    redis: RetryConnection<redis::aio::ConnectionManager>,
}

impl ProductRepository {
    /// Writes the database, then refreshes the cache; a failed refresh is queued as a `DEL`.
    #[redis_retry(source = "ProductRepository.UpdatePrice", mode = "invalidate")]
    async fn update_price(&self, product: &str, price: u32) -> redis::RedisResult<()> {
        *self.db_price.lock().unwrap_or_else(|e| e.into_inner()) = price;
        let mut redis = self.redis.clone();
        redis.set_ex(format!("product:{product}:price"), price, 3600).await
    }

    /// Cache-aside read.
    async fn price(&self, product: &str) -> redis::RedisResult<u32> {
        let mut redis = self.redis.clone();
        let key = format!("product:{product}:price");
        if let Some(p) = redis.get::<_, Option<u32>>(&key).await? {
            return Ok(p);
        }
        let p = *self.db_price.lock().unwrap_or_else(|e| e.into_inner());
        redis.set_ex::<_, _, ()>(&key, p, 3600).await?;
        Ok(p)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter("warn,redis_retry_runtime::consumer=debug")
        .with_target(false)
        .without_time()
        .compact()
        .init();
    let demo = Demo::start().await?;
    let topic = demo.topic("invalidate");
    let producer_config = ProducerConfig::new(&demo.brokers).topic(&topic);
    demo.create_topics(&producer_config.topics()).await?;
    let repo = ProductRepository {
        db_price: Mutex::new(10),
        redis: RetryConnection::new(demo.app_connection().await?)
            .with_producer(RetryProducer::new(&producer_config)?),
    };
    println!("\nprice read through the cache: {}", repo.price("p1").await?);

    println!("\n1. Redis cut off: the price becomes 20 in the database; the cache write fails");
    demo.switch.off();
    let failed = repo.update_price("p1", 20).await;
    println!(
        "   update_price(p1, 20) -> {}",
        if failed.is_err() { "cache write failed, DEL queued" } else { "ok" }
    );

    println!("\n2. Redis back: the price becomes 30, and this time the cache write succeeds");
    demo.switch.on();
    repo.update_price("p1", 30).await?;

    println!("\n3. The consumer now runs the queued task (late, as retries are)");
    let manager = redis::Client::open(demo.redis_url.as_str())?.get_connection_manager().await?;
    let mut config = ConsumerConfig::new(&demo.brokers).topic(&topic);
    config.create_topics = false;
    let consumer = RedisRetryConsumer::new(config, manager)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(consumer.run(async move {
        let _ = stopped.await;
    }));
    let redis = demo.redis().await?;
    let invalidated = eventually(Duration::from_secs(30), || {
        let mut r = redis.clone();
        async move { !r.exists::<_, bool>("product:p1:price").await.unwrap_or(true) }
    })
    .await;
    let _ = stop.send(());
    running.await??;
    println!("   the cached price was deleted: {invalidated} (a replayed SET would have written 20 over 30)");

    let price = repo.price("p1").await?;
    println!("\n4. the next read goes to the database: {price}");
    if !invalidated || price != 30 {
        return Err("a stale price reached the cache".into());
    }
    println!("OK");
    Ok(())
}
