//! The signal a service embedding the consumer usually stops on.

/// Completes on SIGINT or SIGTERM: the `shutdown` future to hand to
/// [`RedisRetryConsumer::run`](super::RedisRetryConsumer::run) in a service that stops on
/// either.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
