//! The one owner of the host's facts. Every inspector task sends its
//! readings here; the hub keeps the current facts, gives each change a new
//! version, works out the events a change makes (a listener gone, a ruleset
//! changed and by whom, an OOM kill and the ports its victim held), publishes
//! the current facts for snapshots and sends every change to the stream.

use crate::diff::{NetChange, diff};
use crate::events::{EventKind, FirewallChange, HostEvent, ListenerKey};
use crate::facts::NetState;
use crate::facts::firewall::Ruleset;
use crate::facts::kernel::{KernelEvent, KernelEventKind};
use crate::facts::resources::Resources;
use crate::facts::sockets::{Listener, SocketSummary};
use crate::health::HealthMap;
use crate::wire::firewall::{backends, rule_count};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Everything the agent knows about its host at one version.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostFacts {
    pub net: NetState,
    /// One entry per (protocol, port, address): sockets sharing a key
    /// (SO_REUSEPORT groups, forked workers) are merged.
    pub listeners: BTreeMap<ListenerKey, Listener>,
    pub socket_summary: SocketSummary,
    /// `Err` holds why the ruleset could not be read. Shared: a ruleset of
    /// thousands of rules is never copied between the hub, the published
    /// facts and the stream.
    pub firewall: Option<Result<Arc<Ruleset>, String>>,
    pub resources: Option<(SystemTime, Resources)>,
    /// How each fact source is: what the facts above rest on.
    pub health: HealthMap,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Versioned {
    /// 0 until the first network reading arrived.
    pub version: u64,
    pub facts: HostFacts,
}

/// Who committed a ruleset change, from the nftables notification.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeAuthor {
    pub generation: Option<u32>,
    pub pid: Option<u32>,
    pub command: Option<String>,
}

/// One reading from one inspector.
#[derive(Debug)]
pub enum Reading {
    Net(NetState),
    /// The cheap, frequent reading: which listeners exist and who holds
    /// them; queue and connection figures are left as last read.
    Listeners(Vec<Listener>),
    /// The full reading: listeners with their figures, and socket counts.
    Sockets {
        listeners: Vec<Listener>,
        summary: SocketSummary,
    },
    Firewall {
        ruleset: Result<Arc<Ruleset>, String>,
        author: Option<ChangeAuthor>,
    },
    Resources(Resources),
    Kernel(KernelEvent),
    KernelLogLost(u64),
    /// The health board changed.
    Health(HealthMap),
}

/// What changed at one version, as a Delta carries it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Change {
    pub net: NetChange,
    pub listeners_upserted: Vec<Listener>,
    pub listeners_removed: Vec<ListenerKey>,
    pub socket_summary: Option<SocketSummary>,
    pub firewall: Option<Result<Arc<Ruleset>, String>>,
    /// The ruleset `firewall` replaced, when both were read: the Delta
    /// then carries only the chains that changed.
    pub firewall_base: Option<Arc<Ruleset>>,
    pub resources: Option<(SystemTime, Resources)>,
    pub health: Option<HealthMap>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.health.is_none()
            && self.net.is_empty()
            && self.listeners_upserted.is_empty()
            && self.listeners_removed.is_empty()
            && self.socket_summary.is_none()
            && self.firewall.is_none()
            && self.resources.is_none()
    }
}

/// A change and the events it made. An update with only events (a kernel
/// message) keeps the version: `base_version == version`.
#[derive(Clone, Debug)]
pub struct Update {
    pub base_version: u64,
    pub version: u64,
    pub change: Change,
    pub events: Vec<HostEvent>,
}

/// Merges sockets that share a key: processes joined, queues added.
pub fn merge_listeners(list: Vec<Listener>) -> BTreeMap<ListenerKey, Listener> {
    let mut out: BTreeMap<ListenerKey, Listener> = BTreeMap::new();
    for l in list {
        match out.get_mut(&ListenerKey::of(&l)) {
            None => {
                out.insert(ListenerKey::of(&l), l);
            }
            Some(m) => {
                m.accept_queue = m.accept_queue.saturating_add(l.accept_queue);
                m.accept_queue_limit = m.accept_queue_limit.saturating_add(l.accept_queue_limit);
                m.established = m.established.max(l.established);
                m.inode = m.inode.min(l.inode);
                for p in l.processes {
                    if !m.processes.contains(&p) {
                        m.processes.push(p);
                    }
                }
                m.processes.sort();
            }
        }
    }
    out
}

/// Listeners are the same to a person when the same processes hold the
/// same address and scope; queue and connection figures come and go.
fn same_identity(a: &Listener, b: &Listener) -> bool {
    a.scope == b.scope
        && a.v6only == b.v6only
        && a.processes == b.processes
        && a.interface_index == b.interface_index
        && a.uid == b.uid
}

/// Applies a listener reading: what appeared or went is an event (unless
/// `quiet`), and what changed goes into `change`. With `figures` the
/// reading's queue and connection counts are news too; without (the cheap
/// reading) only who listens where is, and known figures are kept.
fn apply_listeners(
    current: &mut BTreeMap<ListenerKey, Listener>,
    new: BTreeMap<ListenerKey, Listener>,
    figures: bool,
    quiet: bool,
    now: SystemTime,
    change: &mut Change,
    events: &mut Vec<HostEvent>,
) {
    let event = |kind| HostEvent { time: now, kind };
    let gone: Vec<ListenerKey> = current
        .keys()
        .filter(|k| !new.contains_key(k))
        .copied()
        .collect();
    for (k, mut l) in new {
        match current.get(&k) {
            None if !quiet => events.push(event(EventKind::ListenerAppeared(l.clone()))),
            None => {}
            Some(old) if figures && *old != l => {}
            Some(old) if !figures && !same_identity(old, &l) => l.established = old.established,
            Some(_) => continue,
        }
        change.listeners_upserted.push(l.clone());
        current.insert(k, l);
    }
    for k in gone {
        if let Some(old) = current.remove(&k) {
            events.push(event(EventKind::ListenerGone(old)));
            change.listeners_removed.push(k);
        }
    }
}

fn kernel_time(e: &KernelEvent) -> SystemTime {
    match e.unix_ms.and_then(|ms| u64::try_from(ms).ok()) {
        Some(ms) => UNIX_EPOCH + Duration::from_millis(ms),
        None => SystemTime::now(),
    }
}

#[derive(Default)]
pub struct Hub {
    current: Versioned,
    /// The first reading of each kind describes the host as found, not a
    /// change: it makes no events.
    have_net: bool,
    have_listeners: bool,
}

impl Hub {
    pub fn current(&self) -> &Versioned {
        &self.current
    }

    /// Applies one reading; returns the update to stream, if anything
    /// changed or happened.
    pub fn apply(&mut self, reading: Reading, now: SystemTime) -> Option<Update> {
        let base = self.current.version;
        let mut change = Change::default();
        let mut events = Vec::new();
        let facts = &mut self.current.facts;
        let event = |kind| HostEvent { time: now, kind };
        match reading {
            Reading::Net(state) => {
                if self.have_net && state == facts.net {
                    return None;
                }
                let net = diff(&facts.net, &state);
                if self.have_net {
                    events.extend(net.events.iter().cloned().map(event));
                }
                change.net = net;
                facts.net = state;
                self.have_net = true;
            }
            Reading::Listeners(list) => {
                let quiet = !std::mem::replace(&mut self.have_listeners, true);
                let new = merge_listeners(list);
                apply_listeners(
                    &mut facts.listeners,
                    new,
                    false,
                    quiet,
                    now,
                    &mut change,
                    &mut events,
                );
            }
            Reading::Sockets { listeners, summary } => {
                let quiet = !std::mem::replace(&mut self.have_listeners, true);
                let new = merge_listeners(listeners);
                apply_listeners(
                    &mut facts.listeners,
                    new,
                    true,
                    quiet,
                    now,
                    &mut change,
                    &mut events,
                );
                if summary != facts.socket_summary {
                    change.socket_summary = Some(summary);
                    facts.socket_summary = summary;
                }
            }
            Reading::Firewall { ruleset, author } => {
                let same = match (&facts.firewall, &ruleset) {
                    (Some(Ok(old)), Ok(new)) => old.hash == new.hash,
                    (Some(Err(old)), Err(new)) => old == new,
                    _ => false,
                };
                if same {
                    return None;
                }
                if let (Some(Ok(old)), Ok(new)) = (&facts.firewall, &ruleset) {
                    let author = author.unwrap_or_default();
                    events.push(event(EventKind::FirewallChanged(FirewallChange {
                        backends: backends(new),
                        generation: author.generation.or(new.generation),
                        pid: author.pid,
                        command: author.command,
                        old_hash: old.hash,
                        new_hash: new.hash,
                        old_rules: rule_count(old),
                        new_rules: rule_count(new),
                    })));
                }
                if let (Some(Ok(old)), Ok(_)) = (&facts.firewall, &ruleset) {
                    change.firewall_base = Some(old.clone());
                }
                change.firewall = Some(ruleset.clone());
                facts.firewall = Some(ruleset);
            }
            Reading::Resources(r) => {
                change.resources = Some((now, r.clone()));
                facts.resources = Some((now, r));
            }
            Reading::Kernel(e) => {
                let listeners = match &e.kind {
                    KernelEventKind::OomKill(o) => facts
                        .listeners
                        .iter()
                        .filter(|(_, l)| l.processes.iter().any(|p| p.pid == o.pid))
                        .map(|(k, _)| *k)
                        .collect(),
                    _ => Vec::new(),
                };
                events.push(HostEvent {
                    time: kernel_time(&e),
                    kind: EventKind::Kernel {
                        event: e,
                        listeners,
                    },
                });
            }
            Reading::KernelLogLost(n) => events.push(event(EventKind::KernelLogLost(n))),
            Reading::Health(h) => {
                if h == facts.health {
                    return None;
                }
                change.health = Some(h.clone());
                facts.health = h;
            }
        }
        let version = if change.is_empty() {
            if events.is_empty() {
                return None;
            }
            base
        } else {
            self.current.version += 1;
            self.current.version
        };
        Some(Update {
            base_version: base,
            version,
            change,
            events,
        })
    }
}

/// Readings in flight from the inspectors; they wait when it is full
/// (Block), which only slows the next reading.
pub const READINGS_QUEUE: usize = 256;

/// Runs until `shutdown` or until every inspector has stopped.
///
/// `updates` is bounded and the hub waits when it is full (Block): the
/// stream task always drains it, and a lost update would be a lost event.
pub async fn run(
    mut readings: mpsc::Receiver<Reading>,
    mut health: watch::Receiver<HealthMap>,
    published: watch::Sender<Arc<Versioned>>,
    updates: mpsc::Sender<Update>,
    shutdown: CancellationToken,
) {
    let mut hub = Hub::default();
    hub.current.facts.health = health.borrow_and_update().clone();
    let mut health_open = true;
    loop {
        let reading = tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = health.changed(), if health_open => {
                if changed.is_err() {
                    health_open = false;
                    continue;
                }
                Reading::Health(health.borrow_and_update().clone())
            }
            r = readings.recv() => match r {
                Some(r) => r,
                None => return,
            },
        };
        let Some(update) = hub.apply(reading, SystemTime::now()) else {
            continue;
        };
        // Snapshots wait for the first network reading: a node without
        // interfaces is not worth reporting.
        if !update.change.is_empty() && hub.have_net {
            published.send_replace(Arc::new(hub.current().clone()));
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = updates.send(update) => if r.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::kernel::OomKill;
    use crate::facts::sockets::{BindScope, Process, Protocol};
    use crate::facts::{Interface, OperState};

    fn net(up: bool) -> NetState {
        NetState {
            interfaces: vec![Interface {
                index: 2,
                name: "eth0".into(),
                mac: None,
                mtu: 1500,
                admin_up: up,
                oper_state: if up { OperState::Up } else { OperState::Down },
                kind: None,
                addresses: vec![],
            }],
            routes: vec![],
        }
    }

    fn listener(port: u16, pid: u32, queue: u32) -> Listener {
        Listener {
            protocol: Protocol::Tcp,
            address: "0.0.0.0".parse().expect("ip"),
            port,
            scope: BindScope::Any,
            v6only: None,
            inode: u64::from(port) * 10 + u64::from(pid),
            uid: 0,
            accept_queue: queue,
            accept_queue_limit: 128,
            established: 0,
            processes: vec![Process {
                pid,
                name: "srv".into(),
                unit: Some("srv.service".into()),
                cgroup: None,
            }],
            interface_index: None,
        }
    }

    fn kinds(u: &Update) -> Vec<&'static str> {
        u.events
            .iter()
            .map(|e| match &e.kind {
                EventKind::ListenerAppeared(_) => "appeared",
                EventKind::ListenerGone(_) => "gone",
                EventKind::FirewallChanged(_) => "firewall",
                EventKind::Kernel { .. } => "kernel",
                EventKind::LinkChanged { .. } => "link",
                _ => "other",
            })
            .collect()
    }

    fn now() -> SystemTime {
        SystemTime::now()
    }

    #[test]
    fn first_readings_describe_the_host_without_events() {
        let mut hub = Hub::default();
        let u = hub.apply(Reading::Net(net(true)), now()).expect("first");
        assert!(u.events.is_empty());
        assert_eq!((u.base_version, u.version), (0, 1));
        let u = hub
            .apply(Reading::Listeners(vec![listener(80, 7, 0)]), now())
            .expect("listeners");
        assert!(u.events.is_empty(), "{:?}", u.events);
        assert_eq!(u.change.listeners_upserted.len(), 1);
        // The same reading again changes nothing.
        assert!(
            hub.apply(Reading::Listeners(vec![listener(80, 7, 0)]), now())
                .is_none()
        );
        // A link going down is a change and an event.
        let u = hub.apply(Reading::Net(net(false)), now()).expect("down");
        assert_eq!(kinds(&u), ["link"]);
        assert_eq!(u.version, u.base_version + 1);
    }

    #[test]
    fn listeners_appear_and_go_and_figures_wait_for_the_full_reading() {
        let mut hub = Hub::default();
        hub.apply(Reading::Listeners(vec![listener(80, 7, 0)]), now());
        let u = hub
            .apply(
                Reading::Listeners(vec![listener(80, 7, 0), listener(443, 7, 0)]),
                now(),
            )
            .expect("new listener");
        assert_eq!(kinds(&u), ["appeared"]);
        // Queue fill changing in the cheap reading is not a change...
        assert!(
            hub.apply(
                Reading::Listeners(vec![listener(80, 7, 5), listener(443, 7, 0)]),
                now()
            )
            .is_none()
        );
        // ...but the full reading carries it.
        let u = hub
            .apply(
                Reading::Sockets {
                    listeners: vec![listener(80, 7, 5), listener(443, 7, 0)],
                    summary: SocketSummary::default(),
                },
                now(),
            )
            .expect("figures");
        assert!(u.events.is_empty());
        assert_eq!(u.change.listeners_upserted.len(), 1);
        assert_eq!(u.change.listeners_upserted[0].accept_queue, 5);
        let u = hub
            .apply(Reading::Listeners(vec![listener(443, 7, 0)]), now())
            .expect("gone");
        assert_eq!(kinds(&u), ["gone"]);
        assert_eq!(u.change.listeners_removed.len(), 1);
        assert_eq!(u.change.listeners_removed[0].port, 80);
    }

    #[test]
    fn sockets_sharing_a_key_are_one_listener() {
        let merged = merge_listeners(vec![listener(80, 7, 1), listener(80, 8, 2)]);
        assert_eq!(merged.len(), 1);
        let l = merged.values().next().expect("one");
        assert_eq!(l.accept_queue, 3);
        assert_eq!(
            l.processes.iter().map(|p| p.pid).collect::<Vec<_>>(),
            [7, 8]
        );
    }

    #[test]
    fn an_oom_kill_names_the_listeners_its_victim_held() {
        let mut hub = Hub::default();
        hub.apply(
            Reading::Listeners(vec![listener(80, 7, 0), listener(9000, 8, 0)]),
            now(),
        );
        let kill = KernelEvent {
            seq: 1,
            monotonic_us: 5,
            unix_ms: Some(1_700_000_000_000),
            kind: KernelEventKind::OomKill(OomKill {
                pid: 7,
                process: "srv".into(),
                ..OomKill::default()
            }),
        };
        let u = hub.apply(Reading::Kernel(kill), now()).expect("event");
        assert_eq!(
            u.version, u.base_version,
            "an event alone keeps the version"
        );
        assert!(u.change.is_empty());
        match &u.events[0].kind {
            EventKind::Kernel { listeners, .. } => {
                assert_eq!(listeners.iter().map(|k| k.port).collect::<Vec<_>>(), [80]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            u.events[0].time,
            UNIX_EPOCH + Duration::from_millis(1_700_000_000_000)
        );
    }

    #[test]
    fn a_ruleset_change_is_an_event_with_its_author() {
        let mut hub = Hub::default();
        let rs = |hash| Ruleset {
            hash,
            ..Ruleset::default()
        };
        let u = hub
            .apply(
                Reading::Firewall {
                    ruleset: Ok(Arc::new(rs(1))),
                    author: None,
                },
                now(),
            )
            .expect("first");
        assert!(u.events.is_empty());
        assert!(
            hub.apply(
                Reading::Firewall {
                    ruleset: Ok(Arc::new(rs(1))),
                    author: None
                },
                now()
            )
            .is_none(),
            "same hash, no change"
        );
        let u = hub
            .apply(
                Reading::Firewall {
                    ruleset: Ok(Arc::new(rs(2))),
                    author: Some(ChangeAuthor {
                        generation: Some(9),
                        pid: Some(42),
                        command: Some("nft".into()),
                    }),
                },
                now(),
            )
            .expect("changed");
        match &u.events[0].kind {
            EventKind::FirewallChanged(f) => {
                assert_eq!((f.pid, f.command.as_deref()), (Some(42), Some("nft")));
                assert_eq!((f.old_hash, f.new_hash, f.generation), (1, 2, Some(9)));
            }
            other => panic!("{other:?}"),
        }
        assert!(u.change.firewall.is_some());
    }
}
