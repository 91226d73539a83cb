//! Several `redis-retry consume` processes in one group share the partitions; when one is
//! killed mid-batch, its partitions are taken over from their last committed offsets and
//! nothing is lost.

mod support;

use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis_retry::{ProducerConfig, RedisTask, RetryProducer};
use support::binary::Consumer;
use support::report::record;
use support::stack::{one_message_batches, Stack};
use support::unique;

const TASKS: usize = 6000;
const KEYS: usize = 60;
const PARTITIONS: i32 = 6;
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_in_one_group_share_partitions_and_survive_a_member_killed_mid_batch() {
    let mut stack = Stack::start().await;
    // A topic of several partitions, so that the members have something to share.
    stack.topic = unique("shared");
    let config = one_message_batches(ProducerConfig::new(stack.kafka.bootstrap()).topic(&stack.topic));
    let producer = RetryProducer::new(&config).unwrap();
    producer.ensure_topics(PARTITIONS, 1).await.unwrap();
    let redis = stack.conn().await;

    let group = unique("group");
    let session = format!("session.timeout.ms={}", SESSION_TIMEOUT.as_millis());
    // "task applied" (debug) shows which member applied what.
    let args =
        ["-X", &session, "-X", "heartbeat.interval.ms=500", "--log-level", "info,redis_retry_runtime=debug"];
    let started = Instant::now();
    // Tasks keep arriving through the whole test, so that the member is killed while it works
    // and its partitions fill up while nobody owns them.
    let feeder = {
        let producer = producer.clone();
        tokio::task::spawn_blocking(move || {
            for i in 0..TASKS {
                producer
                    .publish(&RedisTask::sadd(format!("group:{}", i % KEYS), [format!("m{i}")]).unwrap())
                    .unwrap();
                if i % 100 == 99 {
                    std::thread::sleep(Duration::from_millis(350));
                }
            }
            producer.flush(Duration::from_secs(30)).unwrap();
        })
    };

    // tansu keeps the first member to join as the group's leader for as long as it lives, and
    // only the leader's SyncGroup completes a rebalance. A dead leader is dropped only
    // incidentally (when tansu reloads the group from its storage, or when a JoinGroup rather
    // than a heartbeat expires it), so the member killed is not the first.
    let redis = &redis;
    let leader = Consumer::start(&stack, &group, &args);
    wait_for("the first member to apply tasks", Duration::from_secs(20), &[&leader], || async move {
        applied(redis).await > 0
    })
    .await;
    let mut victim = Consumer::start(&stack, &group, &args);
    let other = Consumer::start(&stack, &group, &args);
    let victim_ref = &victim;
    wait_for(
        "the victim to apply tasks",
        Duration::from_secs(20),
        &[&leader, &victim, &other],
        || async move { victim_ref.log().contains("task applied") },
    )
    .await;
    victim.signal(libc::SIGKILL);
    victim.wait(Duration::from_secs(10));
    let at_kill = applied(redis).await;
    let killed_at = started.elapsed();
    assert!(!feeder.is_finished(), "tasks still arrive at every partition, the dead member's included");

    // tansu expires a member only when another member's request finds it silent for longer than
    // the session timeout; the survivor whose heartbeat did that rejoins (tansu holds a
    // follower's JoinGroup for 3 s) and gets its old partitions back, while the dead member's
    // stay unowned. The replacement's join is what makes the leader hand out every partition
    // again; it comes after that rejoin, so the leader's list no longer holds the dead member
    // (a dead member given partitions keeps them: its expiry leaves tansu's generation and stored
    // assignment as they were) and the two rebalances do not interleave.
    tokio::time::sleep(SESSION_TIMEOUT + Duration::from_secs(6)).await;
    let replacement = Consumer::start(&stack, &group, &args);
    let members = [&leader, &other, &replacement];
    wait_for("every task to be applied", Duration::from_secs(30), &members, || async move {
        applied(redis).await == TASKS
    })
    .await;
    let elapsed = started.elapsed();
    feeder.await.unwrap();

    let mut conn = redis.clone();
    for k in 0..KEYS {
        let size: usize = conn.scard(format!("group:{k}")).await.unwrap();
        assert_eq!(size, TASKS / KEYS, "group:{k} holds every member sent to it");
    }
    println!(
        "{TASKS} tasks over {PARTITIONS} partitions, 3 members, one killed at {killed_at:?} with {at_kill} \
         applied: all applied in {elapsed:?}"
    );
    record(
        "Scale-out and rebalance",
        "`tests/scale_out.rs`: three `redis-retry consume` processes in one consumer group share a topic of six \
         partitions while tasks keep arriving; one (not the group leader) is SIGKILLed mid-batch; once the broker \
         has expired it (session timeout) a replacement joins, the group rebalances and the members take the dead \
         one's partitions over from its last committed offsets.",
        &[
            ("tasks", TASKS.to_string()),
            ("members / partitions", format!("3 / {PARTITIONS}")),
            ("applied when the member was killed", at_kill.to_string()),
            ("lost", (TASKS - applied(redis).await).to_string()),
            ("time to apply everything", format!("{:.1} s", elapsed.as_secs_f64())),
        ],
    );
}

/// How many distinct tasks Redis holds.
async fn applied(redis: &redis::aio::MultiplexedConnection) -> usize {
    let mut conn = redis.clone();
    let mut n = 0;
    for k in 0..KEYS {
        n += conn.scard::<_, usize>(format!("group:{k}")).await.unwrap_or(0);
    }
    n
}

/// Polls `check` until it holds; panics with the members' logs after `timeout`.
async fn wait_for<F, Fut>(what: &str, timeout: Duration, members: &[&Consumer], mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        if Instant::now() >= deadline {
            let tails: Vec<String> = members.iter().map(|m| tail(&m.log(), 40)).collect();
            panic!("waited {timeout:?} for {what}; member logs (last lines):\n{}", tails.join("\n---\n"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
