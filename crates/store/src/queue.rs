//! The durable queue of asynchronous invocations: enqueue (committed before the 202), claim by
//! lease in one statement, ack, retry later, or dead-letter.

use rusqlite::{OptionalExtension, params};

use crate::{Result, Store};

/// An event a worker holds under a lease.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedEvent {
    /// The request id answered with the 202.
    pub id: String,
    /// Function name.
    pub function: String,
    /// `$LATEST` or a version number.
    pub qualifier: String,
    /// The event.
    pub payload: Vec<u8>,
    /// When it was accepted, epoch ms.
    pub enqueued_ms: i64,
    /// Failed deliveries before this one.
    pub attempts: u32,
    /// The caller's trace header (X-Ray form), if it was traced.
    pub trace: Option<String>,
}

/// An event to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The request id answered with the 202.
    pub id: String,
    /// Function name.
    pub function: String,
    /// `$LATEST` or a version number.
    pub qualifier: String,
    /// The event.
    pub payload: Vec<u8>,
    /// When it was accepted, epoch ms.
    pub enqueued_ms: i64,
    /// The caller's trace header (X-Ray form, naming the enqueuing span).
    pub trace: Option<String>,
}

fn insert_event(conn: &rusqlite::Connection, e: &NewEvent) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "INSERT INTO events (id, function, qualifier, payload, enqueued_ms, next_attempt_ms, trace)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)",
    )?
    .execute(params![
        e.id,
        e.function,
        e.qualifier,
        e.payload,
        e.enqueued_ms,
        e.trace
    ])
}

const SELECT_DEAD: &str = "SELECT id, function, payload, enqueued_ms, failed_ms, attempts, reason, last_error FROM dead_letters";

fn dead_letter_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeadLetter> {
    Ok(DeadLetter {
        id: r.get(0)?,
        function: r.get(1)?,
        payload: r.get(2)?,
        enqueued_ms: r.get(3)?,
        failed_ms: r.get(4)?,
        attempts: r.get::<_, i64>(5)? as u32,
        reason: r.get(6)?,
        last_error: r.get(7)?,
    })
}

/// A dead-lettered event.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The request id.
    pub id: String,
    /// Function name.
    pub function: String,
    /// The event.
    pub payload: Vec<u8>,
    /// When it was accepted, epoch ms.
    pub enqueued_ms: i64,
    /// When it was given up on, epoch ms.
    pub failed_ms: i64,
    /// Deliveries tried.
    pub attempts: u32,
    /// Why it was given up on (`RetriesExhausted`, `EventAgeExceeded`, `FunctionDeleted`).
    pub reason: String,
    /// The last failure's error, if any.
    pub last_error: Option<String>,
}

impl Store {
    /// Stores an event; returns once it is committed (fsync), so a 202 can follow.
    pub async fn enqueue(&self, event: NewEvent) -> Result<()> {
        self.write(move |conn| {
            insert_event(conn, &event)?;
            Ok(())
        })
        .await
    }

    /// Like [`Store::enqueue`], deduplicated by a client key: when the function saw `key` within
    /// the last `window_ms`, nothing is stored and the first request's id is returned.
    pub async fn enqueue_once(
        &self,
        event: NewEvent,
        key: String,
        window_ms: i64,
    ) -> Result<String> {
        self.write(move |conn| {
            conn.execute(
                "DELETE FROM idempotency_keys WHERE function = ?1 AND key = ?2 AND created_ms < ?3",
                params![event.function, key, event.enqueued_ms - window_ms],
            )?;
            let first: Option<String> = conn
                .query_row(
                    "SELECT request_id FROM idempotency_keys WHERE function = ?1 AND key = ?2",
                    params![event.function, key],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(first) = first {
                return Ok(first);
            }
            conn.execute(
                "INSERT INTO idempotency_keys (function, key, request_id, created_ms) VALUES (?1, ?2, ?3, ?4)",
                params![event.function, key, event.id, event.enqueued_ms],
            )?;
            insert_event(conn, &event)?;
            Ok(event.id)
        })
        .await
    }

    /// Forgets idempotency keys older than `before_ms`; returns how many.
    pub async fn prune_idempotency_keys(&self, before_ms: i64) -> Result<usize> {
        self.write(move |conn| {
            Ok(conn.execute(
                "DELETE FROM idempotency_keys WHERE created_ms < ?1",
                [before_ms],
            )?)
        })
        .await
    }

    /// Leases up to `limit` due events until `now_ms + lease_ms`, in one statement: an event
    /// whose worker dies comes back when its lease lapses.
    pub async fn claim(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<QueuedEvent>> {
        self.write(move |conn| {
            let mut stmt = conn.prepare_cached(
                "UPDATE events SET lease_until_ms = ?1 + ?2
                 WHERE id IN (SELECT id FROM events
                              WHERE next_attempt_ms <= ?1 AND (lease_until_ms IS NULL OR lease_until_ms <= ?1)
                              ORDER BY next_attempt_ms LIMIT ?3)
                 RETURNING id, function, qualifier, payload, enqueued_ms, attempts, trace",
            )?;
            let rows = stmt.query_map(params![now_ms, lease_ms, limit as i64], |r| {
                Ok(QueuedEvent {
                    id: r.get(0)?,
                    function: r.get(1)?,
                    qualifier: r.get(2)?,
                    payload: r.get(3)?,
                    enqueued_ms: r.get(4)?,
                    attempts: r.get::<_, i64>(5)? as u32,
                    trace: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    /// Delivered: the event is gone.
    pub async fn ack(&self, id: String) -> Result<()> {
        self.write(move |conn| {
            conn.execute("DELETE FROM events WHERE id = ?1", [&id])?;
            Ok(())
        })
        .await
    }

    /// Tries again at `next_attempt_ms`; `failed` counts the delivery as an attempt (throttles
    /// and platform errors do not).
    pub async fn retry_later(
        &self,
        id: String,
        next_attempt_ms: i64,
        failed: bool,
        error: Option<String>,
    ) -> Result<()> {
        self.write(move |conn| {
            conn.execute(
                "UPDATE events SET next_attempt_ms = ?2, lease_until_ms = NULL,
                        attempts = attempts + ?3, last_error = COALESCE(?4, last_error)
                 WHERE id = ?1",
                params![id, next_attempt_ms, i64::from(failed), error],
            )?;
            Ok(())
        })
        .await
    }

    /// Moves an event to the dead-letter table, in one transaction.
    pub async fn dead_letter(
        &self,
        id: String,
        reason: String,
        error: Option<String>,
        attempts: u32,
        now_ms: i64,
    ) -> Result<()> {
        self.write(move |conn| {
            conn.execute(
                "INSERT OR REPLACE INTO dead_letters
                   (id, function, qualifier, payload, enqueued_ms, failed_ms, attempts, reason, last_error)
                 SELECT id, function, qualifier, payload, enqueued_ms, ?2, ?3, ?4, COALESCE(?5, last_error)
                 FROM events WHERE id = ?1",
                params![id, now_ms, attempts as i64, reason, error],
            )?;
            conn.execute("DELETE FROM events WHERE id = ?1", [&id])?;
            Ok(())
        })
        .await
    }

    /// Dead letters of a function, newest first.
    pub async fn dead_letters(&self, function: &str, limit: usize) -> Result<Vec<DeadLetter>> {
        let function = function.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "{SELECT_DEAD} WHERE function = ?1 ORDER BY failed_ms DESC LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![function, limit as i64], dead_letter_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    /// Releases every lease (at start: the previous run's workers are gone, and this server
    /// owns the data dir alone).
    pub async fn release_leases(&self) -> Result<usize> {
        self.write(|conn| {
            Ok(conn.execute(
                "UPDATE events SET lease_until_ms = NULL WHERE lease_until_ms IS NOT NULL",
                [],
            )?)
        })
        .await
    }

    /// How many dead letters a function has.
    pub async fn dead_letter_count(&self, function: &str) -> Result<u64> {
        let function = function.to_owned();
        self.read(move |conn| {
            Ok(conn.query_row(
                "SELECT count(*) FROM dead_letters WHERE function = ?1",
                [&function],
                |r| r.get::<_, i64>(0),
            )? as u64)
        })
        .await
    }

    /// Events waiting (or leased) for a function, and the oldest one's enqueue time.
    pub async fn queue_depth(&self, function: &str) -> Result<(u64, Option<i64>)> {
        let function = function.to_owned();
        self.read(move |conn| {
            Ok(conn.query_row(
                "SELECT count(*), min(enqueued_ms) FROM events WHERE function = ?1",
                [&function],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
            )?)
        })
        .await
    }
}

/// Event invoke configurations and the moves between queue, destinations and dead letters.
impl Store {
    /// Sets the configuration of `function:qualifier`.
    pub async fn put_event_invoke_config(
        &self,
        function: String,
        qualifier: String,
        config: rampart_model::EventInvokeConfig,
        now_ms: i64,
    ) -> Result<()> {
        let json = serde_json::to_string(&config).expect("a config always serializes");
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO event_invoke_configs (function, qualifier, config, last_modified_ms)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (function, qualifier) DO UPDATE
                 SET config = excluded.config, last_modified_ms = excluded.last_modified_ms",
                params![function, qualifier, json, now_ms],
            )?;
            Ok(())
        })
        .await
    }

    /// Removes a configuration; false when there was none.
    pub async fn delete_event_invoke_config(
        &self,
        function: String,
        qualifier: String,
    ) -> Result<bool> {
        self.write(move |conn| {
            Ok(conn.execute(
                "DELETE FROM event_invoke_configs WHERE function = ?1 AND qualifier = ?2",
                params![function, qualifier],
            )? > 0)
        })
        .await
    }

    /// Every configuration: (function, qualifier, config, last modified ms).
    pub async fn list_event_invoke_configs(
        &self,
    ) -> Result<Vec<(String, String, rampart_model::EventInvokeConfig, i64)>> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT function, qualifier, config, last_modified_ms FROM event_invoke_configs ORDER BY function, qualifier",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?))
            })?;
            rows.map(|row| {
                let (f, q, c, t) = row?;
                let config = serde_json::from_str(&c)
                    .map_err(|e| crate::Error::Corrupt(format!("event invoke config: {e}")))?;
                Ok((f, q, config, t))
            })
            .collect()
        })
        .await
    }

    /// Replaces event `id` by a new event `new_id` for `destination` carrying `record`, in one
    /// transaction: the record is stored before the source is removed.
    pub async fn forward(
        &self,
        id: String,
        new_id: String,
        destination: String,
        record: Vec<u8>,
        now_ms: i64,
    ) -> Result<()> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO events (id, function, qualifier, payload, enqueued_ms, next_attempt_ms, trace)
                 VALUES (?1, ?2, '$LATEST', ?3, ?4, ?4, (SELECT trace FROM events WHERE id = ?5))",
                params![new_id, destination, record, now_ms, id],
            )?;
            conn.execute("DELETE FROM events WHERE id = ?1", [&id])?;
            Ok(())
        })
        .await
    }

    /// One dead letter.
    pub async fn dead_letter_by_id(&self, id: &str) -> Result<Option<DeadLetter>> {
        let id = id.to_owned();
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    &format!("{SELECT_DEAD} WHERE id = ?1"),
                    [&id],
                    dead_letter_from_row,
                )
                .optional()?)
        })
        .await
    }

    /// Puts dead letters of `function` (one, or all) back in the queue as fresh events, in one
    /// transaction: each is removed from the dead letters only with its new event committed.
    /// Returns how many were replayed.
    pub async fn replay_dead_letters(
        &self,
        function: String,
        id: Option<String>,
        now_ms: i64,
    ) -> Result<usize> {
        self.write(move |conn| {
            let moved = conn.execute(
                "INSERT INTO events (id, function, qualifier, payload, enqueued_ms, next_attempt_ms)
                 SELECT id, function, qualifier, payload, ?2, ?2 FROM dead_letters
                 WHERE function = ?1 AND (?3 IS NULL OR id = ?3)",
                params![function, now_ms, id],
            )?;
            conn.execute(
                "DELETE FROM dead_letters WHERE function = ?1 AND (?2 IS NULL OR id = ?2)",
                params![function, id],
            )?;
            Ok(moved)
        })
        .await
    }

    /// Deletes the dead letters of a function; returns how many.
    pub async fn purge_dead_letters(&self, function: String) -> Result<usize> {
        self.write(move |conn| {
            Ok(conn.execute("DELETE FROM dead_letters WHERE function = ?1", [&function])?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_are_leased_acked_retried_and_dead_lettered() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for i in 0..3 {
            store
                .enqueue(NewEvent {
                    id: format!("e{i}"),
                    function: "f".into(),
                    qualifier: "$LATEST".into(),
                    payload: vec![b'{', b'}'],
                    enqueued_ms: 100 + i,
                    trace: None,
                })
                .await
                .unwrap();
        }
        let claimed = store.claim(200, 1000, 2).await.unwrap();
        assert_eq!(
            claimed.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["e0", "e1"]
        );
        // Leased ones are not handed out again until the lease lapses.
        let again = store.claim(300, 1000, 10).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].id, "e2");
        assert!(store.claim(1100, 1000, 10).await.unwrap().is_empty());
        let lapsed = store.claim(1300, 1000, 10).await.unwrap();
        assert_eq!(lapsed.len(), 3, "expired leases come back");
        store.ack("e0".into()).await.unwrap();
        store
            .retry_later("e1".into(), 5000, true, Some("boom".into()))
            .await
            .unwrap();
        assert!(
            store
                .claim(4000, 1000, 10)
                .await
                .unwrap()
                .iter()
                .all(|e| e.id != "e1")
        );
        let e1 = store
            .claim(5000, 1000, 10)
            .await
            .unwrap()
            .into_iter()
            .find(|e| e.id == "e1")
            .unwrap();
        assert_eq!(e1.attempts, 1);
        store
            .dead_letter("e1".into(), "RetriesExhausted".into(), None, 3, 6000)
            .await
            .unwrap();
        let dead = store.dead_letters("f", 10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(
            (
                dead[0].reason.as_str(),
                dead[0].attempts,
                dead[0].last_error.as_deref()
            ),
            ("RetriesExhausted", 3, Some("boom"))
        );
        assert_eq!(store.queue_depth("f").await.unwrap(), (1, Some(102)));
    }

    /// Operations on the queue, for the state-machine property test.
    #[derive(Debug, Clone)]
    enum Op {
        Enqueue,
        Claim {
            lease: i64,
            limit: usize,
        },
        Ack(usize),
        Retry {
            pick: usize,
            delay: i64,
            failed: bool,
        },
        DeadLetter(usize),
        Advance(i64),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            3 => Just(Op::Enqueue),
            3 => (1i64..50, 1usize..5).prop_map(|(lease, limit)| Op::Claim { lease, limit }),
            2 => any::<usize>().prop_map(Op::Ack),
            2 => (any::<usize>(), 0i64..30, any::<bool>()).prop_map(|(pick, delay, failed)| Op::Retry { pick, delay, failed }),
            1 => any::<usize>().prop_map(Op::DeadLetter),
            2 => (1i64..40).prop_map(Op::Advance),
        ]
    }

    /// The model: what each stored event should look like.
    #[derive(Debug, Clone)]
    struct Modeled {
        next_attempt: i64,
        lease_until: Option<i64>,
        attempts: u32,
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// The SQLite queue behaves as a simple in-memory model: claims return exactly the due,
        /// unleased events (oldest due first, up to the limit); no event is ever lost or
        /// duplicated between the queue and the dead letters.
        #[test]
        fn queue_matches_its_model(ops in proptest::collection::vec(op(), 1..60)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let store = Store::open(dir.path()).unwrap();
                let mut model: std::collections::BTreeMap<String, Modeled> = Default::default();
                let mut dead: std::collections::BTreeSet<String> = Default::default();
                let mut acked: std::collections::BTreeSet<String> = Default::default();
                let mut now = 1_000i64;
                let mut counter = 0;
                for op in ops {
                    match op {
                        Op::Enqueue => {
                            counter += 1;
                            let id = format!("e{counter:04}");
                            store.enqueue(NewEvent { id: id.clone(), function: "f".into(), qualifier: "$LATEST".into(), payload: vec![], enqueued_ms: now, trace: None }).await.unwrap();
                            model.insert(id, Modeled { next_attempt: now, lease_until: None, attempts: 0 });
                            // Distinct times keep the due order unambiguous.
                            now += 1;
                        }
                        Op::Claim { lease, limit } => {
                            let mut due: Vec<(&String, &Modeled)> = model
                                .iter()
                                .filter(|(_, m)| m.next_attempt <= now && m.lease_until.is_none_or(|l| l <= now))
                                .collect();
                            due.sort_by_key(|(id, m)| (m.next_attempt, (*id).clone()));
                            let expected: std::collections::BTreeSet<String> = due.iter().take(limit).map(|(id, _)| (*id).clone()).collect();
                            let claimed = store.claim(now, lease, limit).await.unwrap();
                            let got: std::collections::BTreeSet<String> = claimed.iter().map(|e| e.id.clone()).collect();
                            proptest::prop_assert_eq!(&got, &expected);
                            for e in &claimed {
                                proptest::prop_assert_eq!(e.attempts, model[&e.id].attempts);
                                model.get_mut(&e.id).unwrap().lease_until = Some(now + lease);
                            }
                        }
                        Op::Ack(pick) => {
                            if let Some(id) = model.keys().nth(pick % model.len().max(1)).cloned() {
                                store.ack(id.clone()).await.unwrap();
                                model.remove(&id);
                                acked.insert(id);
                            }
                        }
                        Op::Retry { pick, delay, failed } => {
                            if let Some(id) = model.keys().nth(pick % model.len().max(1)).cloned() {
                                store.retry_later(id.clone(), now + delay, failed, None).await.unwrap();
                                let m = model.get_mut(&id).unwrap();
                                m.next_attempt = now + delay;
                                m.lease_until = None;
                                m.attempts += u32::from(failed);
                            }
                        }
                        Op::DeadLetter(pick) => {
                            if let Some(id) = model.keys().nth(pick % model.len().max(1)).cloned() {
                                let attempts = model[&id].attempts;
                                store.dead_letter(id.clone(), "RetriesExhausted".into(), None, attempts, now).await.unwrap();
                                model.remove(&id);
                                dead.insert(id);
                            }
                        }
                        Op::Advance(by) => now += by,
                    }
                    // Invariant: every event is in exactly one place.
                    let (depth, _) = store.queue_depth("f").await.unwrap();
                    proptest::prop_assert_eq!(depth as usize, model.len());
                    let stored_dead = store.dead_letters("f", 10_000).await.unwrap();
                    proptest::prop_assert_eq!(stored_dead.len(), dead.len());
                    proptest::prop_assert_eq!(model.len() + dead.len() + acked.len(), counter);
                }
                Ok(())
            })?;
        }
    }
}
