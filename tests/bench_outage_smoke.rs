//! Smoke runs of the outage benchmarks (recovery and memory; the caller's latency) at a tiny
//! size, so that they cannot rot: each must finish and print every row; whether a target is met
//! is not a test's business on a shared machine.

use std::path::PathBuf;
use std::process::Command;

/// Rows the table must hold, one per measured figure.
const METRICS: [&str; 5] = ["recovery ", "recovery_first", "recovery_drain", "memory_peak", "memory_after"];

/// The example next to this test binary: target/<profile>/deps/<test> →
/// target/<profile>/examples/<name>, built by `cargo build --examples` (or `cargo test`).
fn bench_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>");
    let bin = profile_dir.join("examples").join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --examples` (or `cargo test --examples`)",
        bin.display()
    );
    bin
}

#[test]
fn bench_outage_finishes_with_every_metric() {
    let bin = bench_binary("bench_outage");
    let out = Command::new(&bin)
        .args(["--size", "2000", "--outage", "1", "--duration", "3"])
        .output()
        .expect("run the bench_outage example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench_outage exited with {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for metric in METRICS {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("| {metric}"))),
            "no table row for {metric}:\n{stdout}"
        );
    }
}

#[test]
fn bench_latency_finishes_with_a_row_per_outage_and_caller() {
    let out = Command::new(bench_binary("bench_latency"))
        .args(["--window", "1", "--deadline", "100ms", "--workers", "2"])
        .output()
        .expect("run the bench_latency example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench_latency exited with {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for outage in ["refused", "blackholed"] {
        for caller in ["redis-retry (deadline)", "raw redis-rs (default ConnectionManager)"] {
            let row = format!("| {outage}: {caller} |");
            assert!(stdout.lines().any(|l| l.starts_with(&row)), "no table row {row}:\n{stdout}");
        }
    }
    assert!(stdout.contains("blackholed p99 through the deadline"), "no summary line:\n{stdout}");
}
