//! `redis-retry`: the consumer service and operator tool.
//!
//! Kept out of the library so that a service depending on `redis-retry` compiles none of
//! clap, figment, axum, indicatif, the Prometheus exporter or the log subscriber.

mod cli;
mod config;
mod exporter;

fn main() -> std::process::ExitCode {
    cli::main()
}
