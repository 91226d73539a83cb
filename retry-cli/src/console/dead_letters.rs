//! The dead-letter page's API: a filtered, paginated list, one entry's detail, and replay or
//! purge of a selection, all through [`Dlq`](redis_retry_runtime::dlq::Dlq), the code behind
//! `redis-retry dlq list|replay|purge`.
//!
//! A selection is the positions (`partition:offset`) of the entries the operator ticked, sent
//! as an `at=` filter: an entry acted on meanwhile is no longer at its position, so it is left
//! alone and reported as missing rather than confused with whatever is there now.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use redis_retry_runtime::dlq::{DlqEntry, Filter};

use super::auth::authorize;
use super::{error, Console};
use crate::cli::escape_controls;

/// The most entries a list reads after the cursor: a page never waits on a whole huge topic.
/// The page says when the scan stopped there (filters then apply to these entries only).
const SCAN_LIMIT: usize = 10_000;
/// Entries per page unless asked otherwise, and the most a page may hold.
const PER_PAGE: usize = 50;
const MAX_PER_PAGE: usize = 500;
/// The most positions one action may name.
const MAX_SELECTION: usize = 1_000;
/// How long a list may take; reading stops at the end the broker reported at its start.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Filters as the page sends them: empty means no condition.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    command: String,
    /// `>1h` or `<10m`.
    #[serde(default)]
    age: String,
    #[serde(default)]
    page: String,
    #[serde(default)]
    per_page: String,
}

impl ListQuery {
    fn filter(&self) -> Result<Filter, String> {
        let mut conditions = Vec::new();
        for (field, value) in [
            ("reason", &self.reason),
            ("source", &self.source),
            ("key", &self.key),
            ("command", &self.command),
        ] {
            if !value.trim().is_empty() {
                conditions.push(format!("{field}={}", value.trim()));
            }
        }
        if !self.age.trim().is_empty() {
            conditions.push(format!("age{}", self.age.trim()));
        }
        Filter::parse(&conditions)
    }
}

fn number(name: &str, text: &str, default: usize, max: usize) -> Result<usize, String> {
    if text.trim().is_empty() {
        return Ok(default);
    }
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("{name} must be a whole number from 1 to {max}, got `{}`", escape_controls(text))),
    }
}

async fn read(console: &Console) -> Result<Vec<DlqEntry>, Response> {
    match tokio::time::timeout(READ_TIMEOUT, console.dlq.list(Some(SCAN_LIMIT))).await {
        Ok(Ok(entries)) => Ok(entries),
        Ok(Err(e)) => Err(error(StatusCode::BAD_GATEWAY, format!("cannot read the dead letters: {e}"))),
        Err(_) => Err(error(
            StatusCode::GATEWAY_TIMEOUT,
            format!("reading the dead letters took longer than {} s", READ_TIMEOUT.as_secs()),
        )),
    }
}

/// An age in its two largest units (`3d 4h`, `25m 10s`): a list is read at a glance.
fn short_age(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// An entry as the list shows it: metadata only, never the task's values.
fn summary(e: &DlqEntry) -> serde_json::Value {
    let key = e.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned());
    json!({
        "at": format!("{}:{}", e.partition, e.offset),
        "partition": e.partition,
        "offset": e.offset,
        "age_secs": e.age().map(|a| a.as_secs()),
        "age": e.age().map(|a| short_age(a.as_secs())),
        "reason": e.reason,
        "source": e.source(),
        "command": e.command(),
        "key": key,
        "attempts": e.attempts(),
        "error": e.error,
        "replayable": e.task.is_ok(),
    })
}

pub async fn list(State(console): State<Arc<Console>>, Query(q): Query<ListQuery>) -> Response {
    let parsed = q.filter().and_then(|f| {
        Ok((
            f,
            number("page", &q.page, 1, 1_000_000)?,
            number("per_page", &q.per_page, PER_PAGE, MAX_PER_PAGE)?,
        ))
    });
    let (filter, page, per_page) = match parsed {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.replace("--filter ", "filter ")),
    };
    let entries = match read(&console).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    let scanned = entries.len();
    let matching: Vec<&DlqEntry> = entries.iter().filter(|e| filter.matches(e)).collect();
    let pages = matching.len().div_ceil(per_page).max(1);
    let shown: Vec<serde_json::Value> =
        matching.iter().skip((page.min(pages) - 1) * per_page).take(per_page).map(|e| summary(e)).collect();
    Json(json!({
        "entries": shown,
        "matching": matching.len(),
        "scanned": scanned,
        "scan_limit_reached": scanned >= SCAN_LIMIT,
        "page": page.min(pages),
        "pages": pages,
        "per_page": per_page,
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
pub struct DetailQuery {
    #[serde(default)]
    at: String,
}

pub async fn detail(State(console): State<Arc<Console>>, Query(q): Query<DetailQuery>) -> Response {
    let position = match Filter::parse(&[format!("at={}", q.at)]).map(|f| f.positions()) {
        Ok(p) if p.len() == 1 => p[0],
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("`{}` is not a position PARTITION:OFFSET", escape_controls(&q.at)),
            )
        }
    };
    let entries = match read(&console).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    let Some(e) = entries.iter().find(|e| (e.partition, e.offset) == position) else {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "no dead letter at {}:{} (replayed, purged or moved by an action since); reload the list",
                position.0, position.1
            ),
        );
    };
    let mut body = summary(e);
    body["dead_lettered_at"] = json!(e.dead_lettered_at.map(|d| d.to_rfc3339()));
    body["envelope"] = json!(e.is_envelope());
    // The task's own `original_err` is left out: a foreign producer writes it unchecked, while
    // the `error` header is the consumer's own, value-free wording.
    match &e.task {
        Ok(t) => {
            body["task"] = json!({
                "id": t.id,
                "kind": format!("{:?}", t.kind).to_ascii_lowercase(),
                "mode": format!("{:?}", t.mode).to_ascii_lowercase(),
                "captured_at": t.captured_at.to_rfc3339(),
                "retry_count": t.retry_count,
                "max_retries": t.max_retries,
                "trace_id": t.trace_id,
            });
        }
        // A parser's message can quote the payload it choked on: the reason is given alone.
        Err(_) => body["task"] = json!(null),
    }
    Json(body).into_response()
}

/// An action's request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Selection {
    /// Positions `PARTITION:OFFSET` of the entries to act on.
    at: Vec<String>,
    /// Who the operator says they are, for the log.
    #[serde(default)]
    operator: String,
}

pub async fn replay(
    State(console): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    act(console, peer, &headers, &body, Action::Replay).await
}

pub async fn purge(
    State(console): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    act(console, peer, &headers, &body, Action::Purge).await
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Replay,
    Purge,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Replay => "replay",
            Action::Purge => "purge",
        }
    }
}

async fn act(
    console: Arc<Console>,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: &[u8],
    action: Action,
) -> Response {
    let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("-");
    let user_agent: String = escape_controls(user_agent).chars().take(200).collect();
    if let Err((status, message)) = authorize(headers, console.token.as_ref()) {
        tracing::warn!(
            action = action.name(),
            peer = %peer,
            user_agent,
            status = status.as_u16(),
            reason = message.as_str(),
            "console action refused"
        );
        return error(status, message);
    }
    let selection: Selection = match serde_json::from_slice(body) {
        Ok(s) => s,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"at\": [\"PARTITION:OFFSET\", ...], \"operator\": \"name\"}}: {e}"),
            )
        }
    };
    if selection.at.is_empty() || selection.at.len() > MAX_SELECTION {
        return error(StatusCode::BAD_REQUEST, format!("select from 1 to {MAX_SELECTION} entries"));
    }
    let at = format!("at={}", selection.at.join(","));
    let filter = match Filter::parse(std::slice::from_ref(&at)) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.replace("--filter ", "selection ")),
    };
    let operator: String = escape_controls(selection.operator.trim()).chars().take(64).collect();
    let selection_text = at[3..].to_string();
    // The rewrite runs to its end even if the browser gives up waiting (a large set takes a
    // while): stopped half-way, it would leave duplicates behind for nothing.
    let work = tokio::spawn(async move {
        let _one_at_a_time = console.acting.lock().await;
        let outcome = match action {
            Action::Replay => console.dlq.replay(&filter, |_, _| {}).await,
            Action::Purge => console.dlq.purge(&filter, |_, _| {}).await,
        };
        let operator = if operator.is_empty() { "-" } else { operator.as_str() };
        match &outcome {
            Ok(outcome) => tracing::info!(
                action = action.name(),
                peer = %peer,
                operator,
                user_agent,
                selection = selection_text,
                chosen = outcome.chosen,
                kept = outcome.kept,
                missing = positions(&outcome.missing).join(","),
                "console action"
            ),
            Err(e) => tracing::error!(
                action = action.name(),
                peer = %peer,
                operator,
                user_agent,
                selection = selection_text,
                error = %e,
                "console action failed"
            ),
        }
        outcome
    });
    match work.await {
        Ok(Ok(outcome)) => Json(json!({
            "action": action.name(),
            "chosen": outcome.chosen,
            "kept": outcome.kept,
            "missing": positions(&outcome.missing),
        }))
        .into_response(),
        Ok(Err(e)) => error(StatusCode::BAD_GATEWAY, format!("{} failed: {e}", action.name())),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{} stopped: {e}", action.name())),
    }
}

fn positions(at: &[(i32, i64)]) -> Vec<String> {
    at.iter().map(|(p, o)| format!("{p}:{o}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(short_age(42), "42s");
        assert_eq!(short_age(25 * 60 + 4), "25m 4s");
        assert_eq!(short_age(2 * 3600 + 4), "2h 0m");
        assert_eq!(short_age(26 * 3600 + 30 * 60), "1d 2h");
    }

    #[test]
    fn the_page_filters_become_dlq_conditions() {
        let q = ListQuery { source: " Repo.* ".into(), age: ">1h".into(), ..ListQuery::default() };
        assert!(q.filter().is_ok());
        let bad = ListQuery { age: "=1h".into(), ..ListQuery::default() };
        assert!(bad.filter().unwrap_err().contains("age>DURATION"));
        assert!(number("page", "0", 1, 10).is_err() && number("page", "x", 1, 10).is_err());
        assert_eq!(number("page", "", 1, 10), Ok(1));
    }
}
