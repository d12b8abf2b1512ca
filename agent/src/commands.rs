//! The collector's commands, run off the stream task: `reachmap test-port`'s
//! temporary listeners and its one-off probes, one port or a batch of them
//! in one round trip. A probe goes only to an address of the fleet from the
//! agent's current plan.

use crate::probe::TempListeners;
use crate::wire;
use reachmap_proto::v1 as pb;
use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

/// Ports in one batch command.
pub const MAX_BATCH: usize = 64;

fn ttl(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms.clamp(100, 60_000)))
}

fn port(p: u32) -> Result<u16, String> {
    u16::try_from(p)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("port {p} is not 1-65535"))
}

/// A batch's ports: 1 to `MAX_BATCH` of them, each 1-65535, none twice.
pub fn batch(ports: &[u32]) -> Result<Vec<u16>, String> {
    if ports.is_empty() || ports.len() > MAX_BATCH {
        return Err(format!(
            "{} ports in one command; 1 to {MAX_BATCH} may be",
            ports.len()
        ));
    }
    let mut seen = HashSet::new();
    ports
        .iter()
        .map(|p| {
            let p = port(*p)?;
            if !seen.insert(p) {
                return Err(format!("port {p} is asked twice"));
            }
            Ok(p)
        })
        .collect()
}

fn answer(port: u16, r: Result<(), String>) -> pb::PortAnswer {
    pb::PortAnswer {
        port: u32::from(port),
        ok: r.is_ok(),
        error: r.err().unwrap_or_default(),
        ..Default::default()
    }
}

/// What the command asks, done; `fleet` is the addresses of the current
/// plan.
pub async fn run(
    cmd: pb::Command,
    temp: &TempListeners,
    fleet: &HashSet<IpAddr>,
) -> pb::CommandResult {
    use pb::command::Kind;
    let id = cmd.id;
    let ok = || pb::CommandResult {
        command_id: id,
        ok: true,
        ..Default::default()
    };
    let done = |ports: Vec<pb::PortAnswer>| pb::CommandResult { ports, ..ok() };
    let on_port = |port: u16| pb::CommandResult {
        port: u32::from(port),
        ..ok()
    };
    let outcome = match cmd.kind {
        None => Err("empty command".to_string()),
        Some(Kind::OpenListener(o)) if o.udp => match port(o.port) {
            Ok(p) => temp
                .udp
                .open(p, ttl(o.ttl_ms))
                .map(on_port)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        },
        Some(Kind::CloseListener(c)) if c.udp => match port(c.port) {
            Ok(p) => temp
                .udp
                .close(p)
                .map(|got| pb::CommandResult {
                    received: got
                        .into_iter()
                        .map(|r| pb::UdpDatagram {
                            source: r.source.to_string(),
                            payload: r.payload,
                        })
                        .collect(),
                    ..on_port(p)
                })
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        },
        Some(Kind::Trace(t)) => match fleet_target(t.target.as_ref(), fleet) {
            Ok(target) => {
                let to = std::net::SocketAddr::new(target.address, target.port);
                let per_hop = ttl(t.timeout_ms);
                let max = u8::try_from(t.max_hops).unwrap_or(u8::MAX);
                crate::probe::trace::trace(to, max, per_hop)
                    .await
                    .map(|hops| pb::CommandResult {
                        hops: hops.iter().map(wire::probe::trace_hop).collect(),
                        ..ok()
                    })
            }
            Err(e) => Err(e),
        },
        Some(Kind::SendUdp(s)) => match fleet_target(s.target.as_ref(), fleet) {
            Ok(t) if s.nonce.is_empty() || s.nonce.len() > 64 => Err(format!(
                "a nonce of {} bytes; 1 to 64 may be sent to {}",
                s.nonce.len(),
                t.address
            )),
            Ok(t) => {
                let to = std::net::SocketAddr::new(t.address, t.port);
                let outcome = crate::probe::udp::send(to, &s.nonce, ttl(s.timeout_ms)).await;
                Ok(pb::CommandResult {
                    outcome: wire::probe::outcome(outcome),
                    ..ok()
                })
            }
            Err(e) => Err(e),
        },
        Some(Kind::OpenListener(o)) => match port(o.port) {
            Ok(p) => temp
                .open(p, ttl(o.ttl_ms))
                .await
                .map(on_port)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        },
        Some(Kind::CloseListener(c)) => match u16::try_from(c.port) {
            Ok(p) => temp
                .close(p)
                .await
                .map(|()| on_port(p))
                .map_err(|e| e.to_string()),
            Err(_) => Err(format!("port {} is not 1-65535", c.port)),
        },
        Some(Kind::OpenListeners(o)) => match batch(&o.ports) {
            Ok(ports) => {
                let mut out = Vec::with_capacity(ports.len());
                for p in ports {
                    let r = temp.open(p, ttl(o.ttl_ms)).await;
                    out.push(answer(p, r.map(|_| ()).map_err(|e| e.to_string())));
                }
                Ok(done(out))
            }
            Err(e) => Err(e),
        },
        Some(Kind::CloseListeners(c)) => match batch(&c.ports) {
            Ok(ports) => {
                let mut out = Vec::with_capacity(ports.len());
                for p in ports {
                    let r = temp.close(p).await;
                    out.push(answer(p, r.map_err(|e| e.to_string())));
                }
                Ok(done(out))
            }
            Err(e) => Err(e),
        },
        Some(Kind::ProbeOnce(p)) => match fleet_target(p.target.as_ref(), fleet) {
            Ok(t) => {
                let r = crate::probe::probe_once(&t, ttl(p.timeout_ms)).await;
                Ok(pb::CommandResult {
                    outcome: wire::probe::outcome(r.outcome),
                    rtt_ms: rtt_ms(r.rtt),
                    ..ok()
                })
            }
            Err(e) => Err(e),
        },
        Some(Kind::ProbeEach(p)) => {
            match (fleet_target(p.target.as_ref(), fleet), batch(&p.ports)) {
                (Ok(t), Ok(ports)) => {
                    let timeout = ttl(p.timeout_ms);
                    let probes = ports.iter().map(|port| {
                        let mut t = t.clone();
                        t.port = *port;
                        async move {
                            let r = crate::probe::probe_once(&t, timeout).await;
                            pb::PortAnswer {
                                port: u32::from(t.port),
                                ok: true,
                                error: String::new(),
                                outcome: wire::probe::outcome(r.outcome),
                                rtt_ms: rtt_ms(r.rtt),
                            }
                        }
                    });
                    Ok(done(futures::future::join_all(probes).await))
                }
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        }
    };
    outcome.unwrap_or_else(|error| pb::CommandResult {
        command_id: id,
        ok: false,
        error,
        ..Default::default()
    })
}

fn rtt_ms(rtt: Option<Duration>) -> f64 {
    rtt.map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0)
}

/// The command's target, when it is a fleet member's address.
fn fleet_target(
    t: Option<&pb::ProbeTarget>,
    fleet: &HashSet<IpAddr>,
) -> Result<crate::probe::Target, String> {
    let t = wire::probe::target(t.ok_or_else(|| "no target".to_string())?, &[])?;
    if !fleet.contains(&t.address) {
        return Err(format!(
            "{} is not a fleet member's address in this agent's probe plan",
            t.address
        ));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_checked_whole() {
        assert_eq!(batch(&[80, 443]), Ok(vec![80, 443]));
        assert!(batch(&[]).expect_err("empty").contains("1 to 64"));
        assert!(batch(&[80, 0]).expect_err("zero").contains("port 0"));
        assert!(batch(&[70_000]).expect_err("big").contains("70000"));
        assert!(batch(&[80, 80]).expect_err("twice").contains("twice"));
        let many: Vec<u32> = (1..=65).collect();
        assert!(batch(&many).expect_err("many").contains("65 ports"));
    }
}
