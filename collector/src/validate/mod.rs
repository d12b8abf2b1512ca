//! Everything an agent sends is checked here before it touches fleet state.
//! Pure functions: a protocol message in, the collector's model or a
//! one-line error naming the offending field out.

pub mod firewall;
pub mod health;
pub mod probe;
pub mod resources;
pub mod sockets;

use crate::model::{Addr, FactsDelta, Hello, HostInfo, Interface, NodeFacts, Route};
use reachmap_proto::v1 as pb;
use std::collections::BTreeMap;
use std::net::IpAddr;

pub const MAX_INTERFACES: usize = 100_000;
pub const MAX_ADDRESSES_PER_INTERFACE: usize = 10_000;
pub const MAX_ROUTES: usize = 1_000_000;
pub const MAX_LABELS: usize = 64;
/// The longest agent configuration a Hello may carry, in bytes.
pub const MAX_AGENT_CONFIG: usize = 64 << 10;
const MAX_TEXT: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ProtocolError {
    pub field: String,
    pub problem: String,
}

fn err(field: impl Into<String>, problem: impl Into<String>) -> ProtocolError {
    ProtocolError {
        field: field.into(),
        problem: problem.into(),
    }
}

fn text(field: &str, value: &str, max: usize) -> Result<String, ProtocolError> {
    checked(field, value, max).map(str::to_string)
}

/// `value` if it is at most `max` bytes of text without control
/// characters, without a copy.
fn checked<'v>(field: &str, value: &'v str, max: usize) -> Result<&'v str, ProtocolError> {
    if value.len() > max {
        return Err(err(
            field,
            format!("{} bytes long (at most {max})", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(err(field, "contains control characters"));
    }
    Ok(value)
}

/// The Hello's fields but `config_json`, which [`agent_config`] checks on
/// its own: a bad configuration is dropped, the stream is not refused.
pub fn hello(h: &pb::Hello) -> Result<Hello, ProtocolError> {
    reachmap_proto::check_node_name(&h.node).map_err(|p| err("hello.node", p))?;
    if h.labels.len() > MAX_LABELS {
        return Err(err(
            "hello.labels",
            format!("{} labels (at most {MAX_LABELS})", h.labels.len()),
        ));
    }
    let mut labels = BTreeMap::new();
    for (k, v) in &h.labels {
        if k.is_empty() {
            return Err(err("hello.labels", "empty key"));
        }
        labels.insert(
            text("hello.labels key", k, 63)?,
            text("hello.labels value", v, 253)?,
        );
    }
    let heartbeat_interval_ms = match h.heartbeat_interval_ms {
        0 => 5_000,
        ms @ 10..=3_600_000 => ms,
        ms => {
            return Err(err(
                "hello.heartbeat_interval_ms",
                format!("{ms} is out of range (10..=3600000)"),
            ));
        }
    };
    Ok(Hello {
        node: h.node.clone(),
        machine_id: text("hello.machine_id", &h.machine_id, 64)?,
        boot_id: text("hello.boot_id", &h.boot_id, 64)?,
        version: text("hello.version", &h.version, 64)?,
        instance_id: h.instance_id,
        heartbeat_interval_ms,
        labels,
        config_json: None,
    })
}

/// The agent's configuration from its Hello: `None` when it sent none,
/// else at most [`MAX_AGENT_CONFIG`] bytes of valid JSON, kept as sent.
pub fn agent_config(text: &str) -> Result<Option<String>, ProtocolError> {
    if text.is_empty() {
        return Ok(None);
    }
    if text.len() > MAX_AGENT_CONFIG {
        return Err(err(
            "hello.config_json",
            format!("{} bytes long (at most {MAX_AGENT_CONFIG})", text.len()),
        ));
    }
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|e| err("hello.config_json", format!("not JSON: {e}")))?;
    Ok(Some(text.to_string()))
}

fn ip(field: &str, s: &str) -> Result<IpAddr, ProtocolError> {
    s.parse()
        .map_err(|_| err(field, format!("{:?} is not an IP address", truncate(s))))
}

fn optional_ip(field: &str, s: &str) -> Result<Option<IpAddr>, ProtocolError> {
    if s.is_empty() {
        Ok(None)
    } else {
        ip(field, s).map(Some)
    }
}

fn prefix(field: &str, ip: &IpAddr, len: u32) -> Result<u8, ProtocolError> {
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(err(field, format!("prefix length {len} is over {max}")));
    }
    Ok(len as u8)
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

fn host(h: Option<&pb::HostInfo>) -> Result<HostInfo, ProtocolError> {
    let Some(h) = h else {
        return Ok(HostInfo::default());
    };
    Ok(HostInfo {
        hostname: text("host.hostname", &h.hostname, MAX_TEXT)?,
        kernel: text("host.kernel", &h.kernel, MAX_TEXT)?,
        os: text("host.os", &h.os, MAX_TEXT)?,
        uptime_seconds: h.uptime_seconds,
        boot_time_unix_seconds: h.boot_time_unix_seconds,
    })
}

fn interface(field: &str, i: &pb::Interface) -> Result<Interface, ProtocolError> {
    if i.addresses.len() > MAX_ADDRESSES_PER_INTERFACE {
        return Err(err(
            format!("{field}.addresses"),
            format!(
                "{} addresses (at most {MAX_ADDRESSES_PER_INTERFACE})",
                i.addresses.len()
            ),
        ));
    }
    let mut addresses = Vec::with_capacity(i.addresses.len());
    for (n, a) in i.addresses.iter().enumerate() {
        let f = format!("{field}.addresses[{n}]");
        let parsed = ip(&format!("{f}.ip"), &a.ip)?;
        let scope = pb::AddressScope::try_from(a.scope)
            .map_err(|_| err(format!("{f}.scope"), format!("unknown scope {}", a.scope)))?;
        addresses.push(Addr {
            prefix_len: prefix(&format!("{f}.prefix_len"), &parsed, a.prefix_len)?,
            ip: parsed,
            scope: scope
                .as_str_name()
                .trim_start_matches("ADDRESS_SCOPE_")
                .to_ascii_lowercase(),
        });
    }
    let oper = pb::OperState::try_from(i.oper_state).map_err(|_| {
        err(
            format!("{field}.oper_state"),
            format!("unknown state {}", i.oper_state),
        )
    })?;
    Ok(Interface {
        index: i.index,
        name: text(&format!("{field}.name"), &i.name, 64)?,
        mac: text(&format!("{field}.mac"), &i.mac, 128)?,
        mtu: i.mtu,
        admin_up: i.admin_up,
        oper_state: oper
            .as_str_name()
            .trim_start_matches("OPER_STATE_")
            .to_ascii_lowercase(),
        kind: text(&format!("{field}.kind"), &i.kind, 64)?,
        addresses,
    })
}

fn route(field: &str, r: &pb::Route) -> Result<Route, ProtocolError> {
    let (dst, len) = r.destination.split_once('/').ok_or_else(|| {
        err(
            format!("{field}.destination"),
            format!("{:?} is not CIDR", truncate(&r.destination)),
        )
    })?;
    let destination = ip(&format!("{field}.destination"), dst)?;
    let len: u32 = len.parse().map_err(|_| {
        err(
            format!("{field}.destination"),
            format!("{:?} is not CIDR", truncate(&r.destination)),
        )
    })?;
    Ok(Route {
        prefix_len: prefix(&format!("{field}.destination"), &destination, len)?,
        destination,
        gateway: optional_ip(&format!("{field}.gateway"), &r.gateway)?,
        interface: text(&format!("{field}.interface"), &r.interface, 64)?,
        preferred_source: optional_ip(&format!("{field}.preferred_source"), &r.preferred_source)?,
        metric: r.metric,
        table: r.table,
    })
}

fn interfaces(field: &str, list: &[pb::Interface]) -> Result<Vec<Interface>, ProtocolError> {
    if list.len() > MAX_INTERFACES {
        return Err(err(
            field,
            format!("{} interfaces (at most {MAX_INTERFACES})", list.len()),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(n, i)| interface(&format!("{field}[{n}]"), i))
        .collect()
}

fn routes(field: &str, list: &[pb::Route]) -> Result<Vec<Route>, ProtocolError> {
    if list.len() > MAX_ROUTES {
        return Err(err(
            field,
            format!("{} routes (at most {MAX_ROUTES})", list.len()),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(n, r)| route(&format!("{field}[{n}]"), r))
        .collect()
}

pub fn snapshot(s: &pb::Snapshot) -> Result<NodeFacts, ProtocolError> {
    let mut by_index = BTreeMap::new();
    for i in interfaces("snapshot.interfaces", &s.interfaces)? {
        let index = i.index;
        if by_index.insert(index, i).is_some() {
            return Err(err(
                "snapshot.interfaces",
                format!("interface index {index} appears twice"),
            ));
        }
    }
    Ok(NodeFacts {
        version: s.version,
        host: host(s.host.as_ref())?,
        interfaces: by_index,
        routes: routes("snapshot.routes", &s.routes)?,
        listeners: match &s.sockets {
            None => BTreeMap::new(),
            Some(so) => sockets::listeners("snapshot.sockets.listeners", &so.listeners)?
                .into_iter()
                .map(|l| (l.key(), l))
                .collect(),
        },
        socket_summary: s
            .sockets
            .as_ref()
            .and_then(|so| so.summary.as_ref())
            .map(sockets::summary)
            .unwrap_or_default(),
        firewall: s
            .firewall
            .as_ref()
            .map(|f| firewall::firewall("snapshot.firewall", f))
            .transpose()?,
        resources: s
            .resources
            .as_ref()
            .map(|r| resources::resources("snapshot.resources", r))
            .transpose()?,
        sources: health::sources("snapshot.sources", &s.sources)?,
    })
}

pub fn delta(d: &pb::Delta) -> Result<FactsDelta, ProtocolError> {
    if d.version <= d.base_version {
        return Err(err(
            "delta.version",
            format!("{} is not above base_version {}", d.version, d.base_version),
        ));
    }
    Ok(FactsDelta {
        base_version: d.base_version,
        version: d.version,
        upserted: interfaces("delta.interfaces_upserted", &d.interfaces_upserted)?,
        removed: d.interfaces_removed.clone(),
        routes: if d.routes_replaced {
            Some(routes("delta.routes", &d.routes)?)
        } else {
            None
        },
        host: d.host.as_ref().map(|h| host(Some(h))).transpose()?,
        listeners_upserted: sockets::listeners("delta.listeners_upserted", &d.listeners_upserted)?,
        listeners_removed: d
            .listeners_removed
            .iter()
            .enumerate()
            .map(|(n, k)| sockets::key(&format!("delta.listeners_removed[{n}]"), k))
            .collect::<Result<Vec<_>, _>>()?,
        socket_summary: d.socket_summary.as_ref().map(sockets::summary),
        firewall: d
            .firewall
            .as_ref()
            .map(|f| firewall::firewall("delta.firewall", f))
            .transpose()?,
        firewall_patch: d
            .firewall_patch
            .as_ref()
            .map(|p| firewall::patch("delta.firewall_patch", p))
            .transpose()?,
        resources: d
            .resources
            .as_ref()
            .map(|r| resources::resources("delta.resources", r))
            .transpose()?,
        sources: if d.sources.is_empty() {
            None
        } else {
            Some(health::sources("delta.sources", &d.sources)?)
        },
    })
}

pub fn event(e: &pb::Event) -> Result<(), ProtocolError> {
    use pb::event::Kind;
    let check_addr = |f: &str, a: &Option<pb::Address>| -> Result<(), ProtocolError> {
        if let Some(a) = a {
            let parsed = ip(&format!("{f}.ip"), &a.ip)?;
            prefix(&format!("{f}.prefix_len"), &parsed, a.prefix_len)?;
        }
        Ok(())
    };
    match &e.kind {
        None => Err(err("event.kind", "missing")),
        Some(Kind::AddressChanged(a)) => {
            text("event.address_changed.interface", &a.interface, 64)?;
            if a.added.is_none() && a.removed.is_none() {
                return Err(err("event.address_changed", "neither added nor removed"));
            }
            check_addr("event.address_changed.added", &a.added)?;
            check_addr("event.address_changed.removed", &a.removed)
        }
        Some(Kind::LinkChanged(l)) => {
            text("event.link_changed.interface", &l.interface, 64).map(|_| ())
        }
        Some(Kind::RouteChanged(r)) => {
            for (f, x) in [
                ("event.route_changed.added", &r.added),
                ("event.route_changed.removed", &r.removed),
            ] {
                if let Some(x) = x {
                    route(f, x)?;
                }
            }
            Ok(())
        }
        Some(Kind::EventsDropped(_))
        | Some(Kind::ConntrackFull(_))
        | Some(Kind::KernelLogLost(_)) => Ok(()),
        Some(Kind::ListenerChanged(l)) => match &l.listener {
            None => Err(err("event.listener_changed.listener", "missing")),
            Some(x) => sockets::listener("event.listener_changed.listener", x).map(|_| ()),
        },
        Some(Kind::FirewallChanged(f)) => {
            text("event.firewall_changed.backend", &f.backend, 32)?;
            text("event.firewall_changed.command", &f.command, MAX_TEXT).map(|_| ())
        }
        Some(Kind::OomKill(o)) => {
            text("event.oom_kill.process", &o.process, 64)?;
            text("event.oom_kill.cgroup", &o.cgroup, 4096)?;
            text("event.oom_kill.unit", &o.unit, MAX_TEXT)?;
            text("event.oom_kill.constraint", &o.constraint, 64)?;
            for (n, k) in o.listeners.iter().enumerate() {
                sockets::key(&format!("event.oom_kill.listeners[{n}]"), k)?;
            }
            Ok(())
        }
        Some(Kind::SynFlood(f)) => {
            if !f.address.is_empty() {
                ip("event.syn_flood.address", &f.address)?;
            }
            if f.port > 65535 {
                return Err(err(
                    "event.syn_flood.port",
                    format!("{} is over 65535", f.port),
                ));
            }
            Ok(())
        }
        Some(Kind::KernelLink(k)) => {
            text("event.kernel_link.interface", &k.interface, 64)?;
            text("event.kernel_link.message", &k.message, 1024).map(|_| ())
        }
        Some(Kind::ProbeStateChanged(c)) => probe::state_change(c).map(|_| ()),
        Some(Kind::StreamChanged(_)) | Some(Kind::NodeRebooted(_)) => Err(err(
            "event.kind",
            "is recorded by the collector, not sent by agents",
        )),
    }
}

/// Checks any agent message's body on its own (no stream context: sequence
/// and ordering are the session's business). For fuzzing and tests.
pub fn any(msg: &pb::AgentMessage) -> Result<(), ProtocolError> {
    use pb::agent_message::Body;
    match &msg.body {
        None => Err(err("body", "missing")),
        Some(Body::Hello(h)) => hello(h).map(|_| ()),
        Some(Body::Snapshot(s)) => snapshot(s).map(|_| ()),
        Some(Body::Delta(d)) => delta(d).map(|_| ()),
        Some(Body::Event(e)) => event(e),
        Some(Body::ProbeResults(r)) => probe::batch(r).map(|_| ()),
        Some(Body::CommandResult(r)) => probe::command_result(r),
        Some(Body::Heartbeat(_)) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good_hello() -> pb::Hello {
        pb::Hello {
            node: "node-1".into(),
            machine_id: "0123456789abcdef0123456789abcdef".into(),
            boot_id: "8b1e7b0c-3f7e-4a55-9d2e-0c4f6f1f3a2b".into(),
            version: "0.1.0".into(),
            instance_id: 9,
            heartbeat_interval_ms: 1000,
            labels: [("zone".to_string(), "a".to_string())].into(),
            config_json: r#"{"node":"node-1"}"#.into(),
        }
    }

    fn iface(ip: &str, len: u32) -> pb::Interface {
        pb::Interface {
            index: 2,
            name: "eth0".into(),
            addresses: vec![pb::Address {
                ip: ip.into(),
                prefix_len: len,
                scope: pb::AddressScope::Universe as i32,
            }],
            oper_state: pb::OperState::Up as i32,
            ..Default::default()
        }
    }

    #[test]
    fn name_lookups_are_checked_field_by_field() {
        let good = pb::NameResolution {
            name: "db.fleet.test".into(),
            node: "db-1".into(),
            addresses: vec!["198.18.0.12".into(), "2001:db8::1".into()],
            error: String::new(),
            resolved_unix_nanos: 1,
        };
        let batch = |n: pb::NameResolution| pb::ProbeResults {
            names: vec![good.clone(), n],
            ..Default::default()
        };
        let names = probe::names(&batch(good.clone())).expect("good");
        assert_eq!(names[0].addresses.len(), 2);
        assert_eq!(names[0].error, None);
        let mut failed = good.clone();
        failed.addresses.clear();
        failed.error = "Name or service not known".into();
        let names = probe::names(&batch(failed)).expect("a failed lookup is a fact too");
        assert_eq!(names[1].error.as_deref(), Some("Name or service not known"));
        for (field, bad) in [
            ("probe_results.names[1].name", {
                let mut b = good.clone();
                b.name = "db fleet".into();
                b
            }),
            ("probe_results.names[1].node", {
                let mut b = good.clone();
                b.node = String::new();
                b
            }),
            ("probe_results.names[1].addresses[1]", {
                let mut b = good.clone();
                b.addresses[1] = "db-1".into();
                b
            }),
            ("probe_results.names[1].error", {
                let mut b = good.clone();
                b.error = "x".repeat(5000);
                b
            }),
        ] {
            let e = probe::names(&batch(bad)).expect_err(field);
            assert_eq!(e.field, field, "{e}");
        }
    }

    #[test]
    fn hello_is_checked_field_by_field() {
        assert!(hello(&good_hello()).is_ok());
        let mut h = good_hello();
        h.node = "bad name".into();
        assert_eq!(hello(&h).expect_err("bad").field, "hello.node");
        let mut h = good_hello();
        h.version = "x".repeat(1000);
        assert_eq!(hello(&h).expect_err("bad").field, "hello.version");
        let mut h = good_hello();
        h.heartbeat_interval_ms = 1;
        assert_eq!(
            hello(&h).expect_err("bad").field,
            "hello.heartbeat_interval_ms"
        );
        let mut h = good_hello();
        h.boot_id = "a\nb".into();
        assert_eq!(hello(&h).expect_err("bad").field, "hello.boot_id");
    }

    #[test]
    fn agent_config_is_bounded_json() {
        let h = good_hello();
        assert_eq!(
            agent_config(&h.config_json).expect("valid").as_deref(),
            Some(r#"{"node":"node-1"}"#)
        );
        assert_eq!(agent_config("").expect("none"), None);
        let e = agent_config("{\"node\": ").expect_err("cut short");
        assert_eq!(e.field, "hello.config_json");
        assert!(e.to_string().contains("not JSON"), "{e}");
        let big = format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_AGENT_CONFIG));
        let e = agent_config(&big).expect_err("too long");
        assert!(e.to_string().contains("at most 65536"), "{e}");
        assert!(!e.to_string().contains('\n'), "one line: {e}");
        // A bad configuration does not make the Hello bad.
        let mut h = good_hello();
        h.config_json = "not json".into();
        assert!(hello(&h).is_ok());
    }

    #[test]
    fn snapshot_addresses_must_parse() {
        let s = pb::Snapshot {
            version: 1,
            interfaces: vec![iface("198.18.0.11", 24)],
            ..Default::default()
        };
        let facts = snapshot(&s).expect("valid");
        assert_eq!(
            facts
                .addresses()
                .next()
                .map(|a| a.ip.to_string())
                .as_deref(),
            Some("198.18.0.11")
        );
        let s = pb::Snapshot {
            interfaces: vec![iface("198.18.0.300", 24)],
            ..Default::default()
        };
        let e = snapshot(&s).expect_err("bad ip");
        assert_eq!(
            e.to_string(),
            "snapshot.interfaces[0].addresses[0].ip: \"198.18.0.300\" is not an IP address"
        );
        let s = pb::Snapshot {
            interfaces: vec![iface("198.18.0.1", 33)],
            ..Default::default()
        };
        assert_eq!(
            snapshot(&s).expect_err("bad").field,
            "snapshot.interfaces[0].addresses[0].prefix_len"
        );
        let s = pb::Snapshot {
            interfaces: vec![iface("::1", 128), iface("::2", 128)],
            ..Default::default()
        };
        assert!(snapshot(&s).expect_err("dup").problem.contains("twice"));
    }

    #[test]
    fn routes_and_deltas() {
        let r = pb::Route {
            destination: "0.0.0.0/0".into(),
            gateway: "198.18.0.1".into(),
            ..Default::default()
        };
        assert!(route("r", &r).is_ok());
        let bad = pb::Route {
            destination: "0.0.0.0".into(),
            ..Default::default()
        };
        assert!(route("r", &bad).is_err());
        let d = pb::Delta {
            base_version: 3,
            version: 3,
            ..Default::default()
        };
        assert_eq!(delta(&d).expect_err("bad").field, "delta.version");
    }

    #[test]
    fn events_need_a_kind() {
        assert!(event(&pb::Event::default()).is_err());
        let e = pb::Event {
            kind: Some(pb::event::Kind::AddressChanged(pb::AddressChanged {
                interface: "eth0".into(),
                added: Some(pb::Address {
                    ip: "nope".into(),
                    ..Default::default()
                }),
                removed: None,
            })),
            ..Default::default()
        };
        assert_eq!(
            event(&e).expect_err("bad").field,
            "event.address_changed.added.ip"
        );
    }
}

#[cfg(test)]
mod random_input {
    use super::*;
    use prost::Message;
    use rand::{Rng, SeedableRng};

    /// Whatever bytes arrive, decoding and validation answer with a value or
    /// an error, never a panic. (The fuzz target in `fuzz/` does the same,
    /// coverage-guided; this runs in every test run.)
    #[test]
    fn random_bytes_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let seed = pb::AgentMessage {
            seq: 2,
            body: Some(pb::agent_message::Body::Snapshot(pb::Snapshot {
                version: 1,
                interfaces: vec![iface_for_fuzz()],
                routes: vec![pb::Route {
                    destination: "0.0.0.0/0".into(),
                    gateway: "198.18.0.1".into(),
                    ..Default::default()
                }],
                ..Default::default()
            })),
        }
        .encode_to_vec();
        for _ in 0..20_000 {
            let mut bytes = seed.clone();
            for _ in 0..rng.random_range(1..6) {
                let i = rng.random_range(0..bytes.len());
                bytes[i] = rng.random();
            }
            if rng.random_bool(0.2) {
                bytes.truncate(rng.random_range(0..bytes.len()));
            }
            check(&bytes);
        }
    }

    fn iface_for_fuzz() -> pb::Interface {
        pb::Interface {
            index: 2,
            name: "eth0".into(),
            addresses: vec![pb::Address {
                ip: "198.18.0.11".into(),
                prefix_len: 24,
                scope: 1,
            }],
            ..Default::default()
        }
    }

    fn check(bytes: &[u8]) {
        if let Ok(msg) = pb::AgentMessage::decode(bytes) {
            let _ = any(&msg);
        }
    }
}
