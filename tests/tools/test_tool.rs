//! `reachmap-test-tool`: the small programs the end-to-end tests and the
//! benchmarks run inside a node, so they need nothing installed beyond the
//! project's own binaries.
//!
//! - `listen ADDR:PORT...`: listen on TCP (and `udp:ADDR:PORT` on UDP),
//!   accept connections and hold them open; prints `ready`.
//! - `hold PAIRS PORT`: listen on 127.0.0.1:PORT and open PAIRS connections
//!   to it (2×PAIRS established sockets); prints `ready`.
//! - `stall ADDR:PORT BACKLOG`: listen with a listen backlog of BACKLOG and
//!   never accept: once BACKLOG + 1 connections wait, the kernel drops new
//!   SYNs (a service too slow to accept); prints `ready`.
//! - `proxy ADDR:PORT UPSTREAM`: an HTTP server that answers every request
//!   200 when a TCP connection to UPSTREAM opens within half a second and
//!   502 when it does not, like a reverse proxy; prints `ready`.
//! - `udp-echo ADDR:PORT`: a UDP service that answers every datagram with
//!   itself (a DNS server, an NTP server: something that replies); prints
//!   `ready`.
//! - `https ADDR:PORT CERT KEY`: an HTTPS server with the certificate
//!   chain CERT and key KEY (PEM files) answering every request 200;
//!   prints `ready`.
//! - `eat-memory MIB [--after SECONDS] [--listen ADDR:PORT]`: optionally
//!   listen first, wait, then allocate and touch MIB MiB — in a small memory
//!   cgroup the OOM killer ends it.
//!
//! Every mode runs until killed.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

fn usage() -> ! {
    eprintln!(
        "usage: reachmap-test-tool listen [udp:]ADDR:PORT... | hold PAIRS PORT | proxy ADDR:PORT UPSTREAM | https ADDR:PORT CERT KEY | udp-echo ADDR:PORT | stall ADDR:PORT BACKLOG | eat-memory MIB [--after SECONDS] [--listen ADDR:PORT]"
    );
    std::process::exit(2)
}

fn ready() {
    println!("ready");
    let _ = std::io::stdout().flush();
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|_| {
        eprintln!("{s:?} is not ADDR:PORT");
        std::process::exit(2)
    })
}

fn serve(listener: TcpListener) {
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
}

fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = 1_048_576.max(hard);
        if setrlimit(Resource::RLIMIT_NOFILE, want, want).is_err() {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

fn park() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((mode, rest)) = args.split_first() else {
        usage()
    };
    match mode.as_str() {
        "listen" => {
            let mut udp = Vec::new();
            for a in rest {
                if let Some(u) = a.strip_prefix("udp:") {
                    udp.push(UdpSocket::bind(addr(u)).expect("bind udp"));
                } else {
                    serve(TcpListener::bind(addr(a)).expect("bind tcp"));
                }
            }
            ready();
            park()
        }
        "stall" => {
            let [a, backlog] = rest else { usage() };
            let backlog: i32 = backlog.parse().unwrap_or_else(|_| usage());
            let listener = TcpListener::bind(addr(a)).expect("bind tcp");
            // A second listen() on a listening socket sets its backlog.
            let backlog = nix::sys::socket::Backlog::new(backlog).unwrap_or_else(|_| usage());
            nix::sys::socket::listen(&listener, backlog).expect("listen");
            ready();
            let _keep = listener;
            park()
        }
        "hold" => {
            let [pairs, port] = rest else { usage() };
            let pairs: usize = pairs.parse().unwrap_or_else(|_| usage());
            raise_fd_limit();
            let listener =
                TcpListener::bind(("127.0.0.1", port.parse::<u16>().unwrap_or_else(|_| usage())))
                    .expect("bind");
            let local = listener.local_addr().expect("local addr");
            let acceptor = std::thread::spawn(move || {
                let mut held = Vec::with_capacity(pairs);
                while held.len() < pairs {
                    match listener.accept() {
                        Ok((c, _)) => held.push(c),
                        Err(e) => panic!("accept: {e}"),
                    }
                }
                (listener, held)
            });
            let mut clients = Vec::with_capacity(pairs);
            for _ in 0..pairs {
                clients.push(TcpStream::connect(local).expect("connect"));
            }
            let server = acceptor.join().expect("acceptor");
            ready();
            let _keep = (clients, server);
            park()
        }
        "eat-memory" => {
            let mut it = rest.iter();
            let mib: usize = it
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or_else(|| usage());
            let mut after = 0.0f64;
            let mut listeners = Vec::new();
            while let Some(flag) = it.next() {
                match (flag.as_str(), it.next()) {
                    ("--after", Some(s)) => after = s.parse().unwrap_or_else(|_| usage()),
                    ("--listen", Some(a)) => {
                        listeners.push(TcpListener::bind(addr(a)).expect("bind tcp"))
                    }
                    _ => usage(),
                }
            }
            ready();
            std::thread::sleep(Duration::from_secs_f64(after));
            let mut chunks: Vec<Vec<u8>> = Vec::new();
            for _ in 0..mib {
                chunks.push(vec![1u8; 1 << 20]);
            }
            let _keep = (listeners, chunks);
            park()
        }
        "proxy" => {
            let [listen, upstream] = rest else { usage() };
            let (listen, upstream) = (addr(listen), addr(upstream));
            let listener = TcpListener::bind(listen).expect("bind tcp");
            ready();
            for conn in listener.incoming().flatten() {
                std::thread::spawn(move || answer(conn, upstream));
            }
            park()
        }
        "udp-echo" => {
            let [a] = rest else { usage() };
            let socket = UdpSocket::bind(addr(a)).expect("bind udp");
            ready();
            let mut buf = [0u8; 2048];
            loop {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..n], from);
                }
            }
        }
        "https" => {
            let [listen, cert, key] = rest else { usage() };
            let config = tls_config(cert, key);
            let listener = TcpListener::bind(addr(listen)).expect("bind tcp");
            ready();
            for conn in listener.incoming().flatten() {
                let config = std::sync::Arc::clone(&config);
                std::thread::spawn(move || answer_tls(conn, config));
            }
            park()
        }
        _ => usage(),
    }
}

fn tls_config(cert: &str, key: &str) -> std::sync::Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .unwrap_or_else(|e| panic!("{cert}: {e}"));
    let key = PrivateKeyDer::from_pem_file(key).unwrap_or_else(|e| panic!("{key}: {e}"));
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("certificate and key");
    std::sync::Arc::new(config)
}

/// One request over TLS, answered 200; a refused handshake just ends.
fn answer_tls(conn: TcpStream, config: std::sync::Arc<rustls::ServerConfig>) {
    use std::io::Read;
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let Ok(server) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(server, conn);
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

/// One request read (its head), answered 200 or 502 by whether `upstream`
/// takes a connection.
fn answer(mut conn: TcpStream, upstream: SocketAddr) {
    use std::io::Read;
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let up = TcpStream::connect_timeout(&upstream, Duration::from_millis(500)).is_ok();
    let reply: &[u8] = if up {
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    } else {
        b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    };
    let _ = conn.write_all(reply);
}
