//! The I/O around the pure parser and classifier.
//!
//! On the character device each `read()` returns exactly one record; EPIPE
//! means the ring buffer wrapped past the reader (counted, and the gap in
//! sequence numbers gives how many records were lost); EAGAIN means no more
//! records for now. The device is read non-blocking on a blocking-pool thread
//! that waits in poll(2) when it has caught up: a flood costs one read per
//! record and never an allocation unless a record is an event. (tokio's
//! `AsyncFd` would need `unsafe` to register the descriptor.) A path that is not a
//! character device is read as a file of records, one per line with
//! continuation lines starting with a space, and `run` returns at its end:
//! that is how tests stand a fixture in for /dev/kmsg.
//!
//! Events go out on a bounded channel with `try_send`: when it is full the
//! event is dropped and counted (`dropped_events`), so a stuck consumer never
//! stops the reader from keeping up with the kernel. A followed file (a
//! fixture or a saved log) waits for room instead: no kernel overwrites it.

use super::KmsgError;
use super::classify::Classifier;
use super::parse::{parse_record, split_records};
use super::state::ResumeState;
use crate::facts::kernel::KernelEvent;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde::Serialize;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Larger than any record the kernel hands out (a read with a smaller buffer
/// fails with EINVAL).
const RECORD_BUF: usize = 16 * 1024;
/// How long the reader waits for a record before looking at the shutdown
/// token again.
const POLL_MS: u16 = 200;
/// How often held-back events are flushed and the resume state saved.
const TICK: Duration = Duration::from_secs(1);

/// Live counters, readable while the reader runs.
#[derive(Debug, Default)]
pub struct KmsgCounters {
    records: AtomicU64,
    events: AtomicU64,
    dropped_events: AtomicU64,
    lost_records: AtomicU64,
    overruns: AtomicU64,
    malformed: AtomicU64,
    skipped: AtomicU64,
    /// seq + 1 of the last record seen; 0 before the first.
    next_seq: AtomicU64,
    save_errors: AtomicU64,
    /// Why the resume state could not be saved the last time it could not;
    /// `None` once a save works again.
    save_error: std::sync::Mutex<Option<String>>,
}

/// What a reader has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KmsgStats {
    /// Records read, including malformed and skipped ones.
    pub records_total: u64,
    /// Events handed to the output channel.
    pub events_total: u64,
    /// Events dropped because the output channel was full or closed.
    pub dropped_events_total: u64,
    /// Records overwritten before they could be read (gaps in seq).
    pub lost_records_total: u64,
    /// EPIPE returns: times the ring buffer wrapped past the reader.
    pub overruns_total: u64,
    pub malformed_total: u64,
    /// Records skipped on resume because an earlier run reported them.
    pub skipped_total: u64,
    pub last_seq: Option<u64>,
    /// Saves of the resume state that failed; reading goes on regardless.
    pub save_errors_total: u64,
    /// Why the last save failed, while saves keep failing.
    pub save_error: Option<String>,
}

impl KmsgCounters {
    pub fn snapshot(&self) -> KmsgStats {
        let next = self.next_seq.load(Relaxed);
        KmsgStats {
            records_total: self.records.load(Relaxed),
            events_total: self.events.load(Relaxed),
            dropped_events_total: self.dropped_events.load(Relaxed),
            lost_records_total: self.lost_records.load(Relaxed),
            overruns_total: self.overruns.load(Relaxed),
            malformed_total: self.malformed.load(Relaxed),
            skipped_total: self.skipped.load(Relaxed),
            last_seq: next.checked_sub(1),
            save_errors_total: self.save_errors.load(Relaxed),
            save_error: self.save_error.lock().ok().and_then(|e| e.clone()),
        }
    }
}

/// Reads /dev/kmsg (or a file standing in for it) until shutdown.
#[derive(Clone, Debug)]
pub struct KmsgReader {
    path: PathBuf,
    boot_id: String,
    state_file: Option<PathBuf>,
    boot_unix_us: Option<i64>,
    follow: bool,
    counters: Arc<KmsgCounters>,
}

impl KmsgReader {
    /// `boot_id`: this boot's id (`/proc/sys/kernel/random/boot_id`), matched
    /// against the saved state.
    pub fn new(path: impl Into<PathBuf>, boot_id: impl Into<String>) -> Self {
        KmsgReader {
            path: path.into(),
            boot_id: boot_id.into(),
            state_file: None,
            boot_unix_us: None,
            follow: false,
            counters: Arc::default(),
        }
    }

    /// Resume after the seq saved in this file (see `ResumeState`), and keep
    /// it current: at most once per `TICK` and when the reader stops.
    pub fn state_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.state_file = Some(path.into());
        self
    }

    /// The wall-clock time of boot, for events' `unix_ms` (`boot_unix_us`).
    pub fn boot_unix_us(mut self, boot_unix_us: Option<i64>) -> Self {
        self.boot_unix_us = boot_unix_us;
        self
    }

    /// For a regular file standing in for /dev/kmsg: keep reading records
    /// appended to it (as `tail -f`) instead of returning at its end.
    pub fn follow(mut self, follow: bool) -> Self {
        self.follow = follow;
        self
    }

    pub fn counters(&self) -> Arc<KmsgCounters> {
        Arc::clone(&self.counters)
    }

    pub async fn run(
        self,
        out: mpsc::Sender<KernelEvent>,
        shutdown: CancellationToken,
    ) -> Result<KmsgStats, KmsgError> {
        let resume = match &self.state_file {
            Some(p) => ResumeState::load(p)?,
            None => None,
        };
        let mut core = Core::new(
            Classifier::new(self.boot_unix_us),
            resume.and_then(|s| s.seq_for_boot(&self.boot_id)),
            Arc::clone(&self.counters),
        );
        let io = |error| KmsgError::Io {
            path: self.path.clone(),
            error,
        };
        let meta = std::fs::metadata(&self.path).map_err(io)?;
        if meta.file_type().is_char_device() {
            let file = open_nonblocking(&self.path).map_err(io)?;
            tokio::task::spawn_blocking(move || self.read_device(file, core, &out, &shutdown))
                .await
                .map_err(|e| KmsgError::Io {
                    path: PathBuf::new(),
                    error: std::io::Error::other(e),
                })?
        } else if self.follow {
            let file = std::fs::File::open(&self.path).map_err(io)?;
            tokio::task::spawn_blocking(move || self.follow_file(file, core, &out, &shutdown))
                .await
                .map_err(|e| KmsgError::Io {
                    path: PathBuf::new(),
                    error: std::io::Error::other(e),
                })?
        } else {
            let text = tokio::fs::read(&self.path).await.map_err(io)?;
            let mut saved = core.last_seq;
            for record in split_records(&text) {
                if let Some(ev) = core.handle(record) {
                    core.send(&out, ev);
                }
            }
            self.stop(&mut core, &out, &mut saved)
        }
    }

    /// The device loop, on a blocking thread: read until EAGAIN, then wait in
    /// poll(2) for the next record, waking every `POLL_MS` to see whether to
    /// stop and every `TICK` to flush and save.
    fn read_device(
        &self,
        mut file: std::fs::File,
        mut core: Core,
        out: &mpsc::Sender<KernelEvent>,
        shutdown: &CancellationToken,
    ) -> Result<KmsgStats, KmsgError> {
        let io = |error| KmsgError::Io {
            path: self.path.clone(),
            error,
        };
        let mut saved = core.last_seq;
        let mut buf = vec![0u8; RECORD_BUF];
        let mut next_tick = Instant::now() + TICK;
        while !shutdown.is_cancelled() {
            if Instant::now() >= next_tick {
                self.tick(&mut core, out, &mut saved);
                next_tick = Instant::now() + TICK;
            }
            match file.read(&mut buf) {
                Ok(n) => {
                    if let Some(ev) = core.handle(&buf[..n]) {
                        core.send(out, ev);
                    }
                }
                Err(e) => match e.kind() {
                    std::io::ErrorKind::WouldBlock => {
                        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
                        match poll(&mut fds, PollTimeout::from(POLL_MS)) {
                            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                            Err(e) => return Err(io(e.into())),
                        }
                    }
                    std::io::ErrorKind::BrokenPipe => {
                        self.counters.overruns.fetch_add(1, Relaxed);
                    }
                    std::io::ErrorKind::Interrupted => {}
                    _ => return Err(io(e)),
                },
            }
        }
        self.stop(&mut core, out, &mut saved)
    }

    /// The file loop, on a blocking thread: every record already in the
    /// file, then the records appended to it, whole lines at a time.
    fn follow_file(
        &self,
        mut file: std::fs::File,
        mut core: Core,
        out: &mpsc::Sender<KernelEvent>,
        shutdown: &CancellationToken,
    ) -> Result<KmsgStats, KmsgError> {
        let io = |error| KmsgError::Io {
            path: self.path.clone(),
            error,
        };
        let mut saved = core.last_seq;
        let mut pending: Vec<u8> = Vec::new();
        let mut chunk = vec![0u8; RECORD_BUF];
        let mut next_tick = Instant::now() + TICK;
        while !shutdown.is_cancelled() {
            let n = file.read(&mut chunk).map_err(io)?;
            if n > 0 {
                pending.extend_from_slice(&chunk[..n]);
                // Only whole lines: a writer may be half-way through one.
                if let Some(end) = pending.iter().rposition(|b| *b == b'\n') {
                    let whole: Vec<u8> = pending.drain(..=end).collect();
                    for record in split_records(&whole) {
                        if let Some(ev) = core.handle(record) {
                            // A file is not the kernel's ring: nothing is
                            // overwritten while the reader waits, so it waits
                            // for room rather than dropping the event.
                            if out.blocking_send(ev).is_ok() {
                                core.counters.events.fetch_add(1, Relaxed);
                            }
                        }
                    }
                }
                continue;
            }
            if Instant::now() >= next_tick {
                self.tick(&mut core, out, &mut saved);
                next_tick = Instant::now() + TICK;
            }
            // The file went away or was replaced: reading it again is the
            // supervisor's business.
            std::fs::metadata(&self.path).map_err(io)?;
            std::thread::sleep(Duration::from_millis(u64::from(POLL_MS)));
        }
        self.stop(&mut core, out, &mut saved)
    }

    /// Once a `TICK`: flush the events the classifier held back, and save
    /// the place in the log.
    fn tick(&self, core: &mut Core, out: &mpsc::Sender<KernelEvent>, saved: &mut Option<u64>) {
        for ev in core.classifier.tick() {
            core.send(out, ev);
        }
        self.save(saved, core.last_seq);
    }

    fn stop(
        &self,
        core: &mut Core,
        out: &mpsc::Sender<KernelEvent>,
        saved: &mut Option<u64>,
    ) -> Result<KmsgStats, KmsgError> {
        for ev in core.classifier.finish() {
            core.send(out, ev);
        }
        self.save(saved, core.last_seq);
        Ok(self.counters.snapshot())
    }

    /// Saves the resume state if it moved. A failure (a full disk, a
    /// read-only state directory) is counted and kept in the counters for
    /// the agent to report, and never stops the reader: it only means the
    /// records since the last save may be reported again after a restart.
    fn save(&self, saved: &mut Option<u64>, last: Option<u64>) {
        let (Some(path), Some(seq)) = (&self.state_file, last) else {
            return;
        };
        if *saved == last {
            return;
        }
        let state = ResumeState {
            boot_id: self.boot_id.clone(),
            seq,
        };
        let result = state.save(path);
        let mut error = match self.counters.save_error.lock() {
            Ok(e) => e,
            Err(poisoned) => poisoned.into_inner(),
        };
        match result {
            Ok(()) => {
                *saved = last;
                *error = None;
            }
            Err(e) => {
                self.counters.save_errors.fetch_add(1, Relaxed);
                *error = Some(e.to_string());
            }
        }
    }
}

/// Every event still in the kernel's buffer, read once without waiting (for
/// `reachmap-agent snapshot`).
pub fn read_recent(path: &Path, boot_unix_us: Option<i64>) -> Result<Vec<KernelEvent>, KmsgError> {
    let io = |error| KmsgError::Io {
        path: path.to_owned(),
        error,
    };
    let mut core = Core::new(Classifier::new(boot_unix_us), None, Arc::default());
    let mut events = Vec::new();
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.file_type().is_char_device() {
        let mut file = open_nonblocking(path).map_err(io)?;
        let mut buf = vec![0u8; RECORD_BUF];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => events.extend(core.handle(&buf[..n])),
                Err(e) => match e.kind() {
                    std::io::ErrorKind::WouldBlock => break,
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::Interrupted => {}
                    _ => return Err(io(e)),
                },
            }
        }
    } else {
        let text = std::fs::read(path).map_err(io)?;
        for record in split_records(&text) {
            events.extend(core.handle(record));
        }
    }
    events.extend(core.classifier.finish());
    Ok(events)
}

/// The wall-clock time of boot in microseconds, from `PROCFS/uptime`.
pub fn boot_unix_us(procfs: &Path) -> Option<i64> {
    let text = std::fs::read_to_string(procfs.join("uptime")).ok()?;
    let uptime = crate::inspect::host::parse_uptime(&text).ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    let now_us = i64::try_from(now.as_micros()).ok()?;
    Some(now_us - (uptime * 1e6) as i64)
}

fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

/// Per-record bookkeeping shared by the live and one-shot readers.
struct Core {
    classifier: Classifier,
    resume_after: Option<u64>,
    last_seq: Option<u64>,
    counters: Arc<KmsgCounters>,
}

impl Core {
    fn new(classifier: Classifier, resume_after: Option<u64>, counters: Arc<KmsgCounters>) -> Self {
        Core {
            classifier,
            resume_after,
            last_seq: resume_after,
            counters,
        }
    }

    fn handle(&mut self, bytes: &[u8]) -> Option<KernelEvent> {
        self.counters.records.fetch_add(1, Relaxed);
        let record = match parse_record(bytes) {
            Ok(r) => r,
            Err(e) => {
                self.counters.malformed.fetch_add(1, Relaxed);
                tracing::debug!(error = %e, "skipping kmsg record");
                return None;
            }
        };
        if self.resume_after.is_some_and(|after| record.seq <= after) {
            self.counters.skipped.fetch_add(1, Relaxed);
            return None;
        }
        if let Some(last) = self.last_seq
            && record.seq > last.saturating_add(1)
        {
            let lost = record.seq - last - 1;
            self.counters.lost_records.fetch_add(lost, Relaxed);
        }
        self.last_seq = Some(record.seq);
        self.counters
            .next_seq
            .store(record.seq.saturating_add(1), Relaxed);
        self.classifier.feed(&record)
    }

    fn send(&self, out: &mpsc::Sender<KernelEvent>, ev: KernelEvent) {
        match out.try_send(ev) {
            Ok(()) => self.counters.events.fetch_add(1, Relaxed),
            Err(_) => self.counters.dropped_events.fetch_add(1, Relaxed),
        };
    }
}
