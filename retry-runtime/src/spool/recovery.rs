//! Opening a spool after a stop or a crash: the cursor file, the segments, and what is left
//! to re-publish.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, OpenOptions};
use std::io;
use std::path::Path;

use crate::counters;

use super::*;

/// The segment and offset of the oldest unread record, as the last commit left them.
pub(super) fn read_cursor(dir: &Path) -> Option<(u64, u64)> {
    let text = fs::read_to_string(dir.join(CURSOR_FILE)).ok()?;
    let mut words = text.split_whitespace();
    if words.next()? != "v1" {
        return None;
    }
    Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
}

/// Records the read position (or its absence, when the spool is empty). Not synced: a lost
/// update replays committed records, which only duplicates them.
pub(super) fn write_cursor(dir: &Path, cursor: Option<(u64, u64)>) {
    let path = dir.join(CURSOR_FILE);
    let result = match cursor {
        Some((segment, offset)) => {
            let tmp = dir.join(format!("{CURSOR_FILE}.tmp"));
            fs::write(&tmp, format!("v1 {segment} {offset}\n")).and_then(|()| fs::rename(&tmp, &path))
        }
        None => {
            fs::remove_file(&path)
                .or_else(|e| if e.kind() == io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
        }
    };
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e,
            "could not record the spool's read position; a restart will re-publish some tasks twice");
    }
}

/// Reads what earlier processes left in `dir`: drops committed segments, cuts off a record
/// half-written by a crash, and counts what waits.
pub(super) fn recover(dir: &Path) -> Result<State, SpoolError> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let name = entry.map_err(io_error(dir))?.file_name();
        let id = name.to_str().and_then(|n| n.strip_suffix(".seg")).filter(|n| n.len() == 20);
        if let Some(id) = id.and_then(|n| n.parse::<u64>().ok()) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    let cursor = read_cursor(dir);
    let last_id = ids.last().copied().unwrap_or(0).max(cursor.map_or(0, |c| c.0));
    let mut st = State {
        segments: VecDeque::new(),
        head_offset: HEADER_LEN,
        redelivery: None,
        // Past the cursor's segment too: a new segment numbered below it would be taken for
        // committed at the next start.
        next_id: last_id + 1,
        stats: SpoolStats::default(),
        dirty: BTreeMap::new(),
        dir_dirty: false,
        closing: false,
    };
    for id in ids {
        let path = dir.join(format!("{id:020}.seg"));
        let committed_to = match cursor {
            Some((segment, _)) if id < segment => {
                remove_spent(&path, &mut st)?;
                continue;
            }
            Some((segment, offset)) if id == segment => offset,
            _ => HEADER_LEN,
        };
        let file = OpenOptions::new().read(true).write(true).open(&path).map_err(io_error(&path))?;
        let len = file.metadata().map_err(io_error(&path))?.len();
        let magic = read_at(&file, 0, SEGMENT_MAGIC.len()).map_err(io_error(&path))?;
        if !SEGMENT_MAGIC.starts_with(&magic) {
            return Err(SpoolError::Foreign(path));
        }
        if len < HEADER_LEN {
            // Created, but the crash came before its header was written.
            remove_spent(&path, &mut st)?;
            continue;
        }
        let (mut start, mut waiting) = (HEADER_LEN, 0u64);
        let walk = walk(&file, HEADER_LEN, len, |_, end| {
            if end <= committed_to {
                start = end;
            } else {
                waiting += 1;
            }
            true
        })
        .map_err(io_error(&path))?;
        if walk.valid_end < len {
            let torn = len - walk.valid_end;
            tracing::warn!(path = %path.display(), bytes = torn,
                "cut off the end of a spool segment a crash left half-written; every record before it is kept");
            file.set_len(walk.valid_end).and_then(|()| file.sync_all()).map_err(io_error(&path))?;
            st.stats.corrupt_bytes += torn;
        }
        if walk.corrupt > 0 {
            tracing::error!(path = %path.display(), bytes = walk.corrupt,
                "skipped damaged bytes inside a spool segment; the records around them are kept");
            st.stats.corrupt_bytes += walk.corrupt;
        }
        if waiting == 0 {
            remove_spent(&path, &mut st)?;
            continue;
        }
        if st.segments.is_empty() {
            st.head_offset = start;
        }
        st.stats.pending += waiting;
        st.stats.bytes += walk.valid_end;
        st.segments.push_back(Segment { id, len: walk.valid_end, writer: None });
    }
    st.stats.recovered = st.stats.pending;
    metrics::counter!(counters::SPOOL_CORRUPT_BYTES).increment(st.stats.corrupt_bytes);
    if st.segments.front().map(|s| s.id) != cursor.map(|c| c.0) {
        write_cursor(dir, st.segments.front().map(|s| (s.id, st.head_offset)));
    }
    if std::mem::take(&mut st.dir_dirty) {
        sync_dir(dir);
    }
    Ok(st)
}

pub(super) fn remove_spent(path: &Path, st: &mut State) -> Result<(), SpoolError> {
    st.dir_dirty = true;
    fs::remove_file(path).map_err(io_error(path))
}
