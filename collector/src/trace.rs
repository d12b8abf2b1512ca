//! `reachmap trace SRC DST:PORT`: where on the way a TCP connection stops.
//! SRC's agent sends SYNs to DST:PORT with TTL 1, 2, … and reports the ICMP
//! errors routers send back (`agent/src/probe/trace.rs`); here the hops
//! become an answer — the last hop that forwarded the probe and where it
//! went silent, or who rejected it. `why` runs one for a NETWORK_PATH cause
//! and puts the answer into it.

use crate::state::Fleet;
use reachmap_proto::v1 as pb;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::Status;

/// Hops a trace goes unless asked for fewer or more.
pub const DEFAULT_HOPS: u32 = 16;
/// What one hop may take.
const PER_HOP: Duration = Duration::from_secs(1);
/// A trace `why` made is used again for this long.
const KEPT_FOR: Duration = Duration::from_secs(60);
/// Hops `why` asks for.
const WHY_HOPS: u32 = 8;

/// A cell: (src, dst, port).
type Key = (String, String, u16);

/// The latest trace of each cell, for `why`.
#[derive(Clone, Default)]
pub struct Traces {
    kept: Arc<Mutex<HashMap<Key, (Instant, pb::TraceResult)>>>,
}

impl Traces {
    fn get(&self, key: &Key) -> Option<pb::TraceResult> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.get(key)
            .filter(|(at, _)| at.elapsed() < KEPT_FOR)
            .map(|(_, r)| r.clone())
    }

    fn keep(&self, key: Key, r: pb::TraceResult) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.retain(|_, (at, _)| at.elapsed() < KEPT_FOR);
        kept.insert(key, (Instant::now(), r));
    }
}

fn hop_text(h: &pb::TraceHop) -> String {
    match h.kind.as_str() {
        "silent" => format!("hop {}: no answer", h.ttl),
        "unreachable" => format!(
            "hop {}: {} answered ICMP unreachable (code {}{})",
            h.ttl,
            h.address,
            h.code,
            match h.code {
                9 | 10 | 13 => ", administratively prohibited",
                3 => ", port unreachable",
                1 => ", host unreachable",
                _ => "",
            }
        ),
        "reached" => format!("hop {}: {} (the destination) accepted", h.ttl, h.address),
        "refused" => format!("hop {}: {} (the destination) reset it", h.ttl, h.address),
        _ => format!("hop {}: {} (time exceeded)", h.ttl, h.address),
    }
}

/// The hops read into (reached, last router that answered, a sentence).
pub fn conclude(
    hops: &[pb::TraceHop],
    src: &str,
    dst: &str,
) -> (bool, Option<(u32, String)>, String) {
    let mut last: Option<(u32, String)> = None;
    for h in hops {
        match h.kind.as_str() {
            "time_exceeded" if !h.address.is_empty() => last = Some((h.ttl, h.address.clone())),
            "reached" | "refused" => {
                let via = last
                    .as_ref()
                    .map(|(t, a)| format!(" after {t} router(s), the last {a}"))
                    .unwrap_or_default();
                return (
                    true,
                    last,
                    format!(
                        "the probe reached {dst} at hop {}{via}: nothing on the way blocks it{}",
                        h.ttl,
                        if h.kind == "refused" {
                            " (the port itself answered with a reset)"
                        } else {
                            ""
                        }
                    ),
                );
            }
            "unreachable" => {
                let at = if h.address.is_empty() {
                    "a hop"
                } else {
                    h.address.as_str()
                };
                return (
                    false,
                    last,
                    format!(
                        "rejected at hop {} by {at} (ICMP unreachable, code {}): a firewall or route there refuses it, before {dst}",
                        h.ttl, h.code
                    ),
                );
            }
            _ => {}
        }
    }
    let text = match &last {
        Some((t, a)) => format!(
            "blocked after hop {t}, {a}, before {dst}: nothing answered from hop {} on",
            t + 1
        ),
        None => format!(
            "nothing answered from the first hop on: dropped on {src} or at the first router, or the routers on the way do not answer"
        ),
    };
    (false, last, text)
}

/// A trace from `src` to `dst:port` (0: the probe port).
pub async fn run(fleet: &Fleet, req: pb::TraceRequest) -> Result<pb::TraceResult, Status> {
    if req.src == req.dst {
        return Err(Status::invalid_argument(
            "source and destination are the same node",
        ));
    }
    let port = match u16::try_from(req.port) {
        Ok(0) => reachmap_proto::DEFAULT_PROBE_PORT,
        Ok(p) => p,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "port: {} is not 1-65535",
                req.port
            )));
        }
    };
    let max_hops = match req.max_hops {
        0 => DEFAULT_HOPS,
        n if n > 30 => {
            return Err(Status::invalid_argument(format!(
                "max_hops: {n}; at most 30"
            )));
        }
        n => n,
    };
    let ends = crate::testport::ends(fleet, &req.src, &req.dst).await?;
    let answer = ends
        .at_src(
            fleet,
            pb::command::Kind::Trace(pb::Trace {
                target: Some(ends.target(port)),
                max_hops,
                timeout_ms: crate::testport::ms(PER_HOP),
            }),
            PER_HOP * max_hops,
        )
        .await?;
    if !answer.ok {
        return Err(Status::failed_precondition(format!(
            "{} could not trace: {}",
            req.src, answer.error
        )));
    }
    let (reached, last, detail) = conclude(&answer.hops, &req.src, &req.dst);
    Ok(pb::TraceResult {
        src: req.src,
        dst: req.dst,
        address: ends.address.to_string(),
        port: u32::from(port),
        hops: answer.hops,
        reached,
        last_hop_ttl: last.as_ref().map_or(0, |l| l.0),
        last_hop_address: last.map(|l| l.1).unwrap_or_default(),
        detail,
        traced_unix_nanos: crate::state::unix_nanos(std::time::SystemTime::now()),
    })
}

/// A NETWORK_PATH cause made precise: a trace from the source (kept for a
/// minute) says where the probe stops. Any failure to trace leaves the
/// explanation as it was.
pub async fn into_why(fleet: &Fleet, e: &mut crate::why::Explanation) {
    let Some(cause) = e.causes.first() else {
        return;
    };
    if cause.code != crate::why::code::CauseCode::NetworkPath.as_str() {
        return;
    }
    let key = (e.src.clone(), e.dst.clone(), e.port);
    let traced = match fleet.traces().get(&key) {
        Some(t) => t,
        None => {
            let req = pb::TraceRequest {
                src: e.src.clone(),
                dst: e.dst.clone(),
                port: u32::from(e.port),
                max_hops: WHY_HOPS,
            };
            match run(fleet, req).await {
                Ok(t) => {
                    fleet.traces().keep(key, t.clone());
                    t
                }
                Err(err) => {
                    e.checked.push(format!(
                        "a trace from {}: not made ({})",
                        e.src,
                        err.message()
                    ));
                    return;
                }
            }
        }
    };
    let hops: Vec<String> = traced.hops.iter().map(hop_text).collect();
    let cause = &mut e.causes[0];
    if !traced.reached {
        cause.detail = format!("{} — {}", cause.detail, traced.detail);
    }
    cause.evidence.push(crate::why::Evidence {
        kind: "probe".into(),
        node: traced.src.clone(),
        time: traced.traced_unix_nanos,
        text: format!(
            "trace {} -> {}:{}: {}; {}",
            traced.src,
            traced.address,
            traced.port,
            hops.join(", "),
            traced.detail
        ),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(ttl: u32, kind: &str, address: &str) -> pb::TraceHop {
        pb::TraceHop {
            ttl,
            address: address.into(),
            kind: kind.into(),
            code: if kind == "unreachable" { 13 } else { 0 },
            rtt_ms: 0.1,
        }
    }

    #[test]
    fn silence_after_a_router_is_a_block_after_it() {
        let hops = [
            hop(1, "time_exceeded", "198.18.0.1"),
            hop(2, "silent", ""),
            hop(3, "silent", ""),
            hop(4, "silent", ""),
        ];
        let (reached, last, text) = conclude(&hops, "a", "b");
        assert!(!reached);
        assert_eq!(last, Some((1, "198.18.0.1".to_string())));
        assert_eq!(
            text,
            "blocked after hop 1, 198.18.0.1, before b: nothing answered from hop 2 on"
        );
    }

    #[test]
    fn reaching_the_destination_and_a_rejection_are_said() {
        let (reached, _, text) = conclude(
            &[
                hop(1, "time_exceeded", "198.18.0.1"),
                hop(2, "refused", "198.18.1.12"),
            ],
            "a",
            "b",
        );
        assert!(
            reached && text.contains("reached b at hop 2 after 1 router(s), the last 198.18.0.1"),
            "{text}"
        );
        let (reached, _, text) = conclude(&[hop(1, "unreachable", "198.18.0.1")], "a", "b");
        assert!(
            !reached && text.starts_with("rejected at hop 1 by 198.18.0.1"),
            "{text}"
        );
        let (_, last, text) = conclude(&[hop(1, "silent", "")], "a", "b");
        assert!(
            last.is_none() && text.contains("from the first hop on"),
            "{text}"
        );
        assert!(
            hop_text(&hop(2, "unreachable", "198.18.0.1")).contains("administratively prohibited")
        );
    }
}
