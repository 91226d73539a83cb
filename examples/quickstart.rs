//! The quick start: the seed's repository, annotated with `#[redis_retry]`, loses no write
//! while Redis is cut off.
//!
//! ```sh
//! cargo run --example quickstart
//! ```
//!
//! It starts its own `redis-server` (unless `REDIS_URL` is set) and uses librdkafka's
//! in-process demo broker (unless `KAFKA_BROKERS` is set), cuts Redis off, calls the
//! repository, brings Redis back, lets the consumer replay what failed, and checks the final
//! state: the exit code says whether every write arrived.

mod support;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use redis_retry::{
    redis_retry, ConsumerConfig, ProducerConfig, RedisRetryConsumer, RetryConnection, RetryProducer,
};
use support::{eventually, Demo};

/// The source of truth (MySQL in the seed); a map is enough here.
#[derive(Default)]
struct Database {
    users: Mutex<HashMap<String, String>>,
}

#[derive(Debug)]
enum RepoError {
    Db(String),
    Redis(redis::RedisError),
}

impl From<redis::RedisError> for RepoError {
    fn from(e: redis::RedisError) -> Self {
        RepoError::Redis(e)
    }
}

impl std::fmt::Display for RepoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RepoError::Db(e) => write!(f, "database: {e}"),
            RepoError::Redis(e) => write!(f, "redis: {e}"),
        }
    }
}

struct UserRepository {
    db: Database,
    redis: RetryConnection<ConnectionManager>,
}

impl UserRepository {
    /// Seed scenario 1: a simple DEL.
    #[redis_retry(source = "UserRepository.DeleteUserCache")]
    async fn delete_user_cache(&self, user_uuid: &str) -> Result<(), RepoError> {
        let mut redis = self.redis.clone();
        redis.del::<_, ()>(format!("user:info:{user_uuid}")).await?;
        Ok(())
    }

    /// Seed scenario 2: SET with a TTL.
    #[redis_retry(source = "DeviceRepository.SaveToken")]
    async fn save_token(&self, device_id: &str, token: &str, ttl: Duration) -> Result<(), RepoError> {
        let mut redis = self.redis.clone();
        redis.set_ex::<_, _, ()>(format!("device:token:{device_id}"), token, ttl.as_secs()).await?;
        Ok(())
    }

    /// Seed scenario 3: a pipeline, queued as one task.
    #[redis_retry(source = "UserRepository.DeleteUserCacheAndRelation")]
    async fn delete_user_cache_and_relation(&self, user_uuid: &str) -> Result<(), RepoError> {
        let mut redis = self.redis.clone();
        redis::pipe()
            .del(format!("user:info:{user_uuid}"))
            .del(format!("user:relation:{user_uuid}"))
            .del(format!("user:session:{user_uuid}"))
            .exec_async(&mut redis)
            .await?;
        Ok(())
    }

    /// The seed's complete example: the database first, then the cache, whose failure is
    /// queued for retry and does not fail the request.
    #[redis_retry(source = "UserRepository.DeleteUser")]
    async fn delete_user(&self, user_uuid: &str) -> Result<(), RepoError> {
        let removed = self.db.users.lock().map_err(|e| RepoError::Db(e.to_string()))?.remove(user_uuid);
        if removed.is_none() {
            return Err(RepoError::Db(format!("no user {user_uuid}")));
        }
        let mut redis = self.redis.clone();
        if let Err(e) = redis.del::<_, ()>(format!("user:info:{user_uuid}")).await {
            println!("   cache delete for {user_uuid} failed ({e}); queued, request still succeeds");
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Show what the library logs: each captured write, and each task the consumer applies.
    tracing_subscriber::fmt()
        .with_env_filter("warn,redis_retry_runtime::connection=error,redis_retry_runtime::producer=error,redis_retry_runtime::consumer=debug")
        .with_target(false)
        .without_time()
        .compact()
        .init();
    println!("== redis-retry quick start ==");
    let demo = Demo::start().await?;
    let topic = demo.topic("quickstart");
    let producer_config = ProducerConfig::new(&demo.brokers).topic(&topic);
    demo.create_topics(&producer_config.topics()).await?;
    let producer = RetryProducer::new(&producer_config)?;

    let mut redis = demo.redis().await?;
    for (k, v) in [
        ("user:info:u1", "alice"),
        ("user:info:u2", "bob"),
        ("user:relation:u2", "friends"),
        ("user:session:u2", "session"),
        ("user:info:u3", "carol"),
    ] {
        let _: () = redis.set(k, v).await?;
    }
    let repo = UserRepository {
        db: Database::default(),
        redis: RetryConnection::new(demo.app_connection().await?).with_producer(producer),
    };
    repo.db.users.lock().map_err(|e| e.to_string())?.insert("u3".into(), "carol".into());

    println!("\n1. Redis is cut off. Calling the repository:");
    demo.switch.off();
    let r1 = repo.delete_user_cache("u1").await;
    println!("   delete_user_cache(u1)              -> {}", outcome(&r1));
    let r2 = repo.save_token("d1", "token-1", Duration::from_secs(300)).await;
    println!("   save_token(d1, ttl 300 s)          -> {}", outcome(&r2));
    let r3 = repo.delete_user_cache_and_relation("u2").await;
    println!("   delete_user_cache_and_relation(u2) -> {}", outcome(&r3));
    let r4 = repo.delete_user("u3").await;
    println!("   delete_user(u3)                    -> {}", outcome(&r4));
    let failed_writes = [&r1, &r2, &r3].iter().filter(|r| r.is_err()).count();
    println!("   {failed_writes} calls failed; 4 writes are queued on topic {topic}");

    println!("\n2. Redis is back. The consumer replays the queue:");
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

    let expectations: Vec<(&str, Option<&str>)> = vec![
        ("user:info:u1", None),
        ("device:token:d1", Some("token-1")),
        ("user:info:u2", None),
        ("user:relation:u2", None),
        ("user:session:u2", None),
        ("user:info:u3", None),
    ];
    let all_there = eventually(Duration::from_secs(30), || {
        let (mut r, expected) = (redis.clone(), expectations.clone());
        async move {
            for (key, want) in expected {
                let got: Option<String> = r.get(key).await.unwrap_or(Some("?".into()));
                if got.as_deref() != want {
                    return false;
                }
            }
            true
        }
    })
    .await;
    let _ = stop.send(());
    running.await??;

    println!("\n3. Final Redis state:");
    let mut wrong = 0;
    for (key, want) in &expectations {
        let got: Option<String> = redis.get(*key).await?;
        let ok = got.as_deref() == *want;
        wrong += usize::from(!ok);
        println!(
            "   {} {key:<18} = {:<10} (expected {})",
            if ok { "ok " } else { "BAD" },
            show(&got),
            show(&want.map(String::from))
        );
    }
    let ttl: i64 = redis.ttl("device:token:d1").await?;
    println!("   {} device:token:d1 TTL {ttl} s", if ttl > 0 { "ok " } else { "BAD" });
    if wrong > 0 || ttl <= 0 || !all_there {
        return Err(format!("{wrong} keys are wrong: writes were lost").into());
    }
    println!("\nEvery write that failed during the outage reached Redis.");
    Ok(())
}

fn outcome<T>(r: &Result<T, RepoError>) -> String {
    match r {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("error ({e}) - queued for retry"),
    }
}

fn show(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "(none)".to_string())
}
