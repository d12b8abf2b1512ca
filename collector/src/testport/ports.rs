//! `reachmap test-port SRC DST --ports 22,80,443,9000-9010`: which ports pass
//! from SRC to DST? The temporary-listener test for each port, 64 ports a
//! round trip, and what the results say together — nothing passes, only
//! some pass (a port filter somewhere), or a host firewall on either end
//! accounts for every blocked port.

use super::{ANSWER_SLACK, Ends, ends, ms, timeout_of};
use crate::model::Protocol;
use crate::packet::firewall::{Compiled, PathKind};
use crate::view::outcome_name;
use crate::why::causes::firewall::{blocked, decided_by, inbound_packet, outbound_packet};
use reachmap_proto::v1 as pb;
use std::net::IpAddr;
use tonic::Status;

/// Ports in one `test-port --ports`.
pub const MAX_PORTS: usize = 1024;
/// Ports in one command to an agent (its limit too).
const BATCH: usize = 64;

/// "22,80,443,9000-9010" as ports, in the order given, each once.
pub fn parse_spec(spec: &str) -> Result<Vec<u16>, String> {
    let mut out: Vec<u16> = Vec::new();
    for part in spec.split(',').map(str::trim) {
        let number = |s: &str| {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{s:?} in {spec:?} is not a port (1-65535)"))
        };
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (number(lo)?, number(hi)?),
            None => {
                let p = number(part)?;
                (p, p)
            }
        };
        if lo > hi {
            return Err(format!("{part:?} in {spec:?} is an empty range"));
        }
        for p in lo..=hi {
            if !out.contains(&p) {
                out.push(p);
            }
            if out.len() > MAX_PORTS {
                return Err(format!("{spec:?} is more than {MAX_PORTS} ports"));
            }
        }
    }
    Ok(out)
}

/// The ports of a request: 1 to `MAX_PORTS`, each 1-65535, none twice.
pub fn check(ports: &[u32]) -> Result<Vec<u16>, Status> {
    if ports.len() > MAX_PORTS {
        return Err(Status::invalid_argument(format!(
            "ports: {} asked, at most {MAX_PORTS} may be",
            ports.len()
        )));
    }
    let mut out: Vec<u16> = Vec::with_capacity(ports.len());
    for p in ports {
        let port = u16::try_from(*p)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| Status::invalid_argument(format!("ports: {p} is not 1-65535")))?;
        if out.contains(&port) {
            return Err(Status::invalid_argument(format!(
                "ports: {port} is asked twice"
            )));
        }
        out.push(port);
    }
    Ok(out)
}

/// "80, 443 and 8080"; a long list is cut after ten.
fn list(ports: &[u16]) -> String {
    let shown: Vec<String> = ports.iter().take(10).map(u16::to_string).collect();
    let text = match shown.len() {
        0 => String::new(),
        1 => shown[0].clone(),
        n => format!("{} and {}", shown[..n - 1].join(", "), shown[n - 1]),
    };
    if ports.len() > 10 {
        format!("{text} (and {} more)", ports.len() - 10)
    } else {
        text
    }
}

/// What the host firewalls of both ends say of `port`: the rule that blocks
/// it, on which node, or `None` when both let it through (or are not known).
fn host_block(ends: &Ends, fw: &(Option<Compiled>, Option<Compiled>), port: u16) -> Option<String> {
    let (src_fw, dst_fw) = fw;
    let src_addr: IpAddr = ends.src_address?;
    if let (Some(c), Some(f)) = (dst_fw, ends.dst_facts.as_deref()) {
        let d = c.evaluate(
            &inbound_packet(f, src_addr, ends.address, port),
            PathKind::Receive,
        );
        if blocked(&d).is_some() {
            return Some(format!("{}'s firewall: {}", ends.dst, decided_by(&d)));
        }
    }
    if let (Some(c), Some(f)) = (src_fw, ends.src_facts.as_deref()) {
        let d = c.evaluate(
            &outbound_packet(f, src_addr, ends.address, port),
            PathKind::Send,
        );
        if blocked(&d).is_some() {
            return Some(format!("{}'s firewall: {}", ends.src, decided_by(&d)));
        }
    }
    None
}

/// The results taken together: (verdict, sentence).
pub fn summarise(src: &str, dst: &str, each: &[pb::PortTest]) -> (&'static str, String) {
    let tested: Vec<&pb::PortTest> = each.iter().filter(|t| t.error.is_empty()).collect();
    let open: Vec<u16> = tested
        .iter()
        .filter(|t| t.open)
        .filter_map(|t| u16::try_from(t.port).ok())
        .collect();
    let blocked: Vec<&&pb::PortTest> = tested.iter().filter(|t| !t.open).collect();
    let by_host: Vec<u16> = blocked
        .iter()
        .filter(|t| !t.host_firewall.is_empty())
        .filter_map(|t| u16::try_from(t.port).ok())
        .collect();
    let unexplained: Vec<u16> = blocked
        .iter()
        .filter(|t| t.host_firewall.is_empty())
        .filter_map(|t| u16::try_from(t.port).ok())
        .collect();
    let untested = each.len() - tested.len();
    let mut text = if tested.is_empty() {
        return (
            "untested",
            format!("no port could be tested from {src} to {dst}: {dst} could not listen on any"),
        );
    } else if blocked.is_empty() {
        (
            "all_pass",
            format!(
                "every port tested passes from {src} to {dst} ({}): the network path lets them through",
                tested.len()
            ),
        )
    } else if unexplained.is_empty() {
        (
            "host_firewall",
            format!(
                "{} blocked from {src} to {dst} by a host firewall on one end{}",
                list(&by_host),
                if open.is_empty() {
                    String::new()
                } else {
                    format!("; {} pass", list(&open))
                }
            ),
        )
    } else if open.is_empty() {
        (
            "none_pass",
            format!(
                "nothing passes from {src} to {dst}: not one of {} ports{}",
                tested.len(),
                if by_host.is_empty() {
                    "; neither end's firewall blocks them, so the block is in the network between them"
                        .to_string()
                } else {
                    format!(
                        "; {} of them a host firewall blocks, the rest are blocked in the network between them",
                        list(&by_host)
                    )
                }
            ),
        )
    } else {
        (
            "path_filter",
            format!(
                "only {} pass{} from {src} to {dst}: a port filter in the path (neither end's firewall blocks {})",
                list(&open),
                if open.len() == 1 { "es" } else { "" },
                list(&unexplained)
            ),
        )
    };
    if untested > 0 {
        text.1.push_str(&format!(
            "; {untested} port(s) not tested ({dst} could not listen on them)"
        ));
    }
    text
}

/// Every port of `ports` tested from `req.src` to `req.dst`.
pub async fn run(
    fleet: &crate::state::Fleet,
    req: pb::TestPortRequest,
    ports: Vec<u16>,
) -> Result<pb::TestPortResult, Status> {
    let timeout = timeout_of(&req);
    let ends = ends(fleet, &req.src, &req.dst).await?;
    let fw = (
        ends.src_facts
            .as_ref()
            .and_then(|f| f.firewall.as_ref())
            .map(Compiled::new),
        ends.dst_facts
            .as_ref()
            .and_then(|f| f.firewall.as_ref())
            .map(Compiled::new),
    );
    let ttl_ms = ms(timeout + ANSWER_SLACK);
    let mut each: Vec<pb::PortTest> = Vec::with_capacity(ports.len());
    for batch in ports.chunks(BATCH) {
        let opened = ends
            .at_dst(
                fleet,
                pb::command::Kind::OpenListeners(pb::OpenListeners {
                    ports: batch.iter().map(|p| u32::from(*p)).collect(),
                    ttl_ms,
                }),
            )
            .await?;
        if !opened.ok {
            return Err(Status::failed_precondition(format!(
                "{} cannot open listeners: {}",
                req.dst, opened.error
            )));
        }
        let mut listening = Vec::new();
        for a in &opened.ports {
            let Ok(port) = u16::try_from(a.port) else {
                continue;
            };
            if a.ok {
                listening.push(port);
                continue;
            }
            let error = match ends.holder(Protocol::Tcp, port) {
                Some(h) => format!("in use on {} by {h}", req.dst),
                None => a.error.clone(),
            };
            each.push(pb::PortTest {
                port: a.port,
                error,
                ..Default::default()
            });
        }
        if listening.is_empty() {
            continue;
        }
        let ports: Vec<u32> = listening.iter().map(|p| u32::from(*p)).collect();
        let probed = ends
            .at_src(
                fleet,
                pb::command::Kind::ProbeEach(pb::ProbeEach {
                    target: Some(ends.target(0)),
                    ports: ports.clone(),
                    timeout_ms: ms(timeout),
                }),
                timeout,
            )
            .await;
        ends.close(
            fleet,
            pb::command::Kind::CloseListeners(pb::CloseListeners { ports }),
        )
        .await;
        let probed = probed?;
        if !probed.ok {
            return Err(Status::failed_precondition(format!(
                "{} refused to probe: {}",
                req.src, probed.error
            )));
        }
        for a in probed.ports {
            let open = a.outcome == pb::ProbeOutcome::Open as i32;
            let host_firewall = match u16::try_from(a.port) {
                Ok(p) if !open => host_block(&ends, &fw, p).unwrap_or_default(),
                _ => String::new(),
            };
            each.push(pb::PortTest {
                port: a.port,
                open,
                outcome: a.outcome,
                rtt_ms: a.rtt_ms,
                host_firewall,
                error: String::new(),
            });
        }
    }
    let order = |t: &pb::PortTest| ports.iter().position(|p| u32::from(*p) == t.port);
    each.sort_by_key(order);
    let (verdict, summary) = summarise(&req.src, &req.dst, &each);
    let mut detail = format!(
        "{}: {} -> {} ({})",
        verdict.to_uppercase().replace('_', " "),
        req.src,
        req.dst,
        ends.address
    );
    detail = format!("{detail}: {summary}");
    Ok(pb::TestPortResult {
        src: req.src,
        dst: req.dst,
        address: ends.address.to_string(),
        each,
        verdict: verdict.to_string(),
        detail,
        protocol: "tcp".into(),
        ..Default::default()
    })
}

/// The outcome of one port, as a word.
pub fn outcome_word(t: &pb::PortTest) -> String {
    if !t.error.is_empty() {
        return "not tested".into();
    }
    if t.open {
        return "open".into();
    }
    outcome_name(t.outcome).unwrap_or_else(|| "blocked".into())
}

#[cfg(test)]
#[path = "ports_tests.rs"]
mod tests;
