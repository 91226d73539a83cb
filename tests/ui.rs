//! Compile tests of `#[redis_retry]`: every supported shape compiles and runs (`ui/pass`), and
//! every misuse fails with the message and span recorded beside it (`ui/fail/*.stderr`).
//!
//! Each rejection is proven to come from the attribute: every `ui/fail` case, with the
//! attribute and its statement markers taken out, must compile (except the cases listed in
//! [`REJECTED_WITHOUT_THE_ATTRIBUTE`], whose point is an error in the user's own code). The
//! copies are modules of one more pass case, so that they cost one build, not one each; an
//! error in one names its file.
//!
//! After changing a message, regenerate the expectations with
//! `TRYBUILD=overwrite cargo test -p redis-retry --test ui`, then read the diff.

use std::path::{Path, PathBuf};

/// Fail cases whose error is in the user's code, which the attribute must report where the
/// user wrote it: they fail without the attribute too.
const REJECTED_WITHOUT_THE_ATTRIBUTE: &[&str] = &["body_type_error.rs"];

#[test]
fn ui() {
    let without = without_the_attribute();
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
    cases.pass(without);
}

/// `tests/ui/fail/*.rs` with every `#[redis_retry ..]` and `#[redis_retry::..]` taken out,
/// in a directory of the target's, and the case that has them all as modules.
fn without_the_attribute() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-without-the-attribute");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a directory for the copies");
    let mut modules = String::from("#![allow(dead_code)]\n\n");
    for entry in std::fs::read_dir("tests/ui/fail").expect("tests/ui/fail") {
        let path = entry.expect("a directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if !name.ends_with(".rs") || REJECTED_WITHOUT_THE_ATTRIBUTE.contains(&name.as_str()) {
            continue;
        }
        let source = std::fs::read_to_string(&path).expect("a case");
        let stripped = strip_attribute(&source);
        assert_ne!(stripped, source, "{name} has no #[redis_retry] to take out");
        // Its `use` of the attribute, and what only the attribute used, are left unused.
        let copy = format!("#![allow(unused)]\n{stripped}");
        let copy_path = dir.join(&name);
        std::fs::write(&copy_path, copy).expect("a copy");
        let module = name.trim_end_matches(".rs");
        modules.push_str(&format!("#[path = {:?}]\nmod {module};\n", copy_path.display().to_string()));
    }
    assert!(modules.contains("mod "), "no fail cases found");
    modules.push_str("\nfn main() {}\n");
    let all = dir.join("fail_cases_without_the_attribute.rs");
    std::fs::write(&all, modules).expect("the case of all copies");
    all
}

/// `source` without its `#[redis_retry ..]` attributes (bracket-matched, so an attribute over
/// several lines goes whole).
fn strip_attribute(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("#[redis_retry") {
        out.push_str(&rest[..start]);
        let mut depth = 0usize;
        let mut end = rest.len();
        for (i, c) in rest[start + 1..].char_indices() {
            match c {
                '[' => depth += 1,
                ']' => {
                    depth -= 1;
                    if depth == 0 {
                        end = start + 1 + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}
