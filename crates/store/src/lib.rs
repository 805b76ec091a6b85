//! Rampart's durable state: functions, versions, code bundles and logs.
//!
//! [`Store`] wraps an embedded SQLite database (WAL, `synchronous=FULL`) written by one writer
//! thread that batches concurrent writes into one transaction (group commit), with separate read
//! connections. Code bundles live beside it as content-addressed directories ([`CodeStore`]),
//! installed atomically before the row that refers to them is committed.
#![warn(missing_docs)]

mod alarms;
mod aliases;
mod apis;
mod audit;
mod code;
mod deployments;
mod functions;
mod keys;
mod logs;
mod metrics;
mod queue;
mod sqlite;

pub use alarms::{AlarmHistoryItem, AlarmRow};
pub use aliases::{AliasChange, AliasRecord};
pub use audit::{AuditCheck, AuditRecord, NewAuditRecord};
pub use code::{CodeBundle, CodeStore};
pub use deployments::DeploymentRow;
pub use functions::{FunctionRecord, VersionRecord};
pub use keys::{ApiKey, Quota};
pub use logs::{LogLine, LogQuery, levels_from};
pub use metrics::{MetricPoint, SeriesInfo, SeriesKey, StoredPoint};
pub use queue::{DeadLetter, NewEvent, QueuedEvent};
pub use sqlite::Store;

use thiserror::Error;

/// What can go wrong in the store.
#[derive(Debug, Error)]
pub enum Error {
    /// SQLite failed.
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
    /// The transaction holding this write failed to commit.
    #[error("committing to the database")]
    Commit(#[source] std::sync::Arc<rusqlite::Error>),
    /// A file or directory of the data dir could not be used.
    #[error("{what}")]
    Io {
        /// The operation and its subject.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A deployment package was refused; the message names the problem.
    #[error("{0}")]
    InvalidBundle(String),
    /// The caller's change to a version was refused by its own checks; the message says why.
    #[error("{0}")]
    Rejected(String),
    /// The change conflicts with what exists (an alias by that name, a version in use).
    #[error("{0}")]
    Conflict(String),
    /// A function with this name exists already.
    #[error("function already exists: {name}")]
    FunctionExists {
        /// The function's name.
        name: String,
    },
    /// No such function (or version).
    #[error("function not found: {name}")]
    FunctionNotFound {
        /// The function's name.
        name: String,
    },
    /// The caller's revision id is not the current one.
    #[error("revision id {given} does not match the current revision {current}")]
    RevisionMismatch {
        /// What the caller sent.
        given: String,
        /// What the store holds.
        current: String,
    },
    /// A stored row could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The writer thread is gone (the store is closing).
    #[error("the store is closed")]
    Closed,
}

/// Result of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}
