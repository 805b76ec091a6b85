-- Metric alarms (definition as JSON, owned by the telemetry crate) with their state, and the
-- history of configuration and state changes (DescribeAlarmHistory).
CREATE TABLE alarms (
    name              TEXT PRIMARY KEY,
    definition        TEXT NOT NULL,
    state             TEXT NOT NULL,
    reason            TEXT NOT NULL,
    reason_data       TEXT,
    state_updated_ms  INTEGER NOT NULL,
    config_updated_ms INTEGER NOT NULL
);
CREATE TABLE alarm_history (
    id      INTEGER PRIMARY KEY,
    alarm   TEXT NOT NULL,
    ts_ms   INTEGER NOT NULL,
    -- ConfigurationUpdate, StateUpdate or Action
    kind    TEXT NOT NULL,
    summary TEXT NOT NULL,
    data    TEXT NOT NULL
);
CREATE INDEX alarm_history_by_alarm ON alarm_history (alarm, ts_ms);
