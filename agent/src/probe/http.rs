//! HTTP GET probes over HTTP/1.1, plain or over TLS: open when the status
//! is the expected one. Only the status line is read; the parser is pure and
//! fuzzed. Over TLS a refused certificate or a failed handshake is its own
//! outcome, with the reason (`tls`).

use super::model::{DEFAULT_EXPECT_STATUS, Outcome, ProbeResult};
use super::tcp;
use super::tls::{self, TlsTarget};
use std::net::SocketAddr;
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// How much of the response is read looking for the end of the status line.
const MAX_STATUS_LINE: usize = 1_024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum StatusLineError {
    #[error("response ended before the status line did")]
    Incomplete,
    #[error("status line longer than {MAX_STATUS_LINE} bytes")]
    TooLong,
    #[error("status line does not start with HTTP/1.x")]
    NotHttp,
    #[error("status code is not three digits")]
    BadStatus,
}

/// The status code of an HTTP/1.x response that starts with `bytes`.
/// `Incomplete` means more bytes are needed.
pub fn parse_status_line(bytes: &[u8]) -> Result<u16, StatusLineError> {
    let Some(end) = bytes.iter().position(|&b| b == b'\n') else {
        return Err(if bytes.len() >= MAX_STATUS_LINE {
            StatusLineError::TooLong
        } else if b"HTTP/1.".starts_with(&bytes[..bytes.len().min(7)]) {
            StatusLineError::Incomplete
        } else {
            StatusLineError::NotHttp
        });
    };
    if end >= MAX_STATUS_LINE {
        return Err(StatusLineError::TooLong);
    }
    let line = bytes[..end].strip_suffix(b"\r").unwrap_or(&bytes[..end]);
    let rest = line
        .strip_prefix(b"HTTP/1.")
        .ok_or(StatusLineError::NotHttp)?;
    let (minor, rest) = rest.split_first().ok_or(StatusLineError::NotHttp)?;
    if !minor.is_ascii_digit() {
        return Err(StatusLineError::NotHttp);
    }
    let rest = rest.strip_prefix(b" ").ok_or(StatusLineError::BadStatus)?;
    let code = rest.get(..3).ok_or(StatusLineError::BadStatus)?;
    if !code.iter().all(u8::is_ascii_digit) || rest.get(3).is_some_and(|&b| b != b' ') {
        return Err(StatusLineError::BadStatus);
    }
    let code = code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if code < 100 {
        return Err(StatusLineError::BadStatus);
    }
    Ok(code)
}

/// The request sent; `path` was checked by `check_plan` (absolute, visible
/// ASCII only).
pub fn request(host: &str, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: reachmap\r\nAccept: */*\r\n\r\n"
    )
}

/// One GET within `timeout` (connect and handshake included). Connection
/// failures are classified as for TCP; an answer that is not HTTP counts as
/// an unexpected status with no code. With `tls`, the GET goes over TLS.
pub async fn probe(
    addr: SocketAddr,
    path: &str,
    expect_status: Option<u16>,
    tls: Option<&TlsTarget>,
    timeout: Duration,
) -> ProbeResult {
    let start = Instant::now();
    let deadline = start + timeout;
    let stream = match tcp::connect(addr, timeout).await {
        Ok(s) => s,
        Err(outcome) => return ProbeResult::new(outcome, None),
    };
    // The name the certificate was checked for is the virtual host asked.
    let host = match tls.and_then(|t| t.server_name.as_deref()) {
        Some(name) => format!("{name}:{}", addr.port()),
        None => addr.to_string(),
    };
    let status = match tls {
        None => tokio::time::timeout_at(deadline, exchange(stream, &host, path)).await,
        Some(t) => {
            let name = t.name_for(addr.ip());
            let connector = tokio_rustls::TlsConnector::from(t.config());
            let handshake = tokio::time::timeout_at(deadline, connector.connect(name, stream));
            let stream = match handshake.await {
                Err(_elapsed) => return ProbeResult::new(Outcome::Timeout, None),
                Ok(Err(e)) => {
                    return match tls::classify(&e) {
                        Some(f) => ProbeResult::tls_failure(f),
                        None => ProbeResult::new(tcp::classify(&e), None),
                    };
                }
                Ok(Ok(s)) => s,
            };
            tokio::time::timeout_at(deadline, exchange(stream, &host, path)).await
        }
    };
    let status = match status {
        Err(_elapsed) => return ProbeResult::new(Outcome::Timeout, None),
        Ok(Err(outcome)) => return ProbeResult::new(outcome, None),
        Ok(Ok(status)) => status,
    };
    let rtt = start.elapsed();
    let expected = expect_status.unwrap_or(DEFAULT_EXPECT_STATUS);
    let outcome = if status == Some(expected) {
        Outcome::Open
    } else {
        Outcome::HttpStatus
    };
    ProbeResult {
        rtt: Some(rtt),
        http_status: status,
        ..ProbeResult::new(outcome, None)
    }
}

/// Sends the GET and reads up to the status line: `None` when the answer is
/// not HTTP or ends before one.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    host: &str,
    path: &str,
) -> Result<Option<u16>, Outcome> {
    stream
        .write_all(request(host, path).as_bytes())
        .await
        .map_err(|e| tcp::classify(&e))?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        match parse_status_line(&buf) {
            Err(StatusLineError::Incomplete) => {}
            other => return Ok(other.ok()),
        }
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // A TLS server that closes without close_notify after its
            // answer: what was read is the answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(tcp::classify(&e)),
        };
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\n"), Ok(200));
        assert_eq!(
            parse_status_line(b"HTTP/1.0 404 Not Found\r\nX: y\r\n"),
            Ok(404)
        );
        assert_eq!(parse_status_line(b"HTTP/1.1 503\r\n"), Ok(503));
        assert_eq!(parse_status_line(b"HTTP/1.1 204 \n"), Ok(204));
    }

    #[test]
    fn asks_for_more_until_the_line_ends() {
        assert_eq!(parse_status_line(b""), Err(StatusLineError::Incomplete));
        assert_eq!(parse_status_line(b"HTT"), Err(StatusLineError::Incomplete));
        assert_eq!(
            parse_status_line(b"HTTP/1.1 20"),
            Err(StatusLineError::Incomplete)
        );
    }

    #[test]
    fn refuses_what_is_not_http() {
        assert_eq!(
            parse_status_line(b"SSH-2.0-OpenSSH\r\n"),
            Err(StatusLineError::NotHttp)
        );
        assert_eq!(parse_status_line(b"SSH-2.0"), Err(StatusLineError::NotHttp));
        assert_eq!(
            parse_status_line(b"HTTP/2 200\r\n"),
            Err(StatusLineError::NotHttp)
        );
        assert_eq!(
            parse_status_line(b"HTTP/1.1 2000\r\n"),
            Err(StatusLineError::BadStatus)
        );
        assert_eq!(
            parse_status_line(b"HTTP/1.1 2x0\r\n"),
            Err(StatusLineError::BadStatus)
        );
        assert_eq!(
            parse_status_line(b"HTTP/1.1 099\r\n"),
            Err(StatusLineError::BadStatus)
        );
        assert_eq!(
            parse_status_line(b"HTTP/1.1\r\n"),
            Err(StatusLineError::BadStatus)
        );
        let long = [b'H'; 2_000];
        assert_eq!(parse_status_line(&long), Err(StatusLineError::TooLong));
    }

    #[test]
    fn request_names_host_and_closes() {
        let addr: SocketAddr = "[::1]:8080".parse().expect("addr");
        assert_eq!(
            request(&addr.to_string(), "/healthz"),
            "GET /healthz HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close\r\nUser-Agent: reachmap\r\nAccept: */*\r\n\r\n"
        );
    }
}
