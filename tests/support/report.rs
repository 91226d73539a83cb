//! Figures that reliability tests measure, written by the run itself: each test owns one
//! section, between markers, and replaces it when it passes.
//!
//! A test run never changes tracked files: the figures go to `RELIABILITY.md` in the target
//! directory's scratch space unless `REDIS_RETRY_REPORT` names another file.
//! `REDIS_RETRY_REPORT=docs/RELIABILITY.md scripts/test` regenerates the committed copy.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

pub fn report_path() -> PathBuf {
    match std::env::var_os("REDIS_RETRY_REPORT") {
        // A relative path names a file in the checkout, wherever the test binary runs from.
        Some(path) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path),
        None => PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("RELIABILITY.md"),
    }
}

const HEADER: &str = "# Reliability figures\n\n\
Written by the test run, not by hand (`REDIS_RETRY_REPORT=docs/RELIABILITY.md scripts/test`): \
each section is replaced by the test named in it when that test passes. Every figure comes from real `redis-server` processes and a \
real Kafka-protocol broker on this machine, with faults injected by the test harness.\n";

/// Replaces the section `title` with `intro` and a two-column table of `rows`.
pub fn record(title: &str, intro: &str, rows: &[(&str, String)]) {
    let mut section =
        format!("\n<!-- begin: {title} -->\n## {title}\n\n{intro}\n\n| figure | value |\n|---|---|\n");
    for (name, value) in rows {
        section.push_str(&format!("| {name} | {value} |\n"));
    }
    section.push_str(&format!("<!-- end: {title} -->\n"));

    let path = report_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("report directory");
    }
    let mut file =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).expect("report");
    // Tests of several processes write the same file.
    file.lock().expect("lock the report");
    let mut text = String::new();
    file.read_to_string(&mut text).expect("read the report");
    if !text.starts_with("# Reliability figures") {
        text = HEADER.to_string();
    }
    let (begin, end) = (format!("\n<!-- begin: {title} -->"), format!("<!-- end: {title} -->\n"));
    let updated = match (text.find(&begin), text.find(&end)) {
        (Some(b), Some(e)) if e > b => format!("{}{}{}", &text[..b], section, &text[e + end.len()..]),
        _ => format!("{text}{section}"),
    };
    file.set_len(0).expect("truncate");
    file.seek(SeekFrom::Start(0)).expect("seek");
    file.write_all(updated.as_bytes()).expect("write the report");
    let _ = file.unlock();
}
