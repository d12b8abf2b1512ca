//! `reachmap test-port SRC DST:PORT`: is the network path itself open?
//! DST's agent listens on PORT for a moment, SRC's agent connects to it, and
//! the listener is closed again — so the answer does not depend on whether
//! a service runs there. With `--ports`, many ports at once (`ports.rs`).

use crate::model::{NodeFacts, Protocol};
use crate::state::{Fleet, probe_addresses};
use crate::view::outcome_name;
use reachmap_proto::v1 as pb;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
const MAX_TIMEOUT: Duration = Duration::from_secs(30);
/// Extra time an agent gets to answer beyond the probe's own timeout.
const ANSWER_SLACK: Duration = Duration::from_secs(5);

mod ports;
mod udp;

pub use ports::{MAX_PORTS, outcome_word, parse_spec};

/// Both ends of a test, as the state knows them.
pub(crate) struct Ends {
    src: String,
    dst: String,
    /// DST's address the probe goes to.
    pub(crate) address: IpAddr,
    /// SRC's address its probe comes from, when known.
    src_address: Option<IpAddr>,
    src_facts: Option<Arc<NodeFacts>>,
    dst_facts: Option<Arc<NodeFacts>>,
}

impl Ends {
    /// DST as SRC's probe target, on `port` (0 for a ProbeEach).
    pub(crate) fn target(&self, port: u16) -> pb::ProbeTarget {
        pb::ProbeTarget {
            id: 0,
            node: self.dst.clone(),
            address: self.address.to_string(),
            port: u32::from(port),
            kind: pb::ProbeKind::Tcp as i32,
            ..Default::default()
        }
    }

    /// A command to DST's agent, answered within `ANSWER_SLACK`.
    async fn at_dst(
        &self,
        fleet: &Fleet,
        kind: pb::command::Kind,
    ) -> Result<pb::CommandResult, Status> {
        fleet
            .command(&self.dst, kind, ANSWER_SLACK)
            .await
            .map_err(Status::unavailable)
    }

    /// A command to SRC's agent whose own work takes up to `takes` (a
    /// probe's timeout), answered within that and `ANSWER_SLACK`.
    pub(crate) async fn at_src(
        &self,
        fleet: &Fleet,
        kind: pb::command::Kind,
        takes: Duration,
    ) -> Result<pb::CommandResult, Status> {
        fleet
            .command(&self.src, kind, takes + ANSWER_SLACK)
            .await
            .map_err(Status::unavailable)
    }

    /// Closes temporary listeners on DST; one not confirmed closed is only
    /// logged, as it closes itself after its time to live.
    async fn close(&self, fleet: &Fleet, kind: pb::command::Kind) {
        if let Err(e) = self.at_dst(fleet, kind).await {
            tracing::warn!(node = %self.dst, error = %e.message(), "temporary listener not confirmed closed; it closes itself after its time to live");
        }
    }

    /// Who holds `port` on DST already, when something does.
    fn holder(&self, protocol: Protocol, port: u16) -> Option<String> {
        self.dst_facts.as_ref().and_then(|f| {
            f.listeners
                .values()
                .find(|l| l.protocol == protocol && l.port == port)
                .map(|l| {
                    l.processes
                        .first()
                        .map(|p| format!("{} (pid {})", p.name, p.pid))
                        .unwrap_or_else(|| "another socket".into())
                })
        })
    }
}

pub(crate) async fn ends(fleet: &Fleet, src: &str, dst: &str) -> Result<Ends, Status> {
    let (src_name, dst_name) = (src.to_string(), dst.to_string());
    fleet
        .read(move |nodes| {
            let s = nodes
                .get(&src_name)
                .ok_or_else(|| Status::not_found(format!("no node named {src_name:?}")))?;
            let d = nodes
                .get(&dst_name)
                .ok_or_else(|| Status::not_found(format!("no node named {dst_name:?}")))?;
            for n in [s, d] {
                if !n.connected() {
                    return Err(Status::failed_precondition(format!(
                        "{}'s agent is not connected, so it cannot take part in a test",
                        n.name
                    )));
                }
            }
            let address = probe_addresses(d).into_iter().next().ok_or_else(|| {
                Status::failed_precondition(format!("{dst_name} has no address peers can reach"))
            })?;
            Ok(Ends {
                src: src_name,
                dst: dst_name,
                address,
                src_address: crate::why::causes::firewall::source_address(s),
                src_facts: s.facts.clone(),
                dst_facts: d.facts.clone(),
            })
        })
        .await
        .ok_or_else(|| Status::unavailable("collector is shutting down"))?
}

/// A duration as the protocol's milliseconds.
pub(crate) fn ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

fn timeout_of(req: &pb::TestPortRequest) -> Duration {
    match req.timeout_ms {
        0 => DEFAULT_TIMEOUT,
        ms => Duration::from_millis(u64::from(ms)).min(MAX_TIMEOUT),
    }
}

pub async fn run(fleet: &Fleet, req: pb::TestPortRequest) -> Result<pb::TestPortResult, Status> {
    if req.src == req.dst {
        return Err(Status::invalid_argument(
            "source and destination are the same node",
        ));
    }
    if !req.ports.is_empty() {
        if req.port != 0 {
            return Err(Status::invalid_argument(
                "port and ports: ask one or the other",
            ));
        }
        if req.udp {
            return Err(Status::invalid_argument("udp: one port at a time"));
        }
        let ports = ports::check(&req.ports)?;
        return ports::run(fleet, req, ports).await;
    }
    let port = u16::try_from(req.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| Status::invalid_argument(format!("port: {} is not 1-65535", req.port)))?;
    if req.udp {
        return udp::run(fleet, req, port).await;
    }
    let timeout = timeout_of(&req);
    let ends = ends(fleet, &req.src, &req.dst).await?;
    let opened = ends
        .at_dst(
            fleet,
            pb::command::Kind::OpenListener(pb::OpenListener {
                port: u32::from(port),
                ttl_ms: ms(timeout + ANSWER_SLACK),
                udp: false,
            }),
        )
        .await?;
    // The agent's bind decides whether the port is free (the facts may be a
    // moment old, e.g. still show the previous test's listener); the facts
    // then name who holds it.
    if !opened.ok {
        return Err(Status::failed_precondition(
            match ends.holder(Protocol::Tcp, port) {
                Some(holder) => format!(
                    "port {port} is in use on {} by {holder}; test-port needs a free port (the service itself is what `reachmap why` examines)",
                    req.dst
                ),
                None => format!("{} cannot listen on port {port}: {}", req.dst, opened.error),
            },
        ));
    }
    let probed = ends
        .at_src(
            fleet,
            pb::command::Kind::ProbeOnce(pb::ProbeOnce {
                target: Some(ends.target(port)),
                timeout_ms: ms(timeout),
            }),
            timeout,
        )
        .await;
    // Clean up whatever the probe did.
    ends.close(
        fleet,
        pb::command::Kind::CloseListener(pb::CloseListener {
            port: u32::from(port),
            udp: false,
        }),
    )
    .await;
    let probed = probed?;
    if !probed.ok && probed.outcome == pb::ProbeOutcome::Unspecified as i32 {
        return Err(Status::failed_precondition(format!(
            "{} refused to probe: {}",
            req.src, probed.error
        )));
    }
    let open = probed.outcome == pb::ProbeOutcome::Open as i32;
    let outcome = outcome_name(probed.outcome).unwrap_or_else(|| "unknown".into());
    let path = format!("{} -> {} ({}) port {port}", req.src, req.dst, ends.address);
    let detail = if open {
        format!(
            "OPEN: {path}: {} connected to a temporary listener on {} in {:.1} ms; the network path is open, so a failure on this port is the service's, not the network's",
            req.src, req.dst, probed.rtt_ms
        )
    } else {
        let why = match outcome.as_str() {
            "timeout" => format!(
                "no answer within {}: a firewall drops it, on {}, on {} or in the network between them",
                humantime::format_duration(timeout),
                req.dst,
                req.src
            ),
            "refused" => format!(
                "the connection was refused (a TCP reset) although {} was listening: a firewall rule rejects it",
                req.dst
            ),
            "unreachable" => {
                "an ICMP unreachable came back: a firewall rejects it or the host is unreachable"
                    .to_string()
            }
            "no_route" => format!("{} has no route to {}", req.src, ends.address),
            other => format!("the probe ended with {other}"),
        };
        format!("BLOCKED: {path}: {why}")
    };
    Ok(pb::TestPortResult {
        src: req.src,
        dst: req.dst,
        address: ends.address.to_string(),
        port: u32::from(port),
        open,
        outcome: probed.outcome,
        rtt_ms: probed.rtt_ms,
        detail,
        protocol: "tcp".into(),
        ..Default::default()
    })
}
