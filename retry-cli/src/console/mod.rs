//! The web console `redis-retry consume --metrics-addr` serves next to `/metrics` and
//! `/health`: an overview of the pipeline and the dead-letter set, with replay and purge.
//!
//! It is read-only unless a token is configured (`console_token`), and it never shows a task's
//! values: only keys, commands, sources, reasons and errors. The page is three embedded files
//! (HTML, CSS, JavaScript) that load nothing from elsewhere, so it works on a network without
//! internet and there is nothing to build.

mod auth;
mod dead_letters;
mod overview;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{self, HeaderValue};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;

use redis_retry_runtime::consumer::Health;
use redis_retry_runtime::dlq::Dlq;
use redis_retry_runtime::errors::SetupError;
use redis_retry_runtime::lag::BacklogReader;
use redis_retry_runtime::producer::ProducerConfig;

pub use auth::Token;

const INDEX_HTML: &str = include_str!("assets/index.html");
const CONSOLE_CSS: &str = include_str!("assets/console.css");
const CONSOLE_JS: &str = include_str!("assets/console.js");

/// What the console reads and acts on.
pub struct Console {
    kafka: ProducerConfig,
    group: String,
    token: Option<Token>,
    /// Whether the console listens on a loopback address only (see [`auth::local_host`]).
    loopback: bool,
    health: Arc<Health>,
    rates: overview::Rates,
    backlog: BacklogReader,
    dlq: Dlq,
    /// One replay or purge at a time: two rewrites of the set at once would each append the
    /// entries they keep, and the set would hold them twice.
    acting: tokio::sync::Mutex<()>,
}

impl Console {
    /// The console of the pipeline `kafka` read by consumer group `group`; actions need
    /// `token`. `loopback`: it listens on a loopback address only.
    ///
    /// # Errors
    ///
    /// [`SetupError::Runtime`] when librdkafka refuses the Kafka client configuration.
    pub fn new(
        kafka: ProducerConfig,
        group: String,
        token: Option<Token>,
        loopback: bool,
        health: Arc<Health>,
        metrics: PrometheusHandle,
    ) -> Result<Arc<Console>, SetupError> {
        let dlq = Dlq::new(&kafka, &group);
        let backlog = BacklogReader::new(&kafka, &group)?;
        Ok(Arc::new(Console {
            kafka,
            group,
            token,
            loopback,
            health,
            rates: overview::Rates::start(metrics),
            backlog,
            dlq,
            acting: tokio::sync::Mutex::new(()),
        }))
    }

    /// Whether a token is configured, without which the console only shows.
    pub fn actions_enabled(&self) -> bool {
        self.token.is_some()
    }

    /// The console's routes: the page, its assets and its JSON API, each response with the
    /// headers that keep it out of frames and other sites' scripts.
    pub fn router(self: &Arc<Console>) -> Router {
        Router::new()
            .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
            .route("/console.css", get(|| async { asset("text/css; charset=utf-8", CONSOLE_CSS) }))
            .route("/console.js", get(|| async { asset("text/javascript; charset=utf-8", CONSOLE_JS) }))
            .route("/api/session", get(session))
            .route("/api/overview", get(overview::overview))
            .route("/api/dead-letters", get(dead_letters::list))
            .route("/api/dead-letters/entry", get(dead_letters::detail))
            .route("/api/dead-letters/replay", post(dead_letters::replay))
            .route("/api/dead-letters/purge", post(dead_letters::purge))
            .with_state(Arc::clone(self))
            .layer(middleware::from_fn(security_headers))
            .layer(middleware::from_fn_with_state(Arc::clone(self), local_only))
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// What the page needs to know before it draws: whether actions are possible at all.
async fn session(State(console): State<Arc<Console>>) -> Json<serde_json::Value> {
    let topics = console.kafka.topics();
    Json(serde_json::json!({
        "actions_enabled": console.token.is_some(),
        "group": console.group,
        "topic": topics.main,
        "dlq_topic": topics.dlq,
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// A JSON error the page shows as it is.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// On a loopback address, the console answers only requests addressed to it by a loopback
/// name: a page of another site whose name was re-pointed at 127.0.0.1 (DNS rebinding)
/// would otherwise count as the console's own page and read its lists.
async fn local_only(State(console): State<Arc<Console>>, request: Request, next: Next) -> Response {
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    if console.loopback && !auth::local_host(host) {
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            "this console listens on a loopback address: open it as http://127.0.0.1:PORT/ or http://localhost:PORT/",
        );
    }
    next.run(request).await
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    // Everything the page uses comes from here; no inline script or style can run, so a key
    // or an error text that looks like markup stays text.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // Dead letters change under the operator's eyes; a cached list would name gone positions.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
