//! The registry of known nodes, so a node whose agent has not come back yet
//! is still listed (as disconnected, with its last known addresses). It
//! lives in the store's `nodes` table; a `nodes.json` left by an older
//! collector is taken in once and renamed `nodes.json.imported`.

use super::sql::{Db, Result, Value, args};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

const LEGACY_FILE: &str = "nodes.json";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    pub machine_id: String,
    pub boot_id: String,
    pub version: String,
    pub last_seen_unix_nanos: i64,
    pub addresses: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// The collector that wrote it: on a shared store, the one its agent
    /// streamed to last.
    #[serde(default)]
    pub collector: String,
    /// Its agent was streaming to that collector when written.
    #[serde(default)]
    pub connected: bool,
    /// What the leader of a shared store plans the node's probes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeInput>,
}

/// A node as the planner needs it (`state/probing.rs`): the addresses peers
/// probe, the primary one first, and the TCP listeners they can reach.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeInput {
    pub addresses: Vec<std::net::IpAddr>,
    pub listeners: Vec<ProbeListener>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeListener {
    pub address: std::net::IpAddr,
    pub port: u16,
    /// Bound to the wildcard address rather than `address` alone.
    pub any: bool,
}

#[derive(Deserialize)]
struct Legacy {
    nodes: Vec<NodeRecord>,
}

/// Every record; a row that does not parse is skipped with a warning.
pub fn load(db: &Db) -> Result<Vec<NodeRecord>> {
    let mut out = Vec::new();
    db.each(
        "SELECT name, record FROM nodes ORDER BY name",
        args![],
        |r| {
            let (name, text) = (r.text(0)?, r.text(1)?);
            match serde_json::from_str::<NodeRecord>(&text) {
                Ok(rec) => out.push(rec),
                Err(e) => tracing::warn!(%name, error = %e, "skipping an unreadable node record"),
            }
            Ok(())
        },
    )?;
    Ok(out)
}

/// Writes the records of `nodes`, each replacing the one stored under its
/// name; the other nodes' records stay (on a shared store they are other
/// collectors' nodes).
pub fn save(db: &Db, nodes: &[NodeRecord]) -> Result<()> {
    let texts: Vec<String> = nodes
        .iter()
        .map(|n| serde_json::to_string(n).unwrap_or_default())
        .collect();
    let rows: Vec<Vec<Value<'_>>> = nodes
        .iter()
        .zip(&texts)
        .map(|(n, text)| args![&n.name, text].to_vec())
        .collect();
    db.execute_many(
        "INSERT INTO nodes (name, record) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET record = excluded.record",
        &rows,
    )?;
    Ok(())
}

/// Takes in an older collector's `nodes.json` from `dir`, once.
pub fn import_legacy(db: &Db, dir: &Path) -> std::result::Result<usize, String> {
    let path = dir.join(LEGACY_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let legacy: Legacy =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    save(db, &legacy.nodes).map_err(|e| format!("{}: {e}", path.display()))?;
    let done = dir.join(format!("{LEGACY_FILE}.imported"));
    std::fs::rename(&path, &done).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(legacy.nodes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::schema::in_memory as conn;

    #[test]
    fn round_trip() {
        let c = conn();
        assert!(load(&c).expect("empty").is_empty());
        let rec = NodeRecord {
            name: "n1".into(),
            addresses: vec!["198.18.0.11".into()],
            ..Default::default()
        };
        save(&c, std::slice::from_ref(&rec)).expect("save");
        assert_eq!(load(&c).expect("load"), vec![rec.clone()]);
        // Another writer's record stays beside this one; a record saved
        // again replaces its old self.
        let other = NodeRecord {
            name: "n2".into(),
            ..Default::default()
        };
        save(&c, std::slice::from_ref(&other)).expect("save other");
        let moved = NodeRecord {
            addresses: vec!["198.18.0.12".into()],
            ..rec
        };
        save(&c, std::slice::from_ref(&moved)).expect("save again");
        assert_eq!(load(&c).expect("load"), vec![moved, other]);
    }

    #[test]
    fn a_legacy_registry_is_taken_in_once() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(
            dir.path().join(LEGACY_FILE),
            r#"{"format":1,"nodes":[{"name":"old","machine_id":"m","boot_id":"b","version":"v","last_seen_unix_nanos":5,"addresses":["198.18.0.9"],"labels":{}}]}"#,
        )
        .expect("write");
        let c = conn();
        assert_eq!(import_legacy(&c, dir.path()).expect("import"), 1);
        assert_eq!(load(&c).expect("load")[0].name, "old");
        assert_eq!(import_legacy(&c, dir.path()).expect("again"), 0);
        assert!(dir.path().join("nodes.json.imported").exists());
    }

    #[test]
    fn a_corrupt_legacy_registry_is_a_named_error() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join(LEGACY_FILE), "{not json").expect("write");
        let e = import_legacy(&conn(), dir.path()).expect_err("corrupt");
        assert!(e.contains("nodes.json"), "{e}");
    }
}
