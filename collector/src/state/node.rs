//! One node as the state task keeps it: its hello, stream, facts, recent
//! events and name lookups, and what of its facts was last stored.

use super::{EVENTS_PER_NODE, Outbound, RESOURCES_EVERY, SessionId};
use crate::clock::Sample;
use crate::model::{Hello, NodeFacts};
use crate::probe::ResolvedName;
use crate::store::{FactWrite, NodeRecord};
use reachmap_proto::v1 as pb;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// An event as the collector keeps it.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    pub received: SystemTime,
    pub event: pb::Event,
}

pub(super) struct Stream {
    pub(super) session: SessionId,
    pub(super) cancel: CancellationToken,
    pub(super) outbound: Outbound,
}

impl Stream {
    /// A stream whose other end is gone: what a node rebuilt from the store,
    /// or copied out of the state task, has to say it was connected.
    /// Every such stream shares one closed channel and one token (nothing
    /// waits on it): a query's copy of the fleet takes thousands of them.
    pub(super) fn gone(session: SessionId) -> Stream {
        static GONE: std::sync::LazyLock<(CancellationToken, Outbound)> =
            std::sync::LazyLock::new(|| {
                let (outbound, _) = mpsc::channel(1);
                (CancellationToken::new(), outbound)
            });
        Stream {
            session,
            cancel: GONE.0.clone(),
            outbound: GONE.1.clone(),
        }
    }
}

/// Everything known about one node.
pub struct Node {
    pub name: String,
    pub hello: Option<Hello>,
    pub machine_id: String,
    pub boot_id: String,
    pub version: String,
    pub labels: BTreeMap<String, String>,
    /// The agent's configuration from its latest Hello (JSON, no secrets).
    pub agent_config: Option<String>,
    pub(super) stream: Option<Stream>,
    /// When the current stream started, or the last one ended.
    pub since: SystemTime,
    pub last_seen: SystemTime,
    /// Shared with the copies `View` takes; a change to a shared one
    /// copies it first (`Arc::make_mut`).
    pub facts: Option<Arc<NodeFacts>>,
    /// Addresses from the registry, until the first snapshot arrives.
    pub remembered_addresses: Vec<String>,
    /// Shared with the copies `View` takes, like `facts`.
    pub events: Arc<VecDeque<StoredEvent>>,
    /// The content hash of each part of the facts last stored.
    pub(super) stored_parts: std::collections::HashMap<&'static str, [u8; 32]>,
    /// When a resources sample was last stored.
    pub(super) resources_stored: Option<SystemTime>,
    pub clock: Option<Sample>,
    pub dropped_events_total: u64,
    /// Events stored since the collector started (the ring keeps the last
    /// `EVENTS_PER_NODE`).
    pub events_total: u64,
    /// What the fleet's names resolve to on this node, from its latest
    /// probe results.
    pub names: Vec<ResolvedName>,
}

impl Node {
    pub(super) fn new(name: &str, now: SystemTime) -> Node {
        Node {
            name: name.to_string(),
            hello: None,
            machine_id: String::new(),
            boot_id: String::new(),
            version: String::new(),
            labels: BTreeMap::new(),
            agent_config: None,
            stream: None,
            since: now,
            last_seen: now,
            facts: None,
            remembered_addresses: Vec::new(),
            events: Arc::default(),
            stored_parts: Default::default(),
            resources_stored: None,
            clock: None,
            dropped_events_total: 0,
            events_total: 0,
            names: Vec::new(),
        }
    }

    pub fn connected(&self) -> bool {
        self.stream.is_some()
    }

    /// A node as the correlator's tests need it: `connected` gives it a
    /// stream whose other end is gone.
    #[cfg(test)]
    pub(crate) fn for_test(name: &str, connected: bool, facts: Option<NodeFacts>) -> Node {
        let mut n = Node::new(name, SystemTime::now());
        n.facts = facts.map(Arc::new);
        if connected {
            n.stream = Some(Stream::gone(1));
        }
        n
    }

    /// A node whose agent streams into the returned receiver, known by the
    /// address `address`.
    #[cfg(test)]
    pub(crate) fn streaming_for_test(
        name: &str,
        address: &str,
    ) -> (
        Node,
        mpsc::Receiver<Result<pb::CollectorMessage, tonic::Status>>,
    ) {
        let mut n = Node::new(name, SystemTime::now());
        n.remembered_addresses = vec![address.to_string()];
        let (outbound, rx) = mpsc::channel(16);
        n.stream = Some(Stream {
            session: 1,
            cancel: CancellationToken::new(),
            outbound,
        });
        (n, rx)
    }

    /// The facts, for a test to change; a node without facts is a test bug.
    #[cfg(test)]
    pub(crate) fn facts_mut(&mut self) -> &mut NodeFacts {
        Arc::make_mut(self.facts.as_mut().expect("the node has facts"))
    }

    #[cfg(test)]
    pub(crate) fn push_for_test(&mut self, time: SystemTime, kind: pb::event::Kind) {
        self.record(time, kind);
    }

    /// A node as it was at a past moment, rebuilt from the store: its facts,
    /// the events before that moment, its name lookups, and whether its
    /// agent was connected then.
    pub(crate) fn historic(
        name: &str,
        connected: bool,
        facts: Option<NodeFacts>,
        events: Vec<StoredEvent>,
        names: Vec<ResolvedName>,
        at: SystemTime,
    ) -> Node {
        let mut n = Node::new(name, at);
        n.facts = facts.map(Arc::new);
        n.names = names;
        n.events = Arc::new(events.into());
        if connected {
            n.stream = Some(Stream::gone(0));
        }
        n
    }

    pub fn addresses(&self) -> Vec<String> {
        match &self.facts {
            Some(f) => f.addresses().map(|a| a.ip.to_string()).collect(),
            None => self.remembered_addresses.clone(),
        }
    }

    /// An event the collector itself makes (a stream began or ended, a
    /// reboot); returned for the store.
    pub(super) fn record(&mut self, now: SystemTime, kind: pb::event::Kind) -> pb::Event {
        let event = pb::Event {
            time_unix_nanos: unix_nanos(now),
            id: 0,
            received_unix_nanos: unix_nanos(now),
            instance_id: 0,
            kind: Some(kind),
        };
        self.push_event(StoredEvent {
            received: now,
            event: event.clone(),
        });
        event
    }

    /// `data` as the store's new `part` of this node, unless it is what was
    /// stored last.
    pub(super) fn if_changed(
        &mut self,
        part: &'static str,
        encoded: crate::store::facts::Encoded,
        now: SystemTime,
    ) -> Option<FactWrite> {
        let hash = encoded.hash;
        if self.stored_parts.insert(part, hash) == Some(hash) {
            return None;
        }
        Some(FactWrite {
            node: self.name.clone(),
            part,
            time: unix_nanos(now),
            hash,
            data: encoded.data,
            firewall: encoded.firewall,
        })
    }

    /// The parts of the facts that differ from what was last stored,
    /// encoded, for the store.
    pub(super) fn changed_parts(
        &mut self,
        parts: &[&'static str],
        now: SystemTime,
    ) -> Vec<FactWrite> {
        // Resources change at every sample; one a minute is enough to
        // explain the past, and keeps a node's day of them small.
        let resources_due = self
            .resources_stored
            .is_none_or(|t| now.duration_since(t).unwrap_or_default() >= RESOURCES_EVERY);
        let Some(f) = &self.facts else {
            return Vec::new();
        };
        let encoded: Vec<(&'static str, crate::store::facts::Encoded)> = parts
            .iter()
            .filter(|p| **p != crate::store::facts::RESOURCES || resources_due)
            .map(|p| (*p, crate::store::facts::encode_part(f, p)))
            .collect();
        let mut out = Vec::new();
        for (part, data) in encoded {
            if let Some(w) = self.if_changed(part, data, now) {
                if part == crate::store::facts::RESOURCES {
                    self.resources_stored = Some(now);
                }
                out.push(w);
            }
        }
        out
    }

    pub(super) fn push_event(&mut self, e: StoredEvent) {
        self.events_total += 1;
        let events = Arc::make_mut(&mut self.events);
        if events.len() == EVENTS_PER_NODE {
            events.pop_front();
        }
        events.push_back(e);
    }

    pub(super) fn to_record(&self) -> NodeRecord {
        NodeRecord {
            name: self.name.clone(),
            machine_id: self.machine_id.clone(),
            boot_id: self.boot_id.clone(),
            version: self.version.clone(),
            last_seen_unix_nanos: unix_nanos(self.last_seen),
            addresses: self.addresses(),
            labels: self.labels.clone(),
            collector: String::new(),
            connected: self.connected(),
            probe: super::probing::probe_input(self),
        }
    }
}

pub fn unix_nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(super) fn from_unix_nanos(n: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(u64::try_from(n).unwrap_or(0))
}
