// The attribute above `#[tokio::main]` expands first, on the `async fn`.
#![deny(warnings)]

use redis_retry::redis_retry;

#[redis_retry(max_retries = 9)]
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let meta = redis_retry::scope::current().expect("inside the capture scope");
    assert!(meta.source.ends_with("::main"), "module path and function name: {}", meta.source);
    assert_eq!(meta.max_retries, 9);
}
