//! Sending one message and hearing how its delivery went: what the logs say about it,
//! what a refusal means, and the callback librdkafka calls from its own thread.

use std::sync::mpsc::{self};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, DeliveryResult, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, ProducerContext, ThreadedProducer};
use tokio::sync::oneshot;

use crate::counters;
use crate::signing::{SigningKey, SIGNATURE_HEADER};
use crate::spool::{Lane, Record, Spool, SpoolError};
use crate::task::RedisTask;

/// What the logs say about a message: its kind, command, keys and origin, never its values.
#[derive(Default)]
pub(super) struct About {
    pub(super) task_type: &'static str,
    pub(super) command: String,
    pub(super) keys: String,
    pub(super) source: String,
    pub(super) task_id: String,
    pub(super) original_error: String,
}

impl About {
    pub(super) fn task(task: &RedisTask) -> About {
        About {
            task_type: task.kind.as_str(),
            command: task.log_commands(),
            keys: task.log_keys(),
            source: task.source.clone(),
            task_id: task.id.to_string(),
            original_error: task.original_err.clone(),
        }
    }

    /// For bytes that may or may not be a task (the consumer's re-publishing, replays).
    pub(super) fn payload(payload: &[u8]) -> About {
        match RedisTask::from_json(payload) {
            Ok(task) => About::task(&task),
            Err(_) => About { task_type: "raw", ..About::default() },
        }
    }
}

/// Who hears how a delivery ended.
pub(super) enum Outcome {
    /// Nobody waits: a failure sends the message to the spool.
    Direct,
    /// A caller waits, and retries a failure itself.
    Waiter(oneshot::Sender<Result<(), KafkaError>>),
    /// The spool's drainer, for record `index` of its batch.
    Replay { index: usize, report: mpsc::Sender<(usize, Result<(), KafkaError>)> },
}

/// State shared by the producer's handles, librdkafka's delivery callback and the drainer.
pub(super) struct Shared {
    pub(super) spool: Option<Spool>,
    pub(super) signing_key: Option<SigningKey>,
    pub(super) flow: Mutex<Flow>,
    /// Signals a change of `flow` or of the spool to the drainer.
    pub(super) changed: Condvar,
}

#[derive(Default)]
pub(super) struct Flow {
    /// Fire-and-forget messages with librdkafka whose fate is unknown. While there are any,
    /// the spool's redelivery lane stays open: one of them may still fail and must then be
    /// re-published before the tasks spooled after it.
    pub(super) in_flight: u64,
    pub(super) stopping: bool,
}

impl Shared {
    pub(super) fn flow(&self) -> MutexGuard<'_, Flow> {
        self.flow.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `headers` with a signature of `payload` in place of any earlier one, when signing.
    pub(super) fn signed(&self, payload: &[u8], headers: Option<OwnedHeaders>) -> Option<OwnedHeaders> {
        let Some(key) = &self.signing_key else { return headers };
        let mut out = OwnedHeaders::new();
        for h in headers.iter().flat_map(|h| h.iter()).filter(|h| h.key != SIGNATURE_HEADER) {
            out = out.insert(Header { key: h.key, value: h.value });
        }
        let signature = key.sign(payload);
        Some(out.insert(Header { key: SIGNATURE_HEADER, value: Some(signature.as_bytes()) }))
    }

    /// Keeps `record` in the spool, or says loudly (error log, counter) why it could not.
    pub(super) fn keep(
        &self,
        spool: &Spool,
        record: &Record,
        lane: Lane,
        about: &About,
        cause: &'static str,
    ) -> Result<(), SpoolError> {
        let starts = !spool.is_active();
        match spool.append(record, lane) {
            Ok(()) => {
                metrics::counter!(counters::SPOOLED, "cause" => cause).increment(1);
                if starts {
                    tracing::warn!(spool = %spool.dir().display(), cause, topic = %record.topic,
                        "kafka cannot take tasks now: keeping them in the local spool until it can");
                }
                tracing::debug!(cause, keys = %about.keys, source = %about.source, task_id = %about.task_id,
                    "task kept in the spool");
                self.changed.notify_all();
                Ok(())
            }
            Err(e) => {
                tracing::error!(
                    spool_error = %e,
                    cause,
                    topic = %record.topic,
                    task_type = about.task_type,
                    command = %about.command,
                    keys = %about.keys,
                    source = %about.source,
                    task_id = %about.task_id,
                    original_error = %about.original_error,
                    "task NOT saved: kafka cannot take it and the spool refused it"
                );
                Err(e)
            }
        }
    }

    /// A message whose delivery failed and that no caller will retry: into the spool when
    /// there is one and resending can help, otherwise logged and counted as lost.
    pub(super) fn delivery_failed(
        &self,
        err: &KafkaError,
        msg: &BorrowedMessage<'_>,
        about: &About,
        cause: &'static str,
    ) {
        if let Some(spool) = self.spool.as_ref().filter(|_| !is_permanent(err)) {
            let record = Record {
                topic: msg.topic().to_string(),
                key: msg.key().map(<[u8]>::to_vec),
                payload: msg.payload().unwrap_or_default().to_vec(),
                headers: header_list(msg.headers()),
            };
            if self.keep(spool, &record, Lane::Redelivery, about, cause).is_err() {
                metrics::counter!(counters::ENQUEUE_FAILURES, "reason" => "spool_refused").increment(1);
            }
            return;
        }
        report_delivery_failure(err, about);
    }

    /// A fire-and-forget message left librdkafka's hands (delivered, failed or refused).
    pub(super) fn direct_settled(&self) {
        if self.spool.is_some() {
            let mut flow = self.flow();
            flow.in_flight = flow.in_flight.saturating_sub(1);
            drop(flow);
            self.changed.notify_all();
        }
    }
}

pub(super) fn report_delivery_failure(err: &KafkaError, about: &About) {
    metrics::counter!(counters::ENQUEUE_FAILURES, "reason" => "delivery").increment(1);
    tracing::error!(
        kafka_error = %err,
        original_error = %about.original_error,
        task_type = about.task_type,
        command = %about.command,
        keys = %about.keys,
        source = %about.source,
        task_id = %about.task_id,
        "failed to deliver redis retry task to kafka"
    );
}

/// Errors Kafka gives again however often the message is sent: spooling would not help.
pub(super) fn is_permanent(err: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        err.rdkafka_error_code(),
        Some(
            C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::MessageBatchTooLarge
                | C::InvalidRecord
                | C::BadMessage
        )
    )
}

/// Headers as the spool keeps them: without a signature, which is made afresh at each send
/// (the key may have changed since).
pub(super) fn header_list<H: Headers>(headers: Option<&H>) -> Vec<(String, Option<Vec<u8>>)> {
    headers
        .iter()
        .flat_map(|h| h.iter())
        .filter(|h| h.key != SIGNATURE_HEADER)
        .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
        .collect()
}

pub(super) fn owned_headers(list: &[(String, Option<Vec<u8>>)]) -> Option<OwnedHeaders> {
    if list.is_empty() {
        return None;
    }
    let headers = OwnedHeaders::new_with_capacity(list.len());
    Some(list.iter().fold(headers, |h, (key, value)| h.insert(Header { key, value: value.as_deref() })))
}

/// What librdkafka hands back with a refused message.
pub(super) type Refused = (KafkaError, Box<Outcome>, Option<OwnedHeaders>);

/// Signs and queues one message on librdkafka.
pub(super) fn send(
    producer: &ThreadedProducer<DeliveryReporter>,
    shared: &Shared,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
    headers: Option<OwnedHeaders>,
    outcome: Outcome,
) -> Result<(), Refused> {
    let mut record = BaseRecord::with_opaque_to(topic, Box::new(outcome)).payload(payload);
    if let Some(key) = key {
        record = record.key(key);
    }
    if let Some(headers) = shared.signed(payload, headers) {
        record = record.headers(headers);
    }
    producer.send(record).map_err(|(err, record)| (err, record.delivery_opaque, record.headers))
}

/// librdkafka calls this context on its polling thread for every delivery report (and on
/// the dropping thread for the messages purged when the producer goes).
pub(super) struct DeliveryReporter(pub(super) Arc<Shared>);

impl ClientContext for DeliveryReporter {}

impl ProducerContext for DeliveryReporter {
    type DeliveryOpaque = Box<Outcome>;

    fn delivery(&self, result: &DeliveryResult<'_>, outcome: Box<Outcome>) {
        let shared = &self.0;
        // What the logs say about a failed message is read back from its payload: building it
        // for every message would cost the happy path more than the send itself.
        let about = |msg: &BorrowedMessage<'_>| About::payload(msg.payload().unwrap_or_default());
        match (*outcome, result) {
            (Outcome::Replay { index, report }, _) => {
                let _ = report.send((index, result.as_ref().map(|_| ()).map_err(|(e, _)| e.clone())));
            }
            (Outcome::Waiter(waiter), Ok(_)) => {
                metrics::counter!(counters::ENQUEUED).increment(1);
                let _ = waiter.send(Ok(()));
            }
            (Outcome::Waiter(waiter), Err((err, msg))) => {
                if waiter.send(Err(err.clone())).is_err() {
                    // The caller stopped waiting, so nobody will retry it.
                    shared.delivery_failed(err, msg, &about(msg), "waiter_gone");
                } else {
                    report_delivery_failure(err, &about(msg));
                }
            }
            (Outcome::Direct, result) => {
                match result {
                    Ok(_) => metrics::counter!(counters::ENQUEUED).increment(1),
                    // Spooled before it stops counting as in flight, so that the redelivery
                    // lane cannot be sealed without it.
                    Err((err, msg)) => shared.delivery_failed(err, msg, &about(msg), "delivery_failed"),
                }
                shared.direct_settled();
            }
        }
    }
}
