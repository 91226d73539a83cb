//! Smoke run of the end-to-end benchmark at a tiny size, so that it cannot rot: it must
//! finish and print every row; whether a target is met is not a test's business on a shared
//! machine.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Rows the table must hold, one per measured figure.
const METRICS: [&str; 11] = [
    "happy_path ops",
    "happy_path noise",
    "cpu ns per command",
    "cpu noise floor",
    "failure_p50",
    "failure_p99 extra latency",
    "failure_p99 extra thread CPU",
    "capture",
    "replay tasks/s",
    "replay vs a bare consumer",
    "replay_absolute",
];

/// The example next to this test binary: target/<profile>/deps/<test> →
/// target/<profile>/examples/bench, built by `cargo build --examples` (or `cargo test`).
fn bench_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>");
    profile_dir.join("examples").join(format!("bench{}", std::env::consts::EXE_SUFFIX))
}

#[test]
fn bench_finishes_with_every_metric() {
    let bin = bench_binary();
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --examples` (or `cargo test --examples`)",
        bin.display()
    );
    let start = Instant::now();
    let out = Command::new(&bin).args(["--size", "200"]).output().expect("run the bench example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench exited with {}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    for metric in METRICS {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("| {metric}"))),
            "no table row for {metric}:\n{stdout}"
        );
    }
    // The size is meant to keep the smoke run short; a slow one points at a hang, not noise.
    assert!(start.elapsed() < Duration::from_secs(120), "the smoke run took {:?}", start.elapsed());
}
