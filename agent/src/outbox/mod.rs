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

mod log;
mod record;

use log::{Log, MIN_READ_CAP, read_tail};
pub use log::{RETRY_EVERY, SYNC_DELAY, log_name};
use record::*;
pub use record::{
    HEADER_BYTES, MAX_PAYLOAD_BYTES, ParseStats, Record, encode_record, parse_records,
};

use crate::events::{EventKind, HostEvent};
use reachmap_proto::v1 as pb;
use std::collections::{HashMap, VecDeque};
use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
mod tests;
