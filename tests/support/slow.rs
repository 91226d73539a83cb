//! What the hostile tests measure about Redis: how long it takes to answer a probe, how often
//! it ran a command, and a write made slow on purpose.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// PINGs Redis on a connection of its own until stopped, keeping the worst latency.
pub struct Probe {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<(Duration, u64)>,
}

impl Probe {
    /// Starts probing every `every`.
    pub fn start(mut conn: MultiplexedConnection, every: Duration) -> Probe {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            let (mut worst, mut probes) = (Duration::ZERO, 0u64);
            loop {
                let started = Instant::now();
                // Any reply counts, BUSY included: Redis answered.
                let _: redis::RedisResult<redis::Value> = redis::cmd("PING").query_async(&mut conn).await;
                worst = worst.max(started.elapsed());
                probes += 1;
                tokio::select! {
                    _ = &mut stopped => return (worst, probes),
                    _ = tokio::time::sleep(every) => {}
                }
            }
        });
        Probe { stop, handle }
    }

    /// Stops probing: the worst latency and the number of probes.
    pub async fn stop(self) -> (Duration, u64) {
        let _ = self.stop.send(());
        self.handle.await.expect("the probe task")
    }
}

/// `CONFIG SET name value`.
pub async fn config_set(redis: &mut MultiplexedConnection, name: &str, value: &str) {
    let _: () =
        redis::cmd("CONFIG").arg("SET").arg(name).arg(value).query_async(redis).await.expect("CONFIG SET");
}

/// How often Redis ran `command` (INFO commandstats).
pub async fn calls(redis: &mut MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(redis).await.expect("INFO");
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Grows the set `big` by `step` numbers at a time until `SORT big STORE` takes at least
/// `at_least` even at its quickest of three runs (a busy machine only makes it slower), and
/// returns that quickest time.
pub async fn slow_sort(redis: &mut MultiplexedConnection, step: usize, at_least: Duration) -> Duration {
    let mut size = 0;
    loop {
        let members: Vec<String> = (size..size + step).map(|n| n.to_string()).collect();
        let _: () = redis.sadd("big", &members).await.expect("SADD");
        size += step;
        let mut quickest = Duration::MAX;
        for _ in 0..3 {
            let started = Instant::now();
            let _: () = redis::cmd("SORT")
                .arg("big")
                .arg("STORE")
                .arg("calibrate")
                .query_async(redis)
                .await
                .expect("SORT");
            quickest = quickest.min(started.elapsed());
        }
        if quickest >= at_least || size >= 2_000_000 {
            let _: () = redis.del("calibrate").await.expect("DEL");
            return quickest;
        }
    }
}
