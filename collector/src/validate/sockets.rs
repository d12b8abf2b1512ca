//! Listeners and socket counts from the wire.

use super::{ProtocolError, err, ip, text};
use crate::model::{BindScope, Listener, ListenerKey, Process, Protocol, SocketSummary};
use reachmap_proto::v1 as pb;

pub const MAX_LISTENERS: usize = 100_000;
const MAX_PROCESSES: usize = 1_000;

fn protocol(field: &str, p: i32) -> Result<Protocol, ProtocolError> {
    match pb::Protocol::try_from(p) {
        Ok(pb::Protocol::Tcp) => Ok(Protocol::Tcp),
        Ok(pb::Protocol::Udp) => Ok(Protocol::Udp),
        _ => Err(err(field, format!("unknown protocol {p}"))),
    }
}

fn port(field: &str, p: u32) -> Result<u16, ProtocolError> {
    u16::try_from(p).map_err(|_| err(field, format!("port {p} is over 65535")))
}

pub fn key(field: &str, k: &pb::ListenerKey) -> Result<ListenerKey, ProtocolError> {
    Ok(ListenerKey {
        protocol: protocol(&format!("{field}.protocol"), k.protocol)?,
        port: port(&format!("{field}.port"), k.port)?,
        address: ip(&format!("{field}.address"), &k.address)?,
    })
}

fn optional(field: &str, s: &str, max: usize) -> Result<Option<String>, ProtocolError> {
    let t = text(field, s, max)?;
    Ok(if t.is_empty() { None } else { Some(t) })
}

pub fn listener(field: &str, l: &pb::Listener) -> Result<Listener, ProtocolError> {
    let scope = match pb::BindScope::try_from(l.scope) {
        Ok(pb::BindScope::Loopback) => BindScope::Loopback,
        Ok(pb::BindScope::Any) => BindScope::Any,
        Ok(pb::BindScope::Address) => BindScope::Address,
        _ => {
            return Err(err(
                format!("{field}.scope"),
                format!("unknown scope {}", l.scope),
            ));
        }
    };
    if l.processes.len() > MAX_PROCESSES {
        return Err(err(
            format!("{field}.processes"),
            format!("{} processes (at most {MAX_PROCESSES})", l.processes.len()),
        ));
    }
    let processes = l
        .processes
        .iter()
        .enumerate()
        .map(|(n, p)| {
            let f = format!("{field}.processes[{n}]");
            Ok(Process {
                pid: p.pid,
                name: text(&format!("{f}.name"), &p.name, 64)?,
                unit: optional(&format!("{f}.unit"), &p.unit, 256)?,
                cgroup: optional(&format!("{f}.cgroup"), &p.cgroup, 4096)?,
            })
        })
        .collect::<Result<Vec<_>, ProtocolError>>()?;
    Ok(Listener {
        protocol: protocol(&format!("{field}.protocol"), l.protocol)?,
        address: ip(&format!("{field}.address"), &l.address)?,
        port: port(&format!("{field}.port"), l.port)?,
        scope,
        v6only: l.v6only,
        accept_queue: l.accept_queue,
        accept_queue_limit: l.accept_queue_limit,
        established: l.established,
        processes,
        interface: optional(&format!("{field}.interface"), &l.interface, 64)?,
        uid: l.uid,
        inode: l.inode,
    })
}

pub fn listeners(field: &str, list: &[pb::Listener]) -> Result<Vec<Listener>, ProtocolError> {
    if list.len() > MAX_LISTENERS {
        return Err(err(
            field,
            format!("{} listeners (at most {MAX_LISTENERS})", list.len()),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(n, l)| listener(&format!("{field}[{n}]"), l))
        .collect()
}

pub fn summary(s: &pb::SocketSummary) -> SocketSummary {
    SocketSummary {
        tcp_total: s.tcp_total,
        tcp_established: s.tcp_established,
        tcp_time_wait: s.tcp_time_wait,
        udp_total: s.udp_total,
    }
}
