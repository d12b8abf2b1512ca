//! A ruleset change travels as the chains it touched (`FirewallPatch`):
//! the agent's patch of two readings, validated and applied by the
//! collector to its copy of the first, must give exactly the collector's
//! model of the second — and a patch that does not fit the copy must be
//! refused without touching it.

mod firewall_eval_support;

use firewall_eval_support::{agent_fixture, from_ruleset};
use prost::Message;
use reachmap_agent::facts::firewall::{Backend, Family, Ruleset, Table};
use reachmap_agent::inspect::firewall::{parse_iptables_save, parse_nft_json};
use reachmap_agent::wire::firewall::{firewall, patch};
use reachmap_collector::model::firewall::Firewall;
use reachmap_collector::validate::firewall::{MAX_RULES, patch as validate_patch};

/// A kube-proxy-like nat table: per service a KUBE-SERVICES rule, a
/// KUBE-SVC chain and a KUBE-SEP chain; `endpoint` picks the DNAT target
/// of each service, so a changed value rewrites that service's chains.
fn kube_nat(services: usize, endpoint: impl Fn(usize) -> u8, skip: Option<usize>) -> String {
    let mut out = String::from("*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n");
    let live: Vec<usize> = (0..services).filter(|s| Some(*s) != skip).collect();
    for s in &live {
        out.push_str(&format!(":KUBE-SVC-{s} - [0:0]\n:KUBE-SEP-{s} - [0:0]\n"));
    }
    out.push_str("-A PREROUTING -j KUBE-SERVICES\n");
    for s in &live {
        let (hi, lo) = (s / 250, s % 250);
        out.push_str(&format!(
            "-A KUBE-SERVICES -d 198.19.{hi}.{lo}/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-{s}\n\
             -A KUBE-SVC-{s} -j KUBE-SEP-{s}\n\
             -A KUBE-SEP-{s} -p tcp -m tcp -j DNAT --to-destination 198.18.{hi}.{}:8080\n",
            endpoint(*s)
        ));
    }
    out.push_str("COMMIT\n");
    out
}

fn ruleset(tables: Vec<Table>) -> Ruleset {
    let mut rs = Ruleset {
        tables,
        ..Ruleset::default()
    };
    rs.finish();
    rs
}

fn nat(text: &str) -> Vec<Table> {
    parse_iptables_save(text, Family::Ip, Backend::IptablesNft).expect("iptables-save parses")
}

/// Applies the patch from `old` to `new` to the collector's model of
/// `old`, checks it equals the model of `new`, and returns the patch's
/// size against the whole ruleset's.
fn round_trip(old: &Ruleset, new: &Ruleset) -> (usize, usize) {
    let wire = patch(old, new);
    let mut copy: Firewall = from_ruleset(old);
    let p = validate_patch("delta.firewall_patch", &wire).expect("the agent's patch validates");
    copy.check_patch(&p, MAX_RULES).expect("the patch fits");
    copy.apply_patch(p);
    let want = from_ruleset(new);
    // Not assert_eq: a difference in 20,000 rules prints for pages.
    assert!(
        copy == want,
        "patched copy differs from a whole reading: tables {:?} vs {:?}",
        copy.tables
            .iter()
            .map(|t| (&t.name, t.chains.len()))
            .collect::<Vec<_>>(),
        want.tables
            .iter()
            .map(|t| (&t.name, t.chains.len()))
            .collect::<Vec<_>>()
    );
    (wire.encoded_len(), firewall(new).encoded_len())
}

#[test]
fn one_rewritten_chain_of_many_travels_alone() {
    let old = ruleset(nat(&kube_nat(500, |_| 1, None)));
    let new = ruleset(nat(&kube_nat(500, |s| if s == 7 { 2 } else { 1 }, None)));
    let wire = patch(&old, &new);
    assert_eq!(wire.patches.len(), 1);
    let names: Vec<&str> = wire.patches[0]
        .chains
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["KUBE-SEP-7"]);
    assert!(!wire.patches[0].reordered && !wire.patches[0].sets_replaced);
    let (patch_bytes, whole_bytes) = round_trip(&old, &new);
    assert!(
        patch_bytes * 100 < whole_bytes,
        "patch {patch_bytes} B, whole {whole_bytes} B"
    );
}

#[test]
fn chains_added_and_removed_carry_the_new_order() {
    let old = ruleset(nat(&kube_nat(50, |_| 1, Some(20))));
    let new = ruleset(nat(&kube_nat(50, |_| 1, Some(30))));
    let wire = patch(&old, &new);
    assert!(wire.patches[0].reordered);
    assert_eq!(
        wire.patches[0].chain_order.len(),
        new.tables[0].chains.len()
    );
    round_trip(&old, &new);
    round_trip(&new, &old);
}

#[test]
fn tables_appear_and_go_with_their_order() {
    // The fixture's own `ip nat` would be the same kernel table as kube's.
    let mut nft = parse_nft_json(&agent_fixture("nft_ruleset.json")).expect("nft JSON parses");
    nft.retain(|t| t.name != "nat");
    let kube = nat(&kube_nat(20, |_| 1, None));
    let old = ruleset(kube.clone());
    let both = ruleset(nft.iter().cloned().chain(kube.clone()).collect());
    round_trip(&old, &both);
    round_trip(&both, &old);
    let wire = patch(&both, &old);
    assert_eq!(wire.tables.len(), 1, "only the nat table is left");
    assert!(wire.patches.is_empty(), "nothing changed inside it");
    let empty = ruleset(Vec::new());
    round_trip(&both, &empty);
    round_trip(&empty, &both);
}

#[test]
fn a_changed_set_is_sent_whole_and_only_it() {
    let json = agent_fixture("nft_ruleset.json");
    let old = ruleset(parse_nft_json(&json).expect("nft JSON parses"));
    let mut tables = old.tables.clone();
    let table = tables
        .iter_mut()
        .find(|t| !t.sets.is_empty())
        .expect("the fixture has a set");
    table.sets[0].elements.pop();
    let new = ruleset(tables);
    assert_ne!(old.hash, new.hash);
    let wire = patch(&old, &new);
    assert_eq!(wire.patches.len(), 1);
    assert!(wire.patches[0].sets_replaced && wire.patches[0].chains.is_empty());
    round_trip(&old, &new);
}

#[test]
fn a_patch_that_does_not_fit_is_refused_and_changes_nothing() {
    let a = ruleset(nat(&kube_nat(30, |_| 1, None)));
    let b = ruleset(nat(&kube_nat(30, |s| if s == 3 { 9 } else { 1 }, None)));
    let c = ruleset(nat(&kube_nat(30, |s| if s == 4 { 9 } else { 1 }, None)));
    // Made on b, offered to a copy of a.
    let wire = patch(&b, &c);
    let p = validate_patch("delta.firewall_patch", &wire).expect("validates");
    let copy = from_ruleset(&a);
    let err = copy.check_patch(&p, MAX_RULES).expect_err("another base");
    assert!(err.contains("firewall patch on ruleset"), "{err}");

    // The right base, but it keeps a chain the copy lacks.
    let mut wire = patch(&a, &b);
    wire.patches[0].reordered = true;
    wire.patches[0].chain_order = vec!["KUBE-NOWHERE".into()];
    let p = validate_patch("delta.firewall_patch", &wire).expect("validates");
    let err = copy.check_patch(&p, MAX_RULES).expect_err("unknown chain");
    assert!(err.contains("KUBE-NOWHERE"), "{err}");

    // It would grow past the limit.
    let p = validate_patch("delta.firewall_patch", &patch(&a, &b)).expect("validates");
    let err = copy.check_patch(&p, 10).expect_err("too many rules");
    assert!(err.contains("more than 10 rules"), "{err}");
    assert_eq!(copy, from_ruleset(&a));
}

#[test]
fn bad_patches_are_named_by_field() {
    let a = ruleset(nat(&kube_nat(3, |_| 1, None)));
    let b = ruleset(nat(&kube_nat(3, |_| 2, None)));
    let mut wire = patch(&a, &b);
    wire.patches[0].name = "elsewhere".into();
    let e = validate_patch("delta.firewall_patch", &wire).expect_err("unlisted table");
    assert_eq!(e.field, "delta.firewall_patch.patches[0]");
    let mut wire = patch(&a, &b);
    wire.patches[0].chains[0].rules[0].matches[0].field = 99;
    let e = validate_patch("delta.firewall_patch", &wire).expect_err("bad match");
    assert!(
        e.field
            .starts_with("delta.firewall_patch.patches[0].chains[0].rules[0]")
    );
}
