//! The local spool: messages Kafka cannot take right now wait here, on disk, in the order in
//! which they must be re-published.
//!
//! A spool is a directory of *segment* files, each an append-only run of records. A record is
//! framed as `marker (4 bytes) | body length (u32 LE) | CRC-32 of length and body (u32 LE) |
//! body`, and its body holds one Kafka message: topic, key, payload and headers. A write cut
//! short by a crash leaves a record whose length or checksum does not match; it is found when
//! the spool is opened and cut off, keeping every record before it. Bytes in the middle of a
//! segment that are not a record (a damaged disk block) are skipped up to the next record that
//! checks out, and counted.
//!
//! Records are read back from the oldest segment on, and removed only once the reader
//! [`commit`](Spool::commit)s them (after Kafka acknowledged them): fully read segments are
//! deleted, and the position inside the oldest one is kept in a small `cursor` file. A reader
//! that dies before committing reads the same records again: the spool delivers at least once.
//!
//! **Two lanes.** A producer hands messages to librdkafka before it knows they will fail; one
//! that fails later is older than the messages spooled directly in the meantime. Such
//! messages go to the [`Lane::Redelivery`] segment, which sorts before every [`Lane::Tail`]
//! segment of the same outage and cannot be read until it is [sealed](Spool::seal_redelivery)
//! (when nothing older can fail any more). That keeps the per-key order of the original sends.
//!
//! **Durability.** An append is one `write(2)` before [`append`](Spool::append) returns, so a
//! crash of the process loses nothing appended. A background thread `fsync`s the segments at
//! most every 20 ms: a crash of the machine (power loss, kernel panic) can lose what was
//! appended in the last 20 ms plus the time of one `fsync`. The cursor is not synced: losing it
//! replays committed records again (duplicates, never a loss).
//!
//! **Private.** Records hold the values of the writes, so a directory the spool creates is
//! readable by its owner only, and so are the segments.
//!
//! **Bounded.** The files of a spool never exceed `max_bytes`; an append that would pass it
//! fails with [`SpoolError::Full`], which names the directory and the limit, and is counted.
//!
//! The engine is the producer's own; a service sees it only through
//! `ProducerConfig::spool_dir`, [`SpoolStats`] and [`SpoolError`].

mod format;
mod lock;
mod recovery;

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::counters;

pub(crate) use format::Record;
use format::*;
use lock::*;
use recovery::*;

/// Larger bodies are refused; a length field above it is damage, not a record.
pub const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;
/// Smallest `max_bytes` a spool accepts.
pub const MIN_MAX_BYTES: u64 = 1024;
/// How long appends gather before the next `fsync`.
const FSYNC_INTERVAL: Duration = Duration::from_millis(20);
/// How much of a segment one read takes in (a longer record is read whole).
const READ_WINDOW: usize = 1024 * 1024;
const CURSOR_FILE: &str = "cursor";
const LOCK_FILE: &str = "LOCK";

/// Why the spool could not be opened or could not take a record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// The record would take the spool past its size limit.
    #[error(
        "spool full: {dir} holds {used} bytes and a record of {record} bytes would pass \
         spool_max_bytes = {max}; this message is NOT saved (bring Kafka back or raise spool_max_bytes)"
    )]
    Full {
        /// The spool's directory.
        dir: PathBuf,
        /// Bytes the spool's files take now.
        used: u64,
        /// Size of the refused record on disk.
        record: u64,
        /// The limit.
        max: u64,
    },
    /// A single record larger than 64 MiB or with a field too long to frame.
    #[error("a message of {0} bytes is too large for the spool (at most {MAX_RECORD_BYTES} bytes)")]
    TooLarge(usize),
    /// Another live process (or another producer of this one) uses the directory.
    #[error("spool directory {dir} is in use by process {pid}; give each producer its own spool_dir")]
    InUse {
        /// The spool's directory.
        dir: PathBuf,
        /// The process holding it.
        pid: u32,
    },
    /// A file that looks like a segment but is not one this version wrote.
    #[error("{0} is not a redis-retry spool segment of a known version; move it out of the spool directory")]
    Foreign(PathBuf),
    /// `spool_max_bytes` below 1,024 bytes.
    #[error("spool_max_bytes must be at least {MIN_MAX_BYTES}, got {0}")]
    Limit(u64),
    /// The file system failed.
    #[error("spool {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
}

impl SpoolError {
    /// A short label for metrics: `full`, `too_large`, `in_use`, `foreign`, `limit`, `io`.
    pub fn kind(&self) -> &'static str {
        match self {
            SpoolError::Full { .. } => "full",
            SpoolError::TooLarge(_) => "too_large",
            SpoolError::InUse { .. } => "in_use",
            SpoolError::Foreign(_) => "foreign",
            SpoolError::Limit(_) => "limit",
            SpoolError::Io { .. } => "io",
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.to_path_buf(), source }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// Which run of records an append joins.
pub enum Lane {
    /// After everything spooled so far: a message spooled instead of being sent.
    Tail,
    /// Before the tail of the current outage: a message that was sent before the spool
    /// started and failed since. Falls back to the tail once the lane is sealed.
    Redelivery,
}

/// Where reading stopped; [`Spool::commit`] removes everything before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The head (segment, offset) the read started from, to refuse a stale commit.
    from: (u64, u64),
    segment: u64,
    offset: u64,
    /// Records between `from` and here.
    records: u64,
}

/// One record read back, with the position right after it.
#[derive(Debug)]
pub struct Entry {
    /// The message.
    pub record: Record,
    /// Committing this removes the record and every one before it.
    pub end: Position,
}

/// Records read from the head of the spool, oldest first.
#[derive(Debug)]
pub struct Batch {
    /// The records.
    pub entries: Vec<Entry>,
    end: Position,
}

impl Batch {
    /// The position after the whole batch, including damaged bytes skipped at its end.
    pub fn end(&self) -> Position {
        self.end
    }
    /// Whether no record was read (there may still be damaged bytes to commit past).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Figures about a spool, for tests, logs and reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Records waiting to be re-published.
    pub pending: u64,
    /// Bytes its files take.
    pub bytes: u64,
    /// Records found at open, left by an earlier process.
    pub recovered: u64,
    /// Records appended since open.
    pub appended: u64,
    /// Records refused since open (full, too large, I/O error).
    pub refused: u64,
    /// Records committed (re-published or given up) since open.
    pub committed: u64,
    /// Bytes found damaged or cut short at open, and dropped.
    pub corrupt_bytes: u64,
}

struct Segment {
    id: u64,
    len: u64,
    /// Set while appends may still go to this segment.
    writer: Option<Arc<File>>,
}

struct State {
    /// Oldest first.
    segments: VecDeque<Segment>,
    /// Read position inside the oldest segment.
    head_offset: u64,
    /// Id of the open redelivery segment (reserved before it has a file).
    redelivery: Option<u64>,
    next_id: u64,
    stats: SpoolStats,
    /// Segments written since their last `fsync`.
    dirty: BTreeMap<u64, Arc<File>>,
    /// Whether files were created or removed since the directory's last `fsync`.
    dir_dirty: bool,
    closing: bool,
}

struct Shared {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    state: Mutex<State>,
    /// Wakes the flusher.
    dirtied: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held leaves counts, not broken files: carry on.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn segment_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:020}.seg"))
    }

    /// Syncs what was written since the last call; errors are logged (the data is still in
    /// the page cache and survives anything but a machine crash).
    fn sync(&self) {
        let (files, dir) = {
            let mut st = self.lock();
            (std::mem::take(&mut st.dirty), std::mem::take(&mut st.dir_dirty))
        };
        for (id, file) in files {
            if let Err(e) = file.sync_data() {
                tracing::error!(path = %self.segment_path(id).display(), error = %e,
                    "fsync of the spool failed: spooled tasks may not survive a machine crash");
            }
        }
        if dir {
            sync_dir(&self.dir);
        }
    }

    fn publish_gauges(st: &State) {
        metrics::gauge!(counters::SPOOL_BYTES).set(st.stats.bytes as f64);
        metrics::gauge!(counters::SPOOL_RECORDS).set(st.stats.pending as f64);
    }
}

/// Spooled tasks hold the values of the writes (tokens, sessions): only the owner may read
/// them, as with the database they came from.
fn private_dir_builder() -> fs::DirBuilder {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
}

fn private_file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

#[cfg(unix)]
fn sync_dir(dir: &Path) {
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::error!(path = %dir.display(), error = %e, "fsync of the spool directory failed");
    }
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) {}

/// An open spool directory; see the [module documentation](self).
pub struct Spool {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
    _lock: DirLock,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool").field("dir", &self.shared.dir).field("stats", &self.stats()).finish()
    }
}

impl Spool {
    /// Opens (creating it if needed) the spool in `dir`, limited to `max_bytes` on disk.
    ///
    /// Records left by an earlier process are kept, after a record cut short by a crash is
    /// cut off. Fails when another live process holds the directory.
    pub fn open(dir: impl AsRef<Path>, max_bytes: u64) -> Result<Spool, SpoolError> {
        let dir = dir.as_ref().to_path_buf();
        if max_bytes < MIN_MAX_BYTES {
            return Err(SpoolError::Limit(max_bytes));
        }
        private_dir_builder().create(&dir).map_err(io_error(&dir))?;
        let lock = DirLock::acquire(&dir)?;
        let shared = Arc::new(Shared {
            segment_bytes: (max_bytes / 8).clamp(64 * 1024, 16 * 1024 * 1024),
            max_bytes,
            state: Mutex::new(recover(&dir)?),
            dirtied: Condvar::new(),
            dir: dir.clone(),
        });
        Shared::publish_gauges(&shared.lock());
        let flusher = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("redis-retry-spool-fsync".into())
                .spawn(move || flush_loop(&shared))
                .map_err(io_error(&dir))?
        };
        Ok(Spool { shared, flusher: Some(flusher), _lock: lock })
    }
}

/// Where an append goes.
enum Target {
    /// The segment at this index.
    At(usize),
    /// A new segment with this id, inserted at this index.
    New(u64, usize),
}

impl Spool {
    /// The spool's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Appends `record` to `lane`. Once this returns Ok, a crash of the process cannot lose
    /// the record; a crash of the machine can lose the last 20 ms of appends (see the
    /// [module documentation](self)). Refusals are counted (`reason` label) and returned.
    pub fn append(&self, record: &Record, lane: Lane) -> Result<(), SpoolError> {
        let frame = record.encode();
        let mut st = self.shared.lock();
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => return Err(refuse(&mut st, e)),
        };
        if st.segments.is_empty() && st.redelivery.is_none() {
            // A new outage: the redelivery segment takes its place before any tail segment.
            st.redelivery = Some(st.next_id);
            st.next_id += 1;
        }
        let size = frame.len() as u64;
        let target = self.target(&st, lane, size);
        let needed = size + if matches!(target, Target::New(..)) { HEADER_LEN } else { 0 };
        if st.stats.bytes + needed > self.shared.max_bytes {
            let full = SpoolError::Full {
                dir: self.shared.dir.clone(),
                used: st.stats.bytes,
                record: size,
                max: self.shared.max_bytes,
            };
            return Err(refuse(&mut st, full));
        }
        let index = match target {
            Target::At(index) => index,
            Target::New(id, index) => match self.create_segment(id) {
                Ok(file) => {
                    st.segments.insert(index, Segment { id, len: HEADER_LEN, writer: Some(file) });
                    if st.redelivery != Some(id) {
                        st.next_id = st.next_id.max(id + 1);
                    }
                    st.stats.bytes += HEADER_LEN;
                    st.dir_dirty = true;
                    index
                }
                Err(e) => return Err(refuse(&mut st, e)),
            },
        };
        let segment = &mut st.segments[index];
        let (id, len) = (segment.id, segment.len);
        let path = || self.shared.segment_path(id);
        let Some(file) = segment.writer.clone() else {
            // target() only picks segments that take appends; stay safe if that ever changes.
            let source = io::Error::other("segment closed for appends");
            return Err(refuse(&mut st, SpoolError::Io { path: path(), source }));
        };
        if let Err(source) = (&*file).write_all(&frame) {
            // Leave no half record for the next append to follow.
            let _ = file.set_len(len);
            return Err(refuse(&mut st, SpoolError::Io { path: path(), source }));
        }
        st.segments[index].len += size;
        st.stats.bytes += size;
        st.stats.pending += 1;
        st.stats.appended += 1;
        st.dirty.insert(id, file);
        Shared::publish_gauges(&st);
        drop(st);
        self.shared.dirtied.notify_one();
        Ok(())
    }

    fn target(&self, st: &State, lane: Lane, size: u64) -> Target {
        if let (Lane::Redelivery, Some(reserved)) = (lane, st.redelivery) {
            if let Some(index) = st.segments.iter().position(|s| s.id == reserved) {
                return Target::At(index);
            }
            // Nothing can have been read while the lane is open; the check only guards that.
            if st.segments.front().is_none_or(|s| s.id > reserved && st.head_offset == HEADER_LEN) {
                return Target::New(reserved, 0);
            }
        }
        match st.segments.back() {
            Some(last)
                if last.writer.is_some()
                    && Some(last.id) != st.redelivery
                    && (last.len + size <= self.shared.segment_bytes || last.len == HEADER_LEN) =>
            {
                Target::At(st.segments.len() - 1)
            }
            _ => Target::New(st.next_id, st.segments.len()),
        }
    }

    fn create_segment(&self, id: u64) -> Result<Arc<File>, SpoolError> {
        let path = self.shared.segment_path(id);
        let mut file =
            private_file_options().append(true).create_new(true).open(&path).map_err(io_error(&path))?;
        if let Err(source) = file.write_all(SEGMENT_MAGIC) {
            let _ = fs::remove_file(&path);
            return Err(SpoolError::Io { path, source });
        }
        Ok(Arc::new(file))
    }

    /// Closes the redelivery lane: nothing older than the tail can fail any more, so its
    /// records may be read. Later [`Lane::Redelivery`] appends join the tail.
    pub fn seal_redelivery(&self) {
        let mut st = self.shared.lock();
        if let Some(reserved) = st.redelivery.take() {
            if let Some(segment) = st.segments.iter_mut().find(|s| s.id == reserved) {
                segment.writer = None;
            }
        }
    }

    /// Whether anything is spooled or an outage's redelivery lane is open: new messages must
    /// then join the tail to keep their order.
    pub fn is_active(&self) -> bool {
        let st = self.shared.lock();
        !st.segments.is_empty() || st.redelivery.is_some()
    }

    /// Figures about the spool.
    pub fn stats(&self) -> SpoolStats {
        self.shared.lock().stats
    }

    /// Forces what was appended to disk now instead of within 20 ms.
    pub fn sync(&self) {
        self.shared.sync();
    }

    /// Reads up to `max_records` records (or about `max_bytes` of them) from the head of the
    /// spool, oldest first, without removing them. Meant for one reader at a time.
    ///
    /// Every outage opens a redelivery lane with its first append, and nothing is read until
    /// the reader [seals](Self::seal_redelivery) it: only the reader knows when no message
    /// sent before the outage can fail any more.
    pub fn read_batch(&self, max_records: usize, max_bytes: usize) -> Result<Batch, SpoolError> {
        let (plan, from) = {
            let st = self.shared.lock();
            let from = (st.segments.front().map_or(0, |s| s.id), st.head_offset);
            let plan: Vec<(u64, u64, u64)> = if st.redelivery.is_some() {
                Vec::new()
            } else {
                let starts = std::iter::once(st.head_offset).chain(std::iter::repeat(HEADER_LEN));
                st.segments.iter().zip(starts).map(|(s, start)| (s.id, start, s.len)).collect()
            };
            (plan, from)
        };
        let mut entries: Vec<Entry> = Vec::new();
        let mut end = Position { from, segment: from.0, offset: from.1, records: 0 };
        let mut bytes = 0;
        for (id, start, len) in plan {
            let path = self.shared.segment_path(id);
            let file = File::open(&path).map_err(io_error(&path))?;
            let walk = walk(&file, start, len, |record, offset| {
                bytes += record.frame_size();
                let records = entries.len() as u64 + 1;
                entries.push(Entry { record, end: Position { from, segment: id, offset, records } });
                entries.len() < max_records && bytes < max_bytes
            })
            .map_err(io_error(&path))?;
            let tail = if walk.reached_end { len - walk.valid_end } else { 0 };
            if walk.corrupt + tail > 0 {
                tracing::warn!(path = %path.display(), bytes = walk.corrupt + tail,
                    "skipping bytes of a spool segment that are not records");
            }
            if !walk.reached_end {
                end = entries.last().map_or(end, |e| e.end);
                break;
            }
            end = Position { from, segment: id, offset: len, records: entries.len() as u64 };
        }
        Ok(Batch { entries, end })
    }

    /// Removes every record before `position` (Kafka has them): deletes the segments read to
    /// their end and remembers the position inside the oldest one. A position from a batch
    /// older than the last commit is ignored.
    pub fn commit(&self, position: Position) -> Result<(), SpoolError> {
        let mut st = self.shared.lock();
        let head = (st.segments.front().map_or(0, |s| s.id), st.head_offset);
        if head != position.from {
            tracing::debug!(?position, ?head, "stale spool commit ignored");
            return Ok(());
        }
        let mut result = Ok(());
        while let Some(front) = st.segments.front() {
            let consumed = front.id < position.segment
                || (front.id == position.segment
                    && position.offset >= front.len
                    && st.redelivery != Some(front.id));
            if !consumed {
                break;
            }
            let (id, len) = (front.id, front.len);
            st.segments.pop_front();
            st.head_offset = HEADER_LEN;
            st.stats.bytes = st.stats.bytes.saturating_sub(len);
            st.dir_dirty = true;
            let path = self.shared.segment_path(id);
            if let Err(source) = fs::remove_file(&path) {
                // The records would come back after a restart: duplicates, never a loss.
                result = Err(SpoolError::Io { path, source });
            }
        }
        if st.segments.front().is_some_and(|s| s.id == position.segment) {
            st.head_offset = position.offset;
        }
        st.stats.pending = st.stats.pending.saturating_sub(position.records);
        st.stats.committed += position.records;
        let cursor = st.segments.front().map(|s| (s.id, st.head_offset));
        Shared::publish_gauges(&st);
        drop(st);
        self.shared.dirtied.notify_one();
        write_cursor(&self.shared.dir, cursor);
        result
    }
}

fn refuse(st: &mut State, error: SpoolError) -> SpoolError {
    st.stats.refused += 1;
    metrics::counter!(counters::SPOOL_REFUSED, "reason" => error.kind()).increment(1);
    error
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.dirtied.notify_all();
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
        self.shared.sync();
    }
}

fn flush_loop(shared: &Shared) {
    loop {
        {
            let mut st = shared.lock();
            while st.dirty.is_empty() && !st.dir_dirty && !st.closing {
                st = shared.dirtied.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
            if st.closing {
                return;
            }
        }
        shared.sync();
        // Appends arriving meanwhile share the next fsync.
        std::thread::sleep(FSYNC_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_record_goes_in_comes_out_and_is_gone_once_committed() {
        let dir = std::env::temp_dir().join(format!("spool-round-trip-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let spool = Spool::open(&dir, 1 << 20).unwrap();
        spool.append(&Record::new("tasks", Some(b"user:1".to_vec()), b"{}".to_vec()), Lane::Tail).unwrap();
        // Nothing sent before this outage can still fail.
        spool.seal_redelivery();
        let batch = spool.read_batch(100, 1 << 20).unwrap();
        assert_eq!(batch.entries[0].record.topic, "tasks");
        spool.commit(batch.end()).unwrap();
        assert_eq!(spool.stats().pending, 0);
        drop(spool);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A directory removed when the test ends.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("rr-spool-unit-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            TempDir(dir)
        }
        fn segments(&self) -> Vec<PathBuf> {
            let mut v: Vec<PathBuf> = fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "seg"))
                .collect();
            v.sort();
            v
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn record(n: usize) -> Record {
        Record::new(
            "tasks",
            Some(format!("key:{}", n % 7).into_bytes()),
            format!("{{\"n\":{n}}}").into_bytes(),
        )
        .header("trace", Some(format!("t-{n}").into_bytes()))
        .header("empty", None)
    }

    fn numbers(batch: &Batch) -> Vec<usize> {
        batch
            .entries
            .iter()
            .map(|e| {
                let text = String::from_utf8(e.record.payload.clone()).unwrap();
                text.trim_start_matches("{\"n\":").trim_end_matches('}').parse().unwrap()
            })
            .collect()
    }

    /// Reads and commits everything, returning the payload numbers in order.
    fn drain(spool: &Spool) -> Vec<usize> {
        spool.seal_redelivery();
        let mut all = Vec::new();
        loop {
            let batch = spool.read_batch(64, 1 << 20).unwrap();
            all.extend(numbers(&batch));
            let done = batch.is_empty();
            spool.commit(batch.end()).unwrap();
            if done {
                return all;
            }
        }
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(&[b"123456789"]), 0xCBF4_3926);
        assert_eq!(crc32(&[b"1234", b"56789"]), 0xCBF4_3926);
        assert_eq!(crc32(&[]), 0);
    }

    #[test]
    fn records_round_trip_and_any_damage_is_detected_without_panic() {
        let full = record(3).header("x", Some(vec![0, 255, 1]));
        for r in [full, Record::new("t", None, Vec::new())] {
            let frame = r.encode().unwrap();
            assert_eq!(frame.len(), r.frame_size());
            match parse(&frame) {
                Parsed::Record(back, len) => assert_eq!((back, len), (r.clone(), frame.len())),
                _ => panic!("a whole frame parses"),
            }
            for cut in 0..frame.len() {
                assert!(matches!(parse(&frame[..cut]), Parsed::Incomplete(_)), "cut at {cut}");
            }
            for i in 0..frame.len() {
                let mut bad = frame.clone();
                bad[i] ^= 0x40;
                assert!(!matches!(parse(&bad), Parsed::Record(..)), "flipped byte {i} went unnoticed");
            }
        }
        let mut rng_state = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..2000 {
            rng_state ^= rng_state << 13;
            rng_state ^= rng_state >> 7;
            rng_state ^= rng_state << 17;
            let len = (rng_state % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|i| (rng_state >> (i % 8 * 8)) as u8).collect();
            if len > 4 && rng_state & 1 == 0 {
                bytes[..4].copy_from_slice(&RECORD_MARKER);
            }
            let _ = parse(&bytes);
            let _ = Record::decode(&bytes);
        }
    }

    #[test]
    fn fields_too_long_to_frame_are_refused() {
        let dir = TempDir::new();
        let spool = Spool::open(&dir.0, 1 << 20).unwrap();
        let long_topic = Record::new("t".repeat(70_000), None, Vec::new());
        assert!(matches!(spool.append(&long_topic, Lane::Tail), Err(SpoolError::TooLarge(_))));
        assert_eq!(spool.stats().refused, 1);
        assert_eq!(spool.stats().pending, 0);
    }

    #[test]
    fn records_come_back_in_order_across_segments_and_spent_segments_are_deleted() {
        let dir = TempDir::new();
        let spool = Spool::open(&dir.0, 1 << 20).unwrap();
        for n in 0..2000 {
            spool.append(&record(n), Lane::Tail).unwrap();
        }
        assert!(dir.segments().len() > 1, "128 KiB segments rotate");
        assert_eq!(spool.stats().pending, 2000);
        assert_eq!(drain(&spool), (0..2000).collect::<Vec<_>>());
        let stats = spool.stats();
        assert_eq!((stats.pending, stats.bytes, stats.committed), (0, 0, 2000));
        assert!(dir.segments().is_empty());
        assert!(!spool.is_active());
        assert!(!dir.0.join(CURSOR_FILE).exists());
    }

    #[test]
    fn the_redelivery_lane_comes_first_and_is_read_only_once_sealed() {
        let dir = TempDir::new();
        let spool = Spool::open(&dir.0, 1 << 20).unwrap();
        spool.append(&record(10), Lane::Tail).unwrap();
        spool.append(&record(1), Lane::Redelivery).unwrap();
        spool.append(&record(11), Lane::Tail).unwrap();
        spool.append(&record(2), Lane::Redelivery).unwrap();
        assert!(spool.read_batch(100, 1 << 20).unwrap().is_empty(), "older sends may still fail");
        spool.seal_redelivery();
        spool.append(&record(3), Lane::Redelivery).unwrap();
        assert_eq!(drain(&spool), [1, 2, 10, 11, 3]);

        // The next outage gets a redelivery lane of its own.
        spool.append(&record(20), Lane::Tail).unwrap();
        spool.append(&record(5), Lane::Redelivery).unwrap();
        spool.seal_redelivery();
        assert_eq!(drain(&spool), [5, 20]);
    }

    #[test]
    fn a_reopened_spool_resumes_after_the_last_commit() {
        let dir = TempDir::new();
        {
            let spool = Spool::open(&dir.0, 1 << 20).unwrap();
            for n in 0..10 {
                spool.append(&record(n), Lane::Tail).unwrap();
            }
            spool.seal_redelivery();
            let batch = spool.read_batch(4, 1 << 20).unwrap();
            assert_eq!(numbers(&batch), [0, 1, 2, 3]);
            spool.commit(batch.entries[3].end).unwrap();
            // A second commit of the same batch is stale.
            spool.commit(batch.end()).unwrap();
            assert_eq!(spool.stats().pending, 6);
        }
        let spool = Spool::open(&dir.0, 1 << 20).unwrap();
        let stats = spool.stats();
        assert_eq!((stats.pending, stats.recovered), (6, 6));
        assert!(spool.is_active());
        spool.append(&record(10), Lane::Tail).unwrap();
        assert_eq!(drain(&spool), (4..=10).collect::<Vec<_>>());
    }

    #[test]
    fn a_torn_tail_record_is_cut_off_and_every_record_before_it_kept() {
        let dir = TempDir::new();
        {
            let spool = Spool::open(&dir.0, 1 << 20).unwrap();
            for n in 0..3 {
                spool.append(&record(n), Lane::Tail).unwrap();
            }
        }
        let segment = dir.segments().pop().unwrap();
        let good_len = fs::metadata(&segment).unwrap().len();
        // A crash in the middle of an append: the frame's start, then nothing.
        let torn = &record(3).encode().unwrap()[..20];
        OpenOptions::new().append(true).open(&segment).unwrap().write_all(torn).unwrap();

        let spool = Spool::open(&dir.0, 1 << 20).unwrap();
        let stats = spool.stats();
        assert_eq!((stats.pending, stats.corrupt_bytes), (3, torn.len() as u64));
        assert_eq!(fs::metadata(&segment).unwrap().len(), good_len, "the torn bytes are cut off");
        spool.append(&record(4), Lane::Tail).unwrap();
        assert_eq!(drain(&spool), [0, 1, 2, 4]);
    }

    #[test]
    fn garbage_at_the_end_and_damage_in_the_middle_lose_only_the_damaged_record() {
        let dir = TempDir::new();
        let frame_len = record(1).frame_size() as u64;
        {
            let spool = Spool::open(&dir.0, 1 << 20).unwrap();
            for n in 0..3 {
                spool.append(&record(n), Lane::Tail).unwrap();
            }
        }
        let segment = dir.segments().pop().unwrap();
        let mut bytes = fs::read(&segment).unwrap();
        // Damage record 1's payload, then append random garbage.
        let middle = (HEADER_LEN + frame_len + frame_len / 2) as usize;
        bytes[middle] ^= 0xFF;
        bytes.extend_from_slice(b"\x13\x37 not a record at all \x00\x01\x02");
        fs::write(&segment, &bytes).unwrap();

        let spool = Spool::open(&dir.0, 1 << 20).unwrap();
        let stats = spool.stats();
        assert_eq!(stats.pending, 2);
        assert_eq!(stats.corrupt_bytes, frame_len + 26);
        assert_eq!(drain(&spool), [0, 2]);
    }

    #[test]
    fn a_full_spool_refuses_with_a_clear_error_and_takes_records_again_once_drained() {
        let dir = TempDir::new();
        let spool = Spool::open(&dir.0, MIN_MAX_BYTES).unwrap();
        let mut accepted = 0;
        let err = loop {
            match spool.append(&record(accepted), Lane::Tail) {
                Ok(()) => accepted += 1,
                Err(e) => break e,
            }
        };
        assert!(matches!(err, SpoolError::Full { max: MIN_MAX_BYTES, .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("spool full") && text.contains("spool_max_bytes = 1024"), "{text}");
        assert!(text.contains(&dir.0.display().to_string()), "names the directory: {text}");
        let stats = spool.stats();
        assert!(stats.bytes <= MIN_MAX_BYTES && accepted > 5, "{stats:?}");
        assert_eq!((stats.refused, stats.pending), (1, accepted as u64));
        assert_eq!(drain(&spool).len(), accepted);
        spool.append(&record(99), Lane::Tail).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn only_the_owner_can_read_what_is_spooled() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new();
        let spool = Spool::open(&dir.0, 1 << 20).unwrap();
        spool.append(&record(1), Lane::Tail).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.0), 0o700);
        assert_eq!(mode(&dir.segments()[0]), 0o600);
    }

    #[test]
    fn one_producer_per_directory_and_a_dead_owner_lock_is_taken_over() {
        let dir = TempDir::new();
        let first = Spool::open(&dir.0, 1 << 20).unwrap();
        assert!(matches!(Spool::open(&dir.0, 1 << 20), Err(SpoolError::InUse { .. })));
        drop(first);
        // A lock file left by a process that no longer runs holds no lock.
        fs::write(dir.0.join(LOCK_FILE), "4294967000").unwrap();
        let again = Spool::open(&dir.0, 1 << 20).unwrap();
        assert_eq!(fs::read_to_string(dir.0.join(LOCK_FILE)).unwrap(), std::process::id().to_string());
        let refused = Spool::open(&dir.0, 1 << 20).err();
        assert!(
            matches!(refused, Some(SpoolError::InUse { pid, .. }) if pid == std::process::id()),
            "the error names the holder: {refused:?}"
        );
        drop(again);
        Spool::open(&dir.0, 1 << 20).expect("released when its producer is dropped");
    }

    #[test]
    fn a_cursor_left_behind_never_makes_new_records_look_committed() {
        let dir = TempDir::new();
        fs::create_dir_all(&dir.0).unwrap();
        fs::write(dir.0.join(CURSOR_FILE), "v1 50 100\n").unwrap();
        {
            let spool = Spool::open(&dir.0, 1 << 20).unwrap();
            spool.append(&record(1), Lane::Tail).unwrap();
        }
        let spool = Spool::open(&dir.0, 1 << 20).unwrap();
        assert_eq!(spool.stats().pending, 1);
        assert_eq!(drain(&spool), [1]);
    }

    #[test]
    fn foreign_files_and_bad_limits_are_refused() {
        let dir = TempDir::new();
        assert!(matches!(Spool::open(&dir.0, 10), Err(SpoolError::Limit(10))));
        fs::create_dir_all(&dir.0).unwrap();
        fs::write(dir.0.join("00000000000000000001.seg"), "something else entirely").unwrap();
        let err = Spool::open(&dir.0, 1 << 20).unwrap_err();
        assert!(matches!(err, SpoolError::Foreign(_)), "{err:?}");
        fs::remove_file(dir.0.join("00000000000000000001.seg")).unwrap();
        Spool::open(&dir.0, 1 << 20).expect("a failed open releases the lock");
    }
}
