//! The firewall part as a manifest and chain blobs: rulesets come back as
//! stored, a change of one chain writes that chain and a manifest, parts
//! in the format before still read, pruning keeps exactly the chain blobs
//! kept manifests name; and the bytes a kube-proxy-sized change writes.

use super::*;
use crate::store::facts::encode_part;
use crate::store::sql::{Db, args};
use crate::store::{FactWrite, Options, Store, Write, read, schema, writer};
use std::collections::BTreeSet;
use std::path::Path;

/// A kube-proxy-like rule: the endpoint's DNAT.
fn rule(chain: usize, i: usize, salt: u32) -> pb::FirewallRule {
    let ip = format!("10.244.{}.{}", chain % 250, (i as u32 + salt) % 250 + 1);
    pb::FirewallRule {
        handle: 0,
        position: i as u32 + 1,
        matches: vec![
            pb::RuleMatch {
                field: pb::MatchField::SourceAddress as i32,
                negated: false,
                values: vec![format!("{ip}/32")],
            },
            pb::RuleMatch {
                field: pb::MatchField::Protocol as i32,
                negated: false,
                values: vec!["tcp".into()],
            },
        ],
        verdict: Some(pb::RuleVerdict {
            kind: pb::VerdictKind::Dnat as i32,
            target: ip.clone(),
            port: 8080,
        }),
        packets: None,
        bytes: None,
        comment: format!("default/svc-{chain}:http"),
        text: format!("-s {ip}/32 -p tcp -j DNAT --to-destination {ip}:8080"),
        unsupported: false,
    }
}

fn chain(n: usize, rules: usize, salt: u32) -> pb::FirewallChain {
    pb::FirewallChain {
        name: format!("KUBE-SEP-{n:012}"),
        rules: (0..rules).map(|i| rule(n, i, salt)).collect(),
        ..Default::default()
    }
}

/// `chains` chains of `rules` rules each over two tables, a base chain and
/// a set among them.
fn ruleset(chains: usize, rules: usize) -> pb::Firewall {
    let filter = pb::FirewallTable {
        family: "ip".into(),
        name: "filter".into(),
        backend: "iptables-nft".into(),
        chains: vec![pb::FirewallChain {
            name: "INPUT".into(),
            hook: "input".into(),
            r#type: "filter".into(),
            priority: Some(0),
            policy: "accept".into(),
            rules: (0..rules).map(|i| rule(0, i, 0)).collect(),
        }],
        sets: vec![pb::FirewallSet {
            name: "allowed".into(),
            r#type: "ipv4_addr".into(),
            elements: vec!["10.0.0.1".into(), "10.0.0.0/8".into()],
        }],
    };
    let nat = pb::FirewallTable {
        family: "ip".into(),
        name: "nat".into(),
        backend: "iptables-nft".into(),
        chains: (1..chains).map(|n| chain(n, rules, 0)).collect(),
        sets: Vec::new(),
    };
    pb::Firewall {
        backend: "iptables-nft".into(),
        generation: Some(7),
        hash: 0x1234,
        tables: vec![filter, nat],
        error: String::new(),
    }
}

/// `fw` with the nat chains at `which` rewritten (new endpoints).
fn changed(fw: &pb::Firewall, which: &[usize], salt: u32) -> pb::Firewall {
    let mut fw = fw.clone();
    for &n in which {
        let c = &mut fw.tables[1].chains[n];
        let rules = c.rules.len();
        *c = chain(n + 1, rules, salt);
    }
    fw.hash += u64::from(salt);
    fw
}

fn legacy(fw: &pb::Firewall) -> Vec<u8> {
    pb::Snapshot {
        firewall: Some(fw.clone()),
        ..Default::default()
    }
    .encode_to_vec()
}

fn fact(node: &str, time: i64, data: Vec<u8>) -> Write {
    Write::Fact(FactWrite {
        node: node.into(),
        part: FIREWALL,
        time,
        hash: crate::store::hash(&data),
        data,
        firewall: None,
    })
}

/// A part as the state task hands it over (`facts::encode_part`).
fn prepared(node: &str, time: i64, e: crate::store::facts::Encoded) -> Write {
    Write::Fact(FactWrite {
        node: node.into(),
        part: FIREWALL,
        time,
        hash: e.hash,
        data: e.data,
        firewall: e.firewall,
    })
}

/// Stores `fw` for `node` at `time` in a transaction of its own.
fn put(conn: &Db, node: &str, time: i64, fw: &pb::Firewall) {
    let tx = conn.write().expect("tx");
    store(&tx, node, time, &bundle(Some(fw.clone()))).expect("store");
    tx.commit().expect("commit");
}

fn firewall_at(conn: &Db, node: &str, at: i64) -> Option<pb::Firewall> {
    read::facts_at(conn, node, at)
        .expect("read")
        .and_then(|s| s.firewall)
}

fn blobs(conn: &Db) -> BTreeSet<Vec<u8>> {
    conn.query("SELECT hash FROM blobs", args![], |r| r.blob(0))
        .expect("query")
        .into_iter()
        .collect()
}

fn blob_bytes(conn: &Db) -> (i64, i64) {
    conn.first(
        "SELECT count(*), coalesce(sum(length(data)), 0) FROM blobs",
        args![],
        |r| Ok((r.int(0)?, r.int(1)?)),
    )
    .expect("count")
    .expect("a row")
}

/// Every blob the stored ruleset `fw` is made of.
fn made_of(fw: &pb::Firewall) -> BTreeSet<Vec<u8>> {
    let s = split(&bundle(Some(fw.clone())))
        .expect("split")
        .expect("a ruleset");
    let mut out: BTreeSet<Vec<u8>> = s.chains.iter().map(|(h, _)| h.to_vec()).collect();
    out.insert(s.hash.to_vec());
    out
}

fn open(dir: &Path) -> Db {
    Db::from(writer::open(&dir.join(crate::store::FILE)).expect("open"))
}

/// The state task's split is the writer's split of the same ruleset's
/// bundle: same manifest, same key, same chain blobs, each named once.
#[test]
fn a_prepared_ruleset_is_its_bundle_split() {
    let mut fw = ruleset(40, 4);
    let twin = fw.tables[1].chains[0].clone();
    fw.tables[0].chains.push(twin);
    let slots: usize = fw.tables.iter().map(|t| t.chains.len()).sum();
    let prepared = prepare(Some(fw.clone())).expect("a ruleset");
    let split = split(&bundle(Some(fw))).expect("split").expect("a ruleset");
    assert_eq!(prepared.manifest, split.manifest);
    assert_eq!(prepared.hash, split.hash);
    assert_eq!(prepared.chains, split.chains);
    assert_eq!(
        prepared.chains.len(),
        slots - 1,
        "the twin chain is one blob"
    );
    assert!(prepare(None).is_none());
}

#[tokio::test]
async fn a_ruleset_comes_back_as_it_was_stored() {
    let dir = tempfile::tempdir().expect("dir");
    let (store, _) = Store::open(dir.path(), Options::default()).expect("open");
    let t = crate::state::unix_nanos(std::time::SystemTime::now()) - 60_000_000_000;
    let mut fw = ruleset(30, 3);
    // The same chain in two tables is one blob, named twice.
    let twin = fw.tables[1].chains[0].clone();
    fw.tables[0].chains.push(twin);
    fw.tables.push(pb::FirewallTable {
        family: "inet".into(),
        name: "empty".into(),
        backend: "nftables".into(),
        ..Default::default()
    });
    let broken = pb::Firewall {
        backend: "nftables".into(),
        error: "nft: permission denied".into(),
        ..Default::default()
    };
    // Through the facts' own encoding, as the state task stores them.
    let model = crate::validate::firewall::firewall("firewall", &fw).expect("valid");
    let facts = crate::model::NodeFacts {
        firewall: Some(model.clone()),
        ..Default::default()
    };
    let encoded = crate::encode::firewall(&model);
    store.queue(prepared("a", t, encode_part(&facts, FIREWALL)));
    // Without a ruleset, then one that could not be read handed over as a
    // bundle, then one handed over whole in the format before (both split
    // by the writer).
    let none = encode_part(&crate::model::NodeFacts::default(), FIREWALL);
    assert!(none.firewall.is_none());
    store.queue(prepared("a", t + 10, none));
    store.queue(fact("a", t + 20, bundle(Some(broken.clone()))));
    store.queue(fact("a", t + 30, legacy(&fw)));
    store.flush().await;
    let (got, kinds) = store
        .read(move |c| {
            let got: Vec<_> = [t, t + 10, t + 20, t + 30]
                .iter()
                .map(|at| firewall_at(c, "a", *at))
                .collect();
            let kinds: Vec<bool> = c
                .query(
                    "SELECT b.data FROM facts f JOIN blobs b ON b.hash = f.hash ORDER BY f.time",
                    args![],
                    |r| Ok(r.blob(0)?.starts_with(MANIFEST)),
                )
                .map_err(|e| e.to_string())?;
            Ok((got, kinds))
        })
        .await
        .expect("read");
    assert_eq!(got[0].as_ref(), Some(&encoded));
    assert_eq!(got[1], None);
    assert_eq!(got[2].as_ref(), Some(&broken));
    assert_eq!(got[3].as_ref(), Some(&fw));
    assert_eq!(kinds, vec![true, false, true, true], "stored as manifests");
}

#[test]
fn changing_one_chain_of_many_writes_that_chain_and_a_manifest() {
    let dir = tempfile::tempdir().expect("dir");
    let conn = open(dir.path());
    let one = ruleset(500, 5);
    let two = changed(&one, &[123], 1);
    put(&conn, "a", 10, &one);
    let (rows, bytes) = blob_bytes(&conn);
    assert_eq!(rows, 501, "500 chains and a manifest");
    put(&conn, "a", 20, &two);
    let (rows2, bytes2) = blob_bytes(&conn);
    assert_eq!(rows2 - rows, 2, "one chain and a manifest");
    let manifest = split(&bundle(Some(two.clone())))
        .expect("split")
        .expect("ruleset")
        .manifest
        .len() as i64;
    let chain = two.tables[1].chains[123].encoded_len() as i64;
    assert_eq!(bytes2 - bytes, manifest + chain);
    assert!(manifest < 500 * 40, "{manifest} bytes of manifest");
    let spans: (i64, i64) = conn
        .first(
            "SELECT count(*), count(last) FROM chain_spans WHERE node = 'a'",
            args![],
            |r| Ok((r.int(0)?, r.int(1)?)),
        )
        .expect("spans")
        .expect("a row");
    assert_eq!(spans, (501, 1), "one run closed, one opened");
    // The same ruleset again (back to the first) writes no blob at all.
    put(&conn, "a", 30, &one);
    assert_eq!(blob_bytes(&conn), (rows2, bytes2));
    assert_eq!(firewall_at(&conn, "a", 15), Some(one.clone()));
    assert_eq!(firewall_at(&conn, "a", 25), Some(two));
    assert_eq!(firewall_at(&conn, "a", 35), Some(one));
}

#[tokio::test]
async fn a_firewall_part_in_the_format_before_still_reads_back() {
    let dir = tempfile::tempdir().expect("dir");
    let old = ruleset(20, 2);
    let new = changed(&old, &[3], 5);
    let t = crate::state::unix_nanos(std::time::SystemTime::now()) - 60_000_000_000;
    {
        // A store of schema 1, written as before.
        let c = rusqlite::Connection::open(dir.path().join(crate::store::FILE)).expect("open");
        c.execute_batch(schema::MIGRATIONS[0]).expect("schema 1");
        c.pragma_update(None, "application_id", schema::APPLICATION_ID)
            .expect("id");
        c.pragma_update(None, "user_version", 1).expect("version");
        let data = legacy(&old);
        let h = crate::store::hash(&data);
        c.execute(
            "INSERT INTO blobs (hash, data) VALUES (?1, ?2)",
            rusqlite::params![&h[..], data],
        )
        .expect("blob");
        c.execute(
            "INSERT INTO facts (node, part, time, hash) VALUES ('a', 'firewall', ?1, ?2)",
            rusqlite::params![t, &h[..]],
        )
        .expect("fact");
    }
    let (store, _) = Store::open(dir.path(), Options::default()).expect("migrated");
    store.queue(fact("a", t + 200, bundle(Some(new.clone()))));
    store.flush().await;
    let (then, now) = store
        .read(move |c| Ok((firewall_at(c, "a", t + 150), firewall_at(c, "a", t + 250))))
        .await
        .expect("read");
    assert_eq!(then, Some(old));
    assert_eq!(now, Some(new.clone()));
    drop(store);
    // Once the part before is pruned, its blob goes too.
    let c = open(dir.path());
    let p = writer::prune_rows(&c, t + 300).expect("prune");
    assert_eq!((p.facts, p.blobs), (1, 1), "{p:?}");
    assert_eq!(blobs(&c), made_of(&new));
    assert_eq!(firewall_at(&c, "a", t + 250), Some(new));
}

#[test]
fn pruning_keeps_the_chain_blobs_kept_manifests_name_and_drops_the_rest() {
    let dir = tempfile::tempdir().expect("dir");
    let conn = open(dir.path());
    let a = ruleset(40, 2);
    let b = changed(&a, &[1], 1); // chain 1 (x) changes
    let c = changed(&b, &[2], 2); // chain 2 (y) changes
    let d = changed(&a, &[1], 3); // the other node's x changes otherwise
    put(&conn, "a", 10, &a);
    put(&conn, "b", 10, &a);
    put(&conn, "a", 20, &b);
    put(&conn, "a", 30, &c);
    put(&conn, "b", 40, &d);
    let prune = |conn: &Db, cutoff| {
        let mut total = writer::Pruned::default();
        loop {
            let p = writer::prune_rows(conn, cutoff).expect("prune");
            if p == writer::Pruned::default() {
                return total;
            }
            total.facts += p.facts;
            total.spans += p.spans;
            total.blobs += p.blobs;
        }
    };
    let union = |sets: &[&pb::Firewall]| -> BTreeSet<Vec<u8>> {
        sets.iter().flat_map(|fw| made_of(fw)).collect()
    };
    assert_eq!(blobs(&conn), union(&[&a, &b, &c, &d]));
    // a@10 goes (a@20 says what a had at 25); b@10 is b's newest by then.
    let p = prune(&conn, 25);
    assert_eq!(p.facts, 1, "{p:?}");
    assert_eq!(p.blobs, 0, "b@10 still names all of a@10: {p:?}");
    assert_eq!(blobs(&conn), union(&[&a, &b, &c, &d]));
    // a@20 and b@10 go: a's old x and b's old x, named by no kept
    // manifest, go with their manifests; a's old y stays (d names it).
    let p = prune(&conn, 45);
    assert_eq!(p.facts, 2, "{p:?}");
    let kept = union(&[&c, &d]);
    assert_eq!(blobs(&conn), kept);
    let chain = |fw: &pb::Firewall, n: usize| {
        crate::store::hash(&fw.tables[1].chains[n].encode_to_vec()).to_vec()
    };
    let held = blobs(&conn);
    assert!(
        !held.contains(&chain(&a, 1)),
        "x as it was: no kept manifest names it"
    );
    assert!(
        held.contains(&chain(&a, 2)),
        "y as it was: d still names it"
    );
    assert_eq!(p.blobs, 3, "manifests a and b, the old x: {p:?}");
    assert_eq!(firewall_at(&conn, "a", 45), Some(c));
    assert_eq!(firewall_at(&conn, "b", 45), Some(d));
    // Nothing is left to prune at the same cutoff.
    assert_eq!(prune(&conn, 45), writer::Pruned::default());
}

#[test]
fn pruning_reads_its_indexes() {
    let dir = tempfile::tempdir().expect("dir");
    let conn = open(dir.path());
    let plan = |sql: &str| -> String {
        let mut stmt = conn
            .sqlite()
            .expect("a SQLite store")
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("plan");
        let rows: Vec<String> = stmt
            .query_map([], |r| r.get::<_, String>(3))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows");
        rows.join("; ")
    };
    let spans = plan(
        "SELECT s.rowid FROM chain_spans s WHERE s.last IS NOT NULL AND s.last < 5
         AND NOT EXISTS (SELECT 1 FROM facts f WHERE f.node = s.node AND f.part = 'firewall'
                         AND f.time <= s.last) LIMIT 10",
    );
    assert!(spans.contains("chain_spans_closed"), "{spans}");
    assert!(spans.contains("facts_at"), "{spans}");
    let open = plan("SELECT hash FROM chain_spans WHERE node = 'a' AND last IS NULL");
    assert!(open.contains("chain_spans_open"), "{open}");
    let blob = plan(
        "SELECT 1 FROM blobs WHERE hash = x'00'
         AND NOT EXISTS (SELECT 1 FROM facts WHERE hash = x'00')
         AND NOT EXISTS (SELECT 1 FROM chain_spans WHERE hash = x'00')",
    );
    assert!(blob.contains("facts_hash"), "{blob}");
    assert!(blob.contains("chain_spans_hash"), "{blob}");
}

/// Bytes one firewall change writes: a 20,000-rule, 4,000-chain ruleset
/// in which two chains change, stored whole (as before) and as a manifest
/// with chain blobs. Counts the blobs' bytes and the WAL's growth (every
/// page a commit writes, indexes included).
#[test]
fn bytes_written_per_firewall_change() {
    const CHANGES: u32 = 5;
    let base = ruleset(4_000, 5);
    let rules: usize = base
        .tables
        .iter()
        .flat_map(|t| &t.chains)
        .map(|c| c.rules.len())
        .sum();
    // Each change rewrites two chains of the one before.
    let mut rulesets = vec![base.clone()];
    for i in 1..=CHANGES {
        let n = i as usize * 7;
        let next = changed(&rulesets[rulesets.len() - 1], &[n, n + 1000], i);
        rulesets.push(next);
    }
    let wal = |dir: &Path| {
        std::fs::metadata(dir.join(format!("{}-wal", crate::store::FILE))).map_or(0, |m| m.len())
    };
    let measure = |whole: bool| -> (u64, u64, f64) {
        let dir = tempfile::tempdir().expect("dir");
        let conn = open(dir.path());
        conn.sqlite()
            .expect("a SQLite store")
            .pragma_update(None, "wal_autocheckpoint", 0)
            .expect("no checkpoints");
        // Encoded as the state task does, outside the time taken.
        let parts: Vec<Vec<u8>> = rulesets
            .iter()
            .map(|fw| {
                if whole {
                    legacy(fw)
                } else {
                    bundle(Some(fw.clone()))
                }
            })
            .collect();
        let write = |conn: &Db, time: i64, data: &[u8]| {
            let tx = conn.write().expect("tx");
            if whole {
                // What the store did before.
                let h = crate::store::hash(data);
                tx.execute(
                    "INSERT OR IGNORE INTO blobs (hash, data) VALUES (?1, ?2)",
                    args![&h[..], data],
                )
                .expect("blob");
                tx.execute(
                    "INSERT INTO facts (node, part, time, hash) VALUES ('k8s', 'firewall', ?1, ?2)",
                    args![time, &h[..]],
                )
                .expect("fact");
            } else {
                store(&tx, "k8s", time, data).expect("store");
            }
            tx.commit().expect("commit");
        };
        write(&conn, 0, &parts[0]);
        let (_, blob0) = blob_bytes(&conn);
        let wal0 = wal(dir.path());
        let started = std::time::Instant::now();
        for (i, data) in parts.iter().enumerate().skip(1) {
            write(&conn, i as i64, data);
        }
        let took = started.elapsed().as_secs_f64() * 1000.0 / f64::from(CHANGES);
        let (_, blob1) = blob_bytes(&conn);
        let per = |a: u64, b: u64| (b - a) / u64::from(CHANGES);
        let got = firewall_at(&conn, "k8s", i64::from(CHANGES));
        assert_eq!(got.as_ref(), rulesets.last(), "read back");
        (
            per(blob0 as u64, blob1 as u64),
            per(wal0, wal(dir.path())),
            took,
        )
    };
    let part = legacy(&base).len();
    let (before_blobs, before_wal, before_ms) = measure(true);
    let (after_blobs, after_wal, after_ms) = measure(false);
    println!(
        "firewall of {rules} rules in 4,000 chains ({part} bytes whole), 2 chains changed per change:\n  \
         before: {before_blobs} bytes of blobs, {before_wal} bytes of WAL per change ({before_ms:.1} ms to store)\n  \
         after:  {after_blobs} bytes of blobs, {after_wal} bytes of WAL per change ({after_ms:.1} ms to store; unoptimised build)"
    );
    assert_eq!(rules, 20_000);
    assert!(after_wal * 5 < before_wal, "{after_wal} vs {before_wal}");
}
