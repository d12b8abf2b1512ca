//! Kernel log inspector: /dev/kmsg records.
//!
//! `parse_record` (one record's bytes → its fields) and `Classifier` (records →
//! events) are pure and tested on records captured from a real kernel. The
//! reader (`reader`) does the I/O: one record per `read()` from the character
//! device, or line-oriented from a regular file standing in for it.
//!
//! Record format (Documentation/ABI/testing/dev-kmsg):
//! `PRIO,SEQ,TIMESTAMP_US,FLAGS[,more];MESSAGE\n` then optional continuation
//! lines starting with a space (` SUBSYSTEM=pci\n DEVICE=+pci:0000:00:19.0\n`).

mod classify;
mod parse;
mod reader;
mod state;

pub use classify::Classifier;
pub use parse::{Record, parse_record, split_records};
pub use reader::{KmsgCounters, KmsgReader, KmsgStats, boot_unix_us, read_recent};
pub use state::{ResumeState, parse_state};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum KmsgError {
    #[error("kmsg record: no ';' ending the header")]
    NoHeaderEnd,
    #[error("kmsg record: header field {field} is missing")]
    MissingField { field: &'static str },
    #[error("kmsg record: header field {field} is not a number: {value:?}")]
    BadNumber { field: &'static str, value: String },
    #[error("kmsg record: message is not UTF-8")]
    NotUtf8,
    #[error("kmsg record: continuation line does not start with a space")]
    BadContinuation,
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {what}")]
    BadState { path: PathBuf, what: String },
}
