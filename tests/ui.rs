//! Compile tests of `#[redis_retry]`: every supported shape compiles and runs (`ui/pass`), and
//! every misuse fails with the message and span recorded beside it (`ui/fail/*.stderr`).
//!
//! After changing a message, regenerate the expectations with
//! `TRYBUILD=overwrite cargo test -p redis-retry --test ui`, then read the diff.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
