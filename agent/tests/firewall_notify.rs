//! The nftables notification parser on datagrams captured from a real kernel.
//!
//! `nft_notify_{1..6}.bin` are what the NFNLGRP_NFTABLES socket received, in a
//! fresh namespace, for:
//!
//!     nft add table inet t
//!     nft add chain inet t input '{ type filter hook input priority 0; policy drop; }'
//!     nft add rule inet t input tcp dport 22 accept
//!
//! written by the live test with
//! `REACHMAP_CAPTURE_NFT_NOTIFY=<dir> cargo test -p reachmap-agent --test firewall_live`.
//! Odd files hold the object message, even files the NEWGEN that ends the
//! transaction.

use reachmap_agent::inspect::firewall::{Notification, RulesetChange, parse_nft_notification};

fn fixture(n: u32) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/firewall/nft_notify_{n}.bin",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture")
}

#[test]
fn each_transaction_ends_with_generation_pid_and_command() {
    let expected = [
        (1, "newtable", 2, 0x67fc),
        (3, "newchain", 3, 0x67fe),
        (5, "newrule", 4, 0x6801),
    ];
    for (file, object, generation, pid) in expected {
        let obj = parse_nft_notification(&fixture(file)).expect("object");
        assert!(
            matches!(obj.as_slice(), [Notification::Object { name, .. }] if *name == object),
            "{obj:?}"
        );
        let end = parse_nft_notification(&fixture(file + 1)).expect("newgen");
        assert_eq!(
            end,
            [Notification::NewGeneration(RulesetChange {
                generation,
                pid: Some(pid),
                command: Some("nft".into()),
            })]
        );
    }
}

#[test]
fn several_messages_in_one_datagram() {
    let mut all = Vec::new();
    for n in 1..=6 {
        all.extend(fixture(n));
    }
    let parsed = parse_nft_notification(&all).expect("all");
    assert_eq!(parsed.len(), 6);
    let gens: Vec<u32> = parsed
        .iter()
        .filter_map(|n| match n {
            Notification::NewGeneration(c) => Some(c.generation),
            _ => None,
        })
        .collect();
    assert_eq!(gens, [2, 3, 4]);
}

#[test]
fn truncated_and_corrupt_datagrams_are_errors_never_panics() {
    let newgen = fixture(2);
    for cut in 1..newgen.len() {
        assert!(
            parse_nft_notification(&newgen[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    // A length field that claims more than was received.
    let mut long = newgen.clone();
    long[0] = 0xff;
    assert!(parse_nft_notification(&long).is_err());
    // A length field below the header size would loop forever if trusted.
    let mut zero = newgen.clone();
    zero[0..4].copy_from_slice(&0u32.to_ne_bytes());
    assert!(parse_nft_notification(&zero).is_err());
    // An attribute of length 0 inside the message.
    let mut attr = newgen.clone();
    attr[20..22].copy_from_slice(&0u16.to_ne_bytes());
    let e = parse_nft_notification(&attr).expect_err("zero attribute");
    assert!(!e.to_string().contains('\n'));
    // NEWGEN without NFTA_GEN_ID.
    let mut no_id = newgen.clone();
    no_id[22..24].copy_from_slice(&99u16.to_ne_bytes());
    assert!(parse_nft_notification(&no_id).is_err());
    // Every byte flipped in turn: errors or values, never a panic.
    let mut all = Vec::new();
    for n in 1..=6 {
        all.extend(fixture(n));
    }
    for i in 0..all.len() {
        let mut b = all.clone();
        b[i] ^= 0xa5;
        let _ = parse_nft_notification(&b);
    }
    assert_eq!(parse_nft_notification(&[]).expect("empty"), []);
}

#[test]
fn object_messages_name_their_family_table_and_chain() {
    // NFPROTO_INET is 1; a table names no chain, a chain and a rule do.
    let expected = [
        (1, "newtable", None),
        (3, "newchain", Some("input")),
        (5, "newrule", Some("input")),
    ];
    for (file, object, chain) in expected {
        let parsed = parse_nft_notification(&fixture(file)).expect("object");
        match parsed.as_slice() {
            [
                Notification::Object {
                    name,
                    family,
                    table,
                    chain: got,
                    ..
                },
            ] => {
                assert_eq!(*name, object);
                assert_eq!(*family, 1);
                assert_eq!(table.as_deref(), Some("t"));
                assert_eq!(got.as_deref(), chain);
            }
            other => panic!("{other:?}"),
        }
    }
}
