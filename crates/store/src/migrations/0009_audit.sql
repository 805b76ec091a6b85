-- The audit trail: every control-plane action, hash-chained. Each record holds the SHA-256 of
-- the previous record's hash and its own fields; `audit_head` holds the newest record's
-- sequence number and hash, written in the same transaction, so a removed tail shows too.
CREATE TABLE audit (
    seq        INTEGER PRIMARY KEY,
    ts_ms      INTEGER NOT NULL,
    principal  TEXT NOT NULL,
    source     TEXT NOT NULL,
    action     TEXT NOT NULL,
    resource   TEXT NOT NULL,
    -- JSON, secrets redacted
    parameters TEXT NOT NULL,
    -- `OK`, or the error code
    result     TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE INDEX audit_by_time ON audit (ts_ms);
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
);
