-- Functions and their immutable versions. A function row points at its newest version ($LATEST).
CREATE TABLE functions (
    name           TEXT PRIMARY KEY,
    latest_version INTEGER NOT NULL,
    revision_id    TEXT NOT NULL,
    created_ms     INTEGER NOT NULL
);

-- One row per deploy; never updated. `config` is the JSON of rampart_model::FunctionConfig.
CREATE TABLE versions (
    function    TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    version     INTEGER NOT NULL,
    config      TEXT NOT NULL,
    code_sha256 TEXT NOT NULL,
    code_size   INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL,
    PRIMARY KEY (function, version)
);

-- Function output and platform lines, kept under a retention limit.
CREATE TABLE logs (
    id         INTEGER PRIMARY KEY,
    function   TEXT NOT NULL,
    version    TEXT NOT NULL,
    instance   TEXT NOT NULL,
    request_id TEXT,
    ts_ms      INTEGER NOT NULL,
    stream     TEXT NOT NULL,
    line       TEXT NOT NULL
);
CREATE INDEX logs_function_id ON logs(function, id);
CREATE INDEX logs_request ON logs(request_id);
