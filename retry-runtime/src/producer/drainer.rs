//! The thread that re-publishes what the spool holds, oldest first, a batch at a time.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::ThreadedProducer;

use super::*;
use crate::counters;
use crate::spool::{Batch, Spool};

/// At most this many spooled records are re-published before waiting for their acks.
pub(super) const REPLAY_BATCH_RECORDS: usize = 500;
pub(super) const REPLAY_BATCH_BYTES: usize = 4 * 1024 * 1024;
pub(super) const REPLAY_BACKOFF_MIN: Duration = Duration::from_millis(200);
pub(super) const REPLAY_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Re-publishes the spool in order, on its own thread, while the producer lives.
pub(super) struct Drainer {
    pub(super) shared: Arc<Shared>,
    pub(super) producer: ThreadedProducer<DeliveryReporter>,
}

impl Drainer {
    pub(super) fn run(&self, spool: &Spool) {
        let mut backoff = REPLAY_BACKOFF_MIN;
        // When the current backlog began to drain, and how many tasks were committed then.
        let mut started: Option<(Instant, u64)> = None;
        while self.wait_for_work(spool) {
            let batch = match spool.read_batch(REPLAY_BATCH_RECORDS, REPLAY_BATCH_BYTES) {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(spool_error = %e, "cannot read the spool; trying again");
                    if !self.pause(REPLAY_BACKOFF_MAX) {
                        return;
                    }
                    continue;
                }
            };
            started.get_or_insert_with(|| (Instant::now(), spool.stats().committed));
            let Some(results) = self.send_batch(&batch) else { return };
            match self.settle(spool, &batch, &results) {
                Some(err) => {
                    tracing::warn!(kafka_error = %err, waiting = spool.stats().pending,
                        retry_in_ms = backoff.as_millis() as u64,
                        "kafka did not take re-published spooled tasks; trying again");
                    if !self.pause(backoff) {
                        return;
                    }
                    backoff = (backoff * 2).min(REPLAY_BACKOFF_MAX);
                }
                None => backoff = REPLAY_BACKOFF_MIN,
            }
            if !spool.is_active() {
                if let Some((since, committed)) = started.take() {
                    tracing::info!(
                        tasks = spool.stats().committed - committed,
                        seconds = since.elapsed().as_secs_f64(),
                        "spool drained: every kept task is in kafka"
                    );
                }
            }
        }
    }

    /// Waits until the spool has something to re-publish and no message sent before it
    /// started can still fail into it; false once the producer stops.
    pub(super) fn wait_for_work(&self, spool: &Spool) -> bool {
        let mut flow = self.shared.flow();
        loop {
            if flow.stopping {
                return false;
            }
            if flow.in_flight == 0 && spool.is_active() {
                spool.seal_redelivery();
                if spool.is_active() {
                    return true;
                }
            }
            flow = self
                .shared
                .changed
                .wait_timeout(flow, Duration::from_millis(500))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Sleeps for `d` unless the producer stops first (false).
    pub(super) fn pause(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut flow = self.shared.flow();
        while !flow.stopping {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            flow = self.shared.changed.wait_timeout(flow, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        false
    }

    /// Sends the batch and waits for every delivery report; `None` when the producer stops.
    pub(super) fn send_batch(&self, batch: &Batch) -> Option<Vec<Result<(), KafkaError>>> {
        let (report, reports) = mpsc::channel();
        let mut results: Vec<Option<Result<(), KafkaError>>> = batch.entries.iter().map(|_| None).collect();
        for (index, entry) in batch.entries.iter().enumerate() {
            let r = &entry.record;
            let headers = owned_headers(&r.headers);
            loop {
                let outcome = Outcome::Replay { index, report: report.clone() };
                let sent = send(
                    &self.producer,
                    &self.shared,
                    &r.topic,
                    r.key.as_deref(),
                    &r.payload,
                    headers.clone(),
                    outcome,
                );
                match sent {
                    Ok(()) => break,
                    // librdkafka's queue is full (of this batch or of waited sends): let it drain.
                    Err((err, ..)) if err.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                        if !self.pause(Duration::from_millis(50)) {
                            return None;
                        }
                    }
                    Err((err, ..)) => {
                        results[index] = Some(Err(err));
                        break;
                    }
                }
            }
        }
        drop(report);
        while results.iter().any(Option::is_none) {
            match reports.recv_timeout(Duration::from_millis(200)) {
                Ok((index, result)) => {
                    if let Some(slot) = results.get_mut(index) {
                        *slot = Some(result);
                    }
                }
                Err(RecvTimeoutError::Timeout) if self.shared.flow().stopping => return None,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        Some(results.into_iter().map(|r| r.unwrap_or(Err(KafkaError::Canceled))).collect())
    }

    /// Removes from the spool the longest run of records at the batch's start that Kafka
    /// took (or refuses for good); returns the error that stopped the run, if any.
    pub(super) fn settle<'a>(
        &self,
        spool: &Spool,
        batch: &Batch,
        results: &'a [Result<(), KafkaError>],
    ) -> Option<&'a KafkaError> {
        let (mut done, mut replayed, mut failure) = (0, 0, None);
        for (entry, result) in batch.entries.iter().zip(results) {
            match result {
                Ok(()) => replayed += 1,
                Err(err) if is_permanent(err) => {
                    let about = About::payload(&entry.record.payload);
                    metrics::counter!(counters::ENQUEUE_FAILURES, "reason" => "permanent").increment(1);
                    tracing::error!(kafka_error = %err, topic = %entry.record.topic, task_type = about.task_type,
                        keys = %about.keys, source = %about.source, task_id = %about.task_id,
                        "kafka refuses a spooled task for good; it is dropped from the spool");
                }
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            }
            done += 1;
        }
        if done > 0 {
            let position =
                if done == batch.entries.len() { batch.end() } else { batch.entries[done - 1].end };
            if let Err(e) = spool.commit(position) {
                tracing::error!(spool_error = %e,
                    "could not remove re-published tasks from the spool; a restart will publish them again");
            }
            metrics::counter!(counters::SPOOL_REPLAYED).increment(replayed);
            metrics::counter!(counters::ENQUEUED).increment(replayed);
        } else if batch.is_empty() {
            // Only damaged bytes were read: step over them.
            if let Err(e) = spool.commit(batch.end()) {
                tracing::error!(spool_error = %e, "could not step over damaged spool bytes");
            }
        }
        failure
    }
}
