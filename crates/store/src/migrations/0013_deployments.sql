-- Gradual deployments: an alias moving from one version to another step by step, and how
-- each ended. `spec` is the deployment preference as JSON (owned by the gateway).
CREATE TABLE deployments (
    id           TEXT PRIMARY KEY,
    function     TEXT NOT NULL,
    alias        TEXT NOT NULL,
    from_version INTEGER NOT NULL,
    to_version   INTEGER NOT NULL,
    spec         TEXT NOT NULL,
    -- InProgress, Succeeded, RolledBack
    status       TEXT NOT NULL,
    weight       REAL NOT NULL,
    reason       TEXT NOT NULL,
    started_ms   INTEGER NOT NULL,
    updated_ms   INTEGER NOT NULL
);
CREATE INDEX deployments_by_function ON deployments (function, started_ms);
