//! One producer per spool directory.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::Path;

use super::*;

/// Keeps a spool directory to one producer: an exclusive lock on its `LOCK` file, which the
/// kernel releases however the holder ends, so a crash never leaves a spool locked. A PID
/// file could not tell two containers apart whose producers are both PID 1. The file stays
/// in place (removing a locked file would let a second producer lock a fresh one beside it);
/// the PID written in it only names the holder in the error.
pub(super) struct DirLock {
    _file: File,
}

impl DirLock {
    pub(super) fn acquire(dir: &Path) -> Result<DirLock, SpoolError> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let pid = text.trim().parse().unwrap_or(0);
                return Err(SpoolError::InUse { dir: dir.to_path_buf(), pid });
            }
            Err(std::fs::TryLockError::Error(source)) => return Err(SpoolError::Io { path, source }),
        }
        file.set_len(0).map_err(io_error(&path))?;
        file.seek(io::SeekFrom::Start(0)).map_err(io_error(&path))?;
        file.write_all(std::process::id().to_string().as_bytes()).map_err(io_error(&path))?;
        Ok(DirLock { _file: file })
    }
}
