//! The simulated figures, the /proc and HTTP parsers and the matrix check.

use super::*;

fn target(node: &str, kind: pb::ProbeKind) -> pb::ProbeTarget {
    pb::ProbeTarget {
        id: 7,
        node: node.into(),
        address: "198.19.0.9".into(),
        port: if kind == pb::ProbeKind::Tcp { 7442 } else { 0 },
        kind: kind as i32,
        ..Default::default()
    }
}

#[test]
fn windows_pass_the_collectors_validation_and_carry_their_class() {
    let mut seen = [0usize; 3];
    for i in 0..2000 {
        for kind in [pb::ProbeKind::Tcp, pb::ProbeKind::Icmp] {
            let t = target(&format!("sim-{i:04}"), kind);
            let w = sim::window("sim-9999", &t, 10, 1_700_000_000_000_000_000, 3);
            let v = reachmap_collector::validate::probe::window("w", &w)
                .expect("the collector accepts every simulated window");
            let (class, _) = sim::class("sim-9999", &t.node, t.port, sim::kind_name(t.kind));
            let i = match class {
                sim::Class::Ok => 0,
                sim::Class::Degraded => 1,
                sim::Class::Failing => 2,
            };
            seen[i] += 1;
            assert_eq!(v.sent, 10);
            assert_eq!(
                v.last_failure.map(|(o, _)| o.as_str()),
                sim::failure(class, sim::kind_name(t.kind)).map(|o| match o {
                    pb::ProbeOutcome::Refused => "refused",
                    _ => "timeout",
                })
            );
        }
    }
    // 97 / 2 / 1 percent, roughly.
    assert!(seen[0] > 3800 && seen[1] > 40 && seen[2] > 15, "{seen:?}");
}

#[test]
fn proc_stat_fields() {
    let stat =
        "1234 (reachmap (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 100 0 0";
    assert_eq!(procstat::parse_stat(stat), Some(325));
    assert_eq!(procstat::parse_stat("garbage"), None);
    let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nThreads:\t3\n";
    assert_eq!(procstat::status_field(status, "VmRSS"), Some(1024));
    assert_eq!(procstat::status_field(status, "VmHWM"), Some(2048));
    assert_eq!(procstat::status_field(status, "Threads"), Some(3));
    assert_eq!(procstat::status_field(status, "VmSwap"), None);
}

#[test]
fn http_responses() {
    let mut b = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello".to_vec();
    assert_eq!(http::parse(&mut b).expect("ok"), (200, 38, 5));
    let mut b = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\n\r\n"
        .to_vec();
    let (status, start, len) = http::parse(&mut b).expect("chunked");
    assert_eq!((status, len), (200, 5));
    assert_eq!(&b[start..], b"hello");
    let mut short = b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nhello".to_vec();
    assert!(http::parse(&mut short).is_err());
    assert!(http::parse(&mut b"HTTP/1.1 200".to_vec()).is_err());
}

#[test]
fn percentiles_by_nearest_rank() {
    let v: Vec<u32> = (1..=100).collect();
    assert_eq!(sim::percentile(&v, 50.0), Some(50));
    assert_eq!(sim::percentile(&v, 99.0), Some(99));
    assert_eq!(sim::percentile(&v, 100.0), Some(100));
    assert_eq!(sim::percentile(&[5u32], 99.0), Some(5));
    assert_eq!(sim::percentile::<u32>(&[], 50.0), None);
}

#[test]
fn matrix_check_counts_states_and_batches() {
    let (class, _) = sim::class("sim-0000", "sim-0001", 7442, "tcp");
    let loss = match class {
        sim::Class::Ok => 0.0,
        sim::Class::Degraded => 0.2,
        sim::Class::Failing => 1.0,
    };
    let failure = match sim::failure(class, "tcp") {
        None => "null".to_string(),
        Some(pb::ProbeOutcome::Refused) => "\"refused\"".into(),
        Some(_) => "\"timeout\"".into(),
    };
    let body = format!(
        r#"{{"nodes":["sim-0000","sim-0001"],"cells":[
        {{"src":"sim-0000","dst":"sim-0001","port":7442,"kind":"tcp","service":null,"state":"{}","loss":{loss},"rtt_ms":0.5,"rtt_p99_ms":0.9,"failure":{failure},"sent":10,"address":"198.19.0.2","updated":1500}},
        {{"src":"sim-0001","dst":"sim-0000","port":7442,"kind":"tcp","service":null,"state":"unknown","loss":0,"rtt_ms":null,"rtt_p99_ms":null,"failure":null,"sent":0,"address":"198.19.0.1","updated":0}}]}}"#,
        class.state()
    );
    let r = check::check(body.as_bytes(), |src| match src {
        "sim-0000" => Some(vec![1000, 1400, 2000]),
        "sim-0001" => Some(vec![]),
        _ => None,
    })
    .expect("parses");
    assert_eq!((r.nodes, r.cells, r.tcp_cells), (2, 2, 2));
    assert_eq!(r.wrong, 0, "{:?}", r.first_wrong);
    assert_eq!((r.unknown, r.never_reported), (1, 1));
    // Updated at 1500: the batch sent at 1400, one before the latest.
    assert_eq!((r.latest, r.previous, r.older), (0, 1, 1));
    assert_eq!(r.lag_ms, vec![100.0 / 1e6]);
    assert_eq!((r.min_row, r.max_row), (1, 1));
}
