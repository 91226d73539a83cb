//! The overview: backlog per partition (main topic, tiers, dead letters), the rates at which
//! tasks are applied, retried and dead-lettered, Redis reachability and the group's members.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use redis_retry_runtime::counters;

use super::Console;

/// How long each broker request of the overview may take: a dead broker shows as an error on
/// the page after this, never as a page that hangs.
const BROKER_TIMEOUT: Duration = Duration::from_secs(4);

/// How often the counters are sampled: the rates are over the last interval.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Counters whose rates the overview shows, in the order of [`Sample::counts`].
const RATED: [&str; 3] = [counters::APPLIED, counters::RETRIED, counters::DEAD_LETTERED];

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    counts: [f64; 3],
}

/// The last two samples of the counters, taken in the background.
pub struct Rates {
    samples: Arc<Mutex<(Sample, Sample)>>,
    metrics: PrometheusHandle,
}

impl Rates {
    /// Samples `metrics` every [`SAMPLE_EVERY`] until the console is dropped.
    pub fn start(metrics: PrometheusHandle) -> Rates {
        let first = Sample { at: Instant::now(), counts: sum_counters(&metrics.render()) };
        let samples = Arc::new(Mutex::new((first, first)));
        let weak = Arc::downgrade(&samples);
        let sampled = metrics.clone();
        tokio::spawn(async move {
            let metrics = sampled;
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(samples) = weak.upgrade() else { return };
                let now = Sample { at: Instant::now(), counts: sum_counters(&metrics.render()) };
                if let Ok(mut s) = samples.lock() {
                    *s = (s.1, now);
                };
            }
        });
        Rates { samples, metrics }
    }

    /// Per-second rates over the last interval (`None` before the first) and the interval,
    /// and the totals as they are now.
    fn per_second(&self) -> (Option<[f64; 3]>, Duration, [f64; 3]) {
        let totals = sum_counters(&self.metrics.render());
        let Ok(s) = self.samples.lock() else { return (None, Duration::ZERO, totals) };
        let (before, last) = *s;
        let dt = last.at.duration_since(before.at);
        if dt.is_zero() {
            return (None, dt, totals);
        }
        let rate = |i: usize| ((last.counts[i] - before.counts[i]) / dt.as_secs_f64()).max(0.0);
        (Some([rate(0), rate(1), rate(2)]), dt, totals)
    }
}

/// Each of [`RATED`] summed over its labels, from a Prometheus text exposition.
fn sum_counters(exposition: &str) -> [f64; 3] {
    let mut out = [0.0; 3];
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        if let Some(i) = RATED.iter().position(|r| *r == name) {
            out[i] += line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        }
    }
    out
}

pub async fn overview(State(console): State<Arc<Console>>) -> Response {
    let (rates, interval, totals) = console.rates.per_second();
    let rated = |i: usize| rates.map(|r| r[i]);
    let mut body = json!({
        "consumer": if console.health.running() { "running" } else { "stopped" },
        "redis": if console.health.redis_reachable() { "reachable" } else { "unreachable" },
        "group": console.group,
        "rates": {
            "interval_secs": interval.as_secs_f64(),
            "applied": rated(0), "retried": rated(1), "dead_lettered": rated(2),
        },
        "totals": { "applied": totals[0], "retried": totals[1], "dead_lettered": totals[2] },
    });
    // The broker's requests are bounded one by one; this bounds them together.
    let bound = BROKER_TIMEOUT * 3;
    match tokio::time::timeout(bound, console.backlog.read(BROKER_TIMEOUT)).await {
        Ok(Ok(b)) => {
            body["topics"] = b
                .topics
                .iter()
                .map(|t| {
                    json!({
                        "topic": t.topic, "group": t.group, "lag": t.total(),
                        "partitions": t.partitions.iter().map(|p| json!({
                            "partition": p.partition, "end": p.end, "committed": p.committed, "lag": p.lag,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            match b.group {
                Ok((state, members)) => {
                    body["group_state"] = json!(state);
                    body["members"] = members
                        .iter()
                        .map(|m| json!({"member_id": m.member_id, "client_id": m.client_id, "host": m.client_host}))
                        .collect();
                }
                Err(e) => body["members_error"] = json!(e),
            }
        }
        Ok(Err(e)) => body["kafka_error"] = json!(format!("cannot read the backlog: {e}")),
        Err(_) => {
            body["kafka_error"] =
                json!(format!("the Kafka brokers did not answer within {} s", bound.as_secs()))
        }
    }
    (StatusCode::OK, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_over_their_labels() {
        let text = "# TYPE redis_retry_applied_total counter\n\
                    redis_retry_applied_total 12\n\
                    redis_retry_dead_lettered_total{reason=\"expired\"} 2\n\
                    redis_retry_dead_lettered_total{reason=\"max_retries\"} 3\n\
                    redis_retry_applied_totally 99\n";
        assert_eq!(sum_counters(text), [12.0, 0.0, 5.0]);
    }
}
