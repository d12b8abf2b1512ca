use super::*;
use std::collections::{BTreeMap, BTreeSet};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn node(name: &str, zone: Option<&str>, addr: &str) -> NodeInput {
    NodeInput {
        name: name.to_string(),
        zone: zone.map(str::to_string),
        connected: true,
        addresses: vec![ip(addr)],
        listeners: Vec::new(),
    }
}

fn peers(plan: &NodePlan) -> BTreeSet<&str> {
    plan.targets.iter().map(|t| t.node.as_str()).collect()
}

fn fleet(n: usize, zones: usize) -> Vec<NodeInput> {
    (0..n)
        .map(|i| {
            let zone = format!("z{}", i % zones);
            node(
                &format!("n{i:03}"),
                Some(&zone),
                &format!("198.18.{}.{}", i / 250, i % 250 + 1),
            )
        })
        .collect()
}

#[test]
fn full_mesh_for_four_nodes() {
    let mut nodes: Vec<NodeInput> = (1..=4)
        .map(|i| node(&format!("n{i}"), None, &format!("198.18.0.{i}")))
        .collect();
    nodes[3].connected = false;
    let plans = plan(&nodes, &PlannerConfig::default());
    // A disconnected source gets no plan, but is probed.
    assert_eq!(
        plans.keys().map(String::as_str).collect::<Vec<_>>(),
        ["n1", "n2", "n3"]
    );
    for (src, p) in &plans {
        let want: BTreeSet<&str> = ["n1", "n2", "n3", "n4"]
            .into_iter()
            .filter(|n| n != src)
            .collect();
        assert_eq!(peers(p), want, "{src}");
        assert_eq!(p.targets.len(), 6, "probe port + ICMP per peer");
        for t in &p.targets {
            match t.kind {
                ProbeKind::Tcp => assert_eq!(t.port, DEFAULT_PROBE_PORT),
                ProbeKind::Icmp => assert_eq!(t.port, 0),
                ProbeKind::Http | ProbeKind::Https | ProbeKind::Udp => {
                    panic!("no service declared")
                }
            }
            assert_eq!(t.service, None);
            assert_ne!(t.id, 0);
        }
        // Its peers' addresses, the only ones its probes go to.
        assert_eq!(p.fleet_addresses.len(), 3);
        assert!(
            p.targets
                .iter()
                .all(|t| p.fleet_addresses.contains(&t.address))
        );
        assert_eq!(p.interval, Duration::from_secs(10));
    }
    // A target's id is the same whoever probes it.
    let id = |src: &str| {
        plans[src]
            .targets
            .iter()
            .find(|t| t.node == "n4" && t.kind == ProbeKind::Tcp)
            .map(|t| t.id)
    };
    assert_eq!(id("n1"), id("n2"));
}

#[test]
fn sparse_for_200_nodes_in_4_zones() {
    let nodes = fleet(200, 4);
    let cfg = PlannerConfig {
        full_mesh_max: 50,
        representatives: 3,
        ..PlannerConfig::default()
    };
    let plans = plan(&nodes, &cfg);
    assert_eq!(plans.len(), 200);
    let zone: BTreeMap<&str, &str> = nodes
        .iter()
        .map(|n| (n.name.as_str(), n.zone.as_deref().unwrap_or("")))
        .collect();
    let bound = cfg.full_mesh_max + cfg.representatives * 3;
    let mut zone_links: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut inbound_cross: BTreeMap<&str, usize> = BTreeMap::new();
    for (src, p) in &plans {
        let ps = peers(p);
        assert!(ps.len() <= bound, "{src} probes {} peers", ps.len());
        let own = zone[src.as_str()];
        let mut per_zone: BTreeMap<&str, usize> = BTreeMap::new();
        for peer in &ps {
            assert_ne!(peer, src);
            *per_zone.entry(zone[peer]).or_default() += 1;
            zone_links.insert((own, zone[peer]));
            if zone[peer] != own {
                *inbound_cross.entry(peer).or_default() += 1;
            }
        }
        // Full mesh in the zone (50 members), three of each other zone.
        assert_eq!(per_zone[own], 49, "{src}");
        for (z, count) in per_zone {
            if z != own {
                assert_eq!(count, 3, "{src} → {z}");
            }
        }
    }
    assert_eq!(
        zone_links.len(),
        16,
        "every ordered pair of zones is probed"
    );
    // Rendezvous hashing spreads the load: 150 sources × 3 picks over 50
    // candidates per zone is 9 each on average.
    let max_in = inbound_cross.values().max().copied().unwrap_or(0);
    assert!(
        max_in <= 25,
        "a node is probed from other zones {max_in} times"
    );
    assert!(
        inbound_cross.len() > 150,
        "most nodes are someone's representative"
    );
}

#[test]
fn sparse_caps_a_large_zone_and_keeps_choices_stable() {
    let mut nodes = fleet(120, 1);
    let cfg = PlannerConfig {
        full_mesh_max: 20,
        ..PlannerConfig::default()
    };
    let before = plan(&nodes, &cfg);
    for p in before.values() {
        assert_eq!(peers(p).len(), 20);
    }
    // A node joining changes few of the existing choices.
    nodes.push(node("n999", Some("z0"), "198.18.9.9"));
    let after = plan(&nodes, &cfg);
    let moved: usize = before
        .iter()
        .map(|(src, p)| peers(p).difference(&peers(&after[src])).count())
        .sum();
    assert!(moved < 120 * 20 / 10, "{moved} choices moved");
}

#[test]
fn listener_ports_learned_only_where_reachable() {
    let mut b = node("b", None, "198.18.0.2");
    b.addresses.push(ip("198.18.1.2"));
    b.listeners = vec![
        (Protocol::Tcp, ip("0.0.0.0"), 22, BindScope::Any),
        (Protocol::Tcp, ip("::"), 22, BindScope::Any),
        (Protocol::Tcp, ip("127.0.0.1"), 5432, BindScope::Loopback),
        (Protocol::Tcp, ip("::1"), 6379, BindScope::Loopback),
        (Protocol::Tcp, ip("198.18.1.2"), 8080, BindScope::Address),
        (Protocol::Tcp, ip("10.9.9.9"), 9090, BindScope::Address),
        (Protocol::Udp, ip("0.0.0.0"), 53, BindScope::Any),
        (
            Protocol::Tcp,
            ip("0.0.0.0"),
            DEFAULT_PROBE_PORT,
            BindScope::Any,
        ),
        (Protocol::Tcp, ip("0.0.0.0"), 40000, BindScope::Any),
        (Protocol::Tcp, ip("0.0.0.0"), 45000, BindScope::Any),
    ];
    let cfg = PlannerConfig {
        services: vec![Service {
            name: "metrics".into(),
            port: 45000,
            kind: ServiceKind::Http {
                path: "/metrics".into(),
                expect_status: 200,
                tls: None,
            },
        }],
        ..PlannerConfig::default()
    };
    let plans = plan(&[node("a", None, "198.18.0.1"), b.clone()], &cfg);
    let got: Vec<(u16, ProbeKind, IpAddr, Option<&str>)> = plans["a"]
        .targets
        .iter()
        .map(|t| (t.port, t.kind, t.address, t.service.as_deref()))
        .collect();
    let primary = ip("198.18.0.2");
    assert_eq!(
        got,
        [
            (0, ProbeKind::Icmp, primary, None),
            (22, ProbeKind::Tcp, primary, None),
            (DEFAULT_PROBE_PORT, ProbeKind::Tcp, primary, None),
            (8080, ProbeKind::Tcp, ip("198.18.1.2"), None),
            (45000, ProbeKind::Tcp, primary, None),
            (45000, ProbeKind::Http, primary, Some("metrics")),
        ]
    );
    let http = plans["a"]
        .targets
        .iter()
        .find(|t| t.kind == ProbeKind::Http)
        .expect("http target");
    assert_eq!(http.http_path.as_deref(), Some("/metrics"));
    assert_eq!(http.expect_status, Some(200));

    // Learning off: only the probe port, ICMP and services.
    let off = plan(
        &[node("a", None, "198.18.0.1"), b.clone()],
        &PlannerConfig {
            learn_listener_ports: false,
            ..cfg.clone()
        },
    );
    assert_eq!(off["a"].targets.len(), 3);

    // A v4 wildcard on a v6-only peer is not reachable.
    let mut v6 = node("c", None, "2001:db8::3");
    v6.listeners = vec![(Protocol::Tcp, ip("0.0.0.0"), 22, BindScope::Any)];
    let p = plan(
        &[node("a", None, "198.18.0.1"), v6],
        &PlannerConfig::default(),
    );
    assert!(p["a"].targets.iter().all(|t| t.port != 22));
}

#[test]
fn declared_tcp_service_names_a_learned_port_and_caps_apply() {
    let mut b = node("b", None, "198.18.0.2");
    b.listeners = (1000..1100)
        .map(|p| (Protocol::Tcp, ip("0.0.0.0"), p, BindScope::Any))
        .collect();
    let cfg = PlannerConfig {
        services: vec![Service {
            name: "app".into(),
            port: 1005,
            kind: ServiceKind::Tcp,
        }],
        max_learned_ports_per_peer: 10,
        ..PlannerConfig::default()
    };
    let plans = plan(&[node("a", None, "198.18.0.1"), b], &cfg);
    let t = &plans["a"].targets;
    let p1005: Vec<_> = t.iter().filter(|t| t.port == 1005).collect();
    assert_eq!(p1005.len(), 1);
    assert_eq!(p1005[0].service.as_deref(), Some("app"));
    // Probe port, ICMP, the service, ten learned ports (1005 counted once).
    assert_eq!(t.len(), 3 + 10);

    // The per-node cap drops learned ports before probe ports.
    let nodes = fleet(30, 1)
        .into_iter()
        .map(|mut n| {
            n.listeners = vec![(Protocol::Tcp, ip("0.0.0.0"), 22, BindScope::Any)];
            n
        })
        .collect::<Vec<_>>();
    let capped = plan(
        &nodes,
        &PlannerConfig {
            max_targets_per_node: 40,
            ..PlannerConfig::default()
        },
    );
    for p in capped.values() {
        assert_eq!(p.targets.len(), 40);
        let probe = p
            .targets
            .iter()
            .filter(|t| t.port == DEFAULT_PROBE_PORT)
            .count();
        assert_eq!(probe, 29);
        assert_eq!(p.targets.iter().filter(|t| t.port == 22).count(), 0);
    }
}

#[test]
fn output_is_stable() {
    let mut nodes = fleet(80, 3);
    nodes[5].listeners = vec![(Protocol::Tcp, ip("0.0.0.0"), 443, BindScope::Any)];
    let cfg = PlannerConfig {
        full_mesh_max: 20,
        ..PlannerConfig::default()
    };
    let a = plan(&nodes, &cfg);
    let mut shuffled = nodes.clone();
    shuffled.reverse();
    shuffled.swap(3, 40);
    let b = plan(&shuffled, &cfg);
    assert_eq!(a, b);
    // Target ids are a function of (node, address, port, kind) only.
    assert_eq!(
        target_id("n001", ip("198.18.0.2"), 7442, ProbeKind::Tcp),
        PlannedTarget::new("n001", ip("198.18.0.2"), 7442, ProbeKind::Tcp).id
    );
    assert_ne!(
        target_id("n001", ip("198.18.0.2"), 7442, ProbeKind::Tcp),
        target_id("n001", ip("198.18.0.2"), 7443, ProbeKind::Tcp)
    );
    // The digest changes only with the content.
    let mut changed = nodes.clone();
    changed[5].listeners.clear();
    let c = plan(&changed, &cfg);
    let differs: Vec<&String> = a.keys().filter(|k| a[*k].digest != c[*k].digest).collect();
    let probers_of_5: Vec<&String> = a
        .iter()
        .filter(|(_, p)| p.targets.iter().any(|t| t.node == "n005"))
        .map(|(k, _)| k)
        .collect();
    assert_eq!(differs, probers_of_5);
    let slower = plan(
        &nodes,
        &PlannerConfig {
            interval: Duration::from_secs(1),
            ..cfg.clone()
        },
    );
    assert!(a.keys().all(|k| a[k].digest != slower[k].digest));
}

#[test]
fn degenerate_fleets() {
    assert!(plan(&[], &PlannerConfig::default()).is_empty());
    let alone = plan(&[node("a", None, "198.18.0.1")], &PlannerConfig::default());
    assert!(alone["a"].targets.is_empty());
    // A peer without addresses cannot be probed; a duplicate name counts once.
    let mut b = node("b", None, "198.18.0.2");
    b.addresses.clear();
    let dup = node("a", None, "198.18.0.9");
    let p = plan(
        &[node("a", None, "198.18.0.1"), b, dup],
        &PlannerConfig::default(),
    );
    assert!(p["a"].targets.is_empty());
    assert_eq!(p["b"].targets.len(), 2);
    assert_eq!(p["b"].targets[0].address, ip("198.18.0.1"));
}

#[test]
fn every_agent_looks_up_the_names_of_the_others() {
    let nodes: Vec<NodeInput> = (1..=3)
        .map(|i| node(&format!("n{i}"), None, &format!("198.18.0.{i}")))
        .collect();
    let name = |n: &str, node: &str| FleetName {
        name: n.to_string(),
        node: node.to_string(),
    };
    let mut cfg = PlannerConfig::default();
    let before = plan(&nodes, &cfg);
    cfg.names = vec![
        name("b.test", "n2"),
        name("a.test", "n1"),
        name("a.test", "n1"),
    ];
    let plans = plan(&nodes, &cfg);
    assert_eq!(plans["n1"].names, [name("b.test", "n2")]);
    assert_eq!(plans["n2"].names, [name("a.test", "n1")]);
    assert_eq!(
        plans["n3"].names,
        [name("a.test", "n1"), name("b.test", "n2")]
    );
    // A new name is a new plan for the agents that look it up.
    assert!(plans.keys().all(|k| plans[k].digest != before[k].digest));
    assert_eq!(plans["n1"].targets, before["n1"].targets);
}

#[test]
fn an_https_service_names_each_peer_and_carries_its_ca_once() {
    let ca: std::sync::Arc<str> = std::sync::Arc::from("-----BEGIN CERTIFICATE-----\n…");
    let https = |name: &str, port, server_name: Option<&str>, ca| Service {
        name: name.into(),
        port,
        kind: ServiceKind::Http {
            path: "/livez".into(),
            expect_status: 200,
            tls: Some(ServiceTls {
                server_name: server_name.map(str::to_string),
                ca,
            }),
        },
    };
    let cfg = PlannerConfig {
        services: vec![
            https("web", 8443, Some("{node}.fleet.test"), 1),
            https("api", 6443, None, 0),
        ],
        tls_cas: vec![ca.clone()],
        ..PlannerConfig::default()
    };
    let plans = plan(
        &[node("a", None, "198.18.0.1"), node("b", None, "198.18.0.2")],
        &cfg,
    );
    let p = &plans["a"];
    let web = p
        .targets
        .iter()
        .find(|t| t.port == 8443)
        .expect("web target");
    assert_eq!(web.kind, ProbeKind::Https);
    assert_eq!(web.tls_server_name.as_deref(), Some("b.fleet.test"));
    assert_eq!(web.tls_ca, 1);
    assert_eq!(web.http_path.as_deref(), Some("/livez"));
    let api = p
        .targets
        .iter()
        .find(|t| t.port == 6443)
        .expect("api target");
    assert_eq!(
        (api.kind, api.tls_server_name.as_deref(), api.tls_ca),
        (ProbeKind::Https, None, 0)
    );
    assert_eq!(p.tls_cas, vec![ca.clone()]);
    // The CA is part of the digest: a new bundle is a new plan.
    let mut other = cfg.clone();
    other.tls_cas = vec![std::sync::Arc::from("another bundle")];
    let again = plan(
        &[node("a", None, "198.18.0.1"), node("b", None, "198.18.0.2")],
        &other,
    );
    assert_ne!(again["a"].digest, p.digest);
    // Without a CA bundle named, none is sent.
    let system = PlannerConfig {
        services: vec![https("api", 6443, None, 0)],
        tls_cas: vec![ca],
        ..PlannerConfig::default()
    };
    let plans = plan(
        &[node("a", None, "198.18.0.1"), node("b", None, "198.18.0.2")],
        &system,
    );
    assert!(plans["a"].tls_cas.is_empty());
}

#[test]
fn a_udp_service_sends_its_datagram_to_every_peer() {
    let cfg = PlannerConfig {
        services: vec![Service {
            name: "dns".into(),
            port: 53,
            kind: ServiceKind::Udp {
                payload: vec![0x12, 0x34],
                expect_reply: true,
            },
        }],
        ..PlannerConfig::default()
    };
    let nodes = [node("a", None, "198.18.0.1"), node("b", None, "198.18.0.2")];
    let plans = plan(&nodes, &cfg);
    let dns = plans["a"]
        .targets
        .iter()
        .find(|t| t.port == 53)
        .expect("dns target");
    assert_eq!(dns.kind, ProbeKind::Udp);
    assert_eq!(dns.udp_payload, vec![0x12, 0x34]);
    assert!(dns.udp_expect_reply);
    assert_eq!(dns.service.as_deref(), Some("dns"));
    // Another datagram is another plan.
    let mut other = cfg.clone();
    other.services[0].kind = ServiceKind::Udp {
        payload: vec![0x12, 0x35],
        expect_reply: true,
    };
    assert_ne!(plan(&nodes, &other)["a"].digest, plans["a"].digest);
}

#[test]
fn a_node_joining_a_sparse_fleet_changes_only_the_plans_that_pick_it() {
    let cfg = PlannerConfig {
        full_mesh_max: 10,
        representatives: 2,
        ..PlannerConfig::default()
    };
    let mut nodes = fleet(200, 4);
    let before = plan(&nodes, &cfg);
    nodes.push(node("joiner", Some("z1"), "198.18.3.250"));
    let after = plan(&nodes, &cfg);
    let changed: Vec<&String> = before
        .iter()
        .filter(|(name, p)| after[*name].digest != p.digest)
        .map(|(name, _)| name)
        .collect();
    // Each changed plan now probes the joiner; the others are as they were.
    assert!(!changed.is_empty());
    assert!(
        changed.len() < 200 / 2,
        "{} of 200 plans changed",
        changed.len()
    );
    for name in &changed {
        assert!(
            after[*name].targets.iter().any(|t| t.node == "joiner"),
            "{name} changed without probing the joiner"
        );
    }
}
