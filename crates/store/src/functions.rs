//! Functions and their immutable versions.

use rampart_model::FunctionConfig;
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::{Error, Result, Store};

/// One immutable version of a function: the configuration and code it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionRecord {
    /// The function's name.
    pub function: String,
    /// Version number, from 1, never reused for the function.
    pub version: u64,
    /// The configuration this version runs with.
    pub config: FunctionConfig,
    /// Lower-hex SHA-256 of the code zip (its [`crate::CodeStore`] key).
    pub code_sha256: String,
    /// Size of the code zip in bytes.
    pub code_size: u64,
    /// When the version was created, epoch milliseconds.
    pub created_ms: i64,
}

/// A function and its newest version (what `$LATEST` serves).
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionRecord {
    /// The newest version.
    pub latest: VersionRecord,
    /// Changes on every update (Lambda's `RevisionId`).
    pub revision_id: String,
}

const SELECT_LATEST: &str = "SELECT v.function, v.version, v.config, v.code_sha256, v.code_size, v.created_ms, f.revision_id
     FROM functions f JOIN versions v ON v.function = f.name AND v.version = f.latest_version";

fn version_from_row(row: &Row<'_>) -> rusqlite::Result<(VersionRecord, String)> {
    let config: String = row.get(2)?;
    let config = serde_json::from_str(&config).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok((
        VersionRecord {
            function: row.get(0)?,
            version: row.get::<_, i64>(1)? as u64,
            config,
            code_sha256: row.get(3)?,
            code_size: row.get::<_, i64>(4)? as u64,
            created_ms: row.get(5)?,
        },
        row.get(6)?,
    ))
}

fn function_from_row(row: &Row<'_>) -> rusqlite::Result<FunctionRecord> {
    let (latest, revision_id) = version_from_row(row)?;
    Ok(FunctionRecord {
        latest,
        revision_id,
    })
}

fn load_function(conn: &Connection, name: &str) -> Result<Option<FunctionRecord>> {
    Ok(conn
        .query_row(
            &format!("{SELECT_LATEST} WHERE f.name = ?1"),
            [name],
            function_from_row,
        )
        .optional()?)
}

fn insert_version(
    conn: &Connection,
    name: &str,
    version: u64,
    config: &FunctionConfig,
    code_sha256: &str,
    code_size: u64,
    now_ms: i64,
) -> Result<()> {
    let config = serde_json::to_string(config).expect("a config always serializes");
    conn.execute(
        "INSERT INTO versions (function, version, config, code_sha256, code_size, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            name,
            version as i64,
            config,
            code_sha256,
            code_size as i64,
            now_ms
        ],
    )?;
    Ok(())
}

fn new_revision() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl Store {
    /// Creates a function with version 1.
    ///
    /// # Errors
    /// [`Error::FunctionExists`] when the name is taken.
    pub async fn create_function(
        &self,
        name: String,
        config: FunctionConfig,
        code_sha256: String,
        code_size: u64,
        now_ms: i64,
    ) -> Result<FunctionRecord> {
        self.write(move |conn| {
            let exists: bool = conn.query_row(
                "SELECT EXISTS(SELECT 1 FROM functions WHERE name = ?1)",
                [&name],
                |r| r.get(0),
            )?;
            if exists {
                return Err(Error::FunctionExists { name });
            }
            conn.execute(
                "INSERT INTO functions (name, latest_version, revision_id, created_ms) VALUES (?1, 1, ?2, ?3)",
                params![name, new_revision(), now_ms],
            )?;
            insert_version(conn, &name, 1, &config, &code_sha256, code_size, now_ms)?;
            load_function(conn, &name)?.ok_or(Error::FunctionNotFound { name })
        })
        .await
    }

    /// Adds a new version to an existing function, built from its newest one by `change`, and
    /// makes it `$LATEST`, all in one transaction.
    ///
    /// # Errors
    /// [`Error::FunctionNotFound`]; [`Error::RevisionMismatch`] when `expected_revision` is given
    /// and stale; whatever `change` returns.
    pub async fn update_function<F>(
        &self,
        name: String,
        expected_revision: Option<String>,
        now_ms: i64,
        change: F,
    ) -> Result<FunctionRecord>
    where
        F: FnOnce(&mut VersionRecord) -> Result<()> + Send + 'static,
    {
        self.write(move |conn| {
            let current = load_function(conn, &name)?
                .ok_or_else(|| Error::FunctionNotFound { name: name.clone() })?;
            if let Some(given) = expected_revision
                && given != current.revision_id
            {
                return Err(Error::RevisionMismatch {
                    given,
                    current: current.revision_id,
                });
            }
            let mut next = current.latest.clone();
            change(&mut next)?;
            next.version = current.latest.version + 1;
            insert_version(
                conn,
                &name,
                next.version,
                &next.config,
                &next.code_sha256,
                next.code_size,
                now_ms,
            )?;
            conn.execute(
                "UPDATE functions SET latest_version = ?2, revision_id = ?3 WHERE name = ?1",
                params![name, next.version as i64, new_revision()],
            )?;
            load_function(conn, &name)?.ok_or(Error::FunctionNotFound { name })
        })
        .await
    }

    /// The function and its newest version, if it exists.
    pub async fn get_function(&self, name: &str) -> Result<Option<FunctionRecord>> {
        let name = name.to_owned();
        self.read(move |conn| load_function(conn, &name)).await
    }

    /// One version of a function, if it exists.
    pub async fn get_version(&self, name: &str, version: u64) -> Result<Option<VersionRecord>> {
        let name = name.to_owned();
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT v.function, v.version, v.config, v.code_sha256, v.code_size, v.created_ms, f.revision_id
                     FROM versions v JOIN functions f ON f.name = v.function
                     WHERE v.function = ?1 AND v.version = ?2",
                    params![name, version as i64],
                    |row| version_from_row(row).map(|(v, _)| v),
                )
                .optional()?)
        })
        .await
    }

    /// Functions in name order, starting after `after`, at most `limit`.
    pub async fn list_functions(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<FunctionRecord>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "{SELECT_LATEST} WHERE f.name > ?1 ORDER BY f.name LIMIT ?2"
            ))?;
            let rows = stmt.query_map(
                params![after.unwrap_or_default(), limit as i64],
                function_from_row,
            )?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    /// Every version of every function (to find code still in use).
    pub async fn code_in_use(&self) -> Result<Vec<String>> {
        self.read(|conn| {
            let mut stmt = conn.prepare("SELECT DISTINCT code_sha256 FROM versions")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
        .await
    }

    /// Deletes a function and all its versions.
    ///
    /// # Errors
    /// [`Error::FunctionNotFound`] when there is none.
    pub async fn delete_function(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.write(move |conn| {
            match conn.execute("DELETE FROM functions WHERE name = ?1", [&name])? {
                0 => Err(Error::FunctionNotFound { name }),
                _ => Ok(()),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> FunctionConfig {
        FunctionConfig::new("python3.12".parse().unwrap(), "app.handler")
    }

    #[tokio::test]
    async fn functions_get_versions_on_every_update() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let f = store
            .create_function("f".into(), config(), "aa".into(), 10, 1)
            .await
            .unwrap();
        assert_eq!(f.latest.version, 1);
        assert!(matches!(
            store
                .create_function("f".into(), config(), "aa".into(), 10, 1)
                .await,
            Err(Error::FunctionExists { .. })
        ));
        let stale = Some("not-the-revision".to_string());
        assert!(matches!(
            store
                .update_function("f".into(), stale, 2, |_| Ok(()))
                .await,
            Err(Error::RevisionMismatch { .. })
        ));
        let g = store
            .update_function("f".into(), Some(f.revision_id.clone()), 2, |v| {
                v.config.timeout_secs = 9;
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!((g.latest.version, g.latest.config.timeout_secs), (2, 9));
        assert_ne!(g.revision_id, f.revision_id);
        let v1 = store.get_version("f", 1).await.unwrap().unwrap();
        assert_eq!(v1.config.timeout_secs, 3);
        store
            .create_function("e".into(), config(), "bb".into(), 10, 1)
            .await
            .unwrap();
        let page = store.list_functions(None, 1).await.unwrap();
        assert_eq!(page[0].latest.function, "e");
        let page = store.list_functions(Some("e".into()), 1).await.unwrap();
        assert_eq!(page[0].latest.function, "f");
        store.delete_function("f").await.unwrap();
        assert!(store.get_function("f").await.unwrap().is_none());
        assert!(store.get_version("f", 1).await.unwrap().is_none());
        assert!(matches!(
            store.delete_function("f").await,
            Err(Error::FunctionNotFound { .. })
        ));
    }
}
