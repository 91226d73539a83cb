//! The `redis-retry` binary run by tests: as a service (`consume`, killed or signalled at will)
//! or as a one-shot operator command.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use super::stack::{Stack, ONE_MESSAGE_BATCHES};
use super::{redis_retry_bin, unique};

/// `REDIS_RETRY_*` settings pointing at `stack`.
pub fn stack_env(stack: &Stack, group: &str) -> Vec<(&'static str, String)> {
    vec![
        ("REDIS_RETRY_BROKERS", stack.kafka.bootstrap()),
        ("REDIS_RETRY_TOPIC", stack.topic.clone()),
        ("REDIS_RETRY_GROUP", group.to_string()),
        ("REDIS_RETRY_REDIS_URL", stack.redis.url()),
    ]
}

/// Runs `redis-retry args...` to completion with only `env` set and `stdin` as its input.
pub fn run(args: &[&str], env: &[(&str, String)], stdin: &[u8]) -> Output {
    let mut child = Command::new(redis_retry_bin())
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn redis-retry");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("redis-retry output")
}

/// Runs `redis-retry args...` with only `env` set and checks that it refuses its configuration
/// as a user should see it: exit code 2, a message naming `names`, no panic. Returns stderr.
pub fn assert_config_error(args: &[&str], env: &[(&str, String)], names: &str) -> String {
    let out = run(args, env, b"");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?} {env:?} exits 2; stderr:\n{stderr}");
    assert!(stderr.contains(names), "{args:?} {env:?}: the message names `{names}`:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{args:?} {env:?} must not panic:\n{stderr}");
    stderr
}

/// A running `redis-retry consume`; killed when dropped.
pub struct Consumer {
    child: Child,
    log: PathBuf,
}

impl Consumer {
    pub fn start(stack: &Stack, group: &str, extra: &[&str]) -> Consumer {
        let log = std::env::temp_dir().join(format!("{}.log", unique("redis-retry-consume")));
        let out = File::create(&log).expect("log file");
        let child = Command::new(redis_retry_bin())
            .args(["consume", "--retry-base-delay", "300ms", "--retry-max-delay", "2s", "--partitions", "1"])
            .args(["-X", &format!("{}={}", ONE_MESSAGE_BATCHES.0, ONE_MESSAGE_BATCHES.1)])
            .args(extra)
            .env_clear()
            .envs(stack_env(stack, group))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn redis-retry");
        Consumer { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) has no memory-safety preconditions, and the pid is our own child's.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill({sig}) failed");
    }

    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "redis-retry did not exit within {timeout:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
