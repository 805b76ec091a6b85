-- Client idempotency keys of asynchronous invocations: the first request's id, within a window.
CREATE TABLE idempotency_keys (
    function   TEXT NOT NULL,
    key        TEXT NOT NULL,
    request_id TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (function, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys(created_ms);
