//! A node's facts as the store keeps them: split into parts that change at
//! their own pace (network, listeners, firewall, resources, sources, name
//! lookups), each encoded as the protocol message it came in and stored
//! once per content hash — the firewall as a manifest and a blob per chain
//! (`firewall.rs`). Pure: facts → parts, and parts → the snapshot of a past
//! moment.

use crate::model::{FactsDelta, NodeFacts};
use crate::probe::ResolvedName;
use prost::Message;
use reachmap_proto::v1 as pb;

pub const NETWORK: &str = "network";
pub const LISTENERS: &str = "listeners";
pub const FIREWALL: &str = "firewall";
pub const RESOURCES: &str = "resources";
pub const SOURCES: &str = "sources";
pub const NAMES: &str = "names";
pub const ALL: [&str; 5] = [NETWORK, LISTENERS, FIREWALL, RESOURCES, SOURCES];

/// The parts a delta touched.
pub fn touched(d: &FactsDelta) -> Vec<&'static str> {
    let mut out = Vec::new();
    if !d.upserted.is_empty() || !d.removed.is_empty() || d.routes.is_some() || d.host.is_some() {
        out.push(NETWORK);
    }
    if !d.listeners_upserted.is_empty() || !d.listeners_removed.is_empty() {
        out.push(LISTENERS);
    }
    if d.firewall.is_some() || d.firewall_patch.is_some() {
        out.push(FIREWALL);
    }
    if d.resources.is_some() || d.socket_summary.is_some() {
        out.push(RESOURCES);
    }
    if d.sources.is_some() {
        out.push(SOURCES);
    }
    out
}

/// One part of a node's facts as the state task hands it to the writer.
#[derive(Debug)]
pub struct Encoded {
    /// The key the part is stored under: the hash of `data`, or of the
    /// firewall's manifest.
    pub hash: [u8; 32],
    /// The part's bytes; empty when `firewall` holds the part.
    pub data: Vec<u8>,
    /// A ruleset, already split into its manifest and chain blobs.
    pub firewall: Option<super::firewall::Split>,
}

impl Encoded {
    /// A part stored as its bytes, under their hash.
    pub fn bytes(data: Vec<u8>) -> Encoded {
        Encoded {
            hash: super::hash(&data),
            data,
            firewall: None,
        }
    }
}

/// `part` of `facts`, ready for the writer. A ruleset is encoded and hashed
/// once, chain by chain; its change check is the manifest's hash, which
/// names every chain's.
pub fn encode_part(facts: &NodeFacts, part: &str) -> Encoded {
    if part == FIREWALL {
        let fw = facts.firewall.as_ref().map(crate::encode::firewall);
        if let Some(split) = super::firewall::prepare(fw) {
            return Encoded {
                hash: split.hash,
                data: Vec::new(),
                firewall: Some(split),
            };
        }
    }
    Encoded::bytes(encode(facts, part))
}

/// One part of `facts`, encoded (only that part is encoded: a resources
/// sample every few seconds must not re-encode 10,000 listeners). The
/// firewall comes as a bundle the writer splits into a manifest and chain
/// blobs.
pub fn encode(facts: &NodeFacts, part: &str) -> Vec<u8> {
    if part == FIREWALL {
        return super::firewall::bundle(facts.firewall.as_ref().map(crate::encode::firewall));
    }
    let full = crate::query::facts(&NodeFacts {
        version: facts.version,
        host: facts.host.clone(),
        interfaces: if part == NETWORK {
            facts.interfaces.clone()
        } else {
            Default::default()
        },
        routes: if part == NETWORK {
            facts.routes.clone()
        } else {
            Vec::new()
        },
        ..NodeFacts::default()
    });
    let mut s = pb::Snapshot::default();
    match part {
        NETWORK => {
            s.host = full.host;
            s.interfaces = full.interfaces;
            s.routes = full.routes;
        }
        LISTENERS => {
            let mut k = crate::encode::sockets(facts.listeners.values(), &facts.socket_summary);
            k.summary = None;
            s.sockets = Some(k);
        }
        RESOURCES => {
            s.resources = facts.resources.as_ref().map(crate::encode::resources);
            s.sockets = Some(pb::SocketFacts {
                summary: crate::encode::sockets(std::iter::empty(), &facts.socket_summary).summary,
                ..Default::default()
            });
        }
        SOURCES => s.sources = crate::encode::sources(&facts.sources),
        _ => {}
    }
    s.encode_to_vec()
}

/// The parts of one moment, merged back into a snapshot; a firewall
/// manifest's chains looked up through `chains`.
pub fn merge(
    parts: &[(String, Vec<u8>)],
    chains: &mut super::firewall::Chains<'_>,
) -> Result<pb::Snapshot, String> {
    let mut out = pb::Snapshot::default();
    let mut listeners: Option<pb::SocketFacts> = None;
    let mut summary = None;
    for (part, data) in parts {
        if part == FIREWALL {
            out.firewall = super::firewall::decode(data, chains)?;
            continue;
        }
        let s = pb::Snapshot::decode(data.as_slice())
            .map_err(|e| format!("stored {part} facts do not decode: {e}"))?;
        match part.as_str() {
            NETWORK => {
                out.host = s.host;
                out.interfaces = s.interfaces;
                out.routes = s.routes;
            }
            LISTENERS => listeners = s.sockets,
            RESOURCES => {
                out.resources = s.resources;
                summary = s.sockets.and_then(|k| k.summary);
            }
            SOURCES => out.sources = s.sources,
            _ => {}
        }
    }
    let mut sockets = listeners.unwrap_or_default();
    sockets.summary = summary;
    out.sockets = Some(sockets);
    Ok(out)
}

pub fn encode_names(names: &[ResolvedName]) -> Vec<u8> {
    pb::ProbeResults {
        names: names.iter().map(crate::encode::resolved_name).collect(),
        ..Default::default()
    }
    .encode_to_vec()
}

pub fn decode_names(data: &[u8]) -> Result<Vec<ResolvedName>, String> {
    let r =
        pb::ProbeResults::decode(data).map_err(|e| format!("stored names do not decode: {e}"))?;
    crate::validate::probe::names(&r).map_err(|e| e.to_string())
}
