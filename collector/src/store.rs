//! What the collector keeps across restarts, under its data directory: the
//! registry of known nodes, so a node whose agent has not come back yet is
//! still listed (as disconnected, with its last known addresses). Written
//! whole to a temporary file and renamed into place, so a crash leaves either
//! the old or the new file, never half of one.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const FILE: &str = "nodes.json";
const FORMAT: u32 = 1;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    pub machine_id: String,
    pub boot_id: String,
    pub version: String,
    pub last_seen_unix_nanos: i64,
    pub addresses: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct Registry {
    format: u32,
    nodes: Vec<NodeRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("data dir {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
}

#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Creates the directory if needed and checks it is writable.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let io = |error| StoreError::Io {
            path: dir.to_owned(),
            error,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let probe = dir.join(".write-test");
        std::fs::write(&probe, b"").map_err(io)?;
        let _ = std::fs::remove_file(&probe);
        Ok(Store {
            dir: dir.to_owned(),
        })
    }

    /// The saved registry; an empty one when there is none yet.
    pub fn load(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let path = self.dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(StoreError::Io { path, error }),
        };
        let reg: Registry = serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if reg.format != FORMAT {
            return Err(StoreError::Corrupt {
                path,
                message: format!("format {} is not {FORMAT}", reg.format),
            });
        }
        Ok(reg.nodes)
    }

    pub fn save(&self, nodes: Vec<NodeRecord>) -> Result<(), StoreError> {
        let path = self.dir.join(FILE);
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let io = |error| StoreError::Io {
            path: path.clone(),
            error,
        };
        let text = serde_json::to_vec_pretty(&Registry {
            format: FORMAT,
            nodes,
        })
        .map_err(|e| io(std::io::Error::other(e)))?;
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("reachmap-store-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn round_trip() {
        let d = dir("rt");
        let s = Store::open(&d).expect("open");
        assert!(s.load().expect("empty").is_empty());
        let rec = NodeRecord {
            name: "n1".into(),
            addresses: vec!["198.18.0.11".into()],
            ..Default::default()
        };
        s.save(vec![rec.clone()]).expect("save");
        assert_eq!(s.load().expect("load"), vec![rec]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn corrupt_file_is_a_named_error() {
        let d = dir("corrupt");
        let s = Store::open(&d).expect("open");
        std::fs::write(d.join(FILE), "{not json").expect("write");
        let e = s.load().expect_err("corrupt").to_string();
        assert!(e.contains("nodes.json"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
