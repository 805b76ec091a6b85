//! The aggregate of a set of values: count, sum, extremes and an HDR histogram, mergeable
//! without loss, so a percentile over any period is computed from the merged histogram (exact
//! to its precision), never averaged from other percentiles.

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use rampart_store::MetricPoint;

/// Significant decimal digits the histograms keep: values are exact to 0.1%.
const SIGNIFICANT_DIGITS: u8 = 3;
/// Histograms count thousandths of the value (microseconds for milliseconds).
const SCALE: f64 = 1000.0;
/// Largest value a histogram can hold (scaled, below `u64::MAX` with room for HDR's buckets).
const MAX_SCALED: f64 = 1.0e15;

/// Values seen in one bucket of one series.
#[derive(Debug, Clone)]
pub struct Aggregate {
    /// Number of values (statistic sets add their SampleCount).
    pub count: f64,
    /// Their sum.
    pub sum: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Their distribution; `None` once a value it cannot hold was added (negative, huge, or
    /// a statistic set of more than one value), which makes percentiles unavailable, as on
    /// CloudWatch.
    hist: Option<Histogram<u64>>,
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new(SIGNIFICANT_DIGITS).expect("3 significant digits is a valid precision")
}

impl Default for Aggregate {
    fn default() -> Self {
        Self::empty()
    }
}

impl Aggregate {
    /// No values yet.
    pub fn empty() -> Self {
        Self {
            count: 0.0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            hist: Some(new_histogram()),
        }
    }

    /// No values and no histogram (counters whose percentiles mean nothing).
    pub fn without_histogram() -> Self {
        Self {
            hist: None,
            ..Self::empty()
        }
    }

    /// Whether no value was added.
    pub fn is_empty(&self) -> bool {
        self.count == 0.0
    }

    /// Adds `n` copies of `value`.
    pub fn add(&mut self, value: f64, n: u64) {
        if n == 0 {
            return;
        }
        self.count += n as f64;
        self.sum += value * n as f64;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        if let Some(hist) = &mut self.hist {
            let scaled = (value * SCALE).round();
            if (0.0..=MAX_SCALED).contains(&scaled) && hist.record_n(scaled as u64, n).is_ok() {
                return;
            }
            self.hist = None;
        }
    }

    /// Adds a statistic set (`SampleCount`, `Sum`, `Minimum`, `Maximum`). Percentiles stay
    /// available only when it describes one value (SampleCount 1 or Minimum = Maximum).
    pub fn add_set(&mut self, count: f64, sum: f64, min: f64, max: f64) {
        if count <= 0.0 {
            return;
        }
        if min == max && count.fract() == 0.0 {
            self.add(min, count as u64);
            self.sum += sum - min * count;
            return;
        }
        self.count += count;
        self.sum += sum;
        self.min = self.min.min(min);
        self.max = self.max.max(max);
        self.hist = None;
    }

    /// Merges another aggregate into this one.
    pub fn merge(&mut self, other: &Aggregate) {
        if other.is_empty() {
            return;
        }
        let was_empty = self.is_empty();
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.hist = match (self.hist.take(), &other.hist) {
            (Some(mut mine), Some(theirs)) => mine.add(theirs).is_ok().then_some(mine),
            // An empty aggregate without a histogram takes the other's.
            (None, Some(theirs)) if was_empty => Some(theirs.clone()),
            _ => None,
        };
    }

    /// Forgets every value, keeping the histogram's memory for reuse.
    pub fn reset(&mut self) {
        self.count = 0.0;
        self.sum = 0.0;
        self.min = f64::INFINITY;
        self.max = f64::NEG_INFINITY;
        if let Some(hist) = &mut self.hist {
            hist.reset();
        }
    }

    /// The value below which `percentile` percent of the values fall, when a histogram exists.
    pub fn percentile(&self, percentile: f64) -> Option<f64> {
        let hist = self.hist.as_ref()?;
        if self.is_empty() {
            return None;
        }
        let q = (percentile / 100.0).clamp(0.0, 1.0);
        let value = hist.value_at_quantile(q) as f64 / SCALE;
        // The histogram reports a bucket's upper edge; the true extremes are known exactly.
        Some(value.clamp(self.min, self.max))
    }

    /// How many values are at most `value` (to the histogram's precision), when a histogram
    /// exists.
    pub fn count_at_most(&self, value: f64) -> Option<u64> {
        let hist = self.hist.as_ref()?;
        let scaled = (value * SCALE).clamp(0.0, MAX_SCALED) as u64;
        Some(hist.count_between(0, scaled))
    }

    /// `Sum / SampleCount`.
    pub fn average(&self) -> f64 {
        if self.is_empty() {
            0.0
        } else {
            self.sum / self.count
        }
    }

    /// This aggregate as a stored point.
    pub fn to_point(&self, resolution: u32, ts: i64, unit: &str) -> MetricPoint {
        let histogram = self.hist.as_ref().map(|h| {
            let mut out = Vec::new();
            V2DeflateSerializer::new()
                .serialize(h, &mut out)
                .expect("serializing a histogram into memory cannot fail");
            out
        });
        MetricPoint {
            resolution,
            ts,
            unit: unit.to_owned(),
            count: self.count,
            sum: self.sum,
            min: self.min,
            max: self.max,
            histogram,
        }
    }

    /// A stored point as an aggregate (a histogram that does not decode counts as absent).
    pub fn from_point(point: &MetricPoint) -> Self {
        let hist = point.histogram.as_deref().and_then(|bytes| {
            let mut reader = bytes;
            Deserializer::new()
                .deserialize::<u64, _>(&mut reader)
                .map_err(|e| tracing::warn!(error = ?e, "undecodable metric histogram"))
                .ok()
                .map(|mut h| {
                    // Decoded histograms have a fixed range: let merges widen it.
                    h.auto(true);
                    h
                })
        });
        Self {
            count: point.count,
            sum: point.sum,
            min: point.min,
            max: point.max,
            hist,
        }
    }
}

/// A statistic's value over an aggregate: `SampleCount`, `Sum`, `Average`, `Minimum`,
/// `Maximum` or a percentile `pNN` (absent when the values do not support percentiles).
pub fn statistic(values: &Aggregate, stat: &str) -> Option<f64> {
    match stat {
        "SampleCount" => Some(values.count),
        "Sum" => Some(values.sum),
        "Average" => Some(values.average()),
        "Minimum" => Some(values.min),
        "Maximum" => Some(values.max),
        p => values.percentile(parse_percentile(p)?),
    }
}

/// `p99.9` -> 99.9, for percentiles from `p0` to `p100`.
pub fn parse_percentile(stat: &str) -> Option<f64> {
    let n: f64 = stat.strip_prefix('p')?.parse().ok()?;
    (0.0..=100.0).contains(&n).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_merged_histograms() {
        let mut a = Aggregate::empty();
        let mut b = Aggregate::empty();
        for v in 1..=50 {
            a.add(v as f64, 1);
        }
        for v in 51..=100 {
            b.add(v as f64, 1);
        }
        // Round trip through the stored form before merging, as queries do.
        let mut merged = Aggregate::from_point(&a.to_point(1, 0, "Milliseconds"));
        merged.merge(&Aggregate::from_point(&b.to_point(1, 1, "Milliseconds")));
        assert_eq!(merged.count, 100.0);
        assert_eq!(merged.sum, 5050.0);
        assert_eq!((merged.min, merged.max), (1.0, 100.0));
        assert_eq!(merged.average(), 50.5);
        for (p, want) in [(50.0, 50.0), (90.0, 90.0), (99.0, 99.0), (100.0, 100.0)] {
            let got = merged.percentile(p).unwrap();
            assert!((got - want).abs() <= want * 0.001, "p{p}: {got} vs {want}");
        }
    }

    #[test]
    fn values_a_histogram_cannot_hold_make_percentiles_unavailable() {
        let mut a = Aggregate::empty();
        a.add(5.0, 1);
        a.add(-1.0, 1);
        assert!(a.percentile(50.0).is_none());
        assert_eq!(a.min, -1.0);
        let mut set = Aggregate::empty();
        set.add_set(10.0, 100.0, 1.0, 19.0);
        assert!(set.percentile(50.0).is_none());
        assert_eq!(set.average(), 10.0);
        let mut one_value = Aggregate::empty();
        one_value.add_set(4.0, 12.0, 3.0, 3.0);
        assert_eq!(one_value.percentile(50.0), Some(3.0));
        assert_eq!(one_value.sum, 12.0);
    }

    #[test]
    fn empty_aggregates_merge_into_anything() {
        let mut counter = Aggregate::without_histogram();
        let mut values = Aggregate::empty();
        values.add(2.0, 3);
        counter.merge(&values);
        assert_eq!(counter.percentile(50.0), Some(2.0));
        let mut reset = values.clone();
        reset.reset();
        assert!(reset.is_empty());
        assert!(reset.percentile(50.0).is_none());
    }
}
