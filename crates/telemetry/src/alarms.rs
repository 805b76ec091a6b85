//! Metric alarms (spec metrics-and-alarms.md §5): a statistic of one series compared with a
//! static threshold over the last N periods, "M out of N" breaching datapoints to alarm, and
//! CloudWatch's four ways of treating missing data.

use serde::{Deserialize, Serialize};

/// An alarm's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlarmState {
    /// Within the threshold.
    #[serde(rename = "OK")]
    Ok,
    /// Breaching.
    #[serde(rename = "ALARM")]
    Alarm,
    /// Not enough data to decide (every new alarm starts here).
    #[serde(rename = "INSUFFICIENT_DATA")]
    InsufficientData,
}

impl AlarmState {
    /// CloudWatch's name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Alarm => "ALARM",
            Self::InsufficientData => "INSUFFICIENT_DATA",
        }
    }

    /// The state named so, if it is one.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "OK" => Some(Self::Ok),
            "ALARM" => Some(Self::Alarm),
            "INSUFFICIENT_DATA" => Some(Self::InsufficientData),
            _ => None,
        }
    }
}

/// How a datapoint is compared with the threshold (the statistic on the left).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Comparison {
    /// `value >= threshold`
    GreaterThanOrEqualToThreshold,
    /// `value > threshold`
    GreaterThanThreshold,
    /// `value < threshold`
    LessThanThreshold,
    /// `value <= threshold`
    LessThanOrEqualToThreshold,
    /// Outside the anomaly band.
    LessThanLowerOrGreaterThanUpperThreshold,
    /// Below the anomaly band.
    LessThanLowerThreshold,
    /// Above the anomaly band.
    GreaterThanUpperThreshold,
}

impl Comparison {
    /// Whether `value` breaches: the static `threshold`, or the band `(lower, upper)` for the
    /// band operators (no band: not breaching).
    pub fn breaches(self, value: f64, threshold: f64, band: Option<(f64, f64)>) -> bool {
        match (self, band) {
            (Self::GreaterThanOrEqualToThreshold, _) => value >= threshold,
            (Self::GreaterThanThreshold, _) => value > threshold,
            (Self::LessThanThreshold, _) => value < threshold,
            (Self::LessThanOrEqualToThreshold, _) => value <= threshold,
            (Self::LessThanLowerOrGreaterThanUpperThreshold, Some((lo, hi))) => {
                value < lo || value > hi
            }
            (Self::LessThanLowerThreshold, Some((lo, _))) => value < lo,
            (Self::GreaterThanUpperThreshold, Some((_, hi))) => value > hi,
            (_, None) => false,
        }
    }

    /// Whether the operator compares with an anomaly band.
    pub fn is_band(self) -> bool {
        matches!(
            self,
            Self::LessThanLowerOrGreaterThanUpperThreshold
                | Self::LessThanLowerThreshold
                | Self::GreaterThanUpperThreshold
        )
    }
}

/// What a missing datapoint counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum TreatMissingData {
    /// Absent: only present points are evaluated; none at all is INSUFFICIENT_DATA.
    #[default]
    #[serde(rename = "missing")]
    Missing,
    /// Absent, and the state is kept when the present points do not decide.
    #[serde(rename = "ignore")]
    Ignore,
    /// Bad: pushes toward ALARM.
    #[serde(rename = "breaching")]
    Breaching,
    /// Good: pushes toward OK.
    #[serde(rename = "notBreaching")]
    NotBreaching,
}

/// A metric alarm's definition, as PutMetricAlarm gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricAlarm {
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Whether actions run on state changes.
    pub actions_enabled: bool,
    /// Actions on entering ALARM, OK, INSUFFICIENT_DATA.
    pub alarm_actions: Vec<String>,
    /// Actions on entering OK.
    pub ok_actions: Vec<String>,
    /// Actions on entering INSUFFICIENT_DATA.
    pub insufficient_data_actions: Vec<String>,
    /// The series.
    pub namespace: String,
    /// The series.
    pub metric: String,
    /// The series, `(name, value)` sorted.
    pub dimensions: Vec<(String, String)>,
    /// `Sum`, `Average`, `Minimum`, `Maximum`, `SampleCount` or `pNN`.
    pub statistic: String,
    /// Seconds per datapoint.
    pub period: u32,
    /// Only values of this unit.
    pub unit: Option<String>,
    /// N: the periods looked at.
    pub evaluation_periods: u32,
    /// M: breaching datapoints among them that mean ALARM.
    pub datapoints_to_alarm: u32,
    /// The static threshold.
    pub threshold: f64,
    /// How a datapoint is compared with it.
    pub comparison: Comparison,
    /// What a missing datapoint counts as.
    pub treat_missing_data: TreatMissingData,
    /// A composite alarm's rule (PutCompositeAlarm's `AlarmRule`); its metric fields are then
    /// unused.
    #[serde(default)]
    pub rule: Option<String>,
    /// An anomaly-detection alarm: the band width in standard deviations
    /// (`ANOMALY_DETECTION_BAND(m1, width)`), with the ids of the metric and band queries.
    #[serde(default)]
    pub anomaly: Option<AnomalyBand>,
}

/// The band of an anomaly-detection alarm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnomalyBand {
    /// Standard deviations either side of the expected value.
    pub width: f64,
    /// The id of the metric query.
    pub metric_id: String,
    /// The id of the band expression (`ThresholdMetricId`).
    pub band_id: String,
}

impl MetricAlarm {
    /// A composite alarm over other alarms.
    pub fn composite(name: String, rule: String, description: String) -> Self {
        Self {
            name,
            description,
            actions_enabled: true,
            alarm_actions: Vec::new(),
            ok_actions: Vec::new(),
            insufficient_data_actions: Vec::new(),
            namespace: String::new(),
            metric: String::new(),
            dimensions: Vec::new(),
            statistic: String::new(),
            period: 0,
            unit: None,
            evaluation_periods: 0,
            datapoints_to_alarm: 0,
            threshold: 0.0,
            comparison: Comparison::GreaterThanThreshold,
            treat_missing_data: TreatMissingData::Missing,
            rule: Some(rule),
            anomaly: None,
        }
    }
}

/// An alarm that changed state: what its actions act on.
#[derive(Debug, Clone)]
pub struct AlarmTransition {
    /// The alarm's definition.
    pub alarm: MetricAlarm,
    /// The state it left.
    pub from: String,
    /// The state it entered.
    pub to: AlarmState,
    /// Why.
    pub reason: String,
    /// Detail (JSON), if any.
    pub reason_data: Option<String>,
    /// When, epoch ms.
    pub ts_ms: i64,
}

impl AlarmTransition {
    /// The actions configured for the entered state (none when actions are disabled).
    pub fn actions(&self) -> &[String] {
        if !self.alarm.actions_enabled {
            return &[];
        }
        match self.to {
            AlarmState::Alarm => &self.alarm.alarm_actions,
            AlarmState::Ok => &self.alarm.ok_actions,
            AlarmState::InsufficientData => &self.alarm.insufficient_data_actions,
        }
    }
}

/// The outcome of one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The state the alarm should be in.
    pub state: AlarmState,
    /// Why, in CloudWatch's manner.
    pub reason: String,
}

/// Evaluates `alarm` on the datapoints of its last N periods (oldest first; `None` when a
/// period has no data), from the `current` state.
///
/// Each datapoint is breaching, not breaching, or absent (missing data treated as `missing`
/// or `ignore`). M or more breaching means ALARM. Otherwise, when the absent points could not
/// make M breaching either, OK. When they could (the evaluation is undecided), the state is
/// kept, except that `missing` leaves INSUFFICIENT_DATA for OK once some data is present. With
/// no data at all, `missing` means INSUFFICIENT_DATA and `ignore` keeps the state.
pub fn evaluate(alarm: &MetricAlarm, values: &[Option<f64>], current: AlarmState) -> Evaluation {
    evaluate_banded(alarm, values, &vec![None; values.len()], current)
}

/// [`evaluate`] with each datapoint's anomaly band (for the band operators).
pub fn evaluate_banded(
    alarm: &MetricAlarm,
    values: &[Option<f64>],
    bands: &[Option<(f64, f64)>],
    current: AlarmState,
) -> Evaluation {
    let m = alarm.datapoints_to_alarm.max(1) as usize;
    let (mut breaching, mut absent) = (0usize, 0usize);
    let mut shown = Vec::with_capacity(values.len());
    for (v, band) in values
        .iter()
        .zip(bands.iter().chain(std::iter::repeat(&None)))
    {
        match (v, alarm.treat_missing_data) {
            (Some(v), _) => {
                breaching += usize::from(alarm.comparison.breaches(*v, alarm.threshold, *band));
                match band {
                    Some((lo, hi)) => shown.push(format!("{v} (band {lo:.2}..{hi:.2})")),
                    None => shown.push(format!("{v}")),
                }
            }
            (None, TreatMissingData::Breaching) => {
                breaching += 1;
                shown.push("missing (breaching)".into());
            }
            (None, TreatMissingData::NotBreaching) => shown.push("missing (not breaching)".into()),
            (None, _) => {
                absent += 1;
                shown.push("missing".into());
            }
        }
    }
    let present = values.len() - absent;
    let points = shown.join(", ");
    let (state, why) = if breaching >= m {
        (
            AlarmState::Alarm,
            format!(
                "{breaching} of the last {} datapoints [{points}] breached the threshold ({}), at least {m} needed",
                values.len(),
                alarm.threshold
            ),
        )
    } else if present == 0 {
        match alarm.treat_missing_data {
            TreatMissingData::Ignore => (current, "no datapoints: state kept (ignore)".to_owned()),
            _ => (
                AlarmState::InsufficientData,
                format!("no datapoints in the last {} periods", values.len()),
            ),
        }
    } else if breaching + absent < m {
        (
            AlarmState::Ok,
            format!(
                "{breaching} of the last {} datapoints [{points}] breached the threshold ({}), fewer than {m}",
                values.len(),
                alarm.threshold
            ),
        )
    } else {
        let kept = match (alarm.treat_missing_data, current) {
            (TreatMissingData::Missing, AlarmState::InsufficientData) => AlarmState::Ok,
            (_, state) => state,
        };
        (
            kept,
            format!(
                "undecided: {breaching} breaching and {absent} missing of [{points}] with {m} needed"
            ),
        )
    };
    Evaluation {
        state,
        reason: format!("Threshold Crossed: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alarm(m: u32, n: u32, treat: TreatMissingData) -> MetricAlarm {
        MetricAlarm {
            name: "a".into(),
            description: String::new(),
            actions_enabled: true,
            alarm_actions: vec![],
            ok_actions: vec![],
            insufficient_data_actions: vec![],
            namespace: "ns".into(),
            metric: "m".into(),
            dimensions: vec![],
            statistic: "Sum".into(),
            period: 60,
            unit: None,
            evaluation_periods: n,
            datapoints_to_alarm: m,
            threshold: 10.0,
            comparison: Comparison::GreaterThanThreshold,
            treat_missing_data: treat,
            rule: None,
            anomaly: None,
        }
    }

    use AlarmState::{Alarm, InsufficientData, Ok};
    use TreatMissingData::{Breaching, Ignore, Missing, NotBreaching};

    const B: Option<f64> = Some(11.0);
    const G: Option<f64> = Some(1.0);
    const X: Option<f64> = None;

    #[test]
    fn m_of_n_counts_breaching_datapoints() {
        let a = alarm(3, 5, Missing);
        assert_eq!(evaluate(&a, &[B, G, B, G, B], Ok).state, Alarm);
        assert_eq!(evaluate(&a, &[B, G, B, G, G], Alarm).state, Ok);
        assert_eq!(evaluate(&a, &[G; 5], InsufficientData).state, Ok);
        // The threshold itself does not breach GreaterThanThreshold.
        assert_eq!(evaluate(&a, &[Some(10.0); 5], Alarm).state, Ok);
        let ge = MetricAlarm {
            comparison: Comparison::GreaterThanOrEqualToThreshold,
            ..alarm(1, 1, Missing)
        };
        assert_eq!(evaluate(&ge, &[Some(10.0)], Ok).state, Alarm);
    }

    #[test]
    fn every_treatment_of_missing_data() {
        // Table: datapoints (M=3 of N=5), then the state from OK under each treatment.
        let cases: [([Option<f64>; 5], [AlarmState; 4]); 6] = [
            // all present
            ([B, B, B, G, G], [Alarm, Alarm, Alarm, Alarm]),
            // no data: missing -> INSUFFICIENT_DATA, ignore keeps, breaching alarms
            ([X, X, X, X, X], [InsufficientData, Ok, Alarm, Ok]),
            // two breaching, three missing: undecided for missing/ignore
            ([B, X, B, X, X], [Ok, Ok, Alarm, Ok]),
            // one breaching, one good, three missing: could still alarm, state kept
            ([B, G, X, X, X], [Ok, Ok, Alarm, Ok]),
            // three good, two missing: cannot alarm, even counting the missing as breaching
            ([G, G, G, X, X], [Ok, Ok, Ok, Ok]),
            // three breaching with gaps
            ([B, X, B, X, B], [Alarm, Alarm, Alarm, Alarm]),
        ];
        for (points, expected) in cases {
            for (treat, want) in [Missing, Ignore, Breaching, NotBreaching]
                .into_iter()
                .zip(expected)
            {
                let got = evaluate(&alarm(3, 5, treat), &points, Ok).state;
                assert_eq!(got, want, "{points:?} under {treat:?}");
            }
        }
        // From ALARM, undecided evaluations keep ALARM under missing and ignore.
        assert_eq!(
            evaluate(&alarm(3, 5, Missing), &[B, B, X, X, X], Alarm).state,
            Alarm
        );
        assert_eq!(evaluate(&alarm(3, 5, Ignore), &[X; 5], Alarm).state, Alarm);
        // A new alarm with some data leaves INSUFFICIENT_DATA under missing.
        assert_eq!(
            evaluate(&alarm(3, 5, Missing), &[B, B, X, X, X], InsufficientData).state,
            Ok
        );
    }
}
