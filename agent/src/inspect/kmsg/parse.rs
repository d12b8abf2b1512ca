//! One kmsg record: header fields, message, continuation lines. Borrowing and
//! allocation-free, so a flood of records costs no allocations until one is
//! classified as an event.

use super::KmsgError;

/// Syslog facility 0: messages from the kernel itself. Records written to
/// /dev/kmsg from user space always carry another facility (LOG_USER when none
/// is given), so only these can be trusted as kernel events.
pub const FACILITY_KERNEL: u32 = 0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// facility * 8 + level.
    pub prio: u32,
    pub seq: u64,
    /// Microseconds since boot.
    pub timestamp_us: u64,
    /// `-` for a whole record, `c`/`+` for fragments of a continued line.
    pub flags: u8,
    /// The message, with the kernel's `\xNN` escapes left as they are.
    pub message: &'a str,
    /// ` SUBSYSTEM=` continuation line, if any.
    pub subsystem: Option<&'a str>,
    /// ` DEVICE=` continuation line, if any.
    pub device: Option<&'a str>,
}

impl Record<'_> {
    pub fn level(&self) -> u32 {
        self.prio & 7
    }

    pub fn facility(&self) -> u32 {
        self.prio >> 3
    }

    /// True for records the kernel logged (not written by user space).
    pub fn from_kernel(&self) -> bool {
        self.facility() == FACILITY_KERNEL
    }
}

/// Parses one record as one `read()` of /dev/kmsg returns it.
pub fn parse_record(bytes: &[u8]) -> Result<Record<'_>, KmsgError> {
    let semi = bytes
        .iter()
        .position(|&b| b == b';')
        .ok_or(KmsgError::NoHeaderEnd)?;
    let (header, rest) = (&bytes[..semi], &bytes[semi + 1..]);
    let mut fields = header.split(|&b| b == b',');
    let prio = number(fields.next(), "prio")?;
    let seq = number(fields.next(), "seq")?;
    let timestamp_us = number(fields.next(), "timestamp")?;
    let flags = match fields.next() {
        Some([f]) => *f,
        Some(other) => {
            return Err(KmsgError::BadNumber {
                field: "flags",
                value: String::from_utf8_lossy(other).into_owned(),
            });
        }
        None => return Err(KmsgError::MissingField { field: "flags" }),
    };
    let prio = u32::try_from(prio).map_err(|_| KmsgError::BadNumber {
        field: "prio",
        value: prio.to_string(),
    })?;
    let text = std::str::from_utf8(rest).map_err(|_| KmsgError::NotUtf8)?;
    let (message, mut tail) = match text.split_once('\n') {
        Some((m, t)) => (m, t),
        None => (text, ""),
    };
    let (mut subsystem, mut device) = (None, None);
    while !tail.is_empty() {
        let (line, next) = tail.split_once('\n').unwrap_or((tail, ""));
        tail = next;
        let line = line.strip_prefix(' ').ok_or(KmsgError::BadContinuation)?;
        if let Some(v) = line.strip_prefix("SUBSYSTEM=") {
            subsystem = Some(v);
        } else if let Some(v) = line.strip_prefix("DEVICE=") {
            device = Some(v);
        }
    }
    Ok(Record {
        prio,
        seq,
        timestamp_us,
        flags,
        message,
        subsystem,
        device,
    })
}

fn number(field: Option<&[u8]>, name: &'static str) -> Result<u64, KmsgError> {
    let digits = field.ok_or(KmsgError::MissingField { field: name })?;
    let bad = || KmsgError::BadNumber {
        field: name,
        value: String::from_utf8_lossy(digits).into_owned(),
    };
    if digits.is_empty() || digits.len() > 20 {
        return Err(bad());
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(bad());
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or_else(bad)?;
    }
    Ok(n)
}

/// Splits the text of a file of records (as `cat /dev/kmsg` would print
/// them) into records: a line not starting with a space begins a record, the
/// lines starting with a space that follow it belong to it. Empty lines are
/// skipped.
pub fn split_records(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = text;
    std::iter::from_fn(move || {
        while rest.first() == Some(&b'\n') {
            rest = &rest[1..];
        }
        if rest.is_empty() {
            return None;
        }
        let mut end = 0;
        loop {
            match rest[end..].iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    end += nl + 1;
                    if rest.get(end) != Some(&b' ') {
                        break;
                    }
                }
                None => {
                    end = rest.len();
                    break;
                }
            }
        }
        let (record, next) = rest.split_at(end);
        rest = next;
        Some(record)
    })
}
