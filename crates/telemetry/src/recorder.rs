//! Recording: each series keeps the current seconds' aggregates in a small ring, so a value is
//! added under one uncontended lock without allocating; the flusher drains closed seconds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rampart_store::{MetricPoint, SeriesKey};

use crate::Aggregate;

/// Seconds a series keeps open at once: a value stamped up to this many seconds before the
/// newest one still lands in its own bucket without allocating.
const RING: usize = 8;

/// Whether a series keeps a histogram of its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Counts (Invocations, Errors): sums and extremes only.
    Counter,
    /// Values whose percentiles matter (Duration, custom metrics).
    Distribution,
    /// A level (ConcurrentExecutions): Prometheus shows the last value.
    Gauge,
}

impl Kind {
    /// An empty aggregate for values of this kind.
    fn fresh(self) -> Aggregate {
        match self {
            Kind::Counter | Kind::Gauge => Aggregate::without_histogram(),
            Kind::Distribution => Aggregate::empty(),
        }
    }
}

struct Slot {
    second: i64,
    values: Aggregate,
}

struct Slots {
    ring: Vec<Slot>,
    /// Every value since the series was created (Prometheus).
    total: Aggregate,
    /// The newest value (a gauge's level).
    last: f64,
    /// Buckets pushed out of the ring before the flusher took them, and values older than it.
    spilled: Vec<(i64, Aggregate)>,
}

/// One series being recorded.
pub struct Series {
    key: SeriesKey,
    unit: String,
    kind: Kind,
    enabled: bool,
    slots: Mutex<Slots>,
}

impl Series {
    fn new(key: SeriesKey, unit: String, kind: Kind, enabled: bool) -> Self {
        let ring = (0..RING)
            .map(|_| Slot {
                second: i64::MIN,
                values: kind.fresh(),
            })
            .collect();
        Self {
            key,
            unit,
            kind,
            enabled,
            slots: Mutex::new(Slots {
                ring,
                total: kind.fresh(),
                last: 0.0,
                spilled: Vec::new(),
            }),
        }
    }

    /// Adds `value` to the bucket of epoch second `second`.
    pub fn record(&self, second: i64, value: f64) {
        if !self.enabled {
            return;
        }
        let mut slots = self.slots.lock().expect("metric series lock poisoned");
        slots.total.add(value, 1);
        slots.last = value;
        let index = second.rem_euclid(RING as i64) as usize;
        let slot = &mut slots.ring[index];
        if slot.second == second {
            slot.values.add(value, 1);
            return;
        }
        if slot.second < second {
            if !slot.values.is_empty() {
                // The flusher has not taken this bucket yet: keep it aside.
                let old = std::mem::replace(&mut slot.values, self.kind.fresh());
                let old_second = slot.second;
                slots.spilled.push((old_second, old));
            }
            let slot = &mut slots.ring[index];
            slot.second = second;
            slot.values.add(value, 1);
            return;
        }
        // Older than the ring holds: a bucket of its own (rare: very long invocations).
        let mut values = self.kind.fresh();
        values.add(value, 1);
        slots.spilled.push((second, values));
    }

    /// Takes the buckets of seconds before `before` as stored points.
    fn drain(&self, before: i64, out: &mut Vec<MetricPoint>) {
        let mut slots = self.slots.lock().expect("metric series lock poisoned");
        for slot in &mut slots.ring {
            if slot.second < before && !slot.values.is_empty() {
                out.push(slot.values.to_point(1, slot.second, &self.unit));
                slot.values.reset();
            }
        }
        for (second, values) in slots.spilled.drain(..) {
            out.push(values.to_point(1, second, &self.unit));
        }
    }
}

/// A series' lifetime totals, as Prometheus shows them.
#[derive(Debug, Clone)]
pub struct Totals {
    /// The series.
    pub key: SeriesKey,
    /// Its unit.
    pub unit: String,
    /// How it is shown.
    pub kind: Kind,
    /// Every value so far.
    pub values: Aggregate,
    /// The newest value.
    pub last: f64,
}

/// Series by key and unit.
type SeriesMap = HashMap<(SeriesKey, String), Arc<Series>>;

/// Every series recorded in this process.
#[derive(Clone)]
pub struct Recorder {
    enabled: bool,
    series: Arc<Mutex<SeriesMap>>,
}

impl Recorder {
    /// A recorder; a disabled one hands out series that ignore every value.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            series: Arc::default(),
        }
    }

    /// Whether values are recorded.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The series for `key` in `unit`, created on first use. Callers on hot paths keep the
    /// handle rather than looking it up per value.
    pub fn series(&self, key: SeriesKey, unit: &str, kind: Kind) -> Arc<Series> {
        let mut series = self.series.lock().expect("metric registry lock poisoned");
        series
            .entry((key, unit.to_owned()))
            .or_insert_with_key(|(key, unit)| {
                Arc::new(Series::new(key.clone(), unit.clone(), kind, self.enabled))
            })
            .clone()
    }

    /// Every series (handles: the registry lock is not held while they are read).
    fn all(&self) -> Vec<Arc<Series>> {
        self.series
            .lock()
            .expect("metric registry lock poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// Lifetime totals of every series, by key.
    pub fn totals(&self) -> Vec<Totals> {
        let all = self.all();
        let mut out: Vec<Totals> = all
            .iter()
            .map(|s| {
                let slots = s.slots.lock().expect("metric series lock poisoned");
                Totals {
                    key: s.key.clone(),
                    unit: s.unit.clone(),
                    kind: s.kind,
                    values: slots.total.clone(),
                    last: slots.last,
                }
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// The closed buckets (seconds before `before`) of every series, by series.
    pub fn drain(&self, before: i64) -> Vec<(SeriesKey, Vec<MetricPoint>)> {
        let all = self.all();
        let mut out = Vec::new();
        for series in all {
            let mut points = Vec::new();
            series.drain(before, &mut points);
            if !points.is_empty() {
                out.push((series.key.clone(), points));
            }
        }
        out
    }
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// Handles kept by two names (function and version, API and route), made on first use:
/// looked up without allocating once made.
pub(crate) struct ByTwoNames<T>(Mutex<HashMap<String, HashMap<String, Arc<T>>>>);

impl<T> Default for ByTwoNames<T> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<T> ByTwoNames<T> {
    /// The handle of `(a, b)`, made by `make` the first time.
    pub(crate) fn get_or(&self, a: &str, b: &str, make: impl FnOnce() -> T) -> Arc<T> {
        let mut map = self.0.lock().expect("handle map lock poisoned");
        if let Some(found) = map.get(a).and_then(|inner| inner.get(b)) {
            return found.clone();
        }
        let made = Arc::new(make());
        map.entry(a.to_owned())
            .or_default()
            .insert(b.to_owned(), made.clone());
        made
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SeriesKey {
        SeriesKey::new("ns", "m", vec![])
    }

    #[test]
    fn values_land_in_their_second_and_drain_once_closed() {
        let recorder = Recorder::new(true);
        let s = recorder.series(key(), "Milliseconds", Kind::Distribution);
        s.record(100, 1.0);
        s.record(100, 3.0);
        s.record(101, 5.0);
        // A value stamped with an earlier second still lands in its own bucket.
        s.record(99, 7.0);
        let drained = recorder.drain(101);
        assert_eq!(drained.len(), 1);
        let mut points = drained[0].1.clone();
        points.sort_by_key(|p| p.ts);
        assert_eq!(
            points
                .iter()
                .map(|p| (p.ts, p.count, p.sum))
                .collect::<Vec<_>>(),
            vec![(99, 1.0, 7.0), (100, 2.0, 4.0)]
        );
        assert!(recorder.drain(101).is_empty(), "drained once");
        let later = recorder.drain(102);
        assert_eq!(later[0].1[0].ts, 101);
    }

    #[test]
    fn buckets_the_ring_cannot_hold_are_kept_aside() {
        let recorder = Recorder::new(true);
        let s = recorder.series(key(), "Count", Kind::Counter);
        s.record(10, 1.0);
        // Same slot, newer second, before any drain: the old bucket is spilled, not lost.
        s.record(10 + RING as i64, 1.0);
        // Far older than the ring: a bucket of its own.
        s.record(0, 1.0);
        let mut ts: Vec<i64> = recorder.drain(i64::MAX)[0].1.iter().map(|p| p.ts).collect();
        ts.sort();
        assert_eq!(ts, vec![0, 10, 10 + RING as i64]);
    }

    #[test]
    fn a_disabled_recorder_records_nothing() {
        let recorder = Recorder::new(false);
        recorder
            .series(key(), "Count", Kind::Counter)
            .record(1, 1.0);
        assert!(recorder.drain(i64::MAX).is_empty());
    }
}
