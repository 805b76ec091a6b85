//! Published versions and aliases (deployments.md §1-2). Every deploy already stores an
//! immutable numbered version; PublishVersion marks the newest one published (numbers are
//! increasing and never reused, but may skip the deploys that were never published). An alias
//! names a published version and, optionally, a second one with a weight.

use rusqlite::{Connection, OptionalExtension, params};

use crate::{Error, Result, Store};

/// An alias as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AliasRecord {
    /// The function.
    pub function: String,
    /// The alias name.
    pub name: String,
    /// The version it points to.
    pub version: u64,
    /// A second version and the share of invocations it gets (0.0 to 1.0).
    pub additional: Option<(u64, f64)>,
    /// Free text.
    pub description: String,
    /// Changes with every update.
    pub revision_id: String,
}

/// What an alias should become.
#[derive(Debug, Clone, PartialEq)]
pub struct AliasChange {
    /// The version it points to.
    pub version: u64,
    /// A second version with its weight.
    pub additional: Option<(u64, f64)>,
    /// Free text.
    pub description: String,
}

fn alias_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AliasRecord> {
    let additional: Option<i64> = r.get(3)?;
    let weight: Option<f64> = r.get(4)?;
    Ok(AliasRecord {
        function: r.get(0)?,
        name: r.get(1)?,
        version: r.get::<_, i64>(2)? as u64,
        additional: additional.zip(weight).map(|(v, w)| (v as u64, w)),
        description: r.get(5)?,
        revision_id: r.get(6)?,
    })
}

const ALIAS_COLUMNS: &str =
    "function, name, version, additional_version, additional_weight, description, revision_id";

fn published(conn: &Connection, function: &str, version: u64) -> Result<bool> {
    Ok(conn
        .query_row(
            "SELECT published FROM versions WHERE function = ?1 AND version = ?2",
            params![function, version as i64],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        == Some(1))
}

/// The version number an alias uses for `$LATEST`.
pub const LATEST: u64 = 0;

fn check_targets(conn: &Connection, function: &str, change: &AliasChange) -> Result<()> {
    if change.additional.is_some_and(|(v, _)| v == LATEST)
        || (change.version == LATEST && change.additional.is_some())
    {
        return Err(Error::Rejected(
            "$LATEST cannot carry routing weights: point the alias at published versions".into(),
        ));
    }
    let mut versions = vec![change.version];
    if let Some((extra, weight)) = change.additional {
        if !(0.0..=1.0).contains(&weight) {
            return Err(Error::Rejected(format!(
                "the weight {weight} of version {extra} is not between 0.0 and 1.0"
            )));
        }
        if extra == change.version {
            return Err(Error::Rejected(format!(
                "version {extra} cannot be both the alias's version and its additional version"
            )));
        }
        versions.push(extra);
    }
    for v in versions.into_iter().filter(|v| *v != LATEST) {
        if !published(conn, function, v)? {
            return Err(Error::FunctionNotFound {
                name: format!("{function}:{v}"),
            });
        }
    }
    Ok(())
}

fn load_alias(conn: &Connection, function: &str, name: &str) -> Result<Option<AliasRecord>> {
    Ok(conn
        .query_row(
            &format!("SELECT {ALIAS_COLUMNS} FROM aliases WHERE function = ?1 AND name = ?2"),
            params![function, name],
            alias_from_row,
        )
        .optional()?)
}

impl Store {
    /// Publishes the function's newest version (a no-op returning it when it is published
    /// already). `code_sha256_hex` and `revision_id`, when given, must match the current ones.
    pub async fn publish_version(
        &self,
        function: &str,
        code_sha256_hex: Option<String>,
        revision_id: Option<String>,
        description: String,
    ) -> Result<u64> {
        let function = function.to_owned();
        self.write(move |conn| {
            let (latest, sha, revision): (i64, String, String) = conn
                .query_row(
                    "SELECT f.latest_version, v.code_sha256, f.revision_id FROM functions f
                     JOIN versions v ON v.function = f.name AND v.version = f.latest_version
                     WHERE f.name = ?1",
                    [&function],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?
                .ok_or_else(|| Error::FunctionNotFound {
                    name: function.clone(),
                })?;
            if let Some(given) = revision_id
                && given != revision
            {
                return Err(Error::RevisionMismatch {
                    given,
                    current: revision,
                });
            }
            if code_sha256_hex.is_some_and(|given| given != sha) {
                return Err(Error::Rejected(
                    "CodeSha256 does not match the code of $LATEST".to_owned(),
                ));
            }
            conn.execute(
                "UPDATE versions SET published = 1,
                     description = CASE WHEN published = 1 THEN description ELSE ?3 END
                 WHERE function = ?1 AND version = ?2",
                params![function, latest, description],
            )?;
            Ok(latest as u64)
        })
        .await
    }

    /// The published versions of a function, oldest first, with their descriptions.
    pub async fn published_versions(&self, function: &str) -> Result<Vec<(u64, String)>> {
        let function = function.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT version, description FROM versions WHERE function = ?1 AND published = 1
                 ORDER BY version",
            )?;
            let rows =
                stmt.query_map([&function], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// Whether a version is published.
    pub async fn is_published(&self, function: &str, version: u64) -> Result<bool> {
        let function = function.to_owned();
        self.read(move |conn| published(conn, &function, version))
            .await
    }

    /// Deletes a published version: refused while an alias points to it; the version that
    /// backs `$LATEST` only stops being published.
    pub async fn delete_version(&self, function: &str, version: u64) -> Result<()> {
        let function = function.to_owned();
        self.write(move |conn| {
            if !published(conn, &function, version)? {
                return Err(Error::FunctionNotFound {
                    name: format!("{function}:{version}"),
                });
            }
            let used: Option<String> = conn
                .query_row(
                    "SELECT name FROM aliases WHERE function = ?1
                     AND (version = ?2 OR additional_version = ?2) LIMIT 1",
                    params![function, version as i64],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(alias) = used {
                return Err(Error::Conflict(format!(
                    "version {version} is used by alias {alias}: point the alias elsewhere first"
                )));
            }
            conn.execute(
                "UPDATE versions SET published = 0 WHERE function = ?1 AND version = ?2",
                params![function, version as i64],
            )?;
            conn.execute(
                "DELETE FROM versions WHERE function = ?1 AND version = ?2
                 AND version <> (SELECT latest_version FROM functions WHERE name = ?1)",
                params![function, version as i64],
            )?;
            Ok(())
        })
        .await
    }

    /// Creates an alias of published versions.
    pub async fn create_alias(
        &self,
        function: &str,
        name: &str,
        change: AliasChange,
    ) -> Result<AliasRecord> {
        let (function, name) = (function.to_owned(), name.to_owned());
        self.write(move |conn| {
            check_targets(conn, &function, &change)?;
            if load_alias(conn, &function, &name)?.is_some() {
                return Err(Error::Conflict(format!(
                    "Alias already exists: {function}:{name}"
                )));
            }
            conn.execute(
                &format!(
                    "INSERT INTO aliases ({ALIAS_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                ),
                params![
                    function,
                    name,
                    change.version as i64,
                    change.additional.map(|(v, _)| v as i64),
                    change.additional.map(|(_, w)| w),
                    change.description,
                    uuid::Uuid::new_v4().to_string()
                ],
            )?;
            load_alias(conn, &function, &name)?.ok_or(Error::Closed)
        })
        .await
    }

    /// Changes an alias; `revision_id`, when given, must be the current one.
    pub async fn update_alias(
        &self,
        function: &str,
        name: &str,
        change: AliasChange,
        revision_id: Option<String>,
    ) -> Result<AliasRecord> {
        let (function, name) = (function.to_owned(), name.to_owned());
        self.write(move |conn| {
            let current =
                load_alias(conn, &function, &name)?.ok_or_else(|| Error::FunctionNotFound {
                    name: format!("{function}:{name}"),
                })?;
            if let Some(given) = revision_id
                && given != current.revision_id
            {
                return Err(Error::RevisionMismatch {
                    given,
                    current: current.revision_id,
                });
            }
            check_targets(conn, &function, &change)?;
            conn.execute(
                "UPDATE aliases SET version = ?3, additional_version = ?4, additional_weight = ?5,
                     description = ?6, revision_id = ?7
                 WHERE function = ?1 AND name = ?2",
                params![
                    function,
                    name,
                    change.version as i64,
                    change.additional.map(|(v, _)| v as i64),
                    change.additional.map(|(_, w)| w),
                    change.description,
                    uuid::Uuid::new_v4().to_string()
                ],
            )?;
            load_alias(conn, &function, &name)?.ok_or(Error::Closed)
        })
        .await
    }

    /// Deletes an alias.
    pub async fn delete_alias(&self, function: &str, name: &str) -> Result<()> {
        let (function, name) = (function.to_owned(), name.to_owned());
        self.write(move |conn| {
            match conn.execute(
                "DELETE FROM aliases WHERE function = ?1 AND name = ?2",
                params![function, name],
            )? {
                0 => Err(Error::FunctionNotFound {
                    name: format!("{function}:{name}"),
                }),
                _ => Ok(()),
            }
        })
        .await
    }

    /// Every alias of every function.
    pub async fn list_aliases(&self) -> Result<Vec<AliasRecord>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {ALIAS_COLUMNS} FROM aliases ORDER BY function, name"
            ))?;
            let rows = stmt.query_map([], alias_from_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }
}
