pub use redis_retry_runtime::*;
