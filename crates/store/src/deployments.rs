//! Gradual deployments as rows: created in progress, updated at each step, ended as
//! succeeded or rolled back.

use rusqlite::params;

use crate::{Result, Store};

/// A deployment as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentRow {
    /// `d-` and a random id.
    pub id: String,
    /// The function.
    pub function: String,
    /// The alias being moved.
    pub alias: String,
    /// The version it moves from.
    pub from_version: u64,
    /// The version it moves to.
    pub to_version: u64,
    /// The deployment preference (JSON).
    pub spec: String,
    /// `InProgress`, `Succeeded` or `RolledBack`.
    pub status: String,
    /// The share of traffic on the new version now.
    pub weight: f64,
    /// What happened last.
    pub reason: String,
    /// Epoch ms.
    pub started_ms: i64,
    /// Epoch ms.
    pub updated_ms: i64,
}

const COLUMNS: &str = "id, function, alias, from_version, to_version, spec, status, weight, reason, started_ms, updated_ms";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeploymentRow> {
    Ok(DeploymentRow {
        id: r.get(0)?,
        function: r.get(1)?,
        alias: r.get(2)?,
        from_version: r.get::<_, i64>(3)? as u64,
        to_version: r.get::<_, i64>(4)? as u64,
        spec: r.get(5)?,
        status: r.get(6)?,
        weight: r.get(7)?,
        reason: r.get(8)?,
        started_ms: r.get(9)?,
        updated_ms: r.get(10)?,
    })
}

impl Store {
    /// Stores a new deployment.
    pub async fn insert_deployment(&self, d: DeploymentRow) -> Result<()> {
        self.write(move |conn| {
            conn.execute(
                &format!("INSERT INTO deployments ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
                params![
                    d.id,
                    d.function,
                    d.alias,
                    d.from_version as i64,
                    d.to_version as i64,
                    d.spec,
                    d.status,
                    d.weight,
                    d.reason,
                    d.started_ms,
                    d.updated_ms
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// Records a deployment's progress.
    pub async fn update_deployment(
        &self,
        id: &str,
        status: &'static str,
        weight: f64,
        reason: String,
        now_ms: i64,
    ) -> Result<()> {
        let id = id.to_owned();
        self.write(move |conn| {
            conn.execute(
                "UPDATE deployments SET status = ?2, weight = ?3, reason = ?4, updated_ms = ?5 WHERE id = ?1",
                params![id, status, weight, reason, now_ms],
            )?;
            Ok(())
        })
        .await
    }

    /// Deployments, newest first, of one function or all.
    pub async fn list_deployments(&self, function: Option<String>) -> Result<Vec<DeploymentRow>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM deployments WHERE (?1 IS NULL OR function = ?1)
                 ORDER BY started_ms DESC, id"
            ))?;
            let rows = stmt.query_map([function], row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }
}
