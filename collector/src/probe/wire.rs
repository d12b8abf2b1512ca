//! A plan back from the wire's `ProbePlan`, as a shared store's leader wrote
//! it for an agent of another collector (`store/plans.rs`). The rows come
//! from a database other processes write: anything that does not parse is an
//! error naming what, never a panic.

use super::{FleetName, NodePlan, PlannedTarget, ProbeKind};
use prost::Message;
use reachmap_proto::v1 as pb;
use std::net::IpAddr;
use std::time::Duration;

/// The stored bytes of a plan, with the digest its row carries.
pub fn decode(bytes: &[u8], digest: u64) -> Result<NodePlan, String> {
    let p = pb::ProbePlan::decode(bytes).map_err(|e| format!("not a ProbePlan: {e}"))?;
    plan(p, digest)
}

pub fn plan(p: pb::ProbePlan, digest: u64) -> Result<NodePlan, String> {
    let targets = p
        .targets
        .into_iter()
        .map(target)
        .collect::<Result<Vec<_>, _>>()?;
    let fleet_addresses = p
        .fleet_addresses
        .iter()
        .map(|a| address(a))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(NodePlan {
        targets,
        fleet_addresses,
        interval: Duration::from_millis(u64::from(p.interval_ms)),
        timeout: Duration::from_millis(u64::from(p.timeout_ms)),
        window: p.window as usize,
        max_probes_per_second: p.max_probes_per_second,
        names: p
            .names
            .into_iter()
            .map(|n| FleetName {
                name: n.name,
                node: n.node,
            })
            .collect(),
        tls_cas: p.tls_cas.into_iter().map(Into::into).collect(),
        digest,
    })
}

fn address(a: &str) -> Result<IpAddr, String> {
    a.parse().map_err(|_| format!("{a:?} is not an IP address"))
}

fn kind(k: i32) -> Result<ProbeKind, String> {
    Ok(match pb::ProbeKind::try_from(k) {
        Ok(pb::ProbeKind::Tcp) => ProbeKind::Tcp,
        Ok(pb::ProbeKind::Icmp) => ProbeKind::Icmp,
        Ok(pb::ProbeKind::Http) => ProbeKind::Http,
        Ok(pb::ProbeKind::Https) => ProbeKind::Https,
        Ok(pb::ProbeKind::Udp) => ProbeKind::Udp,
        _ => return Err(format!("probe kind {k} is not one this collector knows")),
    })
}

fn target(t: pb::ProbeTarget) -> Result<PlannedTarget, String> {
    let nonempty = |s: String| (!s.is_empty()).then_some(s);
    let port = u16::try_from(t.port).map_err(|_| format!("port {} is out of range", t.port))?;
    if t.id == 0 {
        return Err(format!("a target of {} has no id", t.node));
    }
    Ok(PlannedTarget {
        id: t.id,
        address: address(&t.address)?,
        port,
        kind: kind(t.kind)?,
        service: nonempty(t.service),
        http_path: nonempty(t.http_path),
        expect_status: u16::try_from(t.expect_status).ok().filter(|s| *s != 0),
        tls_server_name: nonempty(t.tls_server_name),
        tls_ca: t.tls_ca,
        udp_payload: t.udp_payload,
        udp_expect_reply: t.udp_expect_reply,
        node: t.node,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{NodeInput, Planner, PlannerConfig};

    #[test]
    fn a_plan_survives_the_wire_and_back() {
        let fleet: Vec<NodeInput> = (1..=4u8)
            .map(|i| NodeInput {
                name: format!("n{i}"),
                zone: None,
                connected: true,
                addresses: vec![IpAddr::from([198, 18, 0, 10 + i])],
                listeners: vec![(
                    crate::model::Protocol::Tcp,
                    IpAddr::from([0, 0, 0, 0]),
                    80,
                    crate::model::BindScope::Any,
                )],
            })
            .collect();
        let mut planner = Planner::default();
        planner.update(&fleet, &PlannerConfig::default());
        let p = planner.plan("n1").expect("n1 is planned");
        assert!(p.targets.len() >= 6, "{:?}", p.targets);
        let bytes = crate::encode::plan(&p, 0).encode_to_vec();
        assert_eq!(decode(&bytes, p.digest).expect("decodes"), p);
    }

    #[test]
    fn what_does_not_parse_is_named() {
        assert!(
            decode(&[0xff, 0xff], 1)
                .expect_err("refused")
                .starts_with("not a ProbePlan")
        );
        let bad = |t: pb::ProbeTarget| {
            plan(
                pb::ProbePlan {
                    targets: vec![t],
                    ..Default::default()
                },
                1,
            )
            .expect_err("refused")
        };
        let good = pb::ProbeTarget {
            id: 1,
            node: "n2".into(),
            address: "198.18.0.12".into(),
            port: 80,
            kind: pb::ProbeKind::Tcp as i32,
            ..Default::default()
        };
        assert_eq!(
            bad(pb::ProbeTarget {
                address: "n2".into(),
                ..good.clone()
            }),
            "\"n2\" is not an IP address"
        );
        assert_eq!(
            bad(pb::ProbeTarget {
                port: 70000,
                ..good.clone()
            }),
            "port 70000 is out of range"
        );
        assert_eq!(
            bad(pb::ProbeTarget {
                kind: 99,
                ..good.clone()
            }),
            "probe kind 99 is not one this collector knows"
        );
        assert_eq!(
            bad(pb::ProbeTarget { id: 0, ..good }),
            "a target of n2 has no id"
        );
    }
}
