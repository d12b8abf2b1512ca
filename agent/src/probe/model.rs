//! The prober's own model of a plan and its results. Each type maps 1:1 onto
//! a protocol message (`ProbePlan`, `ProbeTarget`, `TargetWindow`,
//! `ProbeResults`, `ProbeStateChanged`); the conversion lives in `wire`.

use super::tls::{TlsFailure, TlsTarget};
use std::collections::HashSet;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

/// Used when a plan leaves `max_probes_per_second` at 0: a plan that names no
/// bound still gets one, so a runaway plan cannot flood the network.
pub const DEFAULT_MAX_PROBES_PER_SECOND: u32 = 1_000;
/// Used when a plan leaves `window` at 0.
pub const DEFAULT_WINDOW: usize = 10;
/// Bounds on what a plan may ask for; outside them the value is clamped.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);
pub const MAX_WINDOW: usize = 1_000;
/// The HTTP status an HTTP target expects when its plan names none.
pub const DEFAULT_EXPECT_STATUS: u16 = 200;
/// Longest `http_path` accepted; it goes into the request line verbatim.
const MAX_HTTP_PATH: usize = 1_024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Tcp,
    Icmp,
    Http,
    /// HTTP over TLS, the certificate checked as `Target::tls` says.
    Https,
    /// A datagram to a declared UDP service (`Target::udp`).
    Udp,
}

/// How one probe ended (`ProbeOutcome` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Connected (TCP), echo reply (ICMP), expected status (HTTP).
    Open,
    /// RST to the SYN (or ICMP port unreachable): nothing listens, or a REJECT.
    Refused,
    /// No answer in time.
    Timeout,
    /// ICMP host/admin unreachable came back, or the local firewall refused.
    Unreachable,
    /// The source has no route to the destination (ENETUNREACH).
    NoRoute,
    /// The connection was reset after it opened.
    Reset,
    /// The target's name did not resolve (targets are addresses today).
    DnsError,
    /// HTTP answered with another status than the expected one.
    HttpStatus,
    /// The TLS handshake failed (`ProbeResult::tls` says why).
    TlsError,
}

impl Outcome {
    pub fn is_ok(self) -> bool {
        self == Outcome::Open
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetState {
    Ok,
    /// Some probes in the window failed or were slow.
    Degraded,
    /// The most recent probes failed.
    Failing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Stable within a plan version; results and state changes name it.
    pub id: u64,
    pub node: String,
    pub address: IpAddr,
    /// 0 for ICMP.
    pub port: u16,
    pub kind: ProbeKind,
    pub service: Option<String>,
    pub http_path: Option<String>,
    pub expect_status: Option<u16>,
    /// HTTPS targets: how the certificate is checked.
    pub tls: Option<TlsTarget>,
    /// UDP targets: what is sent, and whether the service answers.
    pub udp: Option<UdpTarget>,
}

/// A UDP service probe: the datagram, and whether silence is a failure.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UdpTarget {
    pub payload: Vec<u8>,
    pub expect_reply: bool,
}

/// Largest UDP probe datagram.
pub const MAX_UDP_PAYLOAD: usize = 512;

/// What identifies a target across plan versions: a target that keeps it
/// keeps its window.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetKey {
    pub node: String,
    pub address: IpAddr,
    pub port: u16,
    pub kind: ProbeKind,
}

impl Target {
    pub fn key(&self) -> TargetKey {
        TargetKey {
            node: self.node.clone(),
            address: self.address,
            port: self.port,
            kind: self.kind,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub version: u64,
    pub interval: Duration,
    pub timeout: Duration,
    /// Upper bound on probes started per second; 0 means the default.
    pub max_probes_per_second: u32,
    /// Results kept per target; 0 means the default.
    pub window: usize,
    pub targets: Vec<Target>,
    /// Every fleet member's addresses: the only ones a probe may go to.
    pub fleet_addresses: HashSet<IpAddr>,
    /// Names the fleet's clients use for other members, looked up every
    /// interval through this host's resolver (nothing is probed by name).
    pub names: Vec<FleetName>,
    /// The collector finds results by target id: windows carry only it.
    pub results_by_id: bool,
}

/// Most names a plan may ask this agent to look up.
pub const MAX_NAMES: usize = 256;

/// A name the collector's config gives a fleet member (`FleetName`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FleetName {
    pub name: String,
    pub node: String,
}

/// What a name resolved to on this host (`NameResolution`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameResolution {
    pub name: FleetName,
    /// In the resolver's order, without repeats.
    pub addresses: Vec<IpAddr>,
    /// Why the lookup failed (or gave nothing).
    pub error: Option<String>,
    pub at: SystemTime,
}

pub use reachmap_proto::valid_host_name;

/// One target's rolling window (`TargetWindow` on the wire).
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSummary {
    pub target: Target,
    pub sent: u32,
    pub ok: u32,
    pub refused: u32,
    pub timeout: u32,
    pub unreachable: u32,
    pub no_route: u32,
    pub reset: u32,
    pub dns_error: u32,
    pub http_status: u32,
    pub tls_error: u32,
    /// Over the successful probes in the window.
    pub rtt_p50_ms: Option<f64>,
    pub rtt_p99_ms: Option<f64>,
    pub last_outcome: Outcome,
    /// The most recent failure in the window, and when it happened.
    pub last_failure: Option<(Outcome, SystemTime)>,
    pub last_http_status: Option<u16>,
    /// The last TLS failure in the window (HTTPS probes).
    pub last_tls_error: Option<TlsFailure>,
    pub state: TargetState,
    pub last_probe: SystemTime,
}

/// A target whose state changed (`ProbeStateChanged` on the wire). `old` is
/// `None` for a target's first result (`TARGET_STATE_UNSPECIFIED`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    pub target: Target,
    pub old: Option<TargetState>,
    pub new: TargetState,
    /// The outcome of the probe that changed it.
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProberOutput {
    /// Every target's window, once per interval.
    Batch {
        plan_version: u64,
        /// The plan's `results_by_id`.
        by_id: bool,
        windows: Vec<WindowSummary>,
        /// The latest lookup of each of the plan's names.
        names: Vec<NameResolution>,
    },
    /// Sent as soon as the probe that changed the state ends.
    Changed(StateChange),
}

/// One probe's result.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeResult {
    pub outcome: Outcome,
    /// Round-trip time: handshake (TCP), echo (ICMP), status line (HTTP).
    /// Set for every probe that got an answer, also a refusal.
    pub rtt: Option<Duration>,
    /// The status an HTTP probe got, whatever it was.
    pub http_status: Option<u16>,
    /// Why the handshake failed, for `Outcome::TlsError`.
    pub tls: Option<TlsFailure>,
}

impl ProbeResult {
    pub fn new(outcome: Outcome, rtt: Option<Duration>) -> Self {
        ProbeResult {
            outcome,
            rtt,
            http_status: None,
            tls: None,
        }
    }

    pub fn tls_failure(failure: TlsFailure) -> Self {
        ProbeResult {
            tls: Some(failure),
            ..ProbeResult::new(Outcome::TlsError, None)
        }
    }
}

/// Keeps only the targets a probe may go to: a fleet member's address and a
/// port that makes sense for the kind. The others come back with the reason
/// they were refused. Bounds (interval, timeout, rate, window) are filled in
/// or clamped, so the prober can trust what it gets.
pub fn check_plan(plan: Plan) -> (Plan, Vec<(Target, String)>) {
    let Plan {
        version,
        interval,
        timeout,
        max_probes_per_second,
        window,
        targets,
        fleet_addresses,
        names,
        results_by_id,
    } = plan;
    let mut kept = Vec::with_capacity(targets.len());
    let mut refused = Vec::new();
    let mut seen = HashSet::new();
    for target in targets {
        match refusal(&target, &fleet_addresses) {
            Some(reason) => refused.push((target, reason)),
            None if !seen.insert(target.key()) => {
                let reason = format!(
                    "duplicate target {} {}:{} {:?}",
                    target.node, target.address, target.port, target.kind
                );
                refused.push((target, reason));
            }
            None => kept.push(target),
        }
    }
    let interval = interval.max(MIN_INTERVAL);
    let plan = Plan {
        version,
        interval,
        timeout: timeout.clamp(MIN_TIMEOUT, interval),
        max_probes_per_second: match max_probes_per_second {
            0 => DEFAULT_MAX_PROBES_PER_SECOND,
            n => n,
        },
        window: match window {
            0 => DEFAULT_WINDOW,
            n => n.min(MAX_WINDOW),
        },
        targets: kept,
        fleet_addresses,
        names: check_names(names),
        results_by_id,
    };
    (plan, refused)
}

/// Valid host names only (the wire reports the others), each once, at most
/// `MAX_NAMES`.
fn check_names(names: Vec<FleetName>) -> Vec<FleetName> {
    let mut seen = HashSet::new();
    names
        .into_iter()
        .filter(|n| valid_host_name(&n.name) && seen.insert(n.clone()))
        .take(MAX_NAMES)
        .collect()
}

fn refusal(target: &Target, fleet: &HashSet<IpAddr>) -> Option<String> {
    if !fleet.contains(&target.address) {
        return Some(format!(
            "address {} is not a fleet member's",
            target.address
        ));
    }
    if target.address.is_unspecified() || target.address.is_multicast() {
        return Some(format!("address {} cannot be probed", target.address));
    }
    match target.kind {
        ProbeKind::Tcp | ProbeKind::Http | ProbeKind::Https | ProbeKind::Udp
            if target.port == 0 =>
        {
            return Some(format!("port 0 for a {:?} target", target.kind));
        }
        ProbeKind::Icmp if target.port != 0 => {
            return Some(format!("port {} for an ICMP target", target.port));
        }
        _ => {}
    }
    if target.kind == ProbeKind::Https && target.tls.is_none() {
        return Some("an HTTPS target without its TLS settings".into());
    }
    if target.kind == ProbeKind::Udp {
        match &target.udp {
            None => return Some("a UDP target without its datagram".into()),
            Some(u) if u.payload.is_empty() || u.payload.len() > MAX_UDP_PAYLOAD => {
                return Some(format!(
                    "a UDP datagram of {} bytes (1-{MAX_UDP_PAYLOAD})",
                    u.payload.len()
                ));
            }
            Some(_) => {}
        }
    }
    if matches!(target.kind, ProbeKind::Http | ProbeKind::Https) {
        let path = target.http_path.as_deref().unwrap_or("/");
        if !valid_http_path(path) {
            return Some(format!("http path {path:?} is not an absolute path"));
        }
        if let Some(status) = target.expect_status
            && !(100..=599).contains(&status)
        {
            return Some(format!("expected HTTP status {status} is out of range"));
        }
    }
    None
}

/// A path goes into the request line as is: absolute, visible ASCII only, so
/// a plan cannot smuggle headers or a second request.
fn valid_http_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() <= MAX_HTTP_PATH
        && path.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(id: u64, addr: &str, port: u16, kind: ProbeKind) -> Target {
        Target {
            id,
            node: format!("n{id}"),
            address: addr.parse().expect("address"),
            port,
            kind,
            service: None,
            http_path: None,
            expect_status: None,
            tls: None,
            udp: None,
        }
    }

    fn plan(targets: Vec<Target>) -> Plan {
        Plan {
            version: 1,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            max_probes_per_second: 0,
            window: 0,
            targets,
            fleet_addresses: ["198.18.0.1", "198.18.0.2", "::1"]
                .iter()
                .map(|a| a.parse().expect("address"))
                .collect(),
            results_by_id: false,
            names: Vec::new(),
        }
    }

    #[test]
    fn names_are_host_names_each_once() {
        for good in [
            "db",
            "db.fleet.test",
            "db.fleet.test.",
            "a-b_c.x1",
            &"a.".repeat(126),
        ] {
            assert!(valid_host_name(good), "{good:?}");
        }
        for bad in [
            "",
            ".",
            "db..test",
            "-db.test",
            "db-.test",
            "db test",
            "db/test",
            "db\n.test",
            &"a".repeat(64),
            &format!("{}a", "a.".repeat(127)),
        ] {
            assert!(!valid_host_name(bad), "{bad:?}");
        }
        let name = |n: &str, node: &str| FleetName {
            name: n.into(),
            node: node.into(),
        };
        let mut p = plan(Vec::new());
        p.names = vec![
            name("db.test", "n1"),
            name("bad name", "n1"),
            name("db.test", "n1"),
            name("db.test", "n2"),
        ];
        p.names
            .extend((0..MAX_NAMES).map(|i| name(&format!("h{i}"), "n3")));
        let (checked, _) = check_plan(p);
        assert_eq!(checked.names.len(), MAX_NAMES);
        assert_eq!(
            checked.names[..2],
            [name("db.test", "n1"), name("db.test", "n2")]
        );
    }

    #[test]
    fn refuses_addresses_outside_the_fleet() {
        let (checked, refused) = check_plan(plan(vec![
            target(1, "198.18.0.1", 7442, ProbeKind::Tcp),
            target(2, "8.8.8.8", 53, ProbeKind::Tcp),
            target(3, "::1", 0, ProbeKind::Icmp),
        ]));
        let ids: Vec<u64> = checked.targets.iter().map(|t| t.id).collect();
        assert_eq!(ids, vec![1, 3]);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].0.id, 2);
        assert!(
            refused[0].1.contains("not a fleet member"),
            "{}",
            refused[0].1
        );
    }

    #[test]
    fn refuses_ports_that_do_not_fit_the_kind() {
        let mut http = target(4, "198.18.0.2", 80, ProbeKind::Http);
        http.http_path = Some("/x HTTP/1.1\r\nHost: evil".into());
        let (checked, refused) = check_plan(plan(vec![
            target(1, "198.18.0.1", 0, ProbeKind::Tcp),
            target(2, "198.18.0.1", 0, ProbeKind::Http),
            target(3, "198.18.0.1", 22, ProbeKind::Icmp),
            http,
            target(5, "198.18.0.2", 80, ProbeKind::Http),
        ]));
        assert_eq!(checked.targets.len(), 1);
        assert_eq!(checked.targets[0].id, 5);
        assert_eq!(refused.len(), 4);
    }

    #[test]
    fn refuses_duplicates_and_fills_in_bounds() {
        let (checked, refused) = check_plan(plan(vec![
            target(1, "198.18.0.1", 7442, ProbeKind::Tcp),
            target(1, "198.18.0.1", 7442, ProbeKind::Tcp),
        ]));
        assert_eq!(checked.targets.len(), 1);
        assert_eq!(refused.len(), 1);
        assert_eq!(checked.window, DEFAULT_WINDOW);
        assert_eq!(checked.max_probes_per_second, DEFAULT_MAX_PROBES_PER_SECOND);
        // The timeout never outlasts the interval.
        assert_eq!(checked.timeout, Duration::from_secs(1));
    }
}
