//! Embedding the consumer in your own service, beside its other work, with graceful shutdown:
//! on SIGINT/SIGTERM (or, in this demo, once its work is seen done) the consumer finishes the
//! task in hand, commits, and `run` returns.
//!
//! ```sh
//! cargo run --example consumer          # its own redis-server and a demo Kafka
//! ```

mod support;

use std::time::Duration;

use redis::AsyncCommands;
use redis_retry::{ConsumerConfig, ProducerConfig, RedisRetryConsumer, RedisTask, RetryProducer};
use support::{eventually, Demo};
use tokio::sync::watch;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("redis_retry_runtime=info").with_target(false).init();
    let demo = Demo::start().await?;
    let topic = demo.topic("embedded");
    let producer_config = ProducerConfig::new(&demo.brokers).topic(&topic);
    demo.create_topics(&producer_config.topics()).await?;

    // The service's shutdown signal: SIGINT/SIGTERM, or the demo deciding it has seen enough.
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let signal_tx = shutdown_tx.clone();
    tokio::spawn(async move {
        redis_retry::consumer::shutdown_signal().await;
        let _ = signal_tx.send(true);
    });

    let mut config = ConsumerConfig::new(&demo.brokers).topic(&topic).group("orders-service-redis-retry");
    config.create_topics = false;
    let redis = redis::Client::open(demo.redis_url.as_str())?.get_connection_manager().await?;
    let consumer = RedisRetryConsumer::new(config, redis)?;
    let health = consumer.health();
    let mut stop = shutdown_rx.clone();
    let consumer_task = tokio::spawn(consumer.run(async move {
        let _ = stop.wait_for(|s| *s).await;
    }));

    // The service's own work: here, queueing a few tasks as failed writes would.
    let producer = RetryProducer::new(&producer_config)?;
    for i in 0..5 {
        let task = RedisTask::set(format!("order:{i}:status"), "shipped", Duration::from_secs(600))?
            .with_source("OrderRepository.MarkShipped");
        producer.publish_and_wait(&task).await?;
    }
    println!("queued 5 tasks; consumer running: {}", health.running());

    let mut check = demo.redis().await?;
    let applied = eventually(Duration::from_secs(30), || {
        let mut r = check.clone();
        async move {
            let mut n = 0;
            for i in 0..5 {
                if r.get::<_, Option<String>>(format!("order:{i}:status")).await.ok().flatten().is_some() {
                    n += 1;
                }
            }
            n == 5
        }
    })
    .await;

    println!("all applied: {applied}; shutting down gracefully");
    let _ = shutdown_tx.send(true);
    consumer_task.await??;
    println!("consumer stopped cleanly; running: {}", health.running());
    let status: Option<String> = check.get("order:4:status").await?;
    if !applied || status.as_deref() != Some("shipped") {
        return Err("tasks were not applied".into());
    }
    println!("OK");
    Ok(())
}
