//! The SQLite backend: one writer thread with group commit, a small pool of read connections.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::{Error, Result, io_err};

/// Numbered migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_logs_without_request_index.sql"),
    include_str!("migrations/0003_apis.sql"),
    include_str!("migrations/0004_keys.sql"),
    include_str!("migrations/0005_async_queue.sql"),
    include_str!("migrations/0006_event_invoke_configs.sql"),
    include_str!("migrations/0007_idempotency.sql"),
    include_str!("migrations/0008_metrics.sql"),
    include_str!("migrations/0009_audit.sql"),
    include_str!("migrations/0010_event_traces.sql"),
    include_str!("migrations/0011_aliases.sql"),
    include_str!("migrations/0012_alarms.sql"),
    include_str!("migrations/0013_deployments.sql"),
];

/// Most writes one transaction takes: bounds the time a batch holds the write lock.
const MAX_BATCH: usize = 256;

/// Completes a write once its transaction's fate is known.
type Reply = Box<dyn FnOnce(Result<(), Arc<rusqlite::Error>>) + Send>;
/// One unit of writing, run inside its own savepoint of the batch transaction.
type Job = Box<dyn FnOnce(&Connection) -> Reply + Send>;

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    writer: mpsc::Sender<Job>,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: Arc<PathBuf>,
}

impl Store {
    /// Opens (creating if needed) `rampart.db` in `data_dir`, runs pending migrations and starts
    /// the writer thread. The thread ends when the last handle is dropped.
    ///
    /// # Errors
    /// When the directory or database cannot be opened or a migration fails.
    pub fn open(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir)
            .map_err(io_err(format!("creating data dir {}", data_dir.display())))?;
        let path = data_dir.join("rampart.db");
        let mut conn = open_connection(&path)?;
        migrate(&mut conn)?;
        let (writer, jobs) = mpsc::channel(1024);
        std::thread::Builder::new()
            .name("rampart-store-writer".into())
            .spawn(move || write_loop(conn, jobs))
            .map_err(io_err("starting the store writer thread"))?;
        Ok(Self {
            writer,
            readers: Arc::default(),
            path: Arc::new(path),
        })
    }

    /// Runs `f` in the writer thread inside a transaction shared with other concurrent writes;
    /// returns once that transaction is durably committed (or failed).
    ///
    /// If `f` fails, only its own changes are rolled back (a savepoint), never its batch mates'.
    ///
    /// # Cancel safety
    /// Dropping the future does not cancel the write: it still commits.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = in_savepoint(conn, f);
            Box::new(move |committed| {
                let outcome = match committed {
                    Ok(()) => result,
                    Err(e) => result.and_then(|_| Err(Error::Commit(e))),
                };
                let _ = tx.send(outcome);
            })
        });
        self.writer.send(job).await.map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Runs `f` on a read connection in a blocking thread.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().expect("reader pool lock").pop();
            let conn = match pooled {
                Some(c) => c,
                None => open_connection(&path)?,
            };
            let result = f(&conn);
            let mut pool = readers.lock().expect("reader pool lock");
            if pool.len() < 8 {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|_| Error::Closed)?
    }
}

fn open_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    // WAL lets readers run beside the writer; FULL makes each commit durable on return.
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000;",
    )?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let applied: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let applied = usize::try_from(applied).unwrap_or(usize::MAX);
    if applied > MIGRATIONS.len() {
        return Err(Error::Corrupt(format!(
            "database schema version {applied} is newer than this binary knows ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(migration = i + 1, "applied store migration");
    }
    Ok(())
}

fn in_savepoint<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    // Cached statements: a batch runs these for every job, so parsing them each time shows.
    conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    let result = f(conn);
    if result.is_err() {
        conn.prepare_cached("ROLLBACK TO job")?.execute([])?;
    }
    conn.prepare_cached("RELEASE job")?.execute([])?;
    result
}

/// Takes every job waiting (up to [`MAX_BATCH`]) into one transaction, commits once, then
/// answers each: the fsync of one commit is shared by the whole batch.
fn write_loop(conn: Connection, mut jobs: mpsc::Receiver<Job>) {
    while let Some(first) = jobs.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let replies: Vec<Reply>;
        let begun = conn
            .prepare_cached("BEGIN IMMEDIATE")
            .and_then(|mut s| s.execute([]).map(|_| ()));
        let committed = match begun {
            Ok(()) => {
                replies = batch.into_iter().map(|job| job(&conn)).collect();
                conn.prepare_cached("COMMIT")
                    .and_then(|mut s| s.execute([]).map(|_| ()))
                    .map_err(|e| {
                        let _ = conn.execute_batch("ROLLBACK");
                        Arc::new(e)
                    })
            }
            Err(e) => {
                tracing::error!(error = %e, "store writer could not begin a transaction");
                // Run nothing: dropping the jobs answers their callers with `Closed`.
                drop(batch);
                replies = Vec::new();
                Err(Arc::new(e))
            }
        };
        for reply in replies {
            reply(committed.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_commit_and_failures_stay_isolated() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .write(|c| Ok(c.execute_batch("CREATE TABLE t (v INTEGER UNIQUE)")?))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                // Every 10th write collides with an earlier value and must fail alone.
                let v = if i % 10 == 9 { i - 1 } else { i };
                s.write(move |c| Ok(c.execute("INSERT INTO t VALUES (?1)", [v])?))
                    .await
            }));
        }
        let mut failed = 0;
        for t in tasks {
            if t.await.unwrap().is_err() {
                failed += 1;
            }
        }
        assert_eq!(failed, 20);
        let n: i64 = store
            .read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(n, 180);
        drop(store);
        // Reopening runs no migration twice and sees the committed rows.
        let store = Store::open(dir.path()).unwrap();
        let n: i64 = store
            .read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(n, 180);
    }
}
