//! The firewall part as the store keeps it: a manifest — the ruleset with
//! each chain replaced by the SHA-256 of its blob — and one blob per chain
//! (an encoded `pb::FirewallChain`), all in `blobs`, keyed by content. A
//! change of two chains among 4,000 writes those two chains and a manifest;
//! a chain unchanged since any earlier ruleset is not written again.
//!
//! Formats, told apart by their first byte — no protobuf message starts
//! with 0, the tag byte of the invalid field number 0:
//! - a manifest, as stored: `MANIFEST`, then a `Manifest`;
//! - a bundle, what `facts::encode` hands the writer and never stored:
//!   `BUNDLE`, then a `Bundle` (the manifest without hashes, and every
//!   chain encoded), so the state task encodes the ruleset once, as before,
//!   and the writer does the hashing;
//! - the format before: a `pb::Snapshot` holding only the firewall (empty
//!   when there is no ruleset), still read, and still how a part without
//!   a ruleset is stored.
//!
//! Which chain blobs a node's manifests hold is kept in `chain_spans`, one
//! row per run of a node's consecutive manifests holding a chain: open
//! (`last` NULL) while the node's newest manifest holds it, then closed
//! with `last`, the newest time of any firewall row of the node when it
//! closed — no manifest of the run is newer. A closed run goes once no
//! firewall row of the node at or before `last` is left, and a chain blob
//! once no run and no fact row names it. A write touches only the runs of
//! the chains that came or went.

use super::facts::FIREWALL;
use super::sql::{self, Db, args};
use prost::Message;
use reachmap_proto::v1 as pb;
use std::collections::HashSet;

/// The first bytes of a stored manifest.
pub const MANIFEST: &[u8] = b"\0fwm1";
/// The first bytes of a bundle (writer input only).
pub const BUNDLE: &[u8] = b"\0fwb1";

/// `pb::Firewall` without its chains' contents (tags as there).
#[derive(Clone, PartialEq, Message)]
pub struct Manifest {
    #[prost(string, tag = "1")]
    pub backend: String,
    #[prost(uint32, optional, tag = "2")]
    pub generation: Option<u32>,
    #[prost(uint64, tag = "3")]
    pub hash: u64,
    #[prost(message, repeated, tag = "4")]
    pub tables: Vec<Table>,
    #[prost(string, tag = "5")]
    pub error: String,
}

/// `pb::FirewallTable` with its chains as references (tags as there).
#[derive(Clone, PartialEq, Message)]
pub struct Table {
    #[prost(string, tag = "1")]
    pub family: String,
    #[prost(string, tag = "2")]
    pub name: String,
    /// Each chain's blob hash, in order; in a bundle, one empty entry per
    /// chain.
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub chains: Vec<Vec<u8>>,
    #[prost(message, repeated, tag = "4")]
    pub sets: Vec<pb::FirewallSet>,
    #[prost(string, tag = "5")]
    pub backend: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Bundle {
    #[prost(message, optional, tag = "1")]
    pub manifest: Option<Manifest>,
    /// Every chain encoded, in the manifest's order.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub chains: Vec<Vec<u8>>,
}

/// Looks a chain blob up by its hash.
pub type Chains<'a> = dyn FnMut(&[u8]) -> Result<Option<Vec<u8>>, String> + 'a;

fn prefixed(prefix: &[u8], m: &impl Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + m.encoded_len());
    out.extend_from_slice(prefix);
    // A Vec grows as needed: encoding into one cannot run out of room.
    let _ = m.encode(&mut out);
    out
}

/// The manifest without hashes, and each chain encoded in its order.
fn take_apart(fw: pb::Firewall) -> (Manifest, Vec<Vec<u8>>) {
    let mut chains = Vec::new();
    let tables = fw
        .tables
        .into_iter()
        .map(|t| {
            let n = t.chains.len();
            chains.extend(t.chains.iter().map(Message::encode_to_vec));
            Table {
                family: t.family,
                name: t.name,
                chains: vec![Vec::new(); n],
                sets: t.sets,
                backend: t.backend,
            }
        })
        .collect();
    let m = Manifest {
        backend: fw.backend,
        generation: fw.generation,
        hash: fw.hash,
        tables,
        error: fw.error,
    };
    (m, chains)
}

/// The firewall part of `fw` for the writer: a bundle, or, without a
/// ruleset, the empty part of the format before.
pub fn bundle(fw: Option<pb::Firewall>) -> Vec<u8> {
    let Some(fw) = fw else {
        return pb::Snapshot::default().encode_to_vec();
    };
    let (manifest, chains) = take_apart(fw);
    prefixed(
        BUNDLE,
        &Bundle {
            manifest: Some(manifest),
            chains,
        },
    )
}

/// A firewall part ready to store.
#[derive(Debug)]
pub struct Split {
    /// The manifest blob and its hash.
    pub manifest: Vec<u8>,
    pub hash: [u8; 32],
    /// Each chain blob the manifest names, once, with its hash.
    pub chains: Vec<([u8; 32], Vec<u8>)>,
}

/// `data` — a bundle, or a whole part in the format before — as a manifest
/// and its chain blobs; `None` for a part without a ruleset.
pub fn split(data: &[u8]) -> Result<Option<Split>, String> {
    let (manifest, chains) = if let Some(rest) = data.strip_prefix(BUNDLE) {
        let b = Bundle::decode(rest).map_err(|e| format!("firewall bundle: {e}"))?;
        let m = b
            .manifest
            .ok_or_else(|| "firewall bundle without a manifest".to_string())?;
        (m, b.chains)
    } else if data.first() == Some(&0) {
        return Err("firewall part in an unknown format".into());
    } else {
        let s = pb::Snapshot::decode(data).map_err(|e| format!("firewall part: {e}"))?;
        match s.firewall {
            Some(fw) => take_apart(fw),
            None => return Ok(None),
        }
    };
    hashed(manifest, chains).map(Some)
}

/// `fw` as `split` makes a bundle of it, without the bundle: the state
/// task hands the writer this, so the ruleset is encoded once and hashed
/// once; `None` without a ruleset.
pub fn prepare(fw: Option<pb::Firewall>) -> Option<Split> {
    let (manifest, chains) = take_apart(fw?);
    // The manifest has one slot per chain: this cannot fail.
    hashed(manifest, chains).ok()
}

/// The manifest with each chain slot filled with its blob's hash, in order.
fn hashed(mut manifest: Manifest, chains: Vec<Vec<u8>>) -> Result<Split, String> {
    let mut blobs = chains.into_iter();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for slot in manifest.tables.iter_mut().flat_map(|t| t.chains.iter_mut()) {
        let data = blobs
            .next()
            .ok_or_else(|| "firewall bundle with fewer chains than its manifest".to_string())?;
        let h = super::hash(&data);
        *slot = h.to_vec();
        if seen.insert(h) {
            out.push((h, data));
        }
    }
    if blobs.next().is_some() {
        return Err("firewall bundle with more chains than its manifest".into());
    }
    let manifest = prefixed(MANIFEST, &manifest);
    Ok(Split {
        hash: super::hash(&manifest),
        manifest,
        chains: out,
    })
}

/// The ruleset a stored firewall part holds, its chains (for a manifest)
/// looked up through `chains`.
pub fn decode(data: &[u8], chains: &mut Chains<'_>) -> Result<Option<pb::Firewall>, String> {
    let Some(rest) = data.strip_prefix(MANIFEST) else {
        if data.first() == Some(&0) {
            return Err("stored firewall facts are in an unknown format".into());
        }
        let s = pb::Snapshot::decode(data)
            .map_err(|e| format!("stored firewall facts do not decode: {e}"))?;
        return Ok(s.firewall);
    };
    let m = Manifest::decode(rest)
        .map_err(|e| format!("stored firewall manifest does not decode: {e}"))?;
    let mut tables = Vec::with_capacity(m.tables.len());
    for t in m.tables {
        let mut list = Vec::with_capacity(t.chains.len());
        for h in &t.chains {
            let blob =
                chains(h)?.ok_or_else(|| format!("stored firewall chain {} is missing", hex(h)))?;
            let c = pb::FirewallChain::decode(blob.as_slice())
                .map_err(|e| format!("stored firewall chain {} does not decode: {e}", hex(h)))?;
            list.push(c);
        }
        tables.push(pb::FirewallTable {
            family: t.family,
            name: t.name,
            chains: list,
            sets: t.sets,
            backend: t.backend,
        });
    }
    Ok(Some(pb::Firewall {
        backend: m.backend,
        generation: m.generation,
        hash: m.hash,
        tables,
        error: m.error,
    }))
}

fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// Chain blobs looked up on `db`.
pub fn chains(db: &Db) -> impl FnMut(&[u8]) -> Result<Option<Vec<u8>>, String> + '_ {
    move |h| {
        db.first("SELECT data FROM blobs WHERE hash = ?1", args![h], |r| {
            r.blob(0)
        })
        .map_err(|e| e.to_string())
    }
}

/// Stores `node`'s firewall part `data` (see `split`) at `time`, within
/// the caller's transaction: the chain blobs new to the node's newest
/// manifest, the runs of the chains that came or went, the manifest and
/// its fact row. A part that cannot be split is left out, with a warning
/// (failing would roll back, and retry, the whole batch).
pub fn store(db: &Db, node: &str, time: i64, data: &[u8]) -> sql::Result<()> {
    match split(data) {
        Ok(s) => store_split(db, node, time, s.as_ref(), data),
        Err(e) => {
            tracing::warn!(%node, error = %e, "a firewall part that cannot be read is not stored");
            Ok(())
        }
    }
}

const INSERT_BLOB: &str = "INSERT INTO blobs (hash, data) VALUES (?1, ?2) ON CONFLICT DO NOTHING";

/// Stores `split` (from `prepare`, or `split`) as `node`'s firewall part at
/// `time`; `data` is the part itself when there is no ruleset.
pub fn store_split(
    db: &Db,
    node: &str,
    time: i64,
    split: Option<&Split>,
    data: &[u8],
) -> sql::Result<()> {
    let newest: Option<i64> = db
        .first(
            "SELECT max(time) FROM facts WHERE node = ?1 AND part = ?2",
            args![node, FIREWALL],
            |r| r.opt_int(0),
        )?
        .flatten();
    let open: HashSet<Vec<u8>> = db
        .query(
            "SELECT hash FROM chain_spans WHERE node = ?1 AND last IS NULL",
            args![node],
            |r| r.blob(0),
        )?
        .into_iter()
        .collect();
    let (key, blob, held) = match split {
        Some(s) => (s.hash, s.manifest.as_slice(), s.chains.as_slice()),
        None => (super::hash(data), data, &[][..]),
    };
    // A run left open has a row older than this one; without one, the run
    // is kept for good rather than cut short.
    let last = newest.unwrap_or(i64::MAX);
    let kept: HashSet<&[u8]> = held.iter().map(|(h, _)| &h[..]).collect();
    for h in open.iter().filter(|h| !kept.contains(h.as_slice())) {
        db.execute(
            "UPDATE chain_spans SET last = ?3 WHERE node = ?1 AND hash = ?2 AND last IS NULL",
            args![node, h, last],
        )?;
    }
    // An open run's blob is stored: only chains new to the node are written.
    for (h, chain) in held.iter().filter(|(h, _)| !open.contains(&h[..])) {
        db.execute(INSERT_BLOB, args![&h[..], chain])?;
        db.execute(
            "INSERT INTO chain_spans (node, hash, last) VALUES (?1, ?2, NULL)",
            args![node, &h[..]],
        )?;
    }
    db.execute(INSERT_BLOB, args![&key[..], blob])?;
    db.execute(
        "INSERT INTO facts (node, part, time, hash) VALUES (?1, ?2, ?3, ?4)",
        args![node, FIREWALL, time, &key[..]],
    )?;
    Ok(())
}

/// Deletes up to `limit` closed runs whose manifests are all pruned;
/// their chains' hashes go to `gone`.
pub fn prune_spans(
    db: &Db,
    cutoff: i64,
    limit: i64,
    gone: &mut Vec<Vec<u8>>,
) -> sql::Result<usize> {
    let hashes = db.query(
        "DELETE FROM chain_spans WHERE rowid IN
         (SELECT s.rowid FROM chain_spans s WHERE s.last IS NOT NULL AND s.last < ?1
          AND NOT EXISTS (SELECT 1 FROM facts f WHERE f.node = s.node AND f.part = ?2
                          AND f.time <= s.last)
          LIMIT ?3)
         RETURNING hash",
        args![cutoff, FIREWALL, limit],
        |r| r.blob(0),
    )?;
    let n = hashes.len();
    gone.extend(hashes);
    Ok(n)
}

#[cfg(test)]
#[path = "firewall_tests.rs"]
mod tests;
