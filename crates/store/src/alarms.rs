//! Alarms and their history. The definition is opaque JSON here (the telemetry crate owns it);
//! the store keeps the state, when it changed, and every change in the history.

use rusqlite::{OptionalExtension, params};

use crate::{Error, Result, Store};

/// A stored alarm.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmRow {
    /// Its name.
    pub name: String,
    /// Its definition (JSON).
    pub definition: String,
    /// `OK`, `ALARM` or `INSUFFICIENT_DATA`.
    pub state: String,
    /// Why it is in that state.
    pub reason: String,
    /// Machine-readable detail of the reason (JSON), if any.
    pub reason_data: Option<String>,
    /// When the state last changed, epoch ms.
    pub state_updated_ms: i64,
    /// When the definition last changed, epoch ms.
    pub config_updated_ms: i64,
}

/// One history item.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmHistoryItem {
    /// The alarm.
    pub alarm: String,
    /// When, epoch ms.
    pub ts_ms: i64,
    /// `ConfigurationUpdate`, `StateUpdate` or `Action`.
    pub kind: String,
    /// A sentence.
    pub summary: String,
    /// Detail as JSON.
    pub data: String,
}

fn history(
    conn: &rusqlite::Connection,
    alarm: &str,
    ts_ms: i64,
    kind: &str,
    summary: &str,
    data: &str,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "INSERT INTO alarm_history (alarm, ts_ms, kind, summary, data) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![alarm, ts_ms, kind, summary, data])
}

const COLUMNS: &str =
    "name, definition, state, reason, reason_data, state_updated_ms, config_updated_ms";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AlarmRow> {
    Ok(AlarmRow {
        name: r.get(0)?,
        definition: r.get(1)?,
        state: r.get(2)?,
        reason: r.get(3)?,
        reason_data: r.get(4)?,
        state_updated_ms: r.get(5)?,
        config_updated_ms: r.get(6)?,
    })
}

impl Store {
    /// Creates an alarm (in `INSUFFICIENT_DATA`) or replaces its definition (keeping its
    /// state), and records the change.
    pub async fn put_alarm(&self, name: &str, definition: String, now_ms: i64) -> Result<()> {
        let name = name.to_owned();
        self.write(move |conn| {
            let existed = conn.execute(
                "UPDATE alarms SET definition = ?2, config_updated_ms = ?3 WHERE name = ?1",
                params![name, definition, now_ms],
            )? > 0;
            if !existed {
                conn.execute(
                    &format!("INSERT INTO alarms ({COLUMNS}) VALUES (?1, ?2, 'INSUFFICIENT_DATA', 'Unchecked: Initial alarm creation', NULL, ?3, ?3)"),
                    params![name, definition, now_ms],
                )?;
            }
            let summary = if existed { "Alarm updated" } else { "Alarm created" };
            history(conn, &name, now_ms, "ConfigurationUpdate", &format!("{summary}: {name}"), &definition)?;
            Ok(())
        })
        .await
    }

    /// Every alarm, by name.
    pub async fn list_alarms(&self) -> Result<Vec<AlarmRow>> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare_cached(&format!("SELECT {COLUMNS} FROM alarms ORDER BY name"))?;
            let rows = stmt.query_map([], row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// Deletes alarms; all or none (an unknown name fails the whole call).
    pub async fn delete_alarms(&self, names: Vec<String>, now_ms: i64) -> Result<()> {
        self.write(move |conn| {
            for name in &names {
                let deleted = conn.execute("DELETE FROM alarms WHERE name = ?1", [name])?;
                if deleted == 0 {
                    return Err(Error::FunctionNotFound {
                        name: format!("alarm {name}"),
                    });
                }
                history(
                    conn,
                    name,
                    now_ms,
                    "ConfigurationUpdate",
                    &format!("Alarm deleted: {name}"),
                    "{}",
                )?;
            }
            Ok(())
        })
        .await
    }

    /// Sets an alarm's state and records the update; returns the previous state.
    pub async fn set_alarm_state(
        &self,
        name: &str,
        state: &'static str,
        reason: String,
        reason_data: Option<String>,
        now_ms: i64,
    ) -> Result<String> {
        let name = name.to_owned();
        self.write(move |conn| {
            let previous: String = conn
                .query_row("SELECT state FROM alarms WHERE name = ?1", [&name], |r| {
                    r.get(0)
                })
                .optional()?
                .ok_or_else(|| Error::FunctionNotFound {
                    name: format!("alarm {name}"),
                })?;
            conn.execute(
                "UPDATE alarms SET state = ?2, reason = ?3, reason_data = ?4, state_updated_ms = ?5
                 WHERE name = ?1",
                params![name, state, reason, reason_data, now_ms],
            )?;
            let data = serde_json::json!({
                "version": "1.0",
                "oldState": {"stateValue": previous},
                "newState": {"stateValue": state, "stateReason": reason},
            });
            history(
                conn,
                &name,
                now_ms,
                "StateUpdate",
                &format!("Alarm updated from {previous} to {state}"),
                &data.to_string(),
            )?;
            Ok(previous)
        })
        .await
    }

    /// Adds a history item (an action's outcome).
    pub async fn record_alarm_history(
        &self,
        alarm: &str,
        kind: &'static str,
        summary: String,
        data: String,
        now_ms: i64,
    ) -> Result<()> {
        let alarm = alarm.to_owned();
        self.write(move |conn| {
            history(conn, &alarm, now_ms, kind, &summary, &data)?;
            Ok(())
        })
        .await
    }

    /// History items, newest first, optionally of one alarm and kind, within a time range.
    pub async fn alarm_history(
        &self,
        alarm: Option<String>,
        kind: Option<String>,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<AlarmHistoryItem>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT alarm, ts_ms, kind, summary, data FROM alarm_history
                 WHERE (?1 IS NULL OR alarm = ?1) AND (?2 IS NULL OR kind = ?2)
                   AND ts_ms >= ?3 AND ts_ms < ?4
                 ORDER BY id DESC LIMIT ?5",
            )?;
            let rows = stmt.query_map(params![alarm, kind, from_ms, to_ms, limit as i64], |r| {
                Ok(AlarmHistoryItem {
                    alarm: r.get(0)?,
                    ts_ms: r.get(1)?,
                    kind: r.get(2)?,
                    summary: r.get(3)?,
                    data: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }
}
