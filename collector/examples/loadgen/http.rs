//! A blocking HTTP/1.1 GET that times the first and the last byte.

use anyhow::{Context, bail};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

pub struct Fetched {
    pub status: u16,
    /// Request sent → first response byte: queueing and encoding.
    pub first_byte: Duration,
    /// Request sent → last byte: what a client waits for.
    pub total: Duration,
    /// Body bytes (after de-chunking).
    pub body_len: usize,
}

/// Reads the whole response into `buf` (kept by the caller, so its pages
/// are touched once, not per request); the body is `buf[body_start..]`.
pub fn get(addr: SocketAddr, path: &str, buf: &mut Vec<u8>) -> anyhow::Result<(Fetched, usize)> {
    buf.clear();
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {addr}"))?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
    // Over TLS as a viewer when the run is secure; the clock starts after
    // the handshake, as it does for plaintext after the connect.
    let mut s: Box<dyn ReadWrite> = match crate::tls::CREDS.get() {
        None => Box::new(tcp),
        Some(c) => {
            let name = rustls::pki_types::ServerName::from(addr.ip());
            let mut conn = rustls::ClientConnection::new(c.viewer_http.clone(), name)?;
            let mut tcp = tcp;
            while conn.is_handshaking() {
                conn.complete_io(&mut tcp).context("TLS handshake")?;
            }
            Box::new(rustls::StreamOwned::new(conn, tcp))
        }
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let start = Instant::now();
    s.write_all(req.as_bytes())?;
    let mut first = None;
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = match s.read(&mut chunk) {
            Ok(n) => n,
            // A peer closing TLS without close_notify after a complete
            // `Connection: close` response.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e).with_context(|| format!("reading {path}")),
        };
        if n == 0 {
            break;
        }
        first.get_or_insert_with(|| start.elapsed());
        buf.extend_from_slice(&chunk[..n]);
    }
    let total = start.elapsed();
    let Some(first_byte) = first else {
        bail!("{path}: the connection closed without a response");
    };
    let (status, body_start, body_len) = parse(buf)?;
    Ok((
        Fetched {
            status,
            first_byte,
            total,
            body_len,
        },
        body_start,
    ))
}

/// Status, body offset and body length of a complete response; a
/// chunked body is de-chunked in place.
pub fn parse(buf: &mut Vec<u8>) -> anyhow::Result<(u16, usize, usize)> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = std::str::from_utf8(&buf[..end]).context("headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("no status line")?;
    let mut length = None;
    let mut chunked = false;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "content-length" {
            length = Some(v.parse::<usize>().context("bad content-length")?);
        } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
    }
    let start = end + 4;
    if chunked {
        let body = dechunk(&buf[start..])?;
        buf.truncate(start);
        buf.extend_from_slice(&body);
    } else if let Some(len) = length
        && buf.len() - start != len
    {
        bail!(
            "body is {} bytes, content-length says {len}",
            buf.len() - start
        );
    }
    Ok((status, start, buf.len() - start))
}

fn dechunk(mut b: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len());
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("truncated chunk size")?;
        let size_text = std::str::from_utf8(&b[..eol]).context("bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).context("bad chunk size")?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// The value of an unlabelled sample `name` in the collector's `/metrics`.
pub fn metric(addr: SocketAddr, name: &str, buf: &mut Vec<u8>) -> anyhow::Result<f64> {
    let (f, start) = get(addr, "/metrics", buf)?;
    anyhow::ensure!(f.status == 200, "/metrics: HTTP {}", f.status);
    let text = std::str::from_utf8(&buf[start..])?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .context(format!("/metrics: no {name}"))?
        .trim()
        .parse()
        .context(format!("/metrics: {name} is not a number"))
}

/// Writes waiting for the store, summed over the collectors
/// (`/api/v1/collectors`; each collector updates its own every heartbeat).
pub fn store_queue(addr: SocketAddr, buf: &mut Vec<u8>) -> anyhow::Result<u64> {
    let (f, start) = get(addr, "/api/v1/collectors", buf)?;
    anyhow::ensure!(f.status == 200, "/api/v1/collectors: HTTP {}", f.status);
    let v: serde_json::Value = serde_json::from_slice(&buf[start..])?;
    let collectors = v.as_array().context("/api/v1/collectors: not a list")?;
    Ok(collectors
        .iter()
        .filter_map(|c| c.get("store_queue")?.as_u64())
        .sum())
}
