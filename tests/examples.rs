//! Every example runs to success, so none can rot; the quick start also runs against the real
//! broker and a real Redis, as its README promises.

mod support;

use std::process::{Command, Output, Stdio};

use support::{example_bin, KafkaBroker, RedisServer};

fn run_example(name: &str, env: &[(&str, String)]) -> Output {
    Command::new(example_bin(name))
        .env_remove("KAFKA_BROKERS")
        .env_remove("REDIS_URL")
        .env("NO_COLOR", "1")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .output()
        .expect("run the example")
}

fn assert_success(name: &str, out: &Output, says: &[&str]) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name} failed ({}):\n{stdout}\n{stderr}", out.status);
    for s in says {
        assert!(stdout.contains(s), "{name} should say `{s}`:\n{stdout}");
    }
    stdout
}

#[test]
fn quickstart_replays_every_write_lost_during_the_outage() {
    let out = run_example("quickstart", &[]);
    let stdout = assert_success(
        "quickstart",
        &out,
        &[
            "DEMO broker",
            "1. Redis is cut off",
            "queued for retry",
            "Every write that failed during the outage reached Redis.",
        ],
    );
    assert_eq!(stdout.matches("   ok  ").count(), 7, "every final check passes:\n{stdout}");
}

#[test]
fn quickstart_runs_unchanged_against_real_servers() {
    let redis = RedisServer::start();
    let kafka = KafkaBroker::start();
    let out = run_example("quickstart", &[("REDIS_URL", redis.url()), ("KAFKA_BROKERS", kafka.bootstrap())]);
    assert_success("quickstart", &out, &["(from REDIS_URL)", "(from KAFKA_BROKERS)", "reached Redis."]);
}

#[test]
fn manual_builders_queue_by_hand_and_the_consumer_applies_them() {
    let out = run_example("manual_builders", &[]);
    assert_success("manual_builders", &out, &["queued as one task", "OK"]);
}

#[test]
fn invalidate_never_writes_back_a_stale_value() {
    let out = run_example("invalidate", &[]);
    assert_success("invalidate", &out, &["DEL queued", "the next read goes to the database: 30", "OK"]);
}

#[test]
fn backfill_on_a_read_path_queues_nothing() {
    let out = run_example("backfill", &[]);
    assert_success("backfill", &out, &["logged, not queued", "tasks queued for retry: 0", "OK"]);
}

#[test]
fn consumer_embedded_in_a_service_shuts_down_gracefully() {
    let out = run_example("consumer", &[]);
    assert_success(
        "consumer",
        &out,
        &["all applied: true", "consumer stopped cleanly; running: false", "OK"],
    );
}
