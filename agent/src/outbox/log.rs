//! The log file itself: appends, fsyncs within `SYNC_DELAY`, atomic
//! rewrites (compaction), and what happens when it cannot be written.

use super::Entry;
use super::record::event_record;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a write may wait for its fsync.
pub const SYNC_DELAY: Duration = Duration::from_secs(1);
/// A log larger than four times the byte bound, and than this, is read
/// from its end only.
pub(super) const MIN_READ_CAP: u64 = 64 << 20;
/// How often a log that could not be written is tried again.
pub const RETRY_EVERY: Duration = Duration::from_secs(30);

/// The log file of node `node` in the state directory.
pub fn log_name(node: &str) -> String {
    format!("outbox-{node}.log")
}

/// The end of the file at `path`, at most `cap` bytes, and how many bytes
/// before it were left unread.
pub(super) fn read_tail(path: &Path, cap: u64) -> io::Result<(Vec<u8>, u64)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let skip = len.saturating_sub(cap);
    if skip > 0 {
        f.seek(SeekFrom::Start(skip))?;
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len - skip).unwrap_or(0));
    f.take(cap).read_to_end(&mut bytes)?;
    Ok((bytes, skip))
}

#[derive(Debug)]
pub(super) struct Log {
    pub(super) path: PathBuf,
    /// False while it cannot be written: the outbox is in memory only.
    pub(super) writable: bool,
    /// Open while records wait for their fsync; closed once they are synced,
    /// so nothing holds the state directory busy while the agent is idle (it
    /// can be remounted read-only, or unmounted).
    pub(super) file: Option<File>,
    /// Bytes in the file.
    pub(super) len: u64,
    /// The first write not yet fsynced.
    pub(super) unsynced_since: Option<Instant>,
    /// When to try rewriting it again, while `file` is `None`.
    pub(super) retry_at: Option<Instant>,
}

impl Log {
    pub(super) fn append(&mut self, record: &[u8]) {
        if !self.writable {
            return;
        }
        if self.file.is_none() {
            match OpenOptions::new().append(true).open(&self.path) {
                Ok(f) => self.file = Some(f),
                Err(e) => return self.failed(&e),
            }
        }
        let Some(file) = &mut self.file else {
            return;
        };
        match file.write_all(record) {
            Ok(()) => {
                self.len += record.len() as u64;
                self.unsynced_since.get_or_insert_with(Instant::now);
            }
            Err(e) => self.failed(&e),
        }
    }

    pub(super) fn failed(&mut self, e: &io::Error) {
        self.file = None;
        if std::mem::take(&mut self.writable) {
            tracing::warn!(file = %self.path.display(), error = %e, "cannot write the event outbox log: unacked events are kept in memory only until it can be written again (tried every {}s)", RETRY_EVERY.as_secs());
        }
        self.unsynced_since = None;
        self.retry_at = Some(Instant::now() + RETRY_EVERY);
    }

    pub(super) fn sync(&mut self) {
        if self.unsynced_since.take().is_none() {
            return;
        }
        if let Some(file) = self.file.take()
            && let Err(e) = file.sync_data()
        {
            self.failed(&e);
        }
    }

    /// Replaces the log with exactly `entries`, atomically.
    pub(super) fn rewrite<'a>(
        &mut self,
        entries: impl Iterator<Item = &'a Entry>,
    ) -> io::Result<()> {
        let tmp = self.path.with_extension("log.tmp");
        let (file, len) = match write_replacement(&tmp, &self.path, entries) {
            Ok(w) => w,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        // The rename is durable once the directory is; a filesystem that
        // cannot sync a directory still has the file whole.
        if let Some(dir) = self.path.parent()
            && let Err(e) = File::open(dir).and_then(|d| d.sync_all())
        {
            tracing::debug!(dir = %dir.display(), error = %e, "cannot fsync the state directory");
        }
        // Synced already: closed until the next append.
        drop(file);
        self.writable = true;
        self.len = len;
        self.unsynced_since = None;
        self.retry_at = None;
        Ok(())
    }
}

/// Writes `entries` to `tmp`, fsyncs it and renames it to `path`: the file,
/// still open, and its length.
pub(super) fn write_replacement<'a>(
    tmp: &Path,
    path: &Path,
    entries: impl Iterator<Item = &'a Entry>,
) -> io::Result<(File, u64)> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(tmp)?;
    let mut out = io::BufWriter::with_capacity(64 << 10, file);
    let mut len = 0u64;
    for e in entries {
        if let Some(r) = event_record(&e.event) {
            out.write_all(&r)?;
            len += r.len() as u64;
        }
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_data()?;
    std::fs::rename(tmp, path)?;
    Ok((file, len))
}
