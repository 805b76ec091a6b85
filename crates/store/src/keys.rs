//! API keys, usage plans and quota counts.

use rampart_model::UsagePlan;
use rusqlite::{OptionalExtension, params};

use crate::{Error, Result, Store};

/// A stored key (never its secret).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    /// The key's name.
    pub name: String,
    /// Lower-hex SHA-256 of the secret.
    pub hash: String,
    /// Its usage plan, if any.
    pub plan: Option<String>,
    /// When it was created, epoch ms.
    pub created_ms: i64,
}

/// Whether a request may be counted against its quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// Counted; these are the counts now.
    Counted {
        /// Requests today.
        day: u64,
        /// Requests this month.
        month: u64,
    },
    /// A quota is used up; nothing was counted.
    Exceeded,
}

/// Requests of `key` counted in `period` (0 when none).
fn count_of(conn: &rusqlite::Connection, key: &str, period: &str) -> rusqlite::Result<u64> {
    Ok(conn
        .query_row(
            "SELECT count FROM key_usage WHERE key = ?1 AND period = ?2",
            params![key, period],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .unwrap_or(0) as u64)
}

impl Store {
    /// Creates or replaces a usage plan.
    pub async fn put_plan(&self, name: String, plan: UsagePlan) -> Result<()> {
        let spec = serde_json::to_string(&plan).expect("a plan always serializes");
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO usage_plans (name, spec) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET spec = excluded.spec",
                params![name, spec],
            )?;
            Ok(())
        })
        .await
    }

    /// Every usage plan, by name.
    pub async fn list_plans(&self) -> Result<Vec<(String, UsagePlan)>> {
        self.read(|conn| {
            let mut stmt = conn.prepare("SELECT name, spec FROM usage_plans ORDER BY name")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            rows.map(|row| {
                let (name, spec) = row?;
                let plan = serde_json::from_str(&spec)
                    .map_err(|e| Error::Corrupt(format!("plan: {e}")))?;
                Ok((name, plan))
            })
            .collect()
        })
        .await
    }

    /// Deletes a plan; false when there was none.
    pub async fn delete_plan(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.write(move |conn| {
            Ok(conn.execute("DELETE FROM usage_plans WHERE name = ?1", [&name])? > 0)
        })
        .await
    }

    /// Stores a new key.
    ///
    /// # Errors
    /// [`Error::Rejected`] when the name is taken.
    pub async fn create_key(&self, key: ApiKey) -> Result<()> {
        self.write(move |conn| {
            let taken: bool = conn.query_row(
                "SELECT EXISTS(SELECT 1 FROM api_keys WHERE name = ?1)",
                [&key.name],
                |r| r.get(0),
            )?;
            if taken {
                return Err(Error::Rejected(format!(
                    "an API key named '{}' exists already",
                    key.name
                )));
            }
            conn.execute(
                "INSERT INTO api_keys (name, hash, plan, created_ms) VALUES (?1, ?2, ?3, ?4)",
                params![key.name, key.hash, key.plan, key.created_ms],
            )?;
            Ok(())
        })
        .await
    }

    /// Every key, by name.
    pub async fn list_keys(&self) -> Result<Vec<ApiKey>> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare("SELECT name, hash, plan, created_ms FROM api_keys ORDER BY name")?;
            let rows = stmt.query_map([], |r| {
                Ok(ApiKey {
                    name: r.get(0)?,
                    hash: r.get(1)?,
                    plan: r.get(2)?,
                    created_ms: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    /// Deletes a key and its counts; false when there was none.
    pub async fn delete_key(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.write(move |conn| {
            conn.execute("DELETE FROM key_usage WHERE key = ?1", [&name])?;
            Ok(conn.execute("DELETE FROM api_keys WHERE name = ?1", [&name])? > 0)
        })
        .await
    }

    /// Counts one request of `key` in `day` and `month` unless that would pass a limit, in one
    /// committed transaction (so counts survive a restart).
    pub async fn count_request(
        &self,
        key: String,
        day: String,
        month: String,
        day_limit: Option<u64>,
        month_limit: Option<u64>,
    ) -> Result<Quota> {
        self.write(move |conn| {
            let (d, m) = (count_of(conn, &key, &day)?, count_of(conn, &key, &month)?);
            if day_limit.is_some_and(|l| d >= l) || month_limit.is_some_and(|l| m >= l) {
                return Ok(Quota::Exceeded);
            }
            for period in [&day, &month] {
                conn.execute(
                    "INSERT INTO key_usage (key, period, count) VALUES (?1, ?2, 1)
                     ON CONFLICT (key, period) DO UPDATE SET count = count + 1",
                    params![key, period],
                )?;
            }
            Ok(Quota::Counted {
                day: d + 1,
                month: m + 1,
            })
        })
        .await
    }

    /// Counts of `key` in two periods.
    pub async fn usage(&self, key: &str, day: &str, month: &str) -> Result<(u64, u64)> {
        let (key, day, month) = (key.to_owned(), day.to_owned(), month.to_owned());
        self.read(move |conn| Ok((count_of(conn, &key, &day)?, count_of(conn, &key, &month)?)))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn quotas_count_until_exceeded_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = ApiKey {
            name: "k".into(),
            hash: "h".into(),
            plan: Some("p".into()),
            created_ms: 1,
        };
        store.create_key(key.clone()).await.unwrap();
        assert!(matches!(
            store.create_key(key).await,
            Err(Error::Rejected(_))
        ));
        async fn count(s: &Store) -> Result<Quota> {
            s.count_request("k".into(), "day:1".into(), "month:1".into(), Some(2), None)
                .await
        }
        assert_eq!(
            count(&store).await.unwrap(),
            Quota::Counted { day: 1, month: 1 }
        );
        assert_eq!(
            count(&store).await.unwrap(),
            Quota::Counted { day: 2, month: 2 }
        );
        assert_eq!(count(&store).await.unwrap(), Quota::Exceeded);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(count(&store).await.unwrap(), Quota::Exceeded);
        assert_eq!(store.usage("k", "day:1", "month:1").await.unwrap(), (2, 2));
        assert!(store.delete_key("k").await.unwrap());
        assert!(store.list_keys().await.unwrap().is_empty());
    }
}
