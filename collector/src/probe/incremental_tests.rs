use super::*;
use crate::model::{BindScope, Protocol};
use std::collections::BTreeMap;

fn node(i: usize, zone: usize) -> NodeInput {
    NodeInput {
        name: format!("n{i:03}"),
        zone: Some(format!("z{zone}")),
        connected: true,
        addresses: vec![IpAddr::from([198, 18, (i / 256) as u8, (i % 256) as u8])],
        listeners: Vec::new(),
    }
}

fn fresh(fleet: &[NodeInput], cfg: &PlannerConfig) -> BTreeMap<String, u64> {
    super::super::plan(fleet, cfg)
        .into_iter()
        .map(|(n, p)| (n, p.digest))
        .collect()
}

fn held(p: &Planner, fleet: &[NodeInput]) -> BTreeMap<String, u64> {
    let mut names: Vec<&str> = fleet
        .iter()
        .filter(|n| n.connected)
        .map(|n| n.name.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .filter_map(|n| Some((n.to_string(), p.digest(n)?)))
        .collect()
}

/// xorshift: the same sequence of churn on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[test]
fn incremental_plans_equal_planning_afresh_through_random_churn() {
    for (full_mesh_max, representatives, min_probers) in [(6, 2, 3), (3, 0, 4), (200, 3, 3)] {
        let cfg = PlannerConfig {
            full_mesh_max,
            representatives,
            min_probers,
            ..PlannerConfig::default()
        };
        let mut fleet: Vec<NodeInput> = (0..60).map(|i| node(i, i % 4)).collect();
        let mut p = Planner::default();
        let first = p.update(&fleet, &cfg);
        assert!(first.whole);
        let mut next = 60;
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut partial = 0;
        for step in 0..150 {
            match rng.next(7) {
                0 => {
                    fleet.push(node(next, rng.next(5)));
                    next += 1;
                }
                1 if fleet.len() > 10 => {
                    let i = rng.next(fleet.len());
                    fleet.remove(i);
                }
                2 => {
                    let i = rng.next(fleet.len());
                    fleet[i].connected = !fleet[i].connected;
                }
                3 => {
                    let i = rng.next(fleet.len());
                    fleet[i].zone = Some(format!("z{}", rng.next(5)));
                }
                4 => {
                    let i = rng.next(fleet.len());
                    fleet[i].addresses = if fleet[i].addresses.is_empty() {
                        vec![IpAddr::from([
                            198,
                            19,
                            (step / 256) as u8,
                            (step % 256) as u8,
                        ])]
                    } else {
                        Vec::new()
                    };
                }
                5 => {
                    let i = rng.next(fleet.len());
                    let port = 1000 + rng.next(50) as u16;
                    let a = IpAddr::from([0, 0, 0, 0]);
                    fleet[i]
                        .listeners
                        .push((Protocol::Tcp, a, port, BindScope::Any));
                }
                _ => {
                    // Two at once.
                    let i = rng.next(fleet.len());
                    fleet[i].connected = !fleet[i].connected;
                    fleet.push(node(next, rng.next(4)));
                    next += 1;
                }
            }
            let before: BTreeMap<String, u64> = held(&p, &fleet);
            let u = p.update(&fleet, &cfg);
            if !u.whole {
                partial += 1;
            }
            let want = fresh(&fleet, &cfg);
            assert_eq!(
                held(&p, &fleet),
                want,
                "step {step} ({full_mesh_max}, {representatives})"
            );
            // What it reports changed is exactly what changed.
            for (name, digest) in &want {
                let reported = u.changed.iter().any(|(n, _)| &**n == name);
                if !u.whole && before.get(name) != Some(digest) {
                    assert!(reported, "step {step}: {name} changed unreported");
                }
            }
            for (name, plan) in &u.changed {
                assert_eq!(want.get(&**name), Some(&plan.digest));
                assert_eq!(p.plan(name).map(|q| q.digest), Some(plan.digest));
            }
        }
        assert!(partial > 100, "{partial} of 150 updates were incremental");
    }
}

#[test]
fn a_join_in_a_large_sparse_fleet_computes_few_plans() {
    let cfg = PlannerConfig {
        full_mesh_max: 20,
        representatives: 2,
        ..PlannerConfig::default()
    };
    let mut fleet: Vec<NodeInput> = (0..400).map(|i| node(i, i % 8)).collect();
    let mut p = Planner::default();
    p.update(&fleet, &cfg);
    fleet.push(node(999, 3));
    let u = p.update(&fleet, &cfg);
    assert!(!u.whole);
    assert!(
        u.computed < 400 / 4,
        "{} plans computed for one join",
        u.computed
    );
    assert!(u.changed.iter().any(|(n, _)| &**n == "n999"));
    // A reconnect that changes nothing else recomputes one plan.
    fleet[5].connected = false;
    let u = p.update(&fleet, &cfg);
    assert_eq!(u.gone.len(), 1);
    fleet[5].connected = true;
    let u = p.update(&fleet, &cfg);
    assert!(u.computed <= 2, "{}", u.computed);
}

#[test]
fn every_node_gets_at_least_min_probers() {
    // One member per zone chosen, none of other zones: many nodes would be
    // probed by nobody.
    let cfg = PlannerConfig {
        full_mesh_max: 1,
        representatives: 0,
        min_probers: 3,
        ..PlannerConfig::default()
    };
    let fleet: Vec<NodeInput> = (0..100).map(|i| node(i, i % 5)).collect();
    let plans = super::super::plan(&fleet, &cfg);
    let mut probers: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (src, plan) in &plans {
        for t in &plan.targets {
            probers.entry(t.node.as_str()).or_default().insert(src);
        }
    }
    for n in &fleet {
        let got = probers.get(n.name.as_str()).map_or(0, BTreeSet::len);
        assert!(got >= 3, "{} has {got} probers", n.name);
    }
    // Without the guarantee some have none.
    let bare = super::super::plan(
        &fleet,
        &PlannerConfig {
            min_probers: 0,
            ..cfg.clone()
        },
    );
    let covered: BTreeSet<&str> = bare
        .values()
        .flat_map(|p| p.targets.iter().map(|t| t.node.as_str()))
        .collect();
    assert!(covered.len() < 100);
}

#[test]
fn an_update_touching_most_plans_of_a_large_fleet_plans_it_whole() {
    let cfg = PlannerConfig {
        full_mesh_max: 20,
        representatives: 2,
        ..PlannerConfig::default()
    };
    let mut fleet: Vec<NodeInput> = (0..1200).map(|i| node(i, i % 6)).collect();
    let mut p = Planner::default();
    p.update(&fleet, &cfg);
    // A new zone: every source takes a representative of it.
    fleet.push(node(1500, 9));
    let u = p.update(&fleet, &cfg);
    assert!(u.whole);
    assert_eq!(held(&p, &fleet), fresh(&fleet, &cfg));
    // One join into an existing zone stays incremental.
    fleet.push(node(1501, 2));
    let u = p.update(&fleet, &cfg);
    assert!(!u.whole && u.computed < 200, "{}", u.computed);
    assert_eq!(held(&p, &fleet), fresh(&fleet, &cfg));
}
