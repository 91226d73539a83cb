//! The seed's explicit path, without the attribute: when a write fails, build its task with a
//! builder and hand it to `log_and_retry_redis_error`, exactly where the Go service called
//! `LogAndRetryRedisError`. A consumer then applies the tasks once Redis is back.
//!
//! ```sh
//! cargo run --example manual_builders          # its own redis-server and a demo Kafka
//! ```

mod support;

use std::time::Duration;

use redis::AsyncCommands;
use redis_retry::{
    log_and_retry_redis_error, ConsumerConfig, ProducerConfig, RedisCmd, RedisRetryConsumer, RedisTask,
    RetryProducer, TaskContext,
};
use support::{eventually, Demo};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let demo = Demo::start().await?;
    let topic = demo.topic("manual-builders");
    let producer_config = ProducerConfig::new(&demo.brokers).topic(&topic);
    demo.create_topics(&producer_config.topics()).await?;
    let producer = RetryProducer::new(&producer_config)?;
    // The seed's manager.go: one producer for the whole process.
    redis_retry::init_global_producer(producer).map_err(|_| "global producer already set")?;

    let mut redis = demo.redis().await?;
    let _: () = redis.hset("user:u1", "cache", "stale").await?;
    let _: () = redis.sadd("friends:u1", "u9").await?;
    let mut conn = demo.app_connection().await?;
    let ctx = TaskContext::new().trace_id("trace-42").user_uuid("u1");

    println!("\n1. Redis is cut off; every write below fails and is queued by hand");
    demo.switch.off();
    if let Err(err) = conn.del::<_, ()>("user:info:u1").await {
        let task =
            RedisTask::del("user:info:u1")?.with_source("UserRepository.DeleteUserCache").with_context(&ctx);
        log_and_retry_redis_error(&task, &err);
        println!("   DEL user:info:u1 failed ({err}) -> queued");
    }
    if let Err(err) = conn.set_ex::<_, _, ()>("device:token:d1", "tok-1", 300).await {
        let task = RedisTask::set("device:token:d1", "tok-1", Duration::from_secs(300))?
            .with_source("DeviceRepository.SaveToken")
            .with_max_retries(5)?;
        log_and_retry_redis_error(&task, &err);
        println!("   SET device:token:d1 EX 300 failed -> queued");
    }
    if let Err(err) = conn.hdel::<_, _, ()>("user:u1", "cache").await {
        log_and_retry_redis_error(
            &RedisTask::hdel("user:u1", ["cache"])?.with_source("UserRepository.DropCache"),
            &err,
        );
        println!("   HDEL user:u1 cache failed -> queued");
    }
    if let Err(err) = conn.srem::<_, _, ()>("friends:u1", "u9").await {
        log_and_retry_redis_error(
            &RedisTask::srem("friends:u1", ["u9"])?.with_source("RelationRepository.Unfriend"),
            &err,
        );
        println!("   SREM friends:u1 u9 failed -> queued");
    }
    let cmds = vec![
        RedisCmd::new("del", ["user:relation:u1"]),
        RedisCmd::new("sadd", ["friends:u2", "u3"]),
        RedisCmd::new("hset", ["user:u2", "name", "Bob"]),
    ];
    let mut pipe = redis::pipe();
    pipe.del("user:relation:u1").sadd("friends:u2", "u3").hset("user:u2", "name", "Bob");
    if let Err(err) = pipe.exec_async(&mut conn).await {
        log_and_retry_redis_error(
            &RedisTask::pipeline(cmds)?.with_source("UserRepository.DeleteUserCacheAndRelation"),
            &err,
        );
        println!("   pipeline (DEL, SADD, HSET) failed -> queued as one task");
    }

    println!("\n2. Redis is back; the consumer applies the queue");
    demo.switch.on();
    let manager = redis::Client::open(demo.redis_url.as_str())?.get_connection_manager().await?;
    let mut config =
        ConsumerConfig::new(&demo.brokers).topic(&topic).retry_base_delay(Duration::from_millis(200));
    config.create_topics = false;
    let consumer = RedisRetryConsumer::new(config, manager)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(consumer.run(async move {
        let _ = stopped.await;
    }));

    let done = eventually(Duration::from_secs(30), || {
        let mut r = redis.clone();
        async move {
            let token: Option<String> = r.get("device:token:d1").await.unwrap_or(None);
            let bob: Option<String> = r.hget("user:u2", "name").await.unwrap_or(None);
            let cache: bool = r.hexists("user:u1", "cache").await.unwrap_or(true);
            let u9: bool = r.sismember("friends:u1", "u9").await.unwrap_or(true);
            token.as_deref() == Some("tok-1") && bob.as_deref() == Some("Bob") && !cache && !u9
        }
    })
    .await;
    let _ = stop.send(());
    running.await??;
    let ttl: i64 = redis.ttl("device:token:d1").await?;
    println!("\n3. final state: token set with TTL {ttl}s, cache field gone, relation gone, u2 written");
    if !done || ttl <= 0 {
        return Err("the queued writes were not all applied".into());
    }
    println!("OK");
    Ok(())
}
