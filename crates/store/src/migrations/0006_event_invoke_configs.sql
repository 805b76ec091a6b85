-- Per function and qualifier: retries, event age and destinations of asynchronous invocations.
CREATE TABLE event_invoke_configs (
    function         TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    qualifier        TEXT NOT NULL,
    config           TEXT NOT NULL,
    last_modified_ms INTEGER NOT NULL,
    PRIMARY KEY (function, qualifier)
);
