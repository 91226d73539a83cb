//! The headers a dead letter carries, named once for the producer that writes them and the
//! DLQ tools that read them.

use rdkafka::message::{Header, OwnedHeaders};

use crate::errors::DlqReason;

/// Why the task was dead-lettered: a [`DlqReason`] in snake case.
pub(crate) const REASON: &str = "reason";
/// The last error, without values.
pub(crate) const ERROR: &str = "error";
/// The topic the task was read from (main topic or a retry tier).
pub(crate) const SOURCE_TOPIC: &str = "source_topic";
/// When it was dead-lettered, RFC 3339.
pub(crate) const DEAD_LETTERED_AT: &str = "dead_lettered_at";
/// Present, with [`ENVELOPE`], on a dead letter too large for its topic: the payload is an
/// envelope describing the task, not the task.
pub(crate) const PAYLOAD: &str = "payload";
/// The value of [`PAYLOAD`] on an envelope.
pub(crate) const ENVELOPE: &str = "envelope";

/// Headers of a dead-lettered message: why, the last error, and where it came from.
pub(crate) fn dlq_headers(reason: DlqReason, error: &str, source_topic: &str) -> OwnedHeaders {
    let now = chrono::Utc::now().to_rfc3339();
    OwnedHeaders::new()
        .insert(Header { key: REASON, value: Some(reason.as_str()) })
        .insert(Header { key: ERROR, value: Some(error) })
        .insert(Header { key: SOURCE_TOPIC, value: Some(source_topic) })
        .insert(Header { key: DEAD_LETTERED_AT, value: Some(now.as_str()) })
}
