//! One way to speak to either engine the store runs on: the embedded SQLite
//! file (the default) or a shared PostgreSQL database (`store/pg.rs`). The
//! store's queries are written once, in the SQL both understand (`?N`
//! placeholders, `ON CONFLICT`, `RETURNING`, a column named `rowid` in the
//! tables that need an insertion order); the few that cannot be — DDL, and
//! SQLite's bare columns beside `max()` — ask `engine()`.

use super::pg::Pg;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A value bound to a placeholder.
#[derive(Clone, Copy, Debug)]
pub enum Value<'a> {
    Int(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
    Null,
}

macro_rules! int_value {
    ($($t:ty),*) => {$(
        impl From<$t> for Value<'_> {
            fn from(v: $t) -> Self {
                Value::Int(i64::from(v))
            }
        }
    )*};
}
int_value!(i64, i32, u32, u16, u8);

impl From<f64> for Value<'_> {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}
impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Text(v)
    }
}
impl<'a> From<&'a String> for Value<'a> {
    fn from(v: &'a String) -> Self {
        Value::Text(v)
    }
}
impl<'a> From<&'a [u8]> for Value<'a> {
    fn from(v: &'a [u8]) -> Self {
        Value::Blob(v)
    }
}
impl<'a> From<&'a Vec<u8>> for Value<'a> {
    fn from(v: &'a Vec<u8>) -> Self {
        Value::Blob(v)
    }
}
impl<'a, T: Into<Value<'a>>> From<Option<T>> for Value<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// `args![a, b, …]`: the values of a statement's placeholders, in order.
macro_rules! args {
    ($($v:expr),* $(,)?) => {
        &[$($crate::store::sql::Value::from($v)),*][..]
    };
}
pub(crate) use args;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Postgres(String),
    /// A stored value that does not mean what its column says.
    #[error("stored {0}")]
    Bad(String),
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        // The server's own message (with its code) says more than the
        // client's "db error".
        match e.as_db_error() {
            Some(db) => Error::Postgres(format!("{} ({})", db.message(), db.code().code())),
            None => {
                // "error performing TLS handshake" says why only in its source.
                let mut text = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    text = format!("{text}: {s}");
                    source = s.source();
                }
                Error::Postgres(text)
            }
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// A connection to the store, on either engine.
pub enum Db {
    Sqlite(rusqlite::Connection),
    Postgres(Pg),
}

impl From<rusqlite::Connection> for Db {
    fn from(c: rusqlite::Connection) -> Self {
        Db::Sqlite(c)
    }
}

/// One row of an answer.
pub enum Row<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    Postgres(&'a tokio_postgres::Row),
}

impl Row<'_> {
    pub fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        Ok(match self {
            Row::Sqlite(r) => r.get(i)?,
            Row::Postgres(r) => r.try_get::<_, Option<super::pg::Int>>(i)?.map(|v| v.0),
        })
    }

    pub fn int(&self, i: usize) -> Result<i64> {
        self.opt_int(i)?
            .ok_or_else(|| Error::Bad(format!("NULL in integer column {i}")))
    }

    /// An integer column that must fit `T` (a port, a count).
    pub fn int_as<T: TryFrom<i64>>(&self, i: usize) -> Result<T> {
        let v = self.int(i)?;
        T::try_from(v).map_err(|_| Error::Bad(format!("{v} out of range in column {i}")))
    }

    pub fn opt_real(&self, i: usize) -> Result<Option<f64>> {
        Ok(match self {
            Row::Sqlite(r) => r.get(i)?,
            Row::Postgres(r) => r.try_get(i)?,
        })
    }

    pub fn text(&self, i: usize) -> Result<String> {
        Ok(match self {
            Row::Sqlite(r) => r.get(i)?,
            Row::Postgres(r) => r.try_get(i)?,
        })
    }

    pub fn opt_blob(&self, i: usize) -> Result<Option<Vec<u8>>> {
        Ok(match self {
            Row::Sqlite(r) => r.get(i)?,
            Row::Postgres(r) => r.try_get(i)?,
        })
    }

    pub fn blob(&self, i: usize) -> Result<Vec<u8>> {
        self.opt_blob(i)?
            .ok_or_else(|| Error::Bad(format!("NULL in blob column {i}")))
    }
}

fn sqlite_params<'a>(
    args: &'a [Value<'a>],
) -> impl Iterator<Item = rusqlite::types::ToSqlOutput<'a>> + 'a {
    use rusqlite::types::{ToSqlOutput, ValueRef};
    args.iter().map(|v| {
        ToSqlOutput::Borrowed(match *v {
            Value::Int(i) => ValueRef::Integer(i),
            Value::Real(f) => ValueRef::Real(f),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
            Value::Null => ValueRef::Null,
        })
    })
}

impl Db {
    pub fn engine(&self) -> Engine {
        match self {
            Db::Sqlite(_) => Engine::Sqlite,
            Db::Postgres(_) => Engine::Postgres,
        }
    }

    /// The SQLite connection under it, for what only SQLite has (query
    /// plans, pragmas).
    pub fn sqlite(&self) -> Option<&rusqlite::Connection> {
        match self {
            Db::Sqlite(c) => Some(c),
            Db::Postgres(_) => None,
        }
    }

    /// Runs one statement; the rows it changed.
    pub fn execute(&self, sql: &str, args: &[Value<'_>]) -> Result<u64> {
        match self {
            Db::Sqlite(c) => {
                let n = c
                    .prepare_cached(sql)?
                    .execute(rusqlite::params_from_iter(sqlite_params(args)))?;
                Ok(n as u64)
            }
            Db::Postgres(p) => p.execute(sql, args),
        }
    }

    /// Runs one statement once per row of `rows`, in order; the rows each
    /// run changed. PostgreSQL gets them all at once, pipelined on the
    /// connection, rather than one round trip each.
    pub fn execute_many(&self, sql: &str, rows: &[Vec<Value<'_>>]) -> Result<Vec<u64>> {
        match self {
            Db::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    out.push(stmt.execute(rusqlite::params_from_iter(sqlite_params(r)))? as u64);
                }
                Ok(out)
            }
            Db::Postgres(p) => p.execute_many(sql, rows),
        }
    }

    /// Runs a query, handing each row to `each` as it arrives.
    pub fn each(
        &self,
        sql: &str,
        args: &[Value<'_>],
        mut each: impl FnMut(&Row<'_>) -> Result<()>,
    ) -> Result<()> {
        match self {
            Db::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(sqlite_params(args)))?;
                while let Some(r) = rows.next()? {
                    each(&Row::Sqlite(r))?;
                }
                Ok(())
            }
            Db::Postgres(p) => p.each(sql, args, &mut |r| each(&Row::Postgres(r))),
        }
    }

    /// Every row of a query, each made a `T`.
    pub fn query<T>(
        &self,
        sql: &str,
        args: &[Value<'_>],
        mut map: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.each(sql, args, |r| {
            out.push(map(r)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The first row of a query, when there is one.
    pub fn first<T>(
        &self,
        sql: &str,
        args: &[Value<'_>],
        map: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<Option<T>> {
        let mut map = Some(map);
        let mut out = None;
        self.each(sql, args, |r| {
            if let Some(m) = map.take() {
                out = Some(m(r)?);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Statements without arguments or answers (DDL, transaction control).
    pub fn batch(&self, sql: &str) -> Result<()> {
        match self {
            Db::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Db::Postgres(p) => p.batch(sql),
        }
    }

    /// Begins a transaction that writes: on SQLite it takes the file's write
    /// lock at once, so two writers never deadlock upgrading a read.
    pub fn write(&self) -> Result<Tx<'_>> {
        self.begin(match self {
            Db::Sqlite(_) => "BEGIN IMMEDIATE",
            Db::Postgres(_) => "BEGIN",
        })
    }

    /// Begins a transaction that only reads, from one state of the store.
    pub fn snapshot(&self) -> Result<Tx<'_>> {
        self.begin(match self {
            Db::Sqlite(_) => "BEGIN",
            Db::Postgres(_) => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        })
    }

    fn begin(&self, sql: &str) -> Result<Tx<'_>> {
        if self.in_transaction() {
            // Already inside one: the outer transaction decides.
            return Ok(Tx {
                db: self,
                open: false,
            });
        }
        self.batch(sql)?;
        if let Db::Postgres(p) = self {
            p.in_tx.set(true);
        }
        Ok(Tx {
            db: self,
            open: true,
        })
    }

    fn in_transaction(&self) -> bool {
        match self {
            Db::Sqlite(c) => !c.is_autocommit(),
            Db::Postgres(p) => p.in_tx.get(),
        }
    }

    fn end(&self, sql: &str) -> Result<()> {
        if let Db::Postgres(p) = self {
            p.in_tx.set(false);
        }
        self.batch(sql)
    }

    /// Serialises writers of one thing (`key`) across connections and
    /// processes for the rest of the transaction. SQLite's `write()` holds
    /// the whole file already; PostgreSQL takes an advisory lock.
    pub fn lock(&self, key: i64) -> Result<()> {
        match self {
            Db::Sqlite(_) => Ok(()),
            Db::Postgres(p) => p
                .execute("SELECT pg_advisory_xact_lock(?1)", args![key])
                .map(|_| ()),
        }
    }
}

/// An open transaction: rolled back when dropped uncommitted.
pub struct Tx<'a> {
    db: &'a Db,
    /// False when it joined an enclosing transaction.
    open: bool,
}

impl Tx<'_> {
    pub fn commit(mut self) -> Result<()> {
        if std::mem::take(&mut self.open) {
            self.db.end("COMMIT")?;
        }
        Ok(())
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.db.end("ROLLBACK");
        }
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = Db;
    fn deref(&self) -> &Db {
        self.db
    }
}

/// `?N` placeholders as PostgreSQL's `$N`, quoted text left alone.
pub fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    for ch in sql.chars() {
        match ch {
            '\'' => {
                quoted = !quoted;
                out.push(ch);
            }
            '?' if !quoted => out.push('$'),
            _ => out.push(ch),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_outside_quotes() {
        assert_eq!(
            numbered("SELECT a FROM t WHERE k = 'why?' AND b = ?1 AND c IN (?2, ?10)"),
            "SELECT a FROM t WHERE k = 'why?' AND b = $1 AND c IN ($2, $10)"
        );
    }

    #[test]
    fn a_transaction_inside_another_joins_it_and_a_dropped_one_rolls_back() {
        let db = Db::from(rusqlite::Connection::open_in_memory().expect("open"));
        db.batch("CREATE TABLE t (x INTEGER)").expect("table");
        let outer = db.write().expect("outer");
        let inner = outer.write().expect("inner");
        inner
            .execute("INSERT INTO t (x) VALUES (?1)", args![1])
            .expect("insert");
        inner.commit().expect("inner commit");
        drop(outer);
        let n = db
            .first("SELECT count(*) FROM t", args![], |r| r.int(0))
            .expect("count");
        assert_eq!(n, Some(0));
        let tx = db.write().expect("again");
        tx.execute("INSERT INTO t (x) VALUES (?1)", args![Some(2i64)])
            .expect("insert");
        tx.commit().expect("commit");
        let rows = db
            .query("SELECT x FROM t", args![], |r| r.opt_int(0))
            .expect("rows");
        assert_eq!(rows, vec![Some(2)]);
    }
}
