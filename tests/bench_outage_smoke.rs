//! Smoke run of the outage benchmark (recovery and memory) at a tiny size, so that it cannot
//! rot: it must finish and print every row; whether a target is met is not a test's business
//! on a shared machine.

use std::path::PathBuf;
use std::process::Command;

/// Rows the table must hold, one per measured figure.
const METRICS: [&str; 5] = ["recovery ", "recovery_first", "recovery_drain", "memory_peak", "memory_after"];

/// The example next to this test binary: target/<profile>/deps/<test> →
/// target/<profile>/examples/bench_outage, built by `cargo build --examples` (or `cargo test`).
fn bench_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>");
    profile_dir.join("examples").join(format!("bench_outage{}", std::env::consts::EXE_SUFFIX))
}

#[test]
fn bench_outage_finishes_with_every_metric() {
    let bin = bench_binary();
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --examples` (or `cargo test --examples`)",
        bin.display()
    );
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
