//! The plans the leader of a shared store computed for the agents that
//! stream to other collectors (`members.rs`): one row per source, the wire's
//! `ProbePlan` without its version, with the digest the planner gave it and
//! the collector that wrote it. The other collectors read the rows written
//! since they last looked and hand each of their agents its plan.

use super::sql::{Db, Result, Value, args};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanRow {
    pub source: String,
    /// The leader that wrote it.
    pub collector: String,
    pub digest: u64,
    /// When the leader wrote it, by the leader's clock: only compared with
    /// other rows of the same leader.
    pub written_unix_nanos: i64,
    /// `reachmap.v1.ProbePlan`, version 0.
    pub plan: Vec<u8>,
}

/// Writes `rows`, each replacing the source's older row.
pub fn save(db: &Db, rows: &[PlanRow]) -> Result<()> {
    let values: Vec<Vec<Value<'_>>> = rows
        .iter()
        .map(|r| {
            args![
                &r.source,
                &r.collector,
                r.digest as i64,
                r.written_unix_nanos,
                &r.plan
            ]
            .to_vec()
        })
        .collect();
    db.execute_many(
        "INSERT INTO plans (source, collector, digest, written, plan) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (source) DO UPDATE SET collector = excluded.collector,
         digest = excluded.digest, written = excluded.written, plan = excluded.plan",
        &values,
    )?;
    Ok(())
}

/// The rows `collector` wrote after `since`, oldest first.
pub fn since(db: &Db, collector: &str, since: i64) -> Result<Vec<PlanRow>> {
    let mut out = Vec::new();
    db.each(
        "SELECT source, collector, digest, written, plan FROM plans
         WHERE collector = ?1 AND written > ?2 ORDER BY written, source",
        args![collector, since],
        |r| {
            out.push(PlanRow {
                source: r.text(0)?,
                collector: r.text(1)?,
                digest: r.int(2)? as u64,
                written_unix_nanos: r.int(3)?,
                plan: r.blob(4)?,
            });
            Ok(())
        },
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::schema::in_memory as conn;

    fn row(source: &str, collector: &str, digest: u64, written: i64) -> PlanRow {
        PlanRow {
            source: source.into(),
            collector: collector.into(),
            digest,
            written_unix_nanos: written,
            plan: vec![1, 2, 3],
        }
    }

    #[test]
    fn a_source_keeps_its_latest_row_and_readers_see_only_newer_ones() {
        let db = conn();
        save(&db, &[row("n1", "a", u64::MAX, 10), row("n2", "a", 7, 20)]).expect("save");
        save(&db, &[row("n1", "b", 8, 5)]).expect("replace");
        let a = since(&db, "a", 0).expect("a");
        assert_eq!(a, [row("n2", "a", 7, 20)]);
        assert!(since(&db, "a", 20).expect("none newer").is_empty());
        // The whole u64 digest survives the signed column.
        save(&db, &[row("n3", "b", u64::MAX, 6)]).expect("save");
        let b = since(&db, "b", 0).expect("b");
        assert_eq!(b, [row("n1", "b", 8, 5), row("n3", "b", u64::MAX, 6)]);
    }
}
