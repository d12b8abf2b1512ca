//! Small documents kept whole in the store's `documents` table: the trust
//! module's tokens and the certificates issued to nodes (with the
//! deny-list). They change rarely and are read at start, so they are
//! written at once, in a transaction of their own, through a connection of
//! their own — which the offline commands (`reachmap-collector token
//! create`) use too while a collector runs: SQLite's locking keeps the two
//! processes' writes apart. A document an older collector kept as a file
//! under `DATA_DIR/tls` is taken in on first use and the file renamed
//! `*.imported`.

use super::Location;
use super::sql::{Db, args};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct Documents {
    db: Mutex<Db>,
    /// Where they are, for errors: the file, or the database without its
    /// password.
    shown: String,
}

const PUT: &str = "INSERT INTO documents (name, body) VALUES (?1, ?2)
     ON CONFLICT (name) DO UPDATE SET body = excluded.body";
const GET: &str = "SELECT body FROM documents WHERE name = ?1";

impl Documents {
    /// Opens (or makes) the store under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Documents, String> {
        Documents::open_at(&Location::Dir(data_dir.to_owned()))
    }

    /// Opens the store at `at`: the file under a data directory, or the
    /// shared database.
    pub fn open_at(at: &Location) -> Result<Documents, String> {
        let db = match at {
            Location::Dir(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                let path = dir.join(super::FILE);
                let conn = super::writer::open_unchecked(&path).map_err(|e| {
                    format!(
                        "{}: {e}; move it aside, or start the collector with --store-recover",
                        path.display()
                    )
                })?;
                Db::from(conn)
            }
            Location::Postgres(target) => super::writer::open_pg(target)?,
        };
        Ok(Documents {
            db: Mutex::new(db),
            shown: at.shown(),
        })
    }

    /// Where they are, as a path for errors (`path().join(name)`): the
    /// store file, or the database without its password.
    pub fn path(&self) -> &Path {
        Path::new(&self.shown)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Db> {
        self.db
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn get(&self, name: &str) -> Result<Option<String>, String> {
        self.lock()
            .first(GET, args![name], |r| r.text(0))
            .map_err(|e| format!("{} ({name}): {e}", self.shown))
    }

    pub fn put(&self, name: &str, body: &str) -> Result<(), String> {
        self.lock()
            .execute(PUT, args![name, body])
            .map(|_| ())
            .map_err(|e| format!("{} ({name}): {e}", self.shown))
    }

    /// Reads, changes and writes the document `name` in one immediate
    /// transaction, so another process (the offline `token create`, or a
    /// running collector) cannot write between the read and the write.
    /// `change` gets the stored text (if any) and returns the new text.
    pub fn update(
        &self,
        name: &str,
        change: impl FnOnce(Option<String>) -> Result<String, String>,
    ) -> Result<(), String> {
        let at = |e: String| format!("{} ({name}): {e}", self.shown);
        let db = self.lock();
        let tx = db.write().map_err(|e| at(e.to_string()))?;
        tx.lock(document_key(name)).map_err(|e| at(e.to_string()))?;
        let current = tx
            .first(GET, args![name], |r| r.text(0))
            .map_err(|e| at(e.to_string()))?;
        let body = change(current).map_err(at)?;
        tx.execute(PUT, args![name, &body])
            .map_err(|e| at(e.to_string()))?;
        tx.commit().map_err(|e| at(e.to_string()))
    }

    /// The document `name`, taking in `legacy` (an older collector's file)
    /// when the store has none yet.
    pub fn get_or_import(&self, name: &str, legacy: &Path) -> Result<Option<String>, String> {
        if let Some(body) = self.get(name)? {
            return Ok(Some(body));
        }
        let text = match std::fs::read_to_string(legacy) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", legacy.display())),
        };
        self.put(name, &text)?;
        let done = PathBuf::from(format!("{}.imported", legacy.display()));
        std::fs::rename(legacy, &done).map_err(|e| format!("{}: {e}", legacy.display()))?;
        tracing::info!(file = %legacy.display(), "took the file into the store");
        Ok(Some(text))
    }
}

/// The advisory lock key of a document: collectors on one database
/// update it one at a time.
fn document_key(name: &str) -> i64 {
    let h = super::hash(name.as_bytes());
    i64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_round_trips_and_a_legacy_file_is_taken_in_once() {
        let dir = tempfile::tempdir().expect("dir");
        let docs = Documents::open(dir.path()).expect("open");
        assert_eq!(docs.get("tokens").expect("get"), None);
        let legacy = dir.path().join("tokens.json");
        std::fs::write(&legacy, "{\"format\":1}").expect("write");
        assert_eq!(
            docs.get_or_import("tokens", &legacy)
                .expect("import")
                .as_deref(),
            Some("{\"format\":1}")
        );
        assert!(!legacy.exists());
        docs.put("tokens", "{\"format\":1,\"x\":2}").expect("put");
        // A second connection (another process) sees it.
        let other = Documents::open(dir.path()).expect("open again");
        assert_eq!(
            other.get("tokens").expect("get").as_deref(),
            Some("{\"format\":1,\"x\":2}")
        );
    }

    #[test]
    fn updates_from_two_connections_at_once_lose_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().to_owned();
        let add = |docs: &Documents, item: String| {
            docs.update("list", |cur| {
                let mut items: Vec<String> = cur
                    .map(|t| serde_json::from_str(&t).expect("list"))
                    .unwrap_or_default();
                items.push(item);
                Ok(serde_json::to_string(&items).expect("json"))
            })
            .expect("update");
        };
        let threads: Vec<_> = (0..2)
            .map(|w| {
                let path = path.clone();
                std::thread::spawn(move || {
                    // Each thread is another process's connection.
                    let docs = Documents::open(&path).expect("open");
                    for i in 0..50 {
                        add(&docs, format!("{w}-{i}"));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let docs = Documents::open(&path).expect("open");
        let items: Vec<String> =
            serde_json::from_str(&docs.get("list").expect("get").expect("stored")).expect("list");
        assert_eq!(items.len(), 100, "{items:?}");
    }
}
