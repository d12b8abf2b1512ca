use super::*;

const SEC: i64 = 1_000_000_000;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn target(node: &str, port: u16, kind: ProbeKind) -> PlannedTarget {
    PlannedTarget::new(node, ip("198.18.0.9"), port, kind)
}

fn window(node: &str, port: u16, state: TargetState, sent: u32, ok: u32) -> WindowInput {
    WindowInput {
        target: target(node, port, ProbeKind::Tcp).into(),
        sent,
        ok,
        failures: FailureCounts {
            timeout: sent - ok,
            ..FailureCounts::default()
        },
        rtt_p50_ms: (ok > 0).then_some(0.25),
        rtt_p99_ms: (ok > 0).then_some(1.5),
        last_outcome: Some(Outcome::Open),
        last_failure: (ok < sent).then_some((Outcome::Timeout, 5 * SEC)),
        state,
        last_http_status: None,
        last_tls_error: None,
    }
}

fn matrix_abc() -> Matrix {
    let mut m = Matrix::new(Duration::from_secs(1));
    for n in ["c", "a", "b"] {
        m.add_node(n);
    }
    for src in ["a", "b", "c"] {
        let targets: Vec<PlannedTarget> = ["a", "b", "c"]
            .into_iter()
            .filter(|d| *d != src)
            .flat_map(|d| {
                [
                    target(d, 7442, ProbeKind::Tcp),
                    target(d, 0, ProbeKind::Icmp),
                ]
            })
            .collect();
        m.set_plan(src, &targets);
    }
    m
}

#[test]
fn a_copy_around_a_node_keeps_its_row_and_column_only() {
    let m = matrix_abc();
    let b = m.around("b");
    let mut got: Vec<(String, String, u16)> = b
        .iter()
        .map(|c| (c.src.to_string(), c.dst.to_string(), c.cell.port()))
        .collect();
    got.sort();
    let want: Vec<(String, String, u16)> = [
        ("a", "b", 0),
        ("a", "b", 7442),
        ("b", "a", 0),
        ("b", "a", 7442),
        ("b", "c", 0),
        ("b", "c", 7442),
        ("c", "b", 0),
        ("c", "b", 7442),
    ]
    .into_iter()
    .map(|(s, d, p)| (s.to_string(), d.to_string(), p))
    .collect();
    assert_eq!(got, want);
    assert!(
        b.cell("a", "b", 7442, ProbeKind::Tcp).is_some(),
        "looked up by key"
    );
    assert!(b.cell("a", "c", 7442, ProbeKind::Tcp).is_none());
    assert_eq!(m.around("nobody").len(), 0);
}

#[test]
fn planned_cells_start_unknown_and_take_the_agent_state() {
    let mut m = matrix_abc();
    assert_eq!(m.len(), 12);
    assert!(m.iter().all(|c| c.cell.state() == CellState::Unknown));
    let stats = m.apply(
        "a",
        vec![
            window("b", 7442, TargetState::Ok, 10, 10),
            window("c", 7442, TargetState::Degraded, 10, 7),
        ],
        100 * SEC,
    );
    assert_eq!(
        stats,
        ApplyStats {
            applied: 2,
            ignored: 0
        }
    );
    let ab = m.cell("a", "b", 7442, ProbeKind::Tcp).expect("a→b");
    assert_eq!(ab.cell.state(), CellState::Ok);
    assert_eq!(ab.cell.loss(), 0.0);
    assert_eq!(ab.cell.rtt_ms(), Some(0.25));
    assert_eq!(ab.cell.failure(), None);
    let ac = m.cell("a", "c", 7442, ProbeKind::Tcp).expect("a→c");
    assert_eq!(ac.cell.state(), CellState::Degraded);
    assert!((ac.cell.loss() - 0.3).abs() < 1e-12);
    assert_eq!(ac.cell.failure(), Some(Outcome::Timeout));
    assert_eq!(ac.cell.last_failure_at(), Some(5 * SEC));
    assert_eq!(ac.cell.updated(), 100 * SEC);
    // Sorted by (src, dst, port, kind) by name, whatever the arrival order.
    let keys: Vec<(&str, &str, u16)> = m
        .cells(None)
        .iter()
        .map(|c| (c.src, c.dst, c.cell.port()))
        .collect();
    assert_eq!(
        keys[..4],
        [
            ("a", "b", 0),
            ("a", "b", 7442),
            ("a", "c", 0),
            ("a", "c", 7442)
        ]
    );
    assert_eq!(m.cells(Some(0)).len(), 6);
    assert_eq!(m.nodes(), ["a", "b", "c"]);
}

#[test]
fn results_outside_the_plan_or_fleet_are_ignored() {
    let mut m = matrix_abc();
    let stats = m.apply(
        "a",
        vec![
            window("b", 22, TargetState::Ok, 1, 1),    // not planned
            window("zz", 7442, TargetState::Ok, 1, 1), // not a node
            window("a", 7442, TargetState::Ok, 1, 1),  // itself
            window("b", 7442, TargetState::Failing, 3, 0),
        ],
        SEC,
    );
    assert_eq!(
        stats,
        ApplyStats {
            applied: 1,
            ignored: 3
        }
    );
    assert_eq!(m.len(), 12);
    assert_eq!(m.nodes(), ["a", "b", "c"]);
    // Without a plan, results for known nodes make cells (a collector that
    // restarted before planning); a batch naming a target twice keeps the last.
    let mut fresh = Matrix::new(Duration::from_secs(1));
    fresh.add_node("b");
    let stats = fresh.apply(
        "a",
        vec![
            window("b", 22, TargetState::Failing, 2, 0),
            window("b", 22, TargetState::Ok, 2, 2),
            window("b", 7442, TargetState::Ok, 1, 1),
        ],
        SEC,
    );
    assert_eq!(stats.applied, 3);
    assert_eq!(fresh.len(), 2);
    let c = fresh.cell("a", "b", 22, ProbeKind::Tcp).expect("cell");
    assert_eq!(c.cell.state(), CellState::Ok);
}

#[test]
fn a_new_plan_keeps_figures_and_drops_cells_no_longer_planned() {
    let mut m = matrix_abc();
    m.apply("a", vec![window("b", 7442, TargetState::Ok, 4, 4)], SEC);
    let mut svc = target("b", 80, ProbeKind::Http);
    svc.service = Some("web".into());
    m.set_plan("a", &[target("b", 7442, ProbeKind::Tcp), svc]);
    let row: Vec<_> = m.cells(None).into_iter().filter(|c| c.src == "a").collect();
    assert_eq!(row.len(), 2);
    assert_eq!(row[1].cell.port(), 7442);
    assert_eq!(row[1].cell.state(), CellState::Ok, "kept with its figures");
    assert_eq!(row[1].cell.sent(), 4);
    assert_eq!(row[0].service, Some("web"));
    assert_eq!(row[0].cell.state(), CellState::Unknown);
    // A late batch of the old plan does not bring a cell back.
    let stats = m.apply("a", vec![window("c", 7442, TargetState::Ok, 1, 1)], 2 * SEC);
    assert_eq!(stats.ignored, 1);
    assert!(m.cell("a", "c", 7442, ProbeKind::Tcp).is_none());
}

#[test]
fn state_changes_apply_at_once() {
    let mut m = matrix_abc();
    m.apply("a", vec![window("b", 7442, TargetState::Ok, 10, 10)], SEC);
    let change = StateChange {
        target: target("b", 7442, ProbeKind::Tcp),
        old: TargetState::Ok,
        new: TargetState::Failing,
        outcome: Some(Outcome::Refused),
    };
    assert_eq!(m.apply_change("a", &change, 2 * SEC).applied, 1);
    let c = m.cell("a", "b", 7442, ProbeKind::Tcp).expect("cell");
    assert_eq!(c.cell.state(), CellState::Failing);
    assert_eq!(c.cell.failure(), Some(Outcome::Refused));
    assert_eq!(c.cell.updated(), 2 * SEC);
    assert_eq!(c.cell.sent(), 10, "figures wait for the next batch");
    let unplanned = StateChange {
        target: target("b", 1, ProbeKind::Tcp),
        ..change
    };
    assert_eq!(m.apply_change("a", &unplanned, 2 * SEC).ignored, 1);
    assert_eq!(m.apply_change("nobody", &unplanned, 2 * SEC).ignored, 1);
}

#[test]
fn gone_sources_and_stale_cells_turn_unknown() {
    let mut m = matrix_abc();
    m.apply(
        "a",
        vec![window("b", 7442, TargetState::Ok, 10, 9)],
        10 * SEC,
    );
    m.apply(
        "b",
        vec![window("a", 7442, TargetState::Ok, 10, 10)],
        10 * SEC,
    );
    m.source_gone("a", 0);
    let c = m.cell("a", "b", 7442, ProbeKind::Tcp).expect("cell");
    assert_eq!(c.cell.state(), CellState::Unknown);
    assert_eq!(c.cell.sent(), 10, "last figures kept");
    assert!((c.cell.loss() - 0.1).abs() < 1e-12);
    // Stale after three intervals (1 s each), not before.
    assert_eq!(m.expire(13 * SEC), 0);
    assert_eq!(m.expire(13 * SEC + 1), 1);
    let ba = m.cell("b", "a", 7442, ProbeKind::Tcp).expect("cell");
    assert_eq!(ba.cell.state(), CellState::Unknown);
    // Fresh results bring it back.
    m.apply(
        "b",
        vec![window("a", 7442, TargetState::Ok, 10, 10)],
        14 * SEC,
    );
    let ba = m.cell("b", "a", 7442, ProbeKind::Tcp).expect("cell");
    assert_eq!(ba.cell.state(), CellState::Ok);
}

#[test]
fn a_row_is_passed_over_only_while_all_its_cells_are_fresh() {
    let mut m = matrix_abc();
    // Two cells of a's row reported at 10 s and 12 s.
    m.apply(
        "a",
        vec![window("b", 7442, TargetState::Ok, 10, 10)],
        10 * SEC,
    );
    m.apply(
        "a",
        vec![window("c", 7442, TargetState::Ok, 10, 10)],
        12 * SEC,
    );
    // Nothing stale yet: the row is skipped.
    assert_eq!(m.expire(13 * SEC), 0);
    // The older one goes stale; the younger one after it.
    assert_eq!(m.expire(13 * SEC + 1), 1);
    assert_eq!(m.expire(14 * SEC), 0);
    assert_eq!(m.expire(15 * SEC + 1), 1);
    assert!(m.iter().all(|c| c.cell.state() == CellState::Unknown));
    // A replan keeps the figures and the age of the cells it keeps.
    m.apply(
        "a",
        vec![window("b", 7442, TargetState::Ok, 10, 10)],
        20 * SEC,
    );
    let targets = vec![target("b", 7442, ProbeKind::Tcp)];
    m.set_plan("a", &targets);
    assert_eq!(m.expire(23 * SEC), 0);
    assert_eq!(m.expire(23 * SEC + 1), 1);
}

#[test]
fn removed_nodes_leave_row_column_and_name() {
    let mut m = matrix_abc();
    m.node_removed("b");
    assert_eq!(m.nodes(), ["a", "c"]);
    assert_eq!(m.len(), 4);
    assert!(m.iter().all(|c| c.src != "b" && c.dst != "b"));
    // The freed id is reused by the next node, with an empty row.
    m.add_node("d");
    assert_eq!(m.nodes(), ["a", "c", "d"]);
    assert_eq!(m.len(), 4);
    assert!(m.cells(None).iter().all(|c| c.src != "d"));
    m.node_removed("nobody");
}

#[test]
fn json_shape() {
    let mut m = matrix_abc();
    m.apply(
        "a",
        vec![
            window("b", 7442, TargetState::Ok, 10, 10),
            window("c", 7442, TargetState::Failing, 4, 0),
        ],
        7,
    );
    let mut out = Vec::new();
    m.write_json(Some(7442), JsonDetail::Full, &mut out)
        .expect("write");
    let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
    assert_eq!(v["nodes"], serde_json::json!(["a", "b", "c"]));
    let cells = v["cells"].as_array().expect("cells");
    assert_eq!(cells.len(), 6);
    assert_eq!(
        cells[0],
        serde_json::json!({
            "src": "a", "dst": "b", "port": 7442, "kind": "tcp", "service": null,
            "state": "ok", "loss": 0.0, "rtt_ms": 0.25, "rtt_p99_ms": 1.5, "failure": null,
            "sent": 10, "address": "198.18.0.9", "updated": 7
        })
    );
    // The summary: the same cells with only the fields scripts need.
    let summary: serde_json::Value =
        serde_json::from_slice(&m.to_json(Some(7442), JsonDetail::Summary)).expect("valid JSON");
    assert_eq!(summary["nodes"], v["nodes"]);
    assert_eq!(
        summary["cells"][1],
        serde_json::json!({
            "src": "a", "dst": "c", "port": 7442, "kind": "tcp", "state": "failing",
            "loss": 1.0, "rtt_ms": null, "failure": "timeout"
        })
    );
    assert_eq!(summary["cells"].as_array().map(Vec::len), Some(6));
    assert_eq!(cells[1]["state"], "failing");
    assert_eq!(cells[1]["failure"], "timeout");
    assert_eq!(cells[1]["loss"], 1.0);
    assert_eq!(cells[1]["rtt_ms"], serde_json::Value::Null);
    assert_eq!(cells[2]["state"], "unknown");

    // Names that need escaping, and the empty matrix.
    let mut odd = Matrix::new(Duration::from_secs(1));
    odd.add_node("x\"y\\z");
    odd.set_plan("q", &[target("x\"y\\z", 1, ProbeKind::Tcp)]);
    let mut out = Vec::new();
    odd.write_json(None, JsonDetail::Full, &mut out)
        .expect("write");
    let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
    assert_eq!(v["cells"][0]["dst"], "x\"y\\z");
    let mut out = Vec::new();
    Matrix::new(Duration::from_secs(1))
        .write_json(None, JsonDetail::Summary, &mut out)
        .expect("write");
    assert_eq!(out, br#"{"nodes":[],"cells":[]}"#);
}

#[test]
fn large_rows_stream_in_order() {
    // Ids assigned in reverse name order force the re-sort path, and the
    // output crosses the internal buffer size many times.
    let mut m = Matrix::new(Duration::from_secs(1));
    let names: Vec<String> = (0..60).rev().map(|i| format!("n{i:02}")).collect();
    for n in &names {
        m.add_node(n);
    }
    for src in &names {
        let targets: Vec<PlannedTarget> = names
            .iter()
            .filter(|d| *d != src)
            .map(|d| target(d, 7442, ProbeKind::Tcp))
            .collect();
        m.set_plan(src, &targets);
    }
    for detail in [JsonDetail::Summary, JsonDetail::Full] {
        let mut out = Vec::new();
        m.write_json(None, detail, &mut out).expect("write");
        assert!(out.len() > 1 << 16);
        assert_eq!(m.to_json(None, detail), out);
        let mut kept = b"old".to_vec();
        m.write_json_into(None, detail, &mut kept);
        assert_eq!(kept, out);
        assert!(m.json_size_hint(None, detail) >= out.len());
        // In chunks, as an HTTP body goes out; and a receiver that goes
        // away stops the encoder.
        let mut chunks = Vec::new();
        m.json_chunks(None, detail, 4096, |c| {
            chunks.push(c);
            true
        });
        assert!(chunks.len() > 10);
        assert_eq!(chunks.concat(), out);
        let mut taken = 0;
        m.json_chunks(None, detail, 4096, |_| {
            taken += 1;
            taken < 3
        });
        assert_eq!(taken, 3);
    }
    let mut out = Vec::new();
    m.write_json(None, JsonDetail::Summary, &mut out)
        .expect("write");
    let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
    let cells = v["cells"].as_array().expect("cells");
    assert_eq!(cells.len(), 60 * 59);
    let pairs: Vec<(String, String)> = cells
        .iter()
        .map(|c| (c["src"].to_string(), c["dst"].to_string()))
        .collect();
    let mut sorted = pairs.clone();
    sorted.sort();
    assert_eq!(pairs, sorted);
}

#[test]
fn a_cell_stays_small_and_its_round_trips_keep_100_ns() {
    // 10,000 nodes hold millions of cells: the size is part of the design.
    assert_eq!(std::mem::size_of::<Cell>(), 64);
    assert_eq!(rtt_ms(rtt_code(Some(0.1234))), Some(0.1234));
    assert_eq!(rtt_ms(rtt_code(Some(12.5))), Some(12.5));
    assert_eq!(rtt_ms(rtt_code(None)), None);
    assert_eq!(rtt_ms(rtt_code(Some(f64::NAN))), None);
    assert_eq!(rtt_ms(rtt_code(Some(-1.0))), None);
    assert_eq!(count(70_000), u16::MAX);
}

#[test]
fn windows_by_id_find_their_cells_in_any_order_and_ids_outside_the_plan_are_ignored() {
    let mut m = matrix_abc();
    let by_id = |t: PlannedTarget, state: TargetState, ok: u32| WindowInput {
        target: WindowTarget::Id(t.id),
        ..window("unused", 7442, state, 10, ok)
    };
    let stats = m.apply(
        "a",
        vec![
            // Out of plan order, and one id the plan does not have.
            by_id(target("c", 0, ProbeKind::Icmp), TargetState::Ok, 10),
            by_id(target("b", 7442, ProbeKind::Tcp), TargetState::Failing, 0),
            by_id(target("z", 7442, ProbeKind::Tcp), TargetState::Ok, 10),
        ],
        SEC,
    );
    assert_eq!((stats.applied, stats.ignored), (2, 1));
    let state = |m: &Matrix, dst: &str, port: u16, kind: ProbeKind| {
        m.cell("a", dst, port, kind).map(|c| c.cell.state())
    };
    assert_eq!(
        state(&m, "b", 7442, ProbeKind::Tcp),
        Some(CellState::Failing)
    );
    assert_eq!(state(&m, "c", 0, ProbeKind::Icmp), Some(CellState::Ok));
    assert_eq!(state(&m, "b", 0, ProbeKind::Icmp), Some(CellState::Unknown));
    // A plan moving the target to a new address gives its cell the new id:
    // the old one no longer finds it.
    let moved = PlannedTarget::new("b", ip("198.18.0.99"), 7442, ProbeKind::Tcp);
    m.set_plan("a", std::slice::from_ref(&moved));
    let stats = m.apply(
        "a",
        vec![by_id(
            target("b", 7442, ProbeKind::Tcp),
            TargetState::Ok,
            10,
        )],
        2 * SEC,
    );
    assert_eq!((stats.applied, stats.ignored), (0, 1));
    let stats = m.apply("a", vec![by_id(moved, TargetState::Ok, 10)], 2 * SEC);
    assert_eq!((stats.applied, stats.ignored), (1, 0));
    assert_eq!(state(&m, "b", 7442, ProbeKind::Tcp), Some(CellState::Ok));
}

#[test]
fn owed_cells_are_written_as_one_change_each_ending_where_the_cell_is() {
    let mut m = matrix_abc();
    m.keep_changes();
    let ok = |port| window("b", port, TargetState::Ok, 5, 5);
    let failing = |port| window("b", port, TargetState::Failing, 5, 0);
    m.apply("a", vec![ok(7442)], SEC);
    m.apply("c", vec![window("a", 7442, TargetState::Ok, 5, 5)], SEC);
    let first = m.take_changes();
    assert_eq!(first.len(), 2);
    // The store has no room: both are owed.
    m.owe(first);
    assert_eq!((m.owed(), m.deferred_total()), (2, 2));
    // a → b flaps while owed; its changes join the owed cell.
    m.apply("a", vec![failing(7442)], 2 * SEC);
    m.apply("a", vec![ok(7442)], 3 * SEC);
    m.apply("a", vec![failing(7442)], 4 * SEC);
    let later = m.take_changes();
    assert_eq!(later.len(), 3);
    assert!(later.iter().all(|c| m.owes(c)));
    m.owe(later);
    assert_eq!((m.owed(), m.deferred_total()), (2, 5));
    // c → a leaves the fleet's matrix: its owed cell goes with it.
    m.node_removed("c");
    assert_eq!(m.owed(), 1);
    let mut written = m.take_owed(10);
    assert_eq!(m.owed(), 0);
    assert_eq!(written.len(), 1);
    let c = written.remove(0);
    assert_eq!(
        (c.src.as_str(), c.dst.as_str(), c.port, c.old, c.new, c.time),
        (
            "a",
            "b",
            7442,
            CellState::Unknown,
            CellState::Failing,
            4 * SEC
        ),
        "from what the store has to where the cell is, at its newest change"
    );
    // A cell owed and back where the store has it writes nothing.
    m.apply("a", vec![ok(7442)], 5 * SEC);
    let back = m.take_changes();
    m.owe(back);
    m.apply("a", vec![failing(7442)], 6 * SEC);
    let again = m.take_changes();
    assert!(m.owes(&again[0]));
    m.owe(again);
    assert!(m.take_owed(10).is_empty());
    assert!(m.take_owed(10).is_empty(), "taken once");
}

#[test]
fn the_heap_bytes_count_every_cell() {
    let small = matrix_abc();
    let cells = small.len();
    assert!(small.heap_bytes() >= cells * std::mem::size_of::<Cell>());
    let mut big = matrix_abc();
    let many: Vec<PlannedTarget> = (1..=1000).map(|p| target("b", p, ProbeKind::Tcp)).collect();
    big.set_plan("a", &many);
    assert!(big.heap_bytes() >= small.heap_bytes() + 990 * std::mem::size_of::<Cell>());
}

#[test]
fn a_plan_that_drops_a_reported_cell_notes_that_it_left() {
    let mut m = matrix_abc();
    m.keep_changes();
    m.apply("a", vec![window("b", 7442, TargetState::Ok, 5, 5)], SEC);
    assert_eq!(m.take_changes().len(), 1);
    // a's new plan keeps only c: b's TCP cell had reports, its ICMP cell none.
    m.set_plan_at("a", &[target("c", 7442, ProbeKind::Tcp)], 2 * SEC);
    let changes = m.take_changes();
    assert_eq!(changes.len(), 1, "{changes:?}");
    let c = &changes[0];
    assert_eq!(
        (c.src.as_str(), c.dst.as_str(), c.port, c.kind),
        ("a", "b", 7442, ProbeKind::Tcp)
    );
    assert!(c.gone);
    assert_eq!(
        (c.old, c.new, c.time),
        (CellState::Ok, CellState::Unknown, 2 * SEC)
    );
    // Owed, the removal is still written as one.
    m.apply("a", vec![window("c", 7442, TargetState::Ok, 5, 5)], 3 * SEC);
    let up = m.take_changes();
    m.owe(up);
    m.set_plan_at("a", &[], 4 * SEC);
    let dropped = m.take_changes();
    assert!(dropped.iter().all(|c| m.owes(c) && c.gone));
    m.owe(dropped);
    let written = m.take_owed(10);
    assert_eq!(written.len(), 1, "{written:?}");
    assert!(written[0].gone);
    assert_eq!(
        (written[0].dst.as_str(), written[0].old, written[0].time),
        ("c", CellState::Unknown, 4 * SEC)
    );
}
