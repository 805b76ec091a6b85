-- Metric time series: one row per series (namespace, name, dimension set), and its points as
-- rollups at 1-second and 1-minute resolution. Several rows may share a bucket (a late value,
-- two PutMetricData calls in one second): readers merge them.
CREATE TABLE metric_series (
    id INTEGER PRIMARY KEY,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    -- canonical JSON [[name, value], ...] sorted by name
    dimensions TEXT NOT NULL,
    -- last time a point was written, epoch seconds (ListMetrics RecentlyActive)
    last_ts INTEGER NOT NULL,
    UNIQUE (namespace, name, dimensions)
);
CREATE TABLE metric_points (
    series INTEGER NOT NULL REFERENCES metric_series (id) ON DELETE CASCADE,
    -- seconds per point: 1 or 60
    resolution INTEGER NOT NULL,
    -- bucket start, epoch seconds
    ts INTEGER NOT NULL,
    unit TEXT NOT NULL,
    count REAL NOT NULL,
    sum REAL NOT NULL,
    min REAL NOT NULL,
    max REAL NOT NULL,
    -- HDR histogram (V2 encoding) of the values, or NULL when percentiles are unavailable
    histogram BLOB
);
CREATE INDEX metric_points_by_series ON metric_points (series, resolution, ts);
CREATE INDEX metric_points_by_age ON metric_points (resolution, ts);
-- How far the 1-minute rollup has come: every minute before `done_until` has its rows.
CREATE TABLE metric_rollup (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    done_until INTEGER NOT NULL
);
