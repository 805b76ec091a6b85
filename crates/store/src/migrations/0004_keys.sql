-- API keys (only their SHA-256 is kept), usage plans, and per-key request counts per period.
CREATE TABLE usage_plans (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL
);

CREATE TABLE api_keys (
    name       TEXT PRIMARY KEY,
    hash       TEXT NOT NULL UNIQUE,
    plan       TEXT,
    created_ms INTEGER NOT NULL
);

-- period: 'day:YYYY-MM-DD' or 'month:YYYY-MM' (UTC).
CREATE TABLE key_usage (
    key    TEXT NOT NULL,
    period TEXT NOT NULL,
    count  INTEGER NOT NULL,
    PRIMARY KEY (key, period)
);
