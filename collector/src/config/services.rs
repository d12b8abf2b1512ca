//! `[[services]]`: what every node may run and how peers probe it — a TCP
//! connect, an HTTP(S) GET, or a UDP datagram — and its checks.

use super::{ConfigError, invalid};
use serde::Deserialize;
use std::path::PathBuf;

/// A service every node may run, probed on every peer.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: String,
    pub port: u16,
    /// Probe with an HTTP GET of this path instead of a TCP connect.
    pub path: Option<String>,
    /// The HTTP status that means healthy [default: 200].
    pub expect_status: Option<u16>,
    /// The systemd unit that should own the port ("postgresql.service"):
    /// another process holding it is PORT_HELD_BY_OTHER.
    pub unit: Option<String>,
    /// The process (its name, as the kernel has it) that should own the
    /// port, when there is no unit to name.
    pub process: Option<String>,
    /// What the service forwards to, "NAME:PORT" each (NAME a node, or a
    /// prefix of node names: "app" is app-1, app-2): a status failure is
    /// followed to the failing upstream cell.
    #[serde(default)]
    pub upstreams: Vec<String>,
    /// Probe over TLS (HTTPS; `path` defaults to "/").
    #[serde(default)]
    pub tls: bool,
    /// The name asked for (SNI) and checked against the certificate;
    /// `{node}` stands for the probed node's name. Default: its address.
    pub server_name: Option<String>,
    /// A CA bundle (PEM) the certificate must chain to, read when the
    /// config is; default: each agent host's system roots.
    pub ca_file: Option<PathBuf>,
    /// `ca_file`'s contents, read and checked by `Config::load`.
    #[serde(skip)]
    pub ca_pem: Option<std::sync::Arc<str>>,
    /// "tcp" (the default) or "udp": a UDP service is probed with a
    /// datagram, and only ICMP errors (or, with `expect_reply`, silence)
    /// fail it.
    pub protocol: Option<String>,
    /// UDP: the datagram to send, in hex (e.g. a DNS query); default: a
    /// short text.
    pub send_hex: Option<String>,
    /// UDP: the service answers the datagram, so no answer is a failure.
    #[serde(default)]
    pub expect_reply: bool,
}

/// The datagram a UDP service is probed with when the config names none.
pub const DEFAULT_UDP_PAYLOAD: &[u8] = b"reachmap probe\n";

impl ServiceConfig {
    /// Probed with an HTTP GET (over TLS or not).
    pub fn http_path(&self) -> Option<&str> {
        self.path.as_deref().or(self.tls.then_some("/"))
    }

    pub fn is_udp(&self) -> bool {
        self.protocol.as_deref() == Some("udp")
    }

    /// The datagram a UDP service is probed with (`send_hex` checked by
    /// `Config::load`).
    pub fn udp_payload(&self) -> Vec<u8> {
        self.send_hex
            .as_deref()
            .and_then(|h| hex(h).ok())
            .unwrap_or_else(|| DEFAULT_UDP_PAYLOAD.to_vec())
    }
}

/// Hex digits, two a byte (spaces allowed between them).
fn hex(s: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return Err("an odd number of hex digits".into());
    }
    digits
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| format!("{:?} is not a hex byte", String::from_utf8_lossy(pair)))
        })
        .collect()
}

/// Every declared service checked, in order; their CA bundles read.
pub(super) fn check(declared: &[ServiceConfig]) -> Result<Vec<ServiceConfig>, ConfigError> {
    let mut names = std::collections::BTreeSet::new();
    for s in declared {
        if s.name.is_empty() || s.name.len() > 64 || s.name.chars().any(char::is_control) {
            return Err(invalid(
                "services",
                format!(
                    "service name {:?} must be 1-64 printable characters",
                    s.name
                ),
            ));
        }
        if s.port == 0 {
            return Err(invalid("services", format!("service {:?}: port 0", s.name)));
        }
        if let Some(p) = &s.path
            && !p.starts_with('/')
        {
            return Err(invalid(
                "services",
                format!("service {:?}: path {p:?} must start with /", s.name),
            ));
        }
        for (what, v) in [("unit", &s.unit), ("process", &s.process)] {
            if let Some(v) = v
                && (v.is_empty()
                    || v.len() > 256
                    || v.chars().any(|c| c.is_control() || c.is_whitespace()))
            {
                return Err(invalid(
                    "services",
                    format!(
                        "service {:?}: {what} {v:?} must be 1-256 characters without spaces",
                        s.name
                    ),
                ));
            }
        }
        for u in &s.upstreams {
            let ok = u.rsplit_once(':').is_some_and(|(name, port)| {
                !name.is_empty()
                    && reachmap_proto::check_node_name(name).is_ok()
                    && port.parse::<u16>().is_ok_and(|p| p != 0)
            });
            if !ok {
                return Err(invalid(
                    "services",
                    format!(
                        "service {:?}: upstream {u:?} is not NAME:PORT (a node name or name prefix, a port 1-65535)",
                        s.name
                    ),
                ));
            }
        }
        if !names.insert(&s.name) {
            return Err(invalid(
                "services",
                format!("service {:?} is declared twice", s.name),
            ));
        }
    }
    let mut services = declared.to_vec();
    for s in &mut services {
        check_udp(s)?;
        s.ca_pem = check_tls(s)?;
    }
    Ok(services)
}

/// A service's protocol and UDP settings, checked.
fn check_udp(s: &ServiceConfig) -> Result<(), ConfigError> {
    let bad = |m: String| invalid("services", format!("service {:?}: {m}", s.name));
    match s.protocol.as_deref() {
        None | Some("tcp") => {
            if s.send_hex.is_some() || s.expect_reply {
                return Err(bad(
                    "send_hex and expect_reply need protocol = \"udp\"".into()
                ));
            }
            Ok(())
        }
        Some("udp") => {
            if s.path.is_some() || s.tls || s.expect_status.is_some() {
                return Err(bad(
                    "a UDP service has no path, tls or expect_status (those are HTTP)".into(),
                ));
            }
            if let Some(h) = &s.send_hex {
                let bytes = hex(h).map_err(|e| bad(format!("send_hex: {e}")))?;
                if bytes.is_empty() || bytes.len() > 512 {
                    return Err(bad(format!("send_hex is {} bytes (1-512)", bytes.len())));
                }
            }
            Ok(())
        }
        Some(other) => Err(bad(format!("protocol {other:?} is not \"tcp\" or \"udp\""))),
    }
}

/// A service's TLS settings, checked; its CA bundle read.
fn check_tls(s: &ServiceConfig) -> Result<Option<std::sync::Arc<str>>, ConfigError> {
    let bad = |m: String| invalid("services", format!("service {:?}: {m}", s.name));
    if !s.tls {
        if s.server_name.is_some() || s.ca_file.is_some() {
            return Err(bad("server_name and ca_file need tls = true".into()));
        }
        return Ok(None);
    }
    if let Some(n) = &s.server_name {
        let sample = n.replace("{node}", "node-1");
        if rustls::pki_types::ServerName::try_from(sample.as_str()).is_err() {
            return Err(bad(format!(
                "server_name {n:?} is not a host name (with {{node}} for the node's name) or address"
            )));
        }
    }
    let Some(path) = &s.ca_file else {
        return Ok(None);
    };
    let pem = std::fs::read_to_string(path)
        .map_err(|e| bad(format!("ca_file {}: {e}", path.display())))?;
    let certs =
        ::pem::parse_many(&pem).map_err(|e| bad(format!("ca_file {}: {e}", path.display())))?;
    if !certs.iter().any(|c| c.tag() == "CERTIFICATE") {
        return Err(bad(format!(
            "ca_file {}: holds no PEM certificate",
            path.display()
        )));
    }
    Ok(Some(std::sync::Arc::from(pem)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Flags};
    use std::path::Path;

    /// A config file in `dir` declaring one service, loaded.
    fn one_service(
        dir: &Path,
        i: usize,
        name: &str,
        port: u16,
        body: &str,
    ) -> Result<Config, ConfigError> {
        let path = dir.join(format!("{name}-{i}.toml"));
        std::fs::write(
            &path,
            format!("[[services]]\nname = \"{name}\"\nport = {port}\n{body}\n"),
        )
        .expect("write");
        Config::load(&Flags {
            config: Some(path),
            ..Flags::default()
        })
    }

    #[test]
    fn tls_services_are_checked_and_their_ca_read() {
        let dir = tempfile::tempdir().expect("dir");
        let load = |i: usize, body: &str| one_service(dir.path(), i, "web", 8443, body);
        let ca = dir.path().join("ca.pem");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["fleet CA".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("CA")
            .pem();
        std::fs::write(&ca, &cert).expect("write CA");
        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "hello").expect("write");
        let c = load(
            0,
            &format!(
                "tls = true\nserver_name = \"{{node}}.fleet.test\"\nca_file = \"{}\"",
                ca.display()
            ),
        )
        .expect("tls service");
        let web = &c.probe.services[0];
        assert_eq!(web.http_path(), Some("/"), "TLS probes GET / by default");
        assert_eq!(web.ca_pem.as_deref(), Some(cert.as_str()));
        for (i, (body, says)) in [
            ("server_name = \"x.test\"".to_string(), "need tls = true"),
            (
                "tls = true\nserver_name = \"bad name!\"".into(),
                "not a host name",
            ),
            (
                "tls = true\nca_file = \"/nonexistent/ca.pem\"".into(),
                "/nonexistent/ca.pem",
            ),
            (
                format!("tls = true\nca_file = \"{}\"", not_pem.display()),
                "no PEM certificate",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let e = load(i + 1, &body).expect_err(&body).to_string();
            assert!(
                e.starts_with("services:") && e.contains(says),
                "{body}: {e}"
            );
        }
    }

    #[test]
    fn udp_services_are_checked() {
        let dir = tempfile::tempdir().expect("dir");
        let load = |i: usize, body: &str| one_service(dir.path(), i, "dns", 53, body);
        let c = load(
            0,
            "protocol = \"udp\"\nsend_hex = \"12 34 01 00\"\nexpect_reply = true",
        )
        .expect("udp service");
        let dns = &c.probe.services[0];
        assert!(dns.is_udp() && dns.expect_reply);
        assert_eq!(dns.udp_payload(), vec![0x12, 0x34, 0x01, 0x00]);
        let plain = load(1, "protocol = \"udp\"").expect("default payload");
        assert_eq!(plain.probe.services[0].udp_payload(), DEFAULT_UDP_PAYLOAD);
        for (i, (body, says)) in [
            ("protocol = \"sctp\"", "protocol \"sctp\""),
            ("protocol = \"udp\"\npath = \"/\"", "no path"),
            ("protocol = \"udp\"\nsend_hex = \"123\"", "odd number"),
            ("protocol = \"udp\"\nsend_hex = \"zz\"", "not a hex byte"),
            ("expect_reply = true", "need protocol = \"udp\""),
        ]
        .into_iter()
        .enumerate()
        {
            let e = load(i + 2, body).expect_err(body).to_string();
            assert!(
                e.starts_with("services:") && e.contains(says),
                "{body}: {e}"
            );
        }
    }
}
