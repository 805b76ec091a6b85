//! Function logs: instance output and platform lines, queried by function, time and request.

use rusqlite::params;

use crate::{Result, Store};

/// Log levels from least to most severe, with the spellings runtimes use.
const LEVELS: [&[&str]; 6] = [
    &["TRACE"],
    &["DEBUG"],
    &["INFO"],
    &["WARN", "WARNING"],
    &["ERROR"],
    &["FATAL", "CRITICAL"],
];

/// The level names at `level` or more severe, or `None` when `level` is not a level.
pub fn levels_from(level: &str) -> Option<Vec<&'static str>> {
    let level = level.to_ascii_uppercase();
    let at = LEVELS
        .iter()
        .position(|names| names.contains(&level.as_str()))?;
    Some(
        LEVELS[at..]
            .iter()
            .flat_map(|names| names.iter().copied())
            .collect(),
    )
}

/// `LIKE` patterns of a line logged at `level`: `[ERROR] ...` (Python's runtime),
/// `ERROR: ...` / `ERROR ...` (logging defaults), `...\tERROR\t...` (Node's runtime), and
/// JSON lines with `"level":"ERROR"` (Lambda's JSON log format). `LIKE` ignores ASCII case.
fn level_patterns(level: &str) -> [String; 6] {
    [
        format!("[{level}]%"),
        format!("{level}:%"),
        format!("{level} %"),
        format!("%\t{level}\t%"),
        format!("%\"level\":\"{level}\"%"),
        format!("%\"level\": \"{level}\"%"),
    ]
}

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
    /// Only lines before this time (epoch ms).
    pub until_ms: Option<i64>,
    /// Only lines of this invocation.
    pub request_id: Option<String>,
    /// Only lines containing this text (case-sensitive).
    pub contains: Option<String>,
    /// Only lines logged at one of these levels (`ERROR`, `WARN`, ...; see [`levels_from`]).
    pub levels: Vec<&'static str>,
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
            let patterns: Vec<String> = query
                .levels
                .iter()
                .flat_map(|level| level_patterns(level))
                .collect();
            let level_clause = if patterns.is_empty() {
                String::new()
            } else {
                let likes: Vec<String> = (0..patterns.len())
                    .map(|i| format!("line LIKE ?{}", i + 8))
                    .collect();
                format!("AND ({})", likes.join(" OR "))
            };
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT id, function, version, instance, request_id, ts_ms, stream, line FROM logs
                 WHERE function = ?1 AND ts_ms >= ?2 AND id > ?3 AND (?4 IS NULL OR request_id = ?4)
                   AND ts_ms < ?6 AND (?7 IS NULL OR instr(line, ?7) > 0) {level_clause}
                 ORDER BY id DESC LIMIT ?5"
            ))?;
            let mut values: Vec<rusqlite::types::Value> = vec![
                query.function.into(),
                query.since_ms.unwrap_or(i64::MIN).into(),
                query.after_id.unwrap_or(0).into(),
                query.request_id.into(),
                (query.limit as i64).into(),
                query.until_ms.unwrap_or(i64::MAX).into(),
                query.contains.into(),
            ];
            values.extend(patterns.into_iter().map(Into::into));
            let rows = stmt.query_map(rusqlite::params_from_iter(values), |r| {
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
            })?;
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
            request_id: request.map(Into::into),
            limit: 100,
            ..LogQuery::default()
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

    #[tokio::test]
    async fn logs_filter_by_text_level_and_time_range() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let texts = [
            "[ERROR]\t2026-11-25T00:00:00Z\tid\tdb down",
            "[INFO]\t2026-11-25T00:00:00Z\tid\tfine",
            r#"{"timestamp":"x","level":"WARN","message":"slow"}"#,
            "WARNING:root:disk 90% full",
            "2026-11-25T00:00:00Z\tid\tERROR\tnode says no",
            "an ERROR in the middle is not a level",
            "plain line",
        ];
        store
            .append_logs(
                texts
                    .iter()
                    .enumerate()
                    .map(|(i, t)| line("f", None, i as i64 * 10, t))
                    .collect(),
            )
            .await
            .unwrap();
        let query = |q: LogQuery| {
            let store = store.clone();
            async move {
                store
                    .query_logs(LogQuery {
                        function: "f".into(),
                        limit: 100,
                        ..q
                    })
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|l| l.line)
                    .collect::<Vec<_>>()
            }
        };
        let errors = query(LogQuery {
            levels: levels_from("error").unwrap(),
            ..LogQuery::default()
        })
        .await;
        assert_eq!(errors, [texts[0], texts[4]]);
        let warnings = query(LogQuery {
            levels: levels_from("WARN").unwrap(),
            ..LogQuery::default()
        })
        .await;
        assert_eq!(warnings, [texts[0], texts[2], texts[3], texts[4]]);
        let found = query(LogQuery {
            contains: Some("90%".into()),
            ..LogQuery::default()
        })
        .await;
        assert_eq!(found, [texts[3]], "text, not a LIKE pattern");
        let window = query(LogQuery {
            since_ms: Some(10),
            until_ms: Some(30),
            ..LogQuery::default()
        })
        .await;
        assert_eq!(window, [texts[1], texts[2]]);
        assert!(levels_from("loud").is_none());
    }
}
