//! Prometheus metrics, a health endpoint and the web console for
//! `redis-retry consume --metrics-addr`.
//!
//! The crate records through the `metrics` facade (names in `redis_retry_runtime::counters`), so
//! a service embedding the consumer can install any recorder it likes; this module installs the
//! Prometheus one and serves it over HTTP, with the [`console`](crate::console) next to it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::console::Console;
use redis_retry_runtime::consumer::Health;
use redis_retry_runtime::counters;
use redis_retry_runtime::errors::SetupError;

/// Installs the Prometheus recorder for this process.
pub fn install_recorder() -> Result<PrometheusHandle, SetupError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(counters::APPLY_SECONDS.to_string()),
            &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
        )
        .and_then(|b| b.install_recorder())
        .map_err(|e| SetupError::Config(format!("metrics_addr: cannot install the Prometheus recorder: {e}")))
}

/// Binds the metrics address, so that a taken port is a configuration error at start.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, SetupError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| SetupError::Config(format!("metrics_addr: cannot listen on {addr}: {e}")))
}

/// Serves `/metrics` (Prometheus text format), `/health` and the `console` on `listener`
/// until `shutdown`.
///
/// `/health` answers 200 while the consumer runs and Redis was reachable at its last attempt,
/// 503 otherwise, with a small JSON body saying which.
///
/// # Errors
///
/// [`SetupError::Runtime`] when the server stops on an I/O error.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    health: Arc<Health>,
    console: Arc<Console>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), SetupError> {
    if let Ok(addr) = listener.local_addr() {
        let actions = if console.actions_enabled() { "replay and purge with the token" } else { "read-only" };
        tracing::info!(%addr, console = actions, "serving the console on /, metrics on /metrics and health on /health");
        if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "the console and metrics are reachable from other hosts (metrics_addr is not a loopback address)");
        }
    }
    let app = Router::new()
        .route("/metrics", get(move || std::future::ready(handle.render())))
        .route("/health", get(health_report))
        .with_state(health)
        .merge(console.router());
    // Actions are logged with the peer's address.
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| SetupError::Runtime(format!("metrics server: {e}")))
}

async fn health_report(State(health): State<Arc<Health>>) -> (StatusCode, String) {
    let (running, redis) = (health.running(), health.redis_reachable());
    let status = if running && redis { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = format!(
        "{{\"status\":\"{}\",\"consumer\":\"{}\",\"redis\":\"{}\"}}",
        if status == StatusCode::OK { "ok" } else { "unavailable" },
        if running { "running" } else { "stopped" },
        if redis { "reachable" } else { "unreachable" },
    );
    (status, body)
}
