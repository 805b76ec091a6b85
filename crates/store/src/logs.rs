//! Function logs: instance output and platform lines, queried by function, time and request.

use rusqlite::params;

use crate::{Result, Store};

/// One line of a function's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Row id, increasing; a follower resumes after the last id it saw.
    pub id: i64,
    /// Function name.
    pub function: String,
    /// Version that produced it (`$LATEST` or a number).
    pub version: String,
    /// Instance that produced it.
    pub instance: String,
    /// The invocation running when the line was written, if any.
    pub request_id: Option<String>,
    /// When the line was read, epoch milliseconds.
    pub ts_ms: i64,
    /// `stdout`, `stderr` or `platform`.
    pub stream: String,
    /// The text, without its newline.
    pub line: String,
}

/// Which lines to return.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// Function name.
    pub function: String,
    /// Only lines at or after this time (epoch ms).
    pub since_ms: Option<i64>,
    /// Only lines with an id above this one.
    pub after_id: Option<i64>,
    /// Only lines of this invocation.
    pub request_id: Option<String>,
    /// At most this many (the newest ones when more match).
    pub limit: usize,
}

impl Store {
    /// Appends lines (ids are assigned by the store; the given ones are ignored).
    pub async fn append_logs(&self, lines: Vec<LogLine>) -> Result<()> {
        self.write(move |conn| {
            let mut stmt = conn.prepare_cached(
                "INSERT INTO logs (function, version, instance, request_id, ts_ms, stream, line)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for l in &lines {
                stmt.execute(params![
                    l.function,
                    l.version,
                    l.instance,
                    l.request_id,
                    l.ts_ms,
                    l.stream,
                    l.line
                ])?;
            }
            Ok(())
        })
        .await
    }

    /// Lines matching `query`, oldest first.
    pub async fn query_logs(&self, query: LogQuery) -> Result<Vec<LogLine>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, function, version, instance, request_id, ts_ms, stream, line FROM logs
                 WHERE function = ?1 AND ts_ms >= ?2 AND id > ?3 AND (?4 IS NULL OR request_id = ?4)
                 ORDER BY id DESC LIMIT ?5",
            )?;
            let rows = stmt.query_map(
                params![
                    query.function,
                    query.since_ms.unwrap_or(i64::MIN),
                    query.after_id.unwrap_or(0),
                    query.request_id,
                    query.limit as i64
                ],
                |r| {
                    Ok(LogLine {
                        id: r.get(0)?,
                        function: r.get(1)?,
                        version: r.get(2)?,
                        instance: r.get(3)?,
                        request_id: r.get(4)?,
                        ts_ms: r.get(5)?,
                        stream: r.get(6)?,
                        line: r.get(7)?,
                    })
                },
            )?;
            let mut lines = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            lines.reverse();
            Ok(lines)
        })
        .await
    }

    /// Deletes lines older than `before_ms` and, per function, all but the newest `keep` lines.
    /// Returns how many were deleted.
    pub async fn prune_logs(&self, before_ms: i64, keep: usize) -> Result<usize> {
        self.write(move |conn| {
            let mut n = conn.execute("DELETE FROM logs WHERE ts_ms < ?1", [before_ms])?;
            n += conn.execute(
                "DELETE FROM logs WHERE id IN (
                    SELECT id FROM (
                        SELECT id, ROW_NUMBER() OVER (PARTITION BY function ORDER BY id DESC) AS rn
                        FROM logs
                    ) WHERE rn > ?1)",
                [keep as i64],
            )?;
            Ok(n)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(function: &str, request: Option<&str>, ts_ms: i64, text: &str) -> LogLine {
        LogLine {
            id: 0,
            function: function.into(),
            version: "$LATEST".into(),
            instance: "i1".into(),
            request_id: request.map(Into::into),
            ts_ms,
            stream: "stdout".into(),
            line: text.into(),
        }
    }

    #[tokio::test]
    async fn logs_filter_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .append_logs(vec![
                line("f", Some("r1"), 10, "a"),
                line("f", Some("r2"), 20, "b"),
                line("g", None, 30, "c"),
                line("f", None, 40, "d"),
            ])
            .await
            .unwrap();
        let q = |request: Option<&str>, since_ms: Option<i64>| LogQuery {
            function: "f".into(),
            since_ms,
            after_id: None,
            request_id: request.map(Into::into),
            limit: 100,
        };
        let all = store.query_logs(q(None, None)).await.unwrap();
        let texts: Vec<_> = all.iter().map(|l| l.line.as_str()).collect();
        assert_eq!(texts, ["a", "b", "d"]);
        let r2 = store.query_logs(q(Some("r2"), None)).await.unwrap();
        assert_eq!(r2.len(), 1);
        let recent = store.query_logs(q(None, Some(20))).await.unwrap();
        assert_eq!(recent.len(), 2);
        let after = store
            .query_logs(LogQuery {
                after_id: Some(all[1].id),
                ..q(None, None)
            })
            .await
            .unwrap();
        assert_eq!(after[0].line, "d");
        assert_eq!(store.prune_logs(15, 1).await.unwrap(), 2);
        let left = store.query_logs(q(None, None)).await.unwrap();
        assert_eq!(left.iter().map(|l| &l.line).collect::<Vec<_>>(), ["d"]);
    }
}
