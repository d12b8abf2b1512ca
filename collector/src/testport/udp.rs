//! `reachmap test-port --udp SRC DST:PORT`: DST's agent binds a temporary
//! UDP socket, SRC's agent sends it a datagram carrying a nonce, and DST
//! says what arrived. OPEN when the nonce arrived; BLOCKED otherwise, with
//! what SRC was told: an ICMP port unreachable (a reject), another ICMP
//! unreachable, or nothing (a drop).

use super::{ANSWER_SLACK, ends, ms, timeout_of};
use crate::model::Protocol;
use crate::state::Fleet;
use reachmap_proto::v1 as pb;
use tonic::Status;

/// A nonce no earlier test's datagram carries.
fn nonce() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "reachmap-test-port {now:x}-{}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The answer in a sentence, from whether the nonce arrived and what SRC
/// was told.
pub fn describe(
    path: &str,
    arrived: bool,
    outcome: i32,
    dst: &str,
) -> (bool, &'static str, String) {
    use pb::ProbeOutcome as O;
    if arrived {
        return (
            true,
            "",
            format!(
                "OPEN: {path}: the datagram arrived at a temporary UDP socket on {dst}; the network path lets UDP to this port through"
            ),
        );
    }
    match O::try_from(outcome).unwrap_or(O::Unspecified) {
        O::Refused => (
            false,
            "port_unreachable",
            format!(
                "BLOCKED: {path}: an ICMP port unreachable came back and nothing arrived although {dst} was listening: a firewall rule rejects it (on {dst} or in the path)"
            ),
        ),
        O::Unreachable => (
            false,
            "unreachable",
            format!(
                "BLOCKED: {path}: an ICMP unreachable (host, network or administratively prohibited) came back: a firewall rejects it or the host is unreachable"
            ),
        ),
        O::NoRoute => (
            false,
            "",
            format!("BLOCKED: {path}: the source has no route to it"),
        ),
        _ => (
            false,
            "",
            format!(
                "BLOCKED: {path}: nothing arrived and nothing came back: a firewall drops UDP to this port, on {dst}, on the source or in the network between them"
            ),
        ),
    }
}

pub async fn run(
    fleet: &Fleet,
    req: pb::TestPortRequest,
    port: u16,
) -> Result<pb::TestPortResult, Status> {
    let timeout = timeout_of(&req);
    let ends = ends(fleet, &req.src, &req.dst).await?;
    let opened = ends
        .at_dst(
            fleet,
            pb::command::Kind::OpenListener(pb::OpenListener {
                port: u32::from(port),
                ttl_ms: ms(timeout + ANSWER_SLACK),
                udp: true,
            }),
        )
        .await?;
    if !opened.ok {
        return Err(Status::failed_precondition(
            match ends.holder(Protocol::Udp, port) {
                Some(h) => format!(
                    "UDP port {port} is in use on {} by {h}; test-port needs a free port",
                    req.dst
                ),
                None => format!("{} cannot bind UDP port {port}: {}", req.dst, opened.error),
            },
        ));
    }
    let nonce = nonce();
    let sent = ends
        .at_src(
            fleet,
            pb::command::Kind::SendUdp(pb::SendUdp {
                target: Some(ends.target(port)),
                nonce: nonce.clone().into_bytes(),
                timeout_ms: ms(timeout),
            }),
            timeout,
        )
        .await;
    // Whatever the send did, close the socket and read what it got.
    let closed = ends
        .at_dst(
            fleet,
            pb::command::Kind::CloseListener(pb::CloseListener {
                port: u32::from(port),
                udp: true,
            }),
        )
        .await?;
    let sent = sent?;
    if !sent.ok {
        return Err(Status::failed_precondition(format!(
            "{} refused to send: {}",
            req.src, sent.error
        )));
    }
    if !closed.ok {
        return Err(Status::unavailable(format!(
            "{} did not say what its UDP socket received: {}",
            req.dst, closed.error
        )));
    }
    let arrived = closed
        .received
        .iter()
        .any(|d| d.payload == nonce.as_bytes());
    let path = format!(
        "{} -> {} ({}) UDP port {port}",
        req.src, req.dst, ends.address
    );
    let (open, icmp, detail) = describe(&path, arrived, sent.outcome, &req.dst);
    Ok(pb::TestPortResult {
        src: req.src,
        dst: req.dst,
        address: ends.address.to_string(),
        port: u32::from(port),
        open,
        outcome: if open {
            pb::ProbeOutcome::Open as i32
        } else if sent.outcome == pb::ProbeOutcome::Open as i32 {
            pb::ProbeOutcome::Timeout as i32
        } else {
            sent.outcome
        },
        detail,
        protocol: "udp".into(),
        icmp: icmp.into(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_arrived_and_what_came_back_say_which_block() {
        let p = "a -> b (198.18.0.12) UDP port 53";
        let (open, icmp, text) = describe(p, true, pb::ProbeOutcome::Open as i32, "b");
        assert!(
            open && icmp.is_empty() && text.starts_with("OPEN: "),
            "{text}"
        );
        let (open, icmp, text) = describe(p, false, pb::ProbeOutcome::Refused as i32, "b");
        assert!(
            !open && icmp == "port_unreachable" && text.contains("rejects"),
            "{text}"
        );
        let (open, icmp, text) = describe(p, false, pb::ProbeOutcome::Open as i32, "b");
        assert!(
            !open && icmp.is_empty() && text.contains("drops UDP"),
            "{text}"
        );
        let (_, icmp, _) = describe(p, false, pb::ProbeOutcome::Unreachable as i32, "b");
        assert_eq!(icmp, "unreachable");
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(nonce(), nonce());
    }
}
