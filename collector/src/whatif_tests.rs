//! What-if on hand-made fleets: a proposed ruleset breaks exactly the cells
//! it drops, fixes what it lets through, and an address change finds the
//! allow-lists and names that would go stale.

use super::*;
use crate::findings::tests::{World, iptables};
use crate::probe::TargetState;

const ACCEPT_ALL: &str = "*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";

fn drop_port(port: u16) -> String {
    format!(
        "*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -p tcp -m tcp --dport {port} -j DROP\nCOMMIT\n"
    )
}

fn keys(v: &[CellImpact]) -> Vec<(&str, &str, u16)> {
    v.iter()
        .map(|c| (c.src.as_str(), c.dst.as_str(), c.port))
        .collect()
}

#[test]
fn a_ruleset_dropping_a_port_in_use_breaks_exactly_its_cells() {
    let mut w = World::new(&["a", "b", "c"]);
    w.node("b").facts_mut().firewall = Some(iptables(ACCEPT_ALL));
    w.report(&[7442, 8080], |_, _, _| TargetState::Ok);
    let i = ruleset(&w.matrix, &w.nodes, "b", &iptables(&drop_port(8080))).expect("evaluated");
    assert_eq!(keys(&i.breaks), vec![("a", "b", 8080), ("c", "b", 8080)]);
    assert!(i.fixes.is_empty() && i.still_broken.is_empty());
    let c = &i.breaks[0];
    assert_eq!(
        (c.direction, c.verdict_now, c.verdict_then),
        ("inbound", "accept", "drop")
    );
    assert!(
        c.decided_by.contains("--dport 8080 -j DROP"),
        "{}",
        c.decided_by
    );
    assert!(i.breaks_something());
    // Into and out of b, both ports: 4 in, 4 out.
    assert_eq!(i.cells_checked, 8);

    // A harmless ruleset breaks nothing.
    let i = ruleset(&w.matrix, &w.nodes, "b", &iptables(&drop_port(9999))).expect("evaluated");
    assert!(!i.breaks_something(), "{i:#?}");
}

#[test]
fn a_failing_cell_the_ruleset_lets_through_is_fixed_and_others_stay_broken() {
    let mut w = World::new(&["a", "b"]);
    w.node("b").facts_mut().firewall = Some(iptables(&drop_port(8080)));
    w.report(&[7442, 8080, 9090], |_, _, p| {
        if p == 7442 {
            TargetState::Ok
        } else {
            TargetState::Failing
        }
    });
    let i = ruleset(&w.matrix, &w.nodes, "b", &iptables(ACCEPT_ALL)).expect("evaluated");
    assert_eq!(keys(&i.fixes), vec![("a", "b", 8080)]);
    // 9090 fails with the firewall letting it through both ways: another
    // cause; b -> a:8080 and :9090 fail and b's send path allows them.
    assert_eq!(
        keys(&i.still_broken),
        vec![("a", "b", 9090), ("b", "a", 8080), ("b", "a", 9090)]
    );
    assert!(i.still_broken[0].detail.contains("another reason"));
    assert!(!i.breaks_something());
}

#[test]
fn an_address_change_finds_the_allow_list_that_would_go_stale() {
    let mut w = World::new(&["a", "b", "c"]);
    // c lets only a (.10) in on the probe port.
    w.node("c").facts_mut().firewall = Some(iptables(
        "*filter\n:INPUT DROP [0:0]\n-A INPUT -s 198.18.0.10/32 -p tcp -m tcp --dport 7442 -j ACCEPT\n-A INPUT -s 198.18.0.11/32 -p tcp -m tcp --dport 7442 -j ACCEPT\nCOMMIT\n",
    ));
    w.report(&[7442], |_, _, _| TargetState::Ok);
    let old = w.addr("a");
    let new: IpAddr = "198.18.0.99".parse().expect("ip");
    let i = address(&w.matrix, &w.nodes, "a", old, new).expect("evaluated");
    assert_eq!(keys(&i.breaks), vec![("a", "c", 7442)]);
    assert!(
        i.breaks[0].detail.contains("198.18.0.99"),
        "{}",
        i.breaks[0].detail
    );
    assert_eq!(i.stale.len(), 1, "{:?}", i.stale);
    assert_eq!(
        (i.stale[0].kind, i.stale[0].node.as_str()),
        ("allow_list", "c")
    );
    assert!(
        i.stale[0]
            .fix
            .contains("replace 198.18.0.10 with 198.18.0.99")
    );

    // An address the node does not have, or of another family: one line.
    let e = address(&w.matrix, &w.nodes, "a", new, old).expect_err("not a's");
    assert!(e.to_string().contains("is not an address of a"), "{e}");
    let e = address(
        &w.matrix,
        &w.nodes,
        "a",
        old,
        "2001:db8::1".parse().expect("ip"),
    )
    .expect_err("family");
    assert!(e.to_string().contains("same family"), "{e}");
    let e = ruleset(&w.matrix, &w.nodes, "zz", &iptables(ACCEPT_ALL)).expect_err("unknown");
    assert_eq!(e.to_string(), "no node named \"zz\"");
}
