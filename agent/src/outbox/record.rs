//! The log's records: `u32 len | u32 crc32(payload) | payload`, the payload
//! a kind byte and a body (an event, or an acked-up-to watermark). Pure:
//! bytes to records and back, fuzzed (`outbox_log`).

use prost::Message;
use reachmap_proto::v1 as pb;

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
pub(super) fn parse_records_within(bytes: &[u8], mut budget: usize) -> (Vec<Record>, ParseStats) {
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

pub(super) fn event_record(e: &pb::Event) -> Option<Vec<u8>> {
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

pub(super) fn acked_record(instance_id: u64, id: u64) -> Vec<u8> {
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
pub(super) fn record_bytes(e: &pb::Event) -> usize {
    HEADER_BYTES + 1 + e.encoded_len()
}
