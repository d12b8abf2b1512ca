//! Events waiting for the collector's ack, in memory and in a log file in the
//! state directory, so that events made while the collector is away survive
//! a restart of the agent.
//!
//! Every event gets its id when it is pushed — strictly increasing within the
//! agent instance that made it — and carries that instance's id, both kept
//! across resends and restarts: the collector drops a resend whose ack was
//! lost by (node, instance, id). The sequence number of the message that
//! carried it changes with every stream. Events are sent in the order they
//! were pushed, which is id order within each instance.
//!
//! The buffer is bounded in events (`event_buffer`) and in bytes of encoded
//! events (`event_buffer_bytes`): over either bound the oldest event is
//! dropped (DropOldest — the newest facts matter most to a person asking "why
//! now?"), the loss is counted, and a `Dropped` event reporting it is queued
//! at the next send. The report gets its id when it is made, so it goes
//! behind what was queued before it; one report waits to be sent at a time,
//! and drops meanwhile go into the next.
//!
//! # The log: `STATE_DIR/outbox-NODE.log`
//!
//! One file per node name (agents sharing a state directory never race), a
//! sequence of records `u32 len | u32 crc32(payload) | payload`, little
//! endian, the payload one kind byte and a body:
//!
//! - kind 1, an event: the event in its wire form, a prost-encoded
//!   `reachmap.v1.Event` with its `id` and `instance_id`;
//! - kind 2, acked: `u64 instance_id | u64 id`, every event of that instance
//!   up to that id was acked (or dropped): it is not sent again.
//!
//! Loading keeps, in file order, the events no acked record covers. A record
//! whose length is absurd, whose checksum fails or whose payload does not
//! decode is skipped and counted, and reading goes on at the next valid
//! record (or stops, when none is found within a bounded search); a record
//! cut short at the end (a torn write) is skipped. Both are logged in one
//! WARN. A log larger than four times the byte bound (and than 64 MiB), left
//! by a run with a larger bound, is read from its end, where the newest
//! events are. The log is then rewritten with only what was kept, and again
//! (compaction) whenever it has grown well past its live content: a temp file
//! (`outbox-NODE.log.tmp`) written and fsynced, renamed over the log, the
//! directory fsynced.
//!
//! # What is durable when
//!
//! - A pushed event, and an acked record after each ack or drop, is written
//!   to the file at once (one `write` per record, no buffer in the process):
//!   from then on it survives the agent crashing or being killed.
//! - The file is fsynced (fdatasync) at most [`SYNC_DELAY`] after the first
//!   write not yet synced (the stream task calls [`Outbox::sync`] when
//!   [`Outbox::sync_due`] says), and when the outbox is dropped: from then on
//!   it survives a power loss. A power loss before that loses at most the
//!   last second's events, or makes acked events be sent again (the
//!   collector drops them as duplicates).
//! - A compaction is atomic: the old log or the new one is there whole.
//! - Drops not yet reported in a `Dropped` event are counted in memory only.
//!
//! A state directory that cannot be created, or a log that cannot be read
//! (left as it is) or written, leaves the outbox in memory only, as it was
//! before there was a log, with one WARN; the agent runs on. A log that
//! cannot be written (a read-only directory, a full disk) is tried again
//! every [`RETRY_EVERY`] and rewritten whole once it can be.

use crate::events::{EventKind, HostEvent};
use prost::Message;
use reachmap_proto::v1 as pb;
use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Bytes of a record's header: length and checksum.
pub const HEADER_BYTES: usize = 8;
/// The largest payload a record may have; a longer length is corruption.
/// (An event is well under a KiB; one this large is kept in memory only.)
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;
const KIND_EVENT: u8 = 1;
const KIND_ACKED: u8 = 2;
const ACKED_PAYLOAD_BYTES: usize = 17;
/// Checksummed bytes a search for the next valid record may cost in all,
/// per file, before the rest of the file is given up on.
const RESYNC_BUDGET: usize = 64 << 20;
/// How long a write may wait for its fsync.
pub const SYNC_DELAY: Duration = Duration::from_secs(1);
/// A log larger than four times the byte bound, and than this, is read
/// from its end only.
const MIN_READ_CAP: u64 = 64 << 20;
/// How often a log that could not be written is tried again.
pub const RETRY_EVERY: Duration = Duration::from_secs(30);

/// The log file of node `node` in the state directory.
pub fn log_name(node: &str) -> String {
    format!("outbox-{node}.log")
}

/// One record of the log.
#[derive(Clone, Debug, PartialEq)]
// Most records are events: boxing them would only add an allocation each.
#[allow(clippy::large_enum_variant)]
pub enum Record {
    /// An event as it is sent, with its `id` and `instance_id` (both nonzero).
    Event(pb::Event),
    /// Every event of `instance_id` with an id up to `id` was acked or
    /// dropped.
    Acked { instance_id: u64, id: u64 },
}

/// What reading a log found besides its records. Every byte is in exactly one
/// of `record_bytes`, `corrupt_bytes` and `torn_bytes`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParseStats {
    pub records: usize,
    pub record_bytes: usize,
    /// Stretches skipped: each a record with an absurd length or a failed
    /// checksum (up to the next valid record), or a whole record whose
    /// payload does not decode.
    pub corrupt: usize,
    pub corrupt_bytes: usize,
    /// The last record is cut short (a torn write): its bytes.
    pub torn_bytes: usize,
    /// The search for a valid record cost too much: the rest (in
    /// `corrupt_bytes`) was not read.
    pub gave_up: bool,
}

impl ParseStats {
    pub fn clean(&self) -> bool {
        self.corrupt == 0 && self.torn_bytes == 0
    }
}

/// The log's records, skipping what is corrupt or torn. Pure; never panics.
pub fn parse_records(bytes: &[u8]) -> (Vec<Record>, ParseStats) {
    parse_records_within(bytes, RESYNC_BUDGET)
}

enum Frame<'a> {
    /// A whole record with a matching checksum: its payload.
    Whole(&'a [u8]),
    /// The header or the length it claims runs past the end.
    Short,
    /// An absurd length, an unknown kind or a failed checksum.
    Bad,
}

/// The frame at the start of `rest`; `budget` pays for checksums.
fn frame<'a>(rest: &'a [u8], budget: &mut usize) -> Frame<'a> {
    let (Some(len), Some(crc)) = (le_u32(rest, 0), le_u32(rest, 4)) else {
        return Frame::Short;
    };
    let len = len as usize;
    if len == 0 || len > MAX_PAYLOAD_BYTES {
        return Frame::Bad;
    }
    let Some(payload) = rest.get(HEADER_BYTES..HEADER_BYTES + len) else {
        return Frame::Short;
    };
    let kind_fits = match payload[0] {
        KIND_EVENT => true,
        KIND_ACKED => len == ACKED_PAYLOAD_BYTES,
        _ => false,
    };
    if !kind_fits {
        return Frame::Bad;
    }
    *budget = budget.saturating_sub(len);
    if crc32fast::hash(payload) != crc {
        return Frame::Bad;
    }
    Frame::Whole(payload)
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    let bytes = b.get(at..at + 4)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    let bytes = b.get(at..at + 8)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

fn decode(payload: &[u8]) -> Option<Record> {
    match *payload.first()? {
        KIND_EVENT => {
            let e = pb::Event::decode(payload.get(1..)?).ok()?;
            (e.id != 0 && e.instance_id != 0 && e.kind.is_some()).then_some(Record::Event(e))
        }
        KIND_ACKED if payload.len() == ACKED_PAYLOAD_BYTES => {
            let instance_id = le_u64(payload, 1)?;
            let id = le_u64(payload, 9)?;
            (instance_id != 0).then_some(Record::Acked { instance_id, id })
        }
        _ => None,
    }
}

/// [`parse_records`] with `budget` checksummed bytes for resynchronising.
fn parse_records_within(bytes: &[u8], mut budget: usize) -> (Vec<Record>, ParseStats) {
    let mut records = Vec::new();
    let mut stats = ParseStats::default();
    let mut pos = 0;
    while pos < bytes.len() {
        // Records read in turn are checksummed once each, outside the budget.
        let mut unmetered = usize::MAX;
        let short = match frame(&bytes[pos..], &mut unmetered) {
            Frame::Whole(payload) => {
                let size = HEADER_BYTES + payload.len();
                match decode(payload) {
                    Some(r) => {
                        records.push(r);
                        stats.records += 1;
                        stats.record_bytes += size;
                    }
                    None => {
                        stats.corrupt += 1;
                        stats.corrupt_bytes += size;
                    }
                }
                pos += size;
                continue;
            }
            Frame::Short => true,
            Frame::Bad => false,
        };
        // Look for the next offset where a whole, valid record starts.
        let mut next = None;
        for q in pos + 1..bytes.len() {
            if budget == 0 {
                stats.gave_up = true;
                break;
            }
            if let Frame::Whole(_) = frame(&bytes[q..], &mut budget) {
                next = Some(q);
                break;
            }
        }
        match next {
            Some(q) => {
                stats.corrupt += 1;
                stats.corrupt_bytes += q - pos;
                pos = q;
            }
            None if short && !stats.gave_up => {
                stats.torn_bytes += bytes.len() - pos;
                break;
            }
            None => {
                stats.corrupt += 1;
                stats.corrupt_bytes += bytes.len() - pos;
                break;
            }
        }
    }
    (records, stats)
}

/// A record as it is written; `None` for an event too large for the log.
pub fn encode_record(r: &Record) -> Option<Vec<u8>> {
    match r {
        Record::Event(e) => event_record(e),
        Record::Acked { instance_id, id } => Some(acked_record(*instance_id, *id)),
    }
}

fn event_record(e: &pb::Event) -> Option<Vec<u8>> {
    let payload_len = 1 + e.encoded_len();
    if payload_len > MAX_PAYLOAD_BYTES {
        return None;
    }
    let mut out = Vec::with_capacity(HEADER_BYTES + payload_len);
    out.extend_from_slice(&u32::try_from(payload_len).ok()?.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(KIND_EVENT);
    // Into a Vec, which grows as needed: encoding cannot fail.
    e.encode(&mut out).ok()?;
    seal(&mut out);
    Some(out)
}

fn acked_record(instance_id: u64, id: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + ACKED_PAYLOAD_BYTES);
    out.extend_from_slice(&(ACKED_PAYLOAD_BYTES as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(KIND_ACKED);
    out.extend_from_slice(&instance_id.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    seal(&mut out);
    out
}

/// Writes the checksum of the payload into the header.
fn seal(record: &mut [u8]) {
    let crc = crc32fast::hash(&record[HEADER_BYTES..]);
    record[4..HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
}

/// Bytes of an event's record: what it counts toward the byte bound.
fn record_bytes(e: &pb::Event) -> usize {
    HEADER_BYTES + 1 + e.encoded_len()
}

/// The bounds of the outbox.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub events: usize,
    pub bytes: u64,
}

#[derive(Debug)]
pub struct Entry {
    event: pb::Event,
    /// Bytes of its log record.
    bytes: usize,
    /// Sequence number of the message that last carried it on the current
    /// stream; `None` when not yet sent on it.
    sent_seq: Option<u64>,
}

impl Entry {
    /// Stable across resends and restarts; never 0.
    pub fn id(&self) -> u64 {
        self.event.id
    }

    /// The agent instance that made it.
    pub fn instance_id(&self) -> u64 {
        self.event.instance_id
    }

    /// The event as it is sent.
    pub fn event(&self) -> &pb::Event {
        &self.event
    }

    fn is_drop_report(&self) -> Option<&pb::EventsDropped> {
        match &self.event.kind {
            Some(pb::event::Kind::EventsDropped(d)) => Some(d),
            _ => None,
        }
    }
}

/// What opening the log found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub parse: ParseStats,
    /// Events kept (not acked) from earlier runs.
    pub loaded: usize,
    /// Events that came again with an id not above an earlier one of their
    /// instance, skipped.
    pub out_of_order: usize,
    /// Bytes at the start of a log too large to read whole, not read.
    pub skipped_head_bytes: u64,
}

/// The end of the file at `path`, at most `cap` bytes, and how many bytes
/// before it were left unread.
fn read_tail(path: &Path, cap: u64) -> io::Result<(Vec<u8>, u64)> {
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
struct Log {
    path: PathBuf,
    /// False while it cannot be written: the outbox is in memory only.
    writable: bool,
    /// Open while records wait for their fsync; closed once they are synced,
    /// so nothing holds the state directory busy while the agent is idle (it
    /// can be remounted read-only, or unmounted).
    file: Option<File>,
    /// Bytes in the file.
    len: u64,
    /// The first write not yet fsynced.
    unsynced_since: Option<Instant>,
    /// When to try rewriting it again, while `file` is `None`.
    retry_at: Option<Instant>,
}

impl Log {
    fn append(&mut self, record: &[u8]) {
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

    fn failed(&mut self, e: &io::Error) {
        self.file = None;
        if std::mem::take(&mut self.writable) {
            tracing::warn!(file = %self.path.display(), error = %e, "cannot write the event outbox log: unacked events are kept in memory only until it can be written again (tried every {}s)", RETRY_EVERY.as_secs());
        }
        self.unsynced_since = None;
        self.retry_at = Some(Instant::now() + RETRY_EVERY);
    }

    fn sync(&mut self) {
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
    fn rewrite<'a>(&mut self, entries: impl Iterator<Item = &'a Entry>) -> io::Result<()> {
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
fn write_replacement<'a>(
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

#[derive(Debug)]
pub struct Outbox {
    instance_id: u64,
    limits: Limits,
    next_id: u64,
    entries: VecDeque<Entry>,
    /// Bytes of the entries' records.
    live_bytes: u64,
    /// Entries before this index have been sent on the current stream.
    sent: usize,
    dropped_total: u64,
    /// Drops not yet reported in a `Dropped` event: count, first, last.
    unreported: Option<(u64, SystemTime, SystemTime)>,
    /// The id of a drop report made and not yet sent on this stream.
    report_waiting: Option<u64>,
    /// `None`: memory only for good (no state directory, or a log that
    /// could not be read and so must not be overwritten).
    log: Option<Log>,
    load: LoadReport,
}

impl Outbox {
    /// An outbox in memory only, for events made by `instance_id`.
    pub fn in_memory(instance_id: u64, limits: Limits) -> Self {
        Outbox {
            instance_id: instance_id.max(1),
            limits: Limits {
                events: limits.events.max(1),
                bytes: limits.bytes.max(1),
            },
            next_id: 1,
            entries: VecDeque::new(),
            live_bytes: 0,
            sent: 0,
            dropped_total: 0,
            unreported: None,
            report_waiting: None,
            log: None,
            load: LoadReport::default(),
        }
    }

    /// The outbox of `node`, with the unacked events its earlier runs left in
    /// `state_dir`. Never fails: without a usable state directory it is in
    /// memory only (logged once).
    pub fn open(state_dir: &Path, node: &str, instance_id: u64, limits: Limits) -> Self {
        // A log left by a run with a larger bound is read from its end,
        // where the newest events are: what it keeps fits in this bound.
        let cap = limits.bytes.saturating_mul(4).max(MIN_READ_CAP);
        Outbox::open_reading_at_most(state_dir, node, instance_id, limits, cap)
    }

    fn open_reading_at_most(
        state_dir: &Path,
        node: &str,
        instance_id: u64,
        limits: Limits,
        cap: u64,
    ) -> Self {
        let mut o = Outbox::in_memory(instance_id, limits);
        let path = state_dir.join(log_name(node));
        if let Err(e) = std::fs::create_dir_all(state_dir) {
            tracing::warn!(dir = %state_dir.display(), error = %e, "cannot create the state directory: unacked events are kept in memory only and lost if the agent restarts");
            return o;
        }
        let bytes = match read_tail(&path, cap) {
            Ok((b, skipped)) => {
                o.load.skipped_head_bytes = skipped;
                b
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read the event outbox log: it is left as it is, and unacked events are kept in memory only");
                return o;
            }
        };
        let (records, parse) = parse_records(&bytes);
        o.load.parse = parse;
        o.take_in(records);
        let load = &o.load;
        if !parse.clean() || load.out_of_order > 0 || load.skipped_head_bytes > 0 {
            tracing::warn!(
                file = %path.display(),
                kept = load.loaded,
                unread_head_bytes = load.skipped_head_bytes,
                corrupt_records = parse.corrupt,
                corrupt_bytes = parse.corrupt_bytes,
                torn_bytes = parse.torn_bytes,
                gave_up = parse.gave_up,
                out_of_order = load.out_of_order,
                "event outbox log damaged: skipped what could not be read"
            );
        }
        if load.loaded > 0 {
            tracing::info!(file = %path.display(), events = load.loaded, "unacked events from an earlier run, sent again with their ids");
        }
        let mut log = Log {
            path,
            writable: false,
            file: None,
            len: bytes.len() as u64 + o.load.skipped_head_bytes,
            unsynced_since: None,
            retry_at: None,
        };
        // A file holding exactly the live events is appended to; anything
        // else (acked or damaged records, drops over the bounds) is
        // rewritten first, so nothing is ever appended after a torn record.
        let clean = log.len == o.live_bytes && o.unreported.is_none();
        let opened = if clean && !bytes.is_empty() {
            OpenOptions::new()
                .append(true)
                .open(&log.path)
                .map(|_| log.writable = true)
        } else {
            log.rewrite(o.entries.iter())
        };
        if let Err(e) = opened {
            tracing::warn!(file = %log.path.display(), error = %e, "cannot write the event outbox log (a read-only state directory?): unacked events are kept in memory only, and lost if the agent restarts before it can be written (tried every {}s)", RETRY_EVERY.as_secs());
            log.retry_at = Some(Instant::now() + RETRY_EVERY);
        }
        o.log = Some(log);
        o
    }

    /// Keeps the loaded events no acked record covers, in file order, each
    /// instance's ids strictly increasing; then applies the bounds.
    fn take_in(&mut self, records: Vec<Record>) {
        let mut acked: HashMap<u64, u64> = HashMap::new();
        for r in &records {
            if let Record::Acked { instance_id, id } = r {
                let w = acked.entry(*instance_id).or_default();
                *w = (*w).max(*id);
            }
        }
        let mut last: HashMap<u64, u64> = HashMap::new();
        for r in records {
            let Record::Event(e) = r else { continue };
            if acked.get(&e.instance_id).is_some_and(|w| e.id <= *w) {
                continue;
            }
            let l = last.entry(e.instance_id).or_default();
            if e.id <= *l {
                self.load.out_of_order += 1;
                continue;
            }
            *l = e.id;
            let bytes = record_bytes(&e);
            self.live_bytes += bytes as u64;
            self.entries.push_back(Entry {
                event: e,
                bytes,
                sent_seq: None,
            });
        }
        // An instance id chosen again (1 in 2^63) still never repeats an id.
        if let Some(l) = last.get(&self.instance_id) {
            self.next_id = l + 1;
        }
        while self.entries.len() > self.limits.events || self.live_bytes > self.limits.bytes {
            if self.entries.len() <= 1 {
                break;
            }
            self.drop_oldest();
        }
        self.load.loaded = self.entries.len();
    }

    /// What opening found in the log.
    pub fn load_report(&self) -> &LoadReport {
        &self.load
    }

    /// Whether events are being written to the log now.
    pub fn is_durable(&self) -> bool {
        self.log.as_ref().is_some_and(|l| l.writable)
    }

    pub fn push(&mut self, event: HostEvent) {
        let e = self.made(&event);
        let bytes = record_bytes(&e) as u64;
        while !self.entries.is_empty()
            && (self.entries.len() >= self.limits.events
                || self.live_bytes + bytes > self.limits.bytes)
        {
            self.drop_oldest();
        }
        self.keep(e);
        self.maintain();
    }

    /// The event in its wire form with the next id.
    fn made(&mut self, event: &HostEvent) -> pb::Event {
        let id = self.next_id;
        self.next_id += 1;
        crate::wire::event(id, self.instance_id, event)
    }

    /// Queues an event at the back and writes it to the log.
    fn keep(&mut self, event: pb::Event) {
        let bytes = record_bytes(&event);
        if let Some(log) = &mut self.log
            && log.writable
            && let Some(r) = event_record(&event)
        {
            log.append(&r);
        }
        self.live_bytes += bytes as u64;
        self.entries.push_back(Entry {
            event,
            bytes,
            sent_seq: None,
        });
    }

    fn drop_oldest(&mut self) {
        let Some(old) = self.entries.pop_front() else {
            return;
        };
        self.live_bytes -= old.bytes as u64;
        self.sent = self.sent.saturating_sub(1);
        let (count, first, last) = match old.is_drop_report() {
            // A report that never went out: its count goes into the next.
            Some(d) if old.sent_seq.is_none() => (
                d.count,
                from_unix_nanos(d.first_dropped_unix_nanos),
                from_unix_nanos(d.last_dropped_unix_nanos),
            ),
            Some(_) => (0, SystemTime::now(), SystemTime::now()),
            None => {
                self.dropped_total += 1;
                let t = from_unix_nanos(old.event.time_unix_nanos);
                (1, t, t)
            }
        };
        if self.report_waiting == Some(old.id()) && old.instance_id() == self.instance_id {
            self.report_waiting = None;
        }
        if count > 0 {
            self.unreported = Some(match self.unreported {
                None => (count, first, last),
                Some((n, f, l)) => (n + count, f.min(first), l.max(last)),
            });
        }
        self.write_acked(&[(old.instance_id(), old.id())]);
    }

    /// Writes that the events of each instance up to each id are done with.
    fn write_acked(&mut self, done: &[(u64, u64)]) {
        let Some(log) = &mut self.log else {
            return;
        };
        for &(instance_id, id) in done {
            log.append(&acked_record(instance_id, id));
        }
    }

    /// After every change: compacts a log grown well past its live content,
    /// or tries again to write one that could not be written.
    fn maintain(&mut self) {
        let Some(log) = &mut self.log else {
            return;
        };
        let live = self.live_bytes;
        if log.writable {
            if log.len > 2 * live + self.limits.bytes / 4
                && let Err(e) = log.rewrite(self.entries.iter())
            {
                log.failed(&e);
            }
        } else if log.retry_at.is_some_and(|t| Instant::now() >= t) {
            match log.rewrite(self.entries.iter()) {
                Ok(()) => {
                    tracing::info!(file = %log.path.display(), events = self.entries.len(), "event outbox log written again")
                }
                Err(e) => {
                    tracing::debug!(file = %log.path.display(), error = %e, "event outbox log still not writable");
                    log.retry_at = Some(Instant::now() + RETRY_EVERY);
                }
            }
        }
    }

    /// When the writes not yet fsynced should be: call [`Outbox::sync`] then.
    pub fn sync_due(&self) -> Option<Instant> {
        let since = self.log.as_ref()?.unsynced_since?;
        Some(since + SYNC_DELAY)
    }

    /// Fsyncs the log's writes so far.
    pub fn sync(&mut self) {
        if let Some(log) = &mut self.log {
            log.sync();
        }
    }

    /// The next event to send on the current stream, marked as carried by
    /// `seq`. A pending drop report is made first, at the back.
    pub fn next_unsent(&mut self, seq: u64) -> Option<&Entry> {
        if self.report_waiting.is_none()
            && let Some((count, first, last)) = self.unreported.take()
        {
            // May hold the buffer one over its bounds until acked.
            let report = self.made(&HostEvent {
                time: SystemTime::now(),
                kind: EventKind::Dropped { count, first, last },
            });
            self.report_waiting = Some(report.id);
            self.keep(report);
            self.maintain();
        }
        let entry = self.entries.get_mut(self.sent)?;
        entry.sent_seq = Some(seq);
        if self.report_waiting == Some(entry.event.id)
            && entry.event.instance_id == self.instance_id
        {
            self.report_waiting = None;
        }
        self.sent += 1;
        self.entries.get(self.sent - 1)
    }

    pub fn has_unsent(&self) -> bool {
        self.unreported.is_some() || self.sent < self.entries.len()
    }

    /// The collector stored everything up to `seq`.
    pub fn ack(&mut self, seq: u64) {
        let mut done: Vec<(u64, u64)> = Vec::new();
        while let Some(front) = self.entries.front() {
            match front.sent_seq {
                Some(s) if s <= seq => {
                    let (instance, id) = (front.instance_id(), front.id());
                    self.live_bytes -= front.bytes as u64;
                    self.entries.pop_front();
                    self.sent = self.sent.saturating_sub(1);
                    match done.iter_mut().find(|(i, _)| *i == instance) {
                        Some(d) => d.1 = d.1.max(id),
                        None => done.push((instance, id)),
                    }
                }
                _ => break,
            }
        }
        if !done.is_empty() {
            self.write_acked(&done);
            self.maintain();
        }
    }

    /// The stream ended: everything unacked is sent again on the next one.
    pub fn rewind(&mut self) {
        for e in &mut self.entries {
            e.sent_seq = None;
        }
        self.sent = 0;
    }

    pub fn unacked(&self) -> usize {
        self.entries.len()
    }

    /// Bytes of the unacked events' records.
    pub fn unacked_bytes(&self) -> u64 {
        self.live_bytes
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.sync();
    }
}

fn from_unix_nanos(n: i64) -> SystemTime {
    let d = Duration::from_nanos(n.unsigned_abs());
    if n >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH.checked_sub(d).unwrap_or(UNIX_EPOCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::OperState;

    const A: u64 = 0xa1;
    const B: u64 = 0xb1;

    fn limits(events: usize) -> Limits {
        Limits {
            events,
            bytes: 16 << 20,
        }
    }

    fn ev(n: u32) -> HostEvent {
        ev_named(format!("eth{n}"), n)
    }

    fn ev_named(interface: String, n: u32) -> HostEvent {
        HostEvent {
            time: UNIX_EPOCH + Duration::from_secs(u64::from(n)),
            kind: EventKind::LinkAdded {
                interface,
                admin_up: true,
                oper_state: OperState::Up,
            },
        }
    }

    fn name(e: &pb::Event) -> String {
        match &e.kind {
            Some(pb::event::Kind::LinkChanged(l)) => l.interface.clone(),
            Some(pb::event::Kind::EventsDropped(d)) => format!("dropped:{}", d.count),
            other => format!("{other:?}"),
        }
    }

    /// Sends everything unsent: (instance, id, name) in delivery order.
    fn drain(o: &mut Outbox, seq: &mut u64) -> Vec<(u64, u64, String)> {
        let mut out = Vec::new();
        while o.has_unsent() {
            *seq += 1;
            let e = o.next_unsent(*seq).expect("unsent entry");
            out.push((e.instance_id(), e.id(), name(e.event())));
        }
        out
    }

    fn ids(sent: &[(u64, u64, String)]) -> Vec<u64> {
        sent.iter().map(|e| e.1).collect()
    }

    fn log_path(dir: &Path) -> PathBuf {
        dir.join(log_name("n1"))
    }

    fn open(dir: &Path, instance: u64, l: Limits) -> Outbox {
        Outbox::open(dir, "n1", instance, l)
    }

    #[test]
    fn acked_events_leave_unacked_are_resent_with_the_same_id() {
        let mut o = Outbox::in_memory(A, limits(10));
        let mut seq = 0;
        for n in 0..3 {
            o.push(ev(n));
        }
        let first = drain(&mut o, &mut seq);
        assert_eq!(ids(&first), [1, 2, 3]);
        assert!(first.iter().all(|e| e.0 == A));
        o.ack(seq - 1); // the last one's ack was lost
        o.rewind();
        let again = drain(&mut o, &mut seq);
        assert_eq!(again, vec![(A, 3, "eth2".to_string())]);
        o.ack(seq);
        assert_eq!(o.unacked(), 0);
        assert_eq!(o.unacked_bytes(), 0);
        assert!(!o.has_unsent());
    }

    #[test]
    fn ids_are_given_at_push() {
        let mut o = Outbox::in_memory(A, limits(10));
        o.push(ev(0));
        o.push(ev(1));
        let mut seq = 10;
        assert_eq!(ids(&drain(&mut o, &mut seq)), [1, 2]);
    }

    #[test]
    fn overflow_drops_oldest_counts_and_reports_behind_the_survivors() {
        let mut o = Outbox::in_memory(A, limits(3));
        for n in 0..5 {
            o.push(ev(n));
        }
        assert_eq!(o.dropped_total(), 2);
        let mut seq = 0;
        let sent = drain(&mut o, &mut seq);
        let names: Vec<&str> = sent.iter().map(|e| e.2.as_str()).collect();
        assert_eq!(names, ["eth2", "eth3", "eth4", "dropped:2"]);
        let ids = ids(&sent);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
        // The drop report may hold the buffer one over capacity.
        assert_eq!(o.unacked(), 4);
    }

    #[test]
    fn overflow_after_a_lost_stream_keeps_ids_in_delivery_order() {
        let mut o = Outbox::in_memory(A, limits(3));
        let mut seq = 0;
        o.push(ev(0));
        o.push(ev(1));
        let first = drain(&mut o, &mut seq);
        o.rewind(); // stream lost before any ack
        for n in 2..6 {
            o.push(ev(n));
        }
        let second = drain(&mut o, &mut seq);
        let ids = ids(&second);
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "ids increase: {second:?}"
        );
        assert!(
            second.iter().any(|e| e.2.starts_with("dropped:")),
            "{second:?}"
        );
        // Anything resent keeps the id it had the first time.
        for (_, id, name) in &second {
            if let Some((_, first_id, _)) = first.iter().find(|f| &f.2 == name) {
                assert_eq!(id, first_id);
            }
        }
    }

    #[test]
    fn one_drop_report_waits_at_a_time_and_an_unsent_one_dropped_is_folded() {
        let mut o = Outbox::in_memory(A, limits(2));
        for n in 0..4 {
            o.push(ev(n));
        }
        let mut seq = 0;
        // The report is made at the first send, behind eth2 and eth3.
        seq += 1;
        assert_eq!(
            o.next_unsent(seq).map(|e| name(e.event())),
            Some("eth2".into())
        );
        // More drops meanwhile: the waiting report is itself pushed out
        // unsent, and its count carried into the next one.
        for n in 4..8 {
            o.push(ev(n));
        }
        assert_eq!(o.dropped_total(), 2 + 4);
        let rest = drain(&mut o, &mut seq);
        let reports: Vec<&str> = rest
            .iter()
            .filter(|e| e.2.starts_with("dropped:"))
            .map(|e| e.2.as_str())
            .collect();
        let counted: u64 = reports
            .iter()
            .filter_map(|r| r.strip_prefix("dropped:")?.parse::<u64>().ok())
            .sum();
        assert_eq!(counted, o.dropped_total(), "{rest:?}");
    }

    #[test]
    fn ack_of_unknown_seq_removes_nothing_unsent() {
        let mut o = Outbox::in_memory(A, limits(4));
        o.push(ev(1));
        o.ack(100);
        assert_eq!(o.unacked(), 1);
    }

    #[test]
    fn unacked_events_survive_a_restart_with_their_ids_and_instance() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut seq = 0;
        {
            let mut o = open(dir.path(), A, limits(100));
            assert!(o.is_durable());
            for n in 0..5 {
                o.push(ev(n));
            }
            let sent = drain(&mut o, &mut seq);
            assert_eq!(ids(&sent), [1, 2, 3, 4, 5]);
            o.ack(2); // ids 1 and 2
        } // the agent stops
        let mut o = open(dir.path(), B, limits(100));
        assert_eq!(o.load_report().loaded, 3);
        assert!(o.load_report().parse.clean());
        o.push(ev(9));
        let mut seq = 0; // a new instance's stream
        let sent = drain(&mut o, &mut seq);
        assert_eq!(
            sent,
            vec![
                (A, 3, "eth2".into()),
                (A, 4, "eth3".into()),
                (A, 5, "eth4".into()),
                (B, 1, "eth9".into()),
            ]
        );
        // Acked now: gone after the next restart, across both instances.
        o.ack(2);
        drop(o);
        let mut o = open(dir.path(), 0xc1, limits(100));
        let sent = drain(&mut o, &mut 0);
        assert_eq!(
            sent,
            vec![(A, 5, "eth4".into()), (B, 1, "eth9".into())],
            "{sent:?}"
        );
    }

    #[test]
    fn a_torn_last_record_is_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut o = open(dir.path(), A, limits(100));
            for n in 0..3 {
                o.push(ev(n));
            }
        }
        let path = log_path(dir.path());
        let len = std::fs::metadata(&path).expect("log").len();
        let f = OpenOptions::new().write(true).open(&path).expect("open");
        f.set_len(len - 5).expect("truncate");
        drop(f);
        let mut o = open(dir.path(), B, limits(100));
        let r = o.load_report().clone();
        assert_eq!(r.loaded, 2);
        assert_eq!(r.parse.corrupt, 0);
        assert!(r.parse.torn_bytes > 0, "{r:?}");
        // Rewritten without the torn record: appends come after whole ones.
        assert_eq!(
            std::fs::metadata(&path).expect("log").len(),
            o.unacked_bytes()
        );
        o.push(ev(7));
        drop(o);
        let mut o = open(dir.path(), 0xc1, limits(100));
        assert!(o.load_report().parse.clean());
        let names: Vec<String> = drain(&mut o, &mut 0).into_iter().map(|e| e.2).collect();
        assert_eq!(names, ["eth0", "eth1", "eth7"]);
    }

    #[test]
    fn a_flipped_byte_skips_one_record_and_keeps_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut starts = Vec::new();
        {
            let mut o = open(dir.path(), A, limits(100));
            for n in 0..5 {
                starts.push(o.log.as_ref().expect("log").len as usize);
                o.push(ev(n));
            }
        }
        let path = log_path(dir.path());
        let mut bytes = std::fs::read(&path).expect("log");
        // In the middle of the third record's payload.
        let at = (starts[2] + starts[3]) / 2;
        bytes[at] ^= 0x40;
        std::fs::write(&path, &bytes).expect("write");
        let mut o = open(dir.path(), B, limits(100));
        let r = o.load_report().clone();
        assert_eq!((r.loaded, r.parse.corrupt), (4, 1), "{r:?}");
        assert_eq!(r.parse.corrupt_bytes, starts[3] - starts[2]);
        let sent = drain(&mut o, &mut 0);
        assert_eq!(ids(&sent), [1, 2, 4, 5]);
    }

    #[test]
    fn a_corrupt_length_resyncs_to_the_next_record() {
        let recs: Vec<Vec<u8>> = (1..=4)
            .map(|id| {
                let e = crate::wire::event(id, A, &ev(id as u32));
                encode_record(&Record::Event(e)).expect("small")
            })
            .collect();
        let mut bytes = recs.concat();
        // The second record's length becomes absurd.
        let at = recs[0].len() + 3;
        bytes[at] = 0xff;
        let (records, stats) = parse_records(&bytes);
        let got: Vec<u64> = records
            .iter()
            .filter_map(|r| match r {
                Record::Event(e) => Some(e.id),
                Record::Acked { .. } => None,
            })
            .collect();
        assert_eq!(got, [1, 3, 4]);
        assert_eq!(stats.corrupt, 1);
        assert_eq!(stats.corrupt_bytes, recs[1].len());
        assert_eq!(
            stats.record_bytes + stats.corrupt_bytes + stats.torn_bytes,
            bytes.len()
        );
    }

    #[test]
    fn garbage_never_panics_and_every_byte_is_accounted_for() {
        let mut good = Vec::new();
        for id in 1..=20u64 {
            let e = crate::wire::event(id, A, &ev(id as u32));
            good.extend(encode_record(&Record::Event(e)).expect("small"));
            good.extend(encode_record(&Record::Acked { instance_id: A, id }).expect("small"));
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..300 {
            let mut b = good.clone();
            for _ in 0..(round % 7) {
                let i = (next() as usize) % b.len();
                b[i] = next() as u8;
            }
            let cut = (next() as usize) % (b.len() + 1);
            b.truncate(if round % 3 == 0 { cut } else { b.len() });
            let (records, s) = parse_records(&b);
            assert_eq!(records.len(), s.records);
            assert_eq!(s.record_bytes + s.corrupt_bytes + s.torn_bytes, b.len());
        }
        let zeros = vec![0u8; 4096];
        let (records, s) = parse_records(&zeros);
        assert!(records.is_empty());
        assert_eq!(s.corrupt_bytes + s.torn_bytes, zeros.len());
    }

    #[test]
    fn the_resync_search_is_bounded() {
        // Every fourth offset looks like an event record of 8 KiB.
        let bytes: Vec<u8> = [1u8, 0x20, 0, 0].repeat(16 << 10);
        let (records, s) = parse_records_within(&bytes, 1 << 20);
        assert!(records.is_empty());
        assert!(s.gave_up, "{s:?}");
        assert_eq!(s.corrupt_bytes, bytes.len());
    }

    #[test]
    fn the_byte_bound_drops_oldest_and_reports() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bound = 64 << 10;
        let mut o = open(
            dir.path(),
            A,
            Limits {
                events: 10_000,
                bytes: bound,
            },
        );
        for n in 0..200 {
            o.push(ev_named(format!("eth{n}-{}", "x".repeat(1000)), n));
        }
        assert!(o.unacked_bytes() <= bound, "{}", o.unacked_bytes());
        assert!(o.unacked() < 70, "{}", o.unacked());
        let dropped = o.dropped_total();
        assert_eq!(dropped, 200 - o.unacked() as u64);
        let sent = drain(&mut o, &mut 0);
        assert!(sent[0].2.starts_with("eth"), "{:?}", sent[0].2);
        assert!(sent[0].2.starts_with(&format!("eth{dropped}-")));
        assert_eq!(
            sent.last().map(|e| e.2.clone()),
            Some(format!("dropped:{dropped}"))
        );
    }

    #[test]
    fn the_bounds_apply_to_what_is_loaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut o = open(dir.path(), A, limits(100));
            for n in 0..10 {
                o.push(ev(n));
            }
        }
        let mut o = open(dir.path(), B, limits(4));
        assert_eq!(o.dropped_total(), 6);
        let sent = drain(&mut o, &mut 0);
        assert_eq!(
            sent.iter().map(|e| e.2.as_str()).collect::<Vec<_>>(),
            ["eth6", "eth7", "eth8", "eth9", "dropped:6"]
        );
        assert_eq!(sent[4].0, B);
    }

    #[test]
    fn a_log_too_large_is_read_from_its_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut o = open(dir.path(), A, limits(100));
            for n in 0..20 {
                o.push(ev(n));
            }
        }
        let len = std::fs::metadata(log_path(dir.path())).expect("log").len();
        let mut o = Outbox::open_reading_at_most(dir.path(), "n1", B, limits(100), len / 2);
        let r = o.load_report().clone();
        assert_eq!(r.skipped_head_bytes, len - len / 2);
        assert!((8..=10).contains(&r.loaded), "{r:?}");
        let sent = drain(&mut o, &mut 0);
        assert_eq!(sent.last().map(|e| e.1), Some(20));
        let ids = ids(&sent);
        assert!(ids.windows(2).all(|w| w[0] + 1 == w[1]), "{ids:?}");
        // Rewritten with what was kept.
        assert_eq!(
            std::fs::metadata(log_path(dir.path())).expect("log").len(),
            o.unacked_bytes()
        );
    }

    #[test]
    fn compaction_keeps_exactly_the_unacked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = log_path(dir.path());
        let l = Limits {
            events: 10_000,
            bytes: 64 << 10,
        };
        let mut o = open(dir.path(), A, l);
        let mut seq = 0;
        let mut max_len = 0;
        for n in 0..2000 {
            o.push(ev(n));
            let sent = drain(&mut o, &mut seq);
            assert_eq!(sent.len(), 1);
            // Every event but each hundredth is acked at once.
            if n % 100 != 0 {
                o.ack(seq);
            }
            max_len = max_len.max(std::fs::metadata(&path).expect("log").len());
        }
        // Ack is cumulative: only the last unacked one was still unacked.
        assert_eq!(o.unacked(), 0);
        o.push(ev(5000));
        o.push(ev(5001));
        drain(&mut o, &mut seq);
        o.ack(seq - 1);
        // Compacted whenever it grew past twice its live content plus a
        // quarter of the byte bound.
        assert!(
            max_len <= (64 << 10) / 4 + 1024,
            "the log grew to {max_len}"
        );
        // A compaction now leaves exactly the one unacked event.
        let log = o.log.as_mut().expect("log");
        log.rewrite(o.entries.iter()).expect("rewrite");
        assert_eq!(
            std::fs::metadata(&path).expect("log").len(),
            o.unacked_bytes()
        );
        drop(o);
        let mut o = open(dir.path(), B, l);
        assert!(o.load_report().parse.clean());
        let sent = drain(&mut o, &mut 0);
        assert_eq!(sent, vec![(A, 2002, "eth5001".into())]);
        assert!(!dir.path().join("outbox-n1.log.tmp").exists());
    }

    #[test]
    fn a_compaction_by_growth_keeps_the_unacked_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = Limits {
            events: 10_000,
            bytes: 64 << 10,
        };
        let mut o = open(dir.path(), A, l);
        let mut seq = 0;
        // Three old ones stay unacked through many compactions.
        for n in 0..3 {
            o.push(ev(n));
        }
        drain(&mut o, &mut seq);
        o.rewind();
        let resend_from = seq;
        for n in 3..1000 {
            o.push(ev(n));
        }
        // Nothing acked, and everything fits: nothing compacts away.
        let all = drain(&mut o, &mut seq);
        assert_eq!(all.len(), 1000);
        assert_eq!(o.dropped_total(), 0);
        let path = log_path(dir.path());
        assert_eq!(
            std::fs::metadata(&path).expect("log").len(),
            o.unacked_bytes()
        );
        // Acking all but the last ten shrinks the log to them.
        o.ack(resend_from + 990);
        assert_eq!(
            std::fs::metadata(&path).expect("log").len(),
            o.unacked_bytes()
        );
        drop(o);
        let mut o = open(dir.path(), B, l);
        let sent = drain(&mut o, &mut 0);
        assert_eq!(ids(&sent), (991..=1000).collect::<Vec<_>>());
    }

    #[test]
    fn a_missing_state_directory_falls_back_to_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").expect("write");
        let state = file.join("state");
        let mut o = open(&state, A, limits(10));
        assert!(!o.is_durable());
        o.push(ev(1));
        o.push(ev(2));
        let mut seq = 0;
        assert_eq!(ids(&drain(&mut o, &mut seq)), [1, 2]);
        o.ack(seq);
        assert_eq!(o.unacked(), 0);
        assert_eq!(o.sync_due(), None);
    }

    #[test]
    fn a_read_only_state_directory_loads_and_keeps_working_in_memory() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        {
            let mut o = open(&state, A, limits(10));
            o.push(ev(1));
            o.push(ev(2));
            let mut seq = 0;
            drain(&mut o, &mut seq);
            o.ack(1);
        }
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o500)).expect("chmod");
        // Root writes anyway; the rest holds either way.
        let writable = std::fs::write(state.join("probe"), b"").is_ok();
        let mut o = open(&state, B, limits(10));
        assert_eq!(o.is_durable(), writable);
        o.push(ev(3));
        let sent = drain(&mut o, &mut 0);
        assert_eq!(sent, vec![(A, 2, "eth2".into()), (B, 1, "eth3".into())]);
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    }

    #[test]
    fn a_log_that_fails_to_write_is_rewritten_when_it_can_be() {
        let dir = tempfile::tempdir().expect("tempdir");
        let Ok(full) = OpenOptions::new().write(true).open("/dev/full") else {
            return; // no /dev/full here
        };
        let mut o = open(dir.path(), A, limits(100));
        o.push(ev(0));
        // The disk fills up.
        o.log.as_mut().expect("log").file = Some(full);
        o.push(ev(1));
        assert!(!o.is_durable());
        o.push(ev(2));
        // Later it has room again.
        o.log.as_mut().expect("log").retry_at = Some(Instant::now());
        o.push(ev(3));
        assert!(o.is_durable());
        drop(o);
        let mut o = open(dir.path(), B, limits(100));
        assert!(o.load_report().parse.clean());
        assert_eq!(ids(&drain(&mut o, &mut 0)), [1, 2, 3, 4]);
    }

    #[test]
    fn writes_are_fsynced_within_the_delay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = open(dir.path(), A, limits(10));
        assert_eq!(o.sync_due(), None);
        let before = Instant::now();
        o.push(ev(1));
        let due = o.sync_due().expect("due");
        assert!(due >= before + SYNC_DELAY && due <= Instant::now() + SYNC_DELAY);
        o.sync();
        assert_eq!(o.sync_due(), None);
    }

    #[test]
    fn agents_sharing_a_state_directory_keep_their_own_logs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut a = Outbox::open(dir.path(), "n1", A, limits(10));
        let mut b = Outbox::open(dir.path(), "n2", B, limits(10));
        a.push(ev(1));
        b.push(ev(2));
        drop((a, b));
        let mut a = Outbox::open(dir.path(), "n1", 0xc1, limits(10));
        assert_eq!(drain(&mut a, &mut 0), vec![(A, 1, "eth1".into())]);
        assert!(dir.path().join("outbox-n2.log").exists());
    }

    #[test]
    fn records_round_trip() {
        let e = crate::wire::event(7, A, &ev(7));
        for r in [
            Record::Event(e),
            Record::Acked {
                instance_id: A,
                id: u64::MAX,
            },
        ] {
            let bytes = encode_record(&r).expect("small");
            assert_eq!(
                parse_records(&bytes),
                (
                    vec![r],
                    ParseStats {
                        records: 1,
                        record_bytes: bytes.len(),
                        ..ParseStats::default()
                    }
                )
            );
        }
    }
}
