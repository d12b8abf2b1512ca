//! The store on a real PostgreSQL server (Debian's, started by the test
//! harness): the same writes answer the same queries as on the embedded
//! SQLite store, over TLS verified against the server's CA; migrations
//! refuse what is not theirs; and a collector on it keeps its history
//! across a kill -9.

use reachmap_collector::model::NodeFacts;
use reachmap_collector::probe::{CellChange, CellState, Matrix, Outcome, ProbeKind};
use reachmap_collector::store::pg::Target;
use reachmap_collector::store::{
    EventWrite, FactWrite, Location, NodeRecord, Options, Store, Write, facts, firewall, read,
};
use reachmap_fleet_tests::postgres::{Postgres, require_postgres};
use reachmap_proto::v1 as pb;
use std::time::{SystemTime, UNIX_EPOCH};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i64
}

fn event(id: u64, time: i64) -> pb::Event {
    pb::Event {
        time_unix_nanos: time,
        id,
        received_unix_nanos: time,
        instance_id: 7,
        kind: Some(pb::event::Kind::KernelLogLost(pb::KernelLogLost {
            count: id,
        })),
    }
}

fn cell(time: i64, src: &str, dst: &str, kind: ProbeKind, new: CellState) -> CellChange {
    CellChange {
        time,
        src: src.into(),
        dst: dst.into(),
        port: if kind == ProbeKind::Icmp { 0 } else { 7442 },
        kind,
        service: (kind == ProbeKind::Http).then(|| "web".to_string()),
        old: CellState::Unknown,
        new,
        failure: (new == CellState::Failing).then_some(Outcome::Timeout),
        sent: 10,
        ok: if new == CellState::Ok { 10 } else { 0 },
        rtt_ms: (new == CellState::Ok).then_some(0.25),
        address: if dst == "c" {
            "2001:db8::c".parse().expect("ip")
        } else {
            "198.18.0.2".parse().expect("ip")
        },
        last_failure_at: if new == CellState::Failing { time } else { 0 },
        gone: false,
    }
}

fn ruleset(salt: u32) -> pb::Firewall {
    let rule = |i: u32| pb::FirewallRule {
        position: i + 1,
        matches: vec![pb::RuleMatch {
            field: pb::MatchField::DestinationPort as i32,
            negated: false,
            values: vec![format!("{}", 7000 + i + salt)],
        }],
        verdict: Some(pb::RuleVerdict {
            kind: pb::VerdictKind::Drop as i32,
            ..Default::default()
        }),
        text: format!("tcp dport {} drop", 7000 + i + salt),
        ..Default::default()
    };
    pb::Firewall {
        backend: "nftables".into(),
        tables: vec![pb::FirewallTable {
            family: "inet".into(),
            name: "filter".into(),
            chains: vec![
                pb::FirewallChain {
                    name: "input".into(),
                    hook: "input".into(),
                    rules: (0..5).map(rule).collect(),
                    ..Default::default()
                },
                pb::FirewallChain {
                    name: "forward".into(),
                    hook: "forward".into(),
                    rules: vec![rule(100)],
                    ..Default::default()
                },
            ],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The same writes, in the same order, to any store.
async fn write_history(store: &Store, t: i64) {
    for i in 1..=20u64 {
        let answer = store
            .event("a", 7, event(i, t + i as i64))
            .await
            .await
            .expect("answer");
        assert_eq!(answer, Ok(true), "event {i}");
    }
    let again = store
        .event("a", 7, event(3, t))
        .await
        .await
        .expect("answer");
    assert_eq!(again, Ok(false), "a resent event is a duplicate");
    store.queue(Write::Event(EventWrite {
        node: "b".into(),
        instance: 0,
        event: event(0, t + 50),
        done: None,
    }));
    for (i, state) in [CellState::Ok, CellState::Failing, CellState::Ok]
        .into_iter()
        .enumerate()
    {
        let at = t + 100 * i as i64;
        for (src, dst, kind) in [
            ("a", "b", ProbeKind::Tcp),
            ("b", "a", ProbeKind::Tcp),
            ("a", "b", ProbeKind::Icmp),
            ("a", "c", ProbeKind::Http),
            ("c", "b", ProbeKind::Tcp),
        ] {
            store.queue(Write::Cells(vec![cell(at, src, dst, kind, state)]));
        }
    }
    let mut f = NodeFacts::default();
    for (i, host) in ["first", "second"].into_iter().enumerate() {
        f.host.hostname = host.into();
        let data = facts::encode(&f, facts::NETWORK);
        store.queue(Write::Fact(FactWrite {
            node: "b".into(),
            part: facts::NETWORK,
            time: t + 150 * i as i64,
            hash: reachmap_collector::store::hash(&data),
            data,
            firewall: None,
        }));
    }
    for (i, salt) in [0, 1, 0].into_iter().enumerate() {
        let data = firewall::bundle(Some(ruleset(salt)));
        store.queue(Write::Fact(FactWrite {
            node: "b".into(),
            part: facts::FIREWALL,
            time: t + 120 * i as i64,
            hash: reachmap_collector::store::hash(&data),
            data,
            firewall: None,
        }));
    }
    store.queue(Write::Nodes(vec![
        NodeRecord {
            name: "a".into(),
            addresses: vec!["198.18.0.1".into()],
            ..Default::default()
        },
        NodeRecord {
            name: "b".into(),
            addresses: vec!["198.18.0.2".into()],
            ..Default::default()
        },
    ]));
    store.flush().await;
}

/// A matrix as comparable text, cell by cell.
fn cells_of(m: &Matrix) -> Vec<String> {
    let mut out: Vec<String> = m
        .iter()
        .map(|c| {
            format!(
                "{}>{}:{}/{:?} {:?} {:?} {} {:?}",
                c.src,
                c.dst,
                c.cell.port(),
                c.cell.kind(),
                c.cell.state(),
                c.cell.failure(),
                c.address,
                c.cell.rtt_ms()
            )
        })
        .collect();
    out.sort();
    out
}

/// Everything the store's readers answer about the history written.
async fn answers(store: &Store, t: i64) -> Vec<String> {
    store
        .read(move |db| {
            let e = |e: reachmap_collector::store::sql::Error| e.to_string();
            let mut out = Vec::new();
            let (events, truncated) = read::events(
                db,
                &read::EventsQuery {
                    since: t,
                    limit: 15,
                    ..Default::default()
                },
            )
            .map_err(e)?;
            out.push(format!("events {truncated} {events:?}"));
            let (only_b, _) = read::events(
                db,
                &read::EventsQuery {
                    node: Some("b".into()),
                    types: vec!["kernel_log_lost".into()],
                    ..Default::default()
                },
            )
            .map_err(e)?;
            out.push(format!("b {only_b:?}"));
            out.push(format!(
                "history {:?}",
                read::cell_history(db, "a", "b", 7442, ProbeKind::Tcp, t + 50, t + 250)
                    .map_err(e)?
            ));
            let mut around = read::cells_at(db, t + 150, "b").map_err(e)?;
            around.sort_by(|x, y| format!("{x:?}").cmp(&format!("{y:?}")));
            out.push(format!("around b {around:?}"));
            out.push(format!(
                "pair {:?}",
                read::pair_at(db, t + 150, "a", "b", 7442).map_err(e)?
            ));
            for at in [t - 1, t + 10, t + 130, t + 250] {
                out.push(format!("facts at {at}: {:?}", read::facts_at(db, "b", at)?));
            }
            out.push(format!(
                "firewall changed {:?}",
                read::firewall_changed_after(db, "b", t + 10).map_err(e)?
            ));
            for at in [t + 50, t + 150, t + 250] {
                out.push(format!(
                    "matrix {:?}",
                    cells_of(&read::matrix_at(db, at).map_err(e)?)
                ));
            }
            Ok(out)
        })
        .await
        .expect("read")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn the_shared_store_answers_every_query_as_the_embedded_one_over_verified_tls() {
    if !require_postgres() {
        return;
    }
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("dir");
    let shared = Location::Postgres(Target {
        url: pg.url_tls(),
        ca: Some(pg.ca_pem_path().to_owned()),
    });
    runtime().block_on(async {
        let t = now() - 3_600_000_000_000;
        let (embedded, _) = Store::open(dir.path(), Options::default()).expect("sqlite");
        let (on_pg, nodes) = Store::open_at(&shared, Options::default()).expect("postgres");
        assert!(nodes.is_empty());
        write_history(&embedded, t).await;
        write_history(&on_pg, t).await;
        let want = answers(&embedded, t).await;
        let got = answers(&on_pg, t).await;
        assert_eq!(want.len(), got.len());
        for (w, g) in want.iter().zip(&got) {
            assert_eq!(w, g);
        }
        // Not empty answers that agree by accident.
        assert!(want[0].contains("KernelLogLost"), "{}", want[0]);
        assert!(want.iter().any(|a| a.contains("second")), "{want:?}");
        assert!(
            want.iter().any(|a| a.contains("tcp dport 7001 drop")),
            "{want:?}"
        );
        let status = on_pg.status();
        assert!(status.writable, "{status:?}");
        assert_eq!(status.events, 21, "{status:?}");
        assert!(status.bytes > 0, "the database's size: {status:?}");
    });
    // Every connection went over TLS.
    let plain = pg.psql(
        "SELECT count(*) FROM pg_stat_activity a LEFT JOIN pg_stat_ssl s ON s.pid = a.pid
         WHERE a.application_name = 'reachmap-collector' AND NOT coalesce(s.ssl, false)",
    );
    assert_eq!(plain, "0");
    // The registry came back on a second open, migrations not run again.
    runtime().block_on(async {
        let (_, nodes) = Store::open_at(&shared, Options::default()).expect("reopen");
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    });
    assert_eq!(
        pg.psql("SELECT version FROM reachmap_schema"),
        reachmap_collector::store::SCHEMA_VERSION.to_string()
    );
}

#[test]
fn a_server_it_cannot_verify_and_a_database_not_its_own_are_refused() {
    if !require_postgres() {
        return;
    }
    let pg = Postgres::start();
    let other_ca = tempfile::NamedTempFile::new().expect("file");
    let ca = rcgen::generate_simple_self_signed(vec!["elsewhere.test".into()]).expect("ca");
    std::fs::write(other_ca.path(), ca.cert.pem()).expect("write");
    let rt = runtime();
    let open = |target: Target| {
        rt.block_on(async { Store::open_at(&Location::Postgres(target), Options::default()) })
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let e = open(Target {
        url: pg.url_tls(),
        ca: Some(other_ca.path().to_owned()),
    })
    .expect_err("an unknown issuer");
    assert!(e.contains("certificate"), "{e}");
    assert!(
        !e.contains("reachmap:reachmap"),
        "no password in errors: {e}"
    );
    pg.psql("CREATE TABLE invoices (id BIGINT)");
    let e = open(Target {
        url: pg.url_tls(),
        ca: Some(pg.ca_pem_path().to_owned()),
    })
    .expect_err("a foreign database");
    assert!(e.contains("not a reachmap store"), "{e}");
    pg.psql("DROP TABLE invoices");
    let plain = format!("{}?sslmode=disable", pg.url());
    open(Target {
        url: plain.clone(),
        ca: None,
    })
    .expect("an empty database is made a store");
    pg.psql("UPDATE reachmap_schema SET version = 99");
    let e = open(Target {
        url: plain,
        ca: None,
    })
    .expect_err("a newer schema");
    assert!(e.contains("newer reachmap"), "{e}");
}

#[test]
fn collectors_opening_one_new_database_at_once_migrate_it_once() {
    if !require_postgres() {
        return;
    }
    let pg = Postgres::start();
    let url = format!("{}?sslmode=disable", pg.url());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let db = reachmap_collector::store::pg::Pg::connect(&Target { url, ca: None })
                    .map_err(|e| e.to_string())?;
                reachmap_collector::store::migrate_pg(
                    &reachmap_collector::store::sql::Db::Postgres(db),
                )
                .map_err(|e| e.to_string())
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().expect("thread"), Ok(()));
    }
    assert_eq!(pg.psql("SELECT count(*) FROM reachmap_schema"), "1");
    assert_eq!(
        pg.psql("SELECT version FROM reachmap_schema"),
        reachmap_collector::store::SCHEMA_VERSION.to_string()
    );
}
