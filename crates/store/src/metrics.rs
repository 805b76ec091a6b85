//! Metric time series: series by namespace, name and dimension set, and their points as
//! 1-second and 1-minute rollups. The store keeps histograms as opaque blobs; merging them is
//! the telemetry crate's.

use rusqlite::{OptionalExtension, params};

use crate::{Error, Result, Store};

/// One metric as CloudWatch names it: each distinct dimension set is a series of its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    /// `AWS/Lambda`, or a custom namespace.
    pub namespace: String,
    /// `Invocations`, `Duration`, ...
    pub name: String,
    /// `(name, value)` pairs sorted by name.
    pub dimensions: Vec<(String, String)>,
}

impl SeriesKey {
    /// A key with its dimensions sorted by name.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        mut dimensions: Vec<(String, String)>,
    ) -> Self {
        dimensions.sort();
        Self {
            namespace: namespace.into(),
            name: name.into(),
            dimensions,
        }
    }

    fn dimensions_json(&self) -> String {
        serde_json::to_string(&self.dimensions).expect("string pairs serialize")
    }
}

/// The aggregate of the values of one series in one bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    /// Seconds per bucket: 1 or 60.
    pub resolution: u32,
    /// Bucket start, epoch seconds.
    pub ts: i64,
    /// CloudWatch unit (`Count`, `Milliseconds`, `None`, ...).
    pub unit: String,
    /// How many values (statistic sets add their SampleCount).
    pub count: f64,
    /// Their sum.
    pub sum: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// The values' histogram (opaque here), absent when percentiles are unavailable.
    pub histogram: Option<Vec<u8>>,
}

/// A stored point with its series' row id.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPoint {
    /// The series' row id.
    pub series: i64,
    /// The point.
    pub point: MetricPoint,
}

/// A series as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesInfo {
    /// Row id.
    pub id: i64,
    /// Its key.
    pub key: SeriesKey,
    /// When a point was last written, epoch seconds.
    pub last_ts: i64,
}

fn point_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredPoint> {
    Ok(StoredPoint {
        series: r.get(0)?,
        point: MetricPoint {
            resolution: r.get(1)?,
            ts: r.get(2)?,
            unit: r.get(3)?,
            count: r.get(4)?,
            sum: r.get(5)?,
            min: r.get(6)?,
            max: r.get(7)?,
            histogram: r.get(8)?,
        },
    })
}

const POINT_COLUMNS: &str = "series, resolution, ts, unit, count, sum, min, max, histogram";

fn insert_points(
    conn: &rusqlite::Connection,
    series: i64,
    points: &[MetricPoint],
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO metric_points (series, resolution, ts, unit, count, sum, min, max, histogram)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for p in points {
        stmt.execute(params![
            series,
            p.resolution,
            p.ts,
            p.unit,
            p.count,
            p.sum,
            p.min,
            p.max,
            p.histogram
        ])?;
    }
    Ok(())
}

impl Store {
    /// Appends points to their series (created on first use), in one transaction.
    pub async fn put_metric_points(&self, batch: Vec<(SeriesKey, Vec<MetricPoint>)>) -> Result<()> {
        self.write(move |conn| {
            for (key, points) in &batch {
                let Some(last_ts) = points.iter().map(|p| p.ts).max() else {
                    continue;
                };
                let id: i64 = conn
                    .prepare_cached(
                        "INSERT INTO metric_series (namespace, name, dimensions, last_ts)
                         VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (namespace, name, dimensions)
                         DO UPDATE SET last_ts = max(last_ts, excluded.last_ts)
                         RETURNING id",
                    )?
                    .query_row(
                        params![key.namespace, key.name, key.dimensions_json(), last_ts],
                        |r| r.get(0),
                    )?;
                insert_points(conn, id, points)?;
            }
            Ok(())
        })
        .await
    }

    /// Series matching the filters (all when `None`), by namespace, name and dimensions.
    pub async fn list_metric_series(
        &self,
        namespace: Option<String>,
        name: Option<String>,
        active_since: Option<i64>,
    ) -> Result<Vec<SeriesInfo>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, namespace, name, dimensions, last_ts FROM metric_series
                 WHERE (?1 IS NULL OR namespace = ?1) AND (?2 IS NULL OR name = ?2)
                   AND last_ts >= ?3
                 ORDER BY namespace, name, dimensions",
            )?;
            let rows = stmt.query_map(
                params![namespace, name, active_since.unwrap_or(i64::MIN)],
                |r| {
                    let dims: String = r.get(3)?;
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, dims, r.get(4)?))
                },
            )?;
            let mut out = Vec::new();
            for row in rows {
                let (id, namespace, name, dims, last_ts): (i64, String, String, String, i64) = row?;
                let dimensions = serde_json::from_str(&dims)
                    .map_err(|e| Error::Corrupt(format!("metric series {id} dimensions: {e}")))?;
                out.push(SeriesInfo {
                    id,
                    key: SeriesKey {
                        namespace,
                        name,
                        dimensions,
                    },
                    last_ts,
                });
            }
            Ok(out)
        })
        .await
    }

    /// The row id of a series, if it has ever had a point.
    pub async fn metric_series_id(&self, key: SeriesKey) -> Result<Option<i64>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT id FROM metric_series WHERE namespace = ?1 AND name = ?2 AND dimensions = ?3",
                )?
                .query_row(
                    params![key.namespace, key.name, key.dimensions_json()],
                    |r| r.get(0),
                )
                .optional()?)
        })
        .await
    }

    /// Points of one series at one resolution with `from <= ts < to`, oldest first.
    pub async fn metric_points(
        &self,
        series: i64,
        resolution: u32,
        from: i64,
        to: i64,
    ) -> Result<Vec<MetricPoint>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {POINT_COLUMNS} FROM metric_points
                 WHERE series = ?1 AND resolution = ?2 AND ts >= ?3 AND ts < ?4 ORDER BY ts"
            ))?;
            let rows = stmt.query_map(params![series, resolution, from, to], point_from_row)?;
            Ok(rows
                .map(|r| r.map(|p| p.point))
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// Where the 1-minute rollup stands: every minute before it has its rows.
    pub async fn metric_rollup_done_until(&self) -> Result<Option<i64>> {
        self.read(|conn| {
            Ok(conn
                .query_row("SELECT done_until FROM metric_rollup", [], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    /// 1-second points of every series with `from <= ts < to`, ordered by series and time.
    pub async fn second_points_between(&self, from: i64, to: i64) -> Result<Vec<StoredPoint>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {POINT_COLUMNS} FROM metric_points
                 WHERE resolution = 1 AND ts >= ?1 AND ts < ?2 ORDER BY series, ts"
            ))?;
            let rows = stmt.query_map(params![from, to], point_from_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// Stores 1-minute rollups and moves the rollup mark to `done_until`, in one transaction.
    pub async fn put_metric_rollup(&self, points: Vec<StoredPoint>, done_until: i64) -> Result<()> {
        self.write(move |conn| {
            for p in &points {
                insert_points(conn, p.series, std::slice::from_ref(&p.point))?;
            }
            conn.execute(
                "INSERT INTO metric_rollup (id, done_until) VALUES (1, ?1)
                 ON CONFLICT (id) DO UPDATE SET done_until = excluded.done_until",
                [done_until],
            )?;
            Ok(())
        })
        .await
    }

    /// Deletes 1-second points older than `seconds_before` and 1-minute points older than
    /// `minutes_before` (epoch seconds), then series left without points. Returns the points
    /// deleted.
    pub async fn prune_metrics(&self, seconds_before: i64, minutes_before: i64) -> Result<usize> {
        self.write(move |conn| {
            let mut n = conn.execute(
                "DELETE FROM metric_points WHERE resolution = 1 AND ts < ?1",
                [seconds_before],
            )?;
            n += conn.execute(
                "DELETE FROM metric_points WHERE resolution = 60 AND ts < ?1",
                [minutes_before],
            )?;
            conn.execute(
                "DELETE FROM metric_series WHERE last_ts < ?1
                 AND NOT EXISTS (SELECT 1 FROM metric_points WHERE series = metric_series.id)",
                [minutes_before],
            )?;
            Ok(n)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(resolution: u32, ts: i64, value: f64) -> MetricPoint {
        MetricPoint {
            resolution,
            ts,
            unit: "Count".into(),
            count: 1.0,
            sum: value,
            min: value,
            max: value,
            histogram: Some(vec![1, 2, 3]),
        }
    }

    #[tokio::test]
    async fn points_are_stored_listed_rolled_up_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = SeriesKey::new(
            "ns",
            "m",
            vec![("b".into(), "2".into()), ("a".into(), "1".into())],
        );
        assert_eq!(key.dimensions[0].0, "a", "dimensions sorted");
        store
            .put_metric_points(vec![(
                key.clone(),
                vec![point(1, 100, 1.0), point(1, 101, 2.0), point(1, 101, 3.0)],
            )])
            .await
            .unwrap();
        let id = store.metric_series_id(key.clone()).await.unwrap().unwrap();
        let got = store.metric_points(id, 1, 100, 102).await.unwrap();
        assert_eq!(got.len(), 3, "rows sharing a bucket are all kept");
        assert_eq!(got[2].histogram.as_deref(), Some(&[1u8, 2, 3][..]));
        let listed = store
            .list_metric_series(Some("ns".into()), None, None)
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key, key);
        assert_eq!(listed[0].last_ts, 101);
        assert!(
            store
                .list_metric_series(None, None, Some(102))
                .await
                .unwrap()
                .is_empty()
        );

        assert_eq!(store.metric_rollup_done_until().await.unwrap(), None);
        let seconds = store.second_points_between(60, 120).await.unwrap();
        assert_eq!(seconds.len(), 3);
        store
            .put_metric_rollup(
                vec![StoredPoint {
                    series: id,
                    point: point(60, 60, 6.0),
                }],
                120,
            )
            .await
            .unwrap();
        assert_eq!(store.metric_rollup_done_until().await.unwrap(), Some(120));
        assert_eq!(store.metric_points(id, 60, 0, 200).await.unwrap().len(), 1);

        assert_eq!(store.prune_metrics(101, 0).await.unwrap(), 1);
        assert_eq!(store.prune_metrics(1000, 1000).await.unwrap(), 3);
        assert!(
            store
                .list_metric_series(None, None, None)
                .await
                .unwrap()
                .is_empty(),
            "a series without points is gone"
        );
    }
}
