//! The band of an anomaly-detection alarm, learned from the metric's own history.
//!
//! Model: seasonal EWMA. The season is a day. For the time being judged, the values at the
//! same time of day on earlier days (within one period) are averaged with an exponentially
//! weighted moving average (alpha 0.3, newest weighing most), and so are their absolute
//! deviations from that mean; with fewer than two such values, all recent history is used
//! instead (alpha 0.1). The band is `mean +- width x 1.25 x mean absolute deviation` (1.25 MAD
//! approximates one standard deviation for normal data), never narrower than 1% of the mean's
//! magnitude (plus a small constant), so a perfectly flat history still tolerates noise.

/// Seconds in the season (a day).
pub const SEASON_SECS: i64 = 86_400;

fn ewma(values: impl Iterator<Item = f64> + Clone, alpha: f64) -> Option<(f64, f64)> {
    let mut mean: Option<f64> = None;
    for v in values.clone() {
        mean = Some(mean.map_or(v, |m| m + alpha * (v - m)));
    }
    let mean = mean?;
    let mut deviation: Option<f64> = None;
    for v in values {
        let d = (v - mean).abs();
        deviation = Some(deviation.map_or(d, |m| m + alpha * (d - m)));
    }
    Some((mean, deviation.unwrap_or(0.0)))
}

/// The expected range at `at` given `history` (`(timestamp, value)`, oldest first, all before
/// `at`), for datapoints `period` seconds apart, with the band `width` (in standard
/// deviations, CloudWatch's default 2). `None` without history.
pub fn band(history: &[(i64, f64)], at: i64, period: i64, width: f64) -> Option<(f64, f64)> {
    let slot = at.rem_euclid(SEASON_SECS);
    let same_time = history.iter().filter(|(ts, _)| {
        let d = (ts.rem_euclid(SEASON_SECS) - slot).abs();
        d.min(SEASON_SECS - d) < period.max(1) && *ts < at - period
    });
    let (mean, deviation) = if same_time.clone().count() >= 2 {
        ewma(same_time.map(|(_, v)| *v), 0.3)?
    } else {
        ewma(history.iter().map(|(_, v)| *v), 0.1)?
    };
    let spread = (1.25 * deviation).max(0.01 * mean.abs() + 1e-9);
    Some((mean - width * spread, mean + width * spread))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A daily wave: 100 at noon, 20 at midnight, with a little noise, every 10 minutes.
    fn seasonal(days: i64) -> Vec<(i64, f64)> {
        (0..days * 144)
            .map(|i| {
                let ts = i * 600;
                let phase = (ts % SEASON_SECS) as f64 / SEASON_SECS as f64 * std::f64::consts::TAU;
                let noise = ((i * 7919) % 11) as f64 - 5.0;
                (ts, 60.0 - 40.0 * phase.cos() + noise)
            })
            .collect()
    }

    #[test]
    fn the_band_follows_the_season() {
        let history = seasonal(7);
        let noon = 7 * SEASON_SECS + SEASON_SECS / 2;
        let midnight = 7 * SEASON_SECS;
        let (lo, hi) = band(&history, noon, 600, 2.0).unwrap();
        assert!(
            lo < 100.0 && 100.0 < hi,
            "noon's usual value is inside: {lo}..{hi}"
        );
        assert!(hi < 130.0, "and the band is tight: {lo}..{hi}");
        let (lo, hi) = band(&history, midnight, 600, 2.0).unwrap();
        assert!(
            lo < 20.0 && 20.0 < hi,
            "midnight's usual value is inside: {lo}..{hi}"
        );
        assert!(
            100.0 > hi,
            "noon's value at midnight is an anomaly: {lo}..{hi}"
        );
        // A wider band tolerates more.
        let (lo3, hi3) = band(&history, midnight, 600, 3.0).unwrap();
        assert!(lo3 < lo && hi3 > hi);
    }

    #[test]
    fn without_seasonal_history_the_recent_level_is_used() {
        let flat: Vec<(i64, f64)> = (0..30).map(|i| (i * 60, 10.0)).collect();
        let (lo, hi) = band(&flat, 30 * 60, 60, 2.0).unwrap();
        assert!(lo < 10.0 && 10.0 < hi && hi < 11.0, "{lo}..{hi}");
        assert!(band(&[], 0, 60, 2.0).is_none());
    }
}
