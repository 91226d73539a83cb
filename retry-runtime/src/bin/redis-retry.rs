//! `redis-retry`: the consumer service and operator tool.

fn main() -> std::process::ExitCode {
    redis_retry_runtime::cli::main()
}
