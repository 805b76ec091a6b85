//! The audit trail: control-plane actions as hash-chained records. Each record's hash covers
//! the previous record's hash and its own fields, and `audit_head` keeps the newest one, so an
//! edited, removed or reordered record breaks the chain where it happened.

use rusqlite::{OptionalExtension, params};
use sha2::{Digest, Sha256};

use crate::{Result, Store};

/// The `prev_hash` of the first record.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An action to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditRecord {
    /// When it happened, epoch milliseconds.
    pub ts_ms: i64,
    /// Who asked (the access key id, or `anonymous`).
    pub principal: String,
    /// The caller's address.
    pub source: String,
    /// `CreateFunction20150331`, `PutApi`, ...
    pub action: String,
    /// What it acted on (a function, an API, a key name).
    pub resource: String,
    /// The request's parameters as JSON, secrets redacted.
    pub parameters: String,
    /// `OK`, or the error code it failed with.
    pub result: String,
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// The action.
    pub record: NewAuditRecord,
    /// The previous record's hash (hex).
    pub prev_hash: String,
    /// This record's hash (hex).
    pub hash: String,
}

/// What a check of the whole chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCheck {
    /// Records read.
    pub records: u64,
    /// Each break of the chain, in order; empty when the trail is intact.
    pub problems: Vec<String>,
    /// The newest record's hash as the head says: keep it elsewhere to anchor the chain.
    pub head: Option<String>,
}

fn hash_of(seq: i64, prev_hash: &str, r: &NewAuditRecord) -> String {
    let fields = serde_json::json!([
        seq,
        r.ts_ms,
        r.principal,
        r.source,
        r.action,
        r.resource,
        r.parameters,
        r.result
    ]);
    let mut digest = Sha256::new();
    digest.update(prev_hash.as_bytes());
    digest.update(b"\n");
    digest.update(fields.to_string().as_bytes());
    digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn record_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        seq: r.get(0)?,
        record: NewAuditRecord {
            ts_ms: r.get(1)?,
            principal: r.get(2)?,
            source: r.get(3)?,
            action: r.get(4)?,
            resource: r.get(5)?,
            parameters: r.get(6)?,
            result: r.get(7)?,
        },
        prev_hash: r.get(8)?,
        hash: r.get(9)?,
    })
}

const COLUMNS: &str =
    "seq, ts_ms, principal, source, action, resource, parameters, result, prev_hash, hash";

impl Store {
    /// Appends a record to the chain (committed before this returns).
    pub async fn append_audit(&self, record: NewAuditRecord) -> Result<AuditRecord> {
        self.write(move |conn| {
            let head: Option<(i64, String)> = conn
                .query_row("SELECT seq, hash FROM audit_head", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            let (seq, prev_hash) = match head {
                Some((seq, hash)) => (seq + 1, hash),
                None => (1, GENESIS.to_owned()),
            };
            let hash = hash_of(seq, &prev_hash, &record);
            conn.prepare_cached(&format!(
                "INSERT INTO audit ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            ))?
            .execute(params![
                seq,
                record.ts_ms,
                record.principal,
                record.source,
                record.action,
                record.resource,
                record.parameters,
                record.result,
                prev_hash,
                hash
            ])?;
            conn.execute(
                "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
                params![seq, hash],
            )?;
            Ok(AuditRecord {
                seq,
                record,
                prev_hash,
                hash,
            })
        })
        .await
    }

    /// Records at or after `since_ms` (all when `None`), optionally of one action, oldest
    /// first, at most `limit`.
    pub async fn query_audit(
        &self,
        since_ms: Option<i64>,
        action: Option<String>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM audit WHERE ts_ms >= ?1 AND (?2 IS NULL OR action = ?2)
                 ORDER BY seq LIMIT ?3"
            ))?;
            let rows = stmt.query_map(
                params![since_ms.unwrap_or(i64::MIN), action, limit as i64],
                record_from_row,
            )?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// Walks the whole chain and reports every break: an edited record (its hash no longer
    /// matches its fields), a removed one (a gap in the sequence, or a head ahead of the last
    /// record), a reordered one (a previous hash that is not the previous record's).
    pub async fn verify_audit(&self) -> Result<AuditCheck> {
        self.read(|conn| {
            let mut problems = Vec::new();
            let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM audit ORDER BY seq"))?;
            let mut rows = stmt.query([])?;
            let (mut expected_seq, mut prev_hash) = (1i64, GENESIS.to_owned());
            let mut records = 0u64;
            while let Some(row) = rows.next()? {
                let r = record_from_row(row)?;
                records += 1;
                if r.seq != expected_seq {
                    problems.push(format!(
                        "record {} follows record {}: records {expected_seq} to {} are missing",
                        r.seq,
                        expected_seq - 1,
                        r.seq - 1
                    ));
                }
                if r.prev_hash != prev_hash {
                    problems.push(format!(
                        "record {}: its previous hash is not the hash of the record before it (removed or reordered records)",
                        r.seq
                    ));
                }
                if hash_of(r.seq, &r.prev_hash, &r.record) != r.hash {
                    problems.push(format!(
                        "record {}: its fields do not match its hash (edited)",
                        r.seq
                    ));
                }
                expected_seq = r.seq + 1;
                prev_hash = r.hash;
            }
            let head: Option<(i64, String)> = conn
                .query_row("SELECT seq, hash FROM audit_head", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            match &head {
                Some((seq, hash)) if *seq != expected_seq - 1 || *hash != prev_hash => {
                    problems.push(format!(
                        "the head names record {seq} but the chain ends at record {}: records were removed from the end or the head was changed",
                        expected_seq - 1
                    ));
                }
                None if records > 0 => {
                    problems.push("the chain's head is missing".to_owned());
                }
                _ => {}
            }
            Ok(AuditCheck {
                records,
                problems,
                head: head.map(|(_, hash)| hash),
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(action: &str) -> NewAuditRecord {
        NewAuditRecord {
            ts_ms: 1000,
            principal: "AKID".into(),
            source: "127.0.0.1".into(),
            action: action.into(),
            resource: "fn".into(),
            parameters: "{}".into(),
            result: "OK".into(),
        }
    }

    async fn chain_of(n: usize) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for i in 0..n {
            store.append_audit(record(&format!("A{i}"))).await.unwrap();
        }
        (dir, store)
    }

    async fn tamper(store: &Store, sql: &'static str) {
        store
            .write(move |conn| Ok(conn.execute_batch(sql)?))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn an_intact_chain_verifies_and_links_each_record_to_the_last() {
        let (_dir, store) = chain_of(3).await;
        let all = store.query_audit(None, None, 10).await.unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].prev_hash, GENESIS);
        assert_eq!(all[1].prev_hash, all[0].hash);
        let check = store.verify_audit().await.unwrap();
        assert_eq!(check.problems, Vec::<String>::new());
        assert_eq!(check.records, 3);
        assert_eq!(check.head.as_deref(), Some(all[2].hash.as_str()));
        let only = store
            .query_audit(None, Some("A1".into()), 10)
            .await
            .unwrap();
        assert_eq!(only.len(), 1);
    }

    #[tokio::test]
    async fn edits_removals_and_reorders_are_detected() {
        for (sql, expect) in [
            ("UPDATE audit SET result = 'OK!' WHERE seq = 2", "edited"),
            ("DELETE FROM audit WHERE seq = 2", "missing"),
            ("DELETE FROM audit WHERE seq = 4", "removed from the end"),
            ("DELETE FROM audit WHERE seq = 1", "missing"),
            (
                "UPDATE audit SET seq = seq + 10 WHERE seq = 2; UPDATE audit SET seq = 2 WHERE seq = 3; UPDATE audit SET seq = 3 WHERE seq = 12",
                "reordered",
            ),
            ("DELETE FROM audit_head", "head is missing"),
        ] {
            let (_dir, store) = chain_of(4).await;
            tamper(&store, sql).await;
            let check = store.verify_audit().await.unwrap();
            assert!(
                check.problems.iter().any(|p| p.contains(expect)),
                "{sql}: {:?}",
                check.problems
            );
        }
    }
}
