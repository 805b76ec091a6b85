-- Asynchronous invocations: accepted events wait here until delivered (then deleted) or dead-lettered.
CREATE TABLE events (
    id              TEXT PRIMARY KEY,          -- the request id answered with the 202
    function        TEXT NOT NULL,
    qualifier       TEXT NOT NULL,
    payload         BLOB NOT NULL,
    enqueued_ms     INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0, -- failed deliveries so far
    next_attempt_ms INTEGER NOT NULL,
    lease_until_ms  INTEGER,                   -- set while a worker holds the event
    last_error      TEXT
);
CREATE INDEX events_due ON events(next_attempt_ms);

-- Events that could not be delivered: never dropped silently.
CREATE TABLE dead_letters (
    id          TEXT PRIMARY KEY,
    function    TEXT NOT NULL,
    qualifier   TEXT NOT NULL,
    payload     BLOB NOT NULL,
    enqueued_ms INTEGER NOT NULL,
    failed_ms   INTEGER NOT NULL,
    attempts    INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    last_error  TEXT
);
CREATE INDEX dead_letters_function ON dead_letters(function, failed_ms);
