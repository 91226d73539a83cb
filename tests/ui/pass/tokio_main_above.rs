// `#[tokio::main]` above the attribute expands first; the attribute wraps its `async` block.
#![deny(warnings)]

use redis_retry::redis_retry;

#[tokio::main(flavor = "current_thread")]
#[redis_retry(source = "main.above")]
async fn main() {
    let meta = redis_retry::scope::current().expect("inside the capture scope");
    assert_eq!(meta.source, "main.above");
}
