//! `redis-retry`: the consumer service and operator tool.
//!
//! Kept out of the library so that a service depending on `redis-retry` compiles none of
//! clap, figment, axum, indicatif, the Prometheus exporter, the web console or the log subscriber.

mod cli;
mod config;
mod console;
mod exporter;

fn main() -> std::process::ExitCode {
    cli::main()
}
