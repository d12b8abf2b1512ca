//! The matrix as JSON, streamed and hand-formatted: a 1,000 × 1,000 matrix
//! is about 200 MB of JSON, and `/api/v1/matrix` has 200 ms for it, so every
//! name is quoted once, keys are copied as constant bytes, and numbers are
//! written without the `fmt` machinery.
//!
//! Figures are rounded: `rtt_ms` and `rtt_p99_ms` to the microsecond (what a
//! probe can measure), `loss` to 1e-6.

use super::{Cell, CellState, Matrix, Outcome};
use crate::probe::ProbeKind;
use std::io::{self, Write};
use std::net::IpAddr;

/// Output is handed to the writer in chunks of about this size.
const CHUNK: usize = 1 << 16;
/// What one cell takes, roughly, for sizing a buffer up front.
const SUMMARY_BYTES_PER_CELL: usize = 120;
const FULL_BYTES_PER_CELL: usize = 220;

/// How much of each cell the JSON carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum JsonDetail {
    /// `src, dst, port, kind, state, loss, rtt_ms, failure`: what a script
    /// or dashboard needs, half the bytes of `Full` on a large fleet.
    #[default]
    Summary,
    /// Also `service, rtt_p99_ms, sent, address, updated`.
    Full,
}

impl Matrix {
    /// The public JSON shape (`/api/v1/matrix`, `reachmap matrix --format
    /// json`), streamed: `{"nodes":[...],"cells":[{"src","dst","port","kind",
    /// "state","loss","rtt_ms","failure"}]}`, with `Full` detail also
    /// `"service","rtt_p99_ms","sent","address","updated"`; cells sorted by
    /// (src, dst, port, kind), states and failures as snake_case strings,
    /// `service`, `failure` and unknown RTTs null, `updated` in unix
    /// nanoseconds (0: no result yet). Buffered internally in 64 KiB chunks:
    /// any writer will do.
    pub fn write_json(
        &self,
        port: Option<u16>,
        detail: JsonDetail,
        out: &mut impl Write,
    ) -> io::Result<()> {
        let mut buf = Vec::with_capacity(CHUNK + 1024);
        self.encode(port, detail, &mut buf, CHUNK, |b| {
            let r = out.write_all(b);
            b.clear();
            r
        })?;
        out.write_all(&buf)
    }

    /// The same JSON handed to `emit` in owned chunks of about `chunk`
    /// bytes, as it is written: an HTTP body can go out while the rest is
    /// still being encoded. Stops early when `emit` returns false (the
    /// receiver went away).
    pub fn json_chunks(
        &self,
        port: Option<u16>,
        detail: JsonDetail,
        chunk: usize,
        mut emit: impl FnMut(Vec<u8>) -> bool,
    ) {
        let fresh = || Vec::with_capacity(chunk + 1024);
        let mut buf = fresh();
        let done = self.encode(port, detail, &mut buf, chunk, |b| {
            if emit(std::mem::replace(b, fresh())) {
                Ok(())
            } else {
                Err(io::ErrorKind::BrokenPipe.into())
            }
        });
        if done.is_ok() {
            emit(buf);
        }
    }

    /// `write_json` into one buffer sized up front, without a copy per
    /// chunk.
    pub fn to_json(&self, port: Option<u16>, detail: JsonDetail) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.json_size_hint(port, detail));
        // Nothing to flush, so nothing can fail.
        let _ = self.encode(port, detail, &mut buf, usize::MAX, |_| Ok(()));
        buf
    }

    /// `to_json` into a buffer the caller keeps: a fresh 200 MB buffer costs
    /// about as much in first-touch page faults as the encoding itself.
    pub fn write_json_into(&self, port: Option<u16>, detail: JsonDetail, buf: &mut Vec<u8>) {
        buf.clear();
        buf.reserve(self.json_size_hint(port, detail));
        let _ = self.encode(port, detail, buf, usize::MAX, |_| Ok(()));
    }

    /// Appends the JSON to `buf`, calling `flush` whenever it holds `chunk`
    /// bytes or more.
    fn encode(
        &self,
        port: Option<u16>,
        detail: JsonDetail,
        buf: &mut Vec<u8>,
        chunk: usize,
        mut flush: impl FnMut(&mut Vec<u8>) -> io::Result<()>,
    ) -> io::Result<()> {
        let quoted: Vec<Vec<u8>> = self.names.iter().map(|n| json_string(n)).collect();
        let row_prefix: Vec<Vec<u8>> = quoted
            .iter()
            .map(|q| [&b"{\"src\":"[..], q, b",\"dst\":"].concat())
            .collect();
        let services: Vec<Vec<u8>> = self.services.iter().map(|s| json_string(s)).collect();
        buf.extend_from_slice(b"{\"nodes\":[");
        for (i, n) in self.nodes().iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            buf.extend_from_slice(&json_string(n));
        }
        buf.extend_from_slice(b"],\"cells\":[");
        // Each address's text once.
        let mut addresses: Vec<Option<Vec<u8>>> = vec![None; self.addresses.list.len()];
        // A batch's cells share their `updated` time: 19 digits, written once.
        let mut updated: (i64, Vec<u8>) = (0, b"0".to_vec());
        let mut scratch = Vec::new();
        let mut first = true;
        let mut result = Ok(());
        self.for_each_sorted(port, |s, c| {
            if result.is_err() {
                return;
            }
            if !first {
                buf.push(b',');
            }
            first = false;
            buf.extend_from_slice(&row_prefix[s as usize]);
            buf.extend_from_slice(&quoted[c.dst as usize]);
            write_cell(buf, c);
            if detail == JsonDetail::Full {
                let service = (c.service as usize)
                    .checked_sub(1)
                    .and_then(|i| services.get(i));
                let ip = self.addresses.get(c.address);
                let address = match addresses.get_mut(c.address as usize) {
                    Some(Some(text)) => &*text,
                    Some(slot) => {
                        let mut text = Vec::with_capacity(40);
                        write_ip(&mut text, ip);
                        &*slot.insert(text)
                    }
                    None => {
                        scratch.clear();
                        write_ip(&mut scratch, ip);
                        &scratch
                    }
                };
                if updated.0 != c.updated {
                    updated.1.clear();
                    write_i64(&mut updated.1, c.updated);
                    updated.0 = c.updated;
                }
                write_detail(buf, service.map(Vec::as_slice), address, &updated.1, c);
            }
            buf.push(b'}');
            if buf.len() >= chunk {
                result = flush(buf);
            }
        });
        result?;
        buf.extend_from_slice(b"]}");
        Ok(())
    }

    /// About how many bytes `write_json` writes, to size a buffer.
    pub fn json_size_hint(&self, port: Option<u16>, detail: JsonDetail) -> usize {
        let cells = match port {
            None => self.len(),
            Some(p) => self.iter().filter(|c| c.cell.port == p).count(),
        };
        let per_cell = match detail {
            JsonDetail::Summary => SUMMARY_BYTES_PER_CELL,
            JsonDetail::Full => FULL_BYTES_PER_CELL,
        };
        cells * per_cell + self.names.len() * 32 + 64
    }
}

fn json_string(s: &str) -> Vec<u8> {
    serde_json::to_vec(s).unwrap_or_else(|_| b"\"\"".to_vec())
}

/// The summary fields after `"dst":NAME`, without the closing brace.
fn write_cell(buf: &mut Vec<u8>, c: &Cell) {
    buf.extend_from_slice(b",\"port\":");
    write_u64(buf, u64::from(c.port));
    buf.extend_from_slice(match c.kind {
        ProbeKind::Tcp => b",\"kind\":\"tcp\"",
        ProbeKind::Icmp => b",\"kind\":\"icmp\"",
        ProbeKind::Http => b",\"kind\":\"http\"",
        ProbeKind::Https => b",\"kind\":\"https\"",
        ProbeKind::Udp => b",\"kind\":\"udp\"",
    });
    buf.extend_from_slice(match c.state {
        CellState::Ok => b",\"state\":\"ok\",\"loss\":",
        CellState::Degraded => b",\"state\":\"degraded\",\"loss\":",
        CellState::Failing => b",\"state\":\"failing\",\"loss\":",
        CellState::Unknown => b",\"state\":\"unknown\",\"loss\":",
    });
    write_fixed(buf, c.loss(), 6);
    buf.extend_from_slice(b",\"rtt_ms\":");
    write_opt(buf, c.rtt_ms());
    buf.extend_from_slice(b",\"failure\":");
    match c.failure {
        Some(o) => {
            buf.push(b'"');
            buf.extend_from_slice(Outcome::as_str(o).as_bytes());
            buf.push(b'"');
        }
        None => buf.extend_from_slice(b"null"),
    }
}

/// The `Full` fields after the summary, without the closing brace.
fn write_detail(
    buf: &mut Vec<u8>,
    service: Option<&[u8]>,
    address: &[u8],
    updated: &[u8],
    c: &Cell,
) {
    buf.extend_from_slice(b",\"service\":");
    buf.extend_from_slice(service.unwrap_or(b"null"));
    buf.extend_from_slice(b",\"rtt_p99_ms\":");
    write_opt(buf, c.rtt_p99_ms());
    buf.extend_from_slice(b",\"sent\":");
    write_u64(buf, u64::from(c.sent));
    buf.extend_from_slice(b",\"address\":\"");
    buf.extend_from_slice(address);
    buf.extend_from_slice(b"\",\"updated\":");
    buf.extend_from_slice(updated);
}

fn write_opt(buf: &mut Vec<u8>, v: Option<f64>) {
    match v {
        Some(v) => write_fixed(buf, v, 3),
        None => buf.extend_from_slice(b"null"),
    }
}

/// "00" to "99", for writing two digits per division.
const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// `v` in decimal into the end of `digits`; returns where it starts.
fn decimal(digits: &mut [u8; 20], mut v: u64) -> usize {
    let mut i = digits.len();
    while v >= 100 {
        let pair = (v % 100) as usize * 2;
        v /= 100;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if v >= 10 {
        let pair = v as usize * 2;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        digits[i] = b'0' + v as u8;
    }
    i
}

fn write_u64(buf: &mut Vec<u8>, v: u64) {
    let mut digits = [0u8; 20];
    let start = decimal(&mut digits, v);
    buf.extend_from_slice(&digits[start..]);
}

fn write_i64(buf: &mut Vec<u8>, v: i64) {
    if v < 0 {
        buf.push(b'-');
    }
    write_u64(buf, v.unsigned_abs());
}

const POW10: [u64; 7] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000];

/// `v` rounded to `decimals` (at most 6), always with a fraction ("1.0",
/// "0.25"); null when not finite (JSON has no NaN); values too large for
/// fixed point in their shortest exact form.
fn write_fixed(buf: &mut Vec<u8>, v: f64, decimals: usize) {
    if !v.is_finite() {
        buf.extend_from_slice(b"null");
        return;
    }
    if v.abs() >= 1e12 {
        let _ = write!(buf, "{v:?}");
        return;
    }
    let decimals = decimals.min(6);
    let scale = POW10[decimals];
    // Round half up by hand: `f64::round` is a libm call, a third of the
    // cost of a number here.
    let scaled = (v.abs() * scale as f64 + 0.5) as u64;
    if v < 0.0 && scaled != 0 {
        buf.push(b'-');
    }
    write_u64(buf, scaled / scale);
    buf.push(b'.');
    let mut frac = scaled % scale;
    if frac == 0 {
        buf.push(b'0');
        return;
    }
    let mut width = decimals;
    while frac.is_multiple_of(10) {
        frac /= 10;
        width -= 1;
    }
    // The fraction's digits, zero-padded on the left to `width`.
    let mut digits = [b'0'; 20];
    decimal(&mut digits, frac);
    buf.extend_from_slice(&digits[20 - width..]);
}

fn write_ip(buf: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            for (i, o) in a.octets().iter().enumerate() {
                if i > 0 {
                    buf.push(b'.');
                }
                write_u64(buf, u64::from(*o));
            }
        }
        IpAddr::V6(a) => {
            let _ = write!(buf, "{a}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(v: f64, d: usize) -> String {
        let mut b = Vec::new();
        write_fixed(&mut b, v, d);
        String::from_utf8(b).expect("utf8")
    }

    #[test]
    fn numbers() {
        assert_eq!(fixed(0.0, 6), "0.0");
        assert_eq!(fixed(1.0, 6), "1.0");
        assert_eq!(fixed(0.3, 6), "0.3");
        assert_eq!(fixed(1.0 / 3.0, 6), "0.333333");
        assert_eq!(fixed(0.25, 3), "0.25");
        assert_eq!(fixed(0.0004, 3), "0.0");
        assert_eq!(fixed(0.0415, 3), "0.042");
        assert_eq!(fixed(0.05, 3), "0.05");
        assert_eq!(fixed(12.0005, 3), "12.001");
        assert_eq!(fixed(-2.5, 3), "-2.5");
        assert_eq!(fixed(-0.0001, 3), "0.0");
        assert_eq!(fixed(f64::NAN, 3), "null");
        assert_eq!(fixed(f64::INFINITY, 3), "null");
        assert_eq!(fixed(1e300, 3), "1e300");
        for v in [0.001, 0.123, 9.999, 1234.5, 0.00105] {
            let back: f64 = fixed(v, 3).parse().expect("number");
            assert!((back - v).abs() <= 0.0005 + 1e-12, "{v} → {back}");
        }
        let mut b = Vec::new();
        write_u64(&mut b, 0);
        b.push(b' ');
        write_u64(&mut b, u64::MAX);
        b.push(b' ');
        write_ip(&mut b, "198.18.0.255".parse().expect("ip"));
        b.push(b' ');
        write_ip(&mut b, "2001:db8::1".parse().expect("ip"));
        b.push(b' ');
        write_i64(&mut b, -12);
        assert_eq!(b, b"0 18446744073709551615 198.18.0.255 2001:db8::1 -12");
    }
}
