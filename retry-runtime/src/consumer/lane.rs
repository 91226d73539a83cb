//! A lane: one Kafka consumer (the main topic's, or one retry tier's) that reads batches,
//! has them settled and stores their offsets only then.

use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::FutureExt;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use redis::aio::ConnectionLike;
use tokio::sync::watch;

use super::Shared;
use crate::counters;
use crate::errors::SetupError;

/// Turns librdkafka's periodic statistics into the consumer-lag gauge.
pub(super) struct LagReporter;

impl ClientContext for LagReporter {
    fn stats(&self, stats: Statistics) {
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                // librdkafka reports -1 for partitions this member does not consume.
                if *partition >= 0 && p.consumer_lag >= 0 {
                    metrics::gauge!(counters::CONSUMER_LAG, "topic" => topic.clone(), "partition" => partition.to_string())
                        .set(p.consumer_lag as f64);
                }
            }
        }
    }
}

impl ConsumerContext for LagReporter {}

pub(super) type KafkaConsumer = StreamConsumer<LagReporter>;

impl<C> Shared<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    pub(super) fn kafka_consumer(&self, group: &str) -> Result<KafkaConsumer, SetupError> {
        // A tier lane may sleep until its head message is due; librdkafka must not take that
        // for a dead consumer.
        let poll_interval = (self.config.retry_max_delay * 2 + Duration::from_secs(60))
            .max(Duration::from_secs(300))
            .as_millis()
            .to_string();
        let mut cfg = self.config.kafka.client_config();
        cfg.set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // A retry is due at a precise time; a long-held empty fetch would add up to its
            // duration to every delay (and some brokers hold fetches even when data waits).
            .set("fetch.wait.max.ms", "100")
            .set("max.poll.interval.ms", poll_interval)
            .set("statistics.interval.ms", "5000");
        for (k, v) in &self.config.kafka.properties {
            cfg.set(k, v);
        }
        cfg.create_with_context(LagReporter).map_err(|e| SetupError::Runtime(format!("kafka consumer: {e}")))
    }

    pub(super) async fn lane(
        self: Arc<Self>,
        consumer: KafkaConsumer,
        is_tier: bool,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), SetupError> {
        let max_batch = self.config.max_batch;
        let mut batch = Vec::with_capacity(max_batch);
        let mut prepared = Vec::with_capacity(max_batch);
        loop {
            if batch.is_empty() {
                let next = tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    m = consumer.recv() => m,
                };
                match next {
                    Ok(m) => batch.push(m),
                    Err(e) => {
                        tracing::warn!(error = %e, "kafka consumer error");
                        tokio::select! {
                            _ = stop.wait_for(|s| *s) => break,
                            _ = tokio::time::sleep(Duration::from_millis(250)) => continue,
                        }
                    }
                }
            }
            // What librdkafka has already fetched joins the batch; nothing waits for more.
            let from = prepared.len();
            fetched(&consumer, &mut batch, max_batch);
            prepared.extend(self.prepare_all(&batch[from..], is_tier));
            let mut next = Vec::with_capacity(max_batch);
            let mut next_prepared = Vec::new();
            let settled = {
                let mut settling = std::pin::pin!(self.settle_batch(
                    &batch,
                    std::mem::take(&mut prepared),
                    is_tier,
                    &mut stop
                ));
                match futures_util::poll!(settling.as_mut()) {
                    Poll::Ready(settled) => settled,
                    Poll::Pending => {
                        // Redis is applying this batch (or the lane waits for a retry to be
                        // due): decode the next one meanwhile, on this core, while Redis works
                        // on the other. Decoding touches nothing, so the order in which
                        // messages are settled and their offsets stored does not change.
                        // One yield first: the connection's task, woken on this thread, gets
                        // to write the request before the decoding holds the thread.
                        tokio::task::yield_now().await;
                        fetched(&consumer, &mut next, max_batch);
                        next_prepared = self.prepare_all(&next, is_tier);
                        settling.await
                    }
                }
            };
            store_offsets(&consumer, &batch[..settled]);
            if settled < batch.len() {
                break;
            }
            batch = next;
            prepared = next_prepared;
        }
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => {}
            Err(rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                tracing::warn!(error = %e, "final commit failed; uncommitted tasks will be applied again")
            }
        }
        match self.fatal.lock().map(|f| f.clone()) {
            Ok(Some(why)) => Err(SetupError::Runtime(why)),
            Ok(None) => Ok(()),
            Err(_) => Err(SetupError::Runtime("a consumer lane panicked".to_string())),
        }
    }
}

/// Moves into `batch`, up to `max` messages, what librdkafka has already fetched.
fn fetched<'a>(consumer: &'a KafkaConsumer, batch: &mut Vec<BorrowedMessage<'a>>, max: usize) {
    while batch.len() < max {
        match consumer.recv().now_or_never() {
            Some(Ok(m)) => batch.push(m),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "kafka consumer error");
                break;
            }
            None => break,
        }
    }
}

/// Sleeps for `d`; false when the stop signal came first.
pub(super) async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = stop.wait_for(|s| *s) => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// Stores, for the next commit, the offset after the last message of each partition: the
/// messages are settled, in partition order.
fn store_offsets(consumer: &KafkaConsumer, settled: &[BorrowedMessage<'_>]) {
    let mut list = TopicPartitionList::new();
    for msg in settled {
        let next = Offset::Offset(msg.offset() + 1);
        match list.find_partition(msg.topic(), msg.partition()) {
            Some(mut p) => {
                let _ = p.set_offset(next);
            }
            None => {
                let _ = list.add_partition_offset(msg.topic(), msg.partition(), next);
            }
        }
    }
    if list.count() > 0 {
        if let Err(e) = consumer.store_offsets(&list) {
            tracing::warn!(error = %e, "could not store offsets; those tasks may be applied again");
        }
    }
}
