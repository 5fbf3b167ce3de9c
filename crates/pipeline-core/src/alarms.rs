//! What a watched alarm's state means for a release. One rule for every front end: the
//! CLI's bake time (`AlarmWatch`) and the Lambda's lifecycle hook both ask
//! [`judge_alarm`].
//!
//! An alarm that was already in `ALARM` when the release started says nothing about the
//! release (the hotfix for the incident that fires it must get through), so it is only a
//! warning; an alarm that *went into* `ALARM` after the start fails the release. CloudWatch
//! tells the two apart with `StateTransitionedTimestamp` (the last change of the state
//! value; `StateUpdatedTimestamp` also moves when only the reason is updated).

use chrono::{DateTime, SecondsFormat, Utc};
use std::collections::BTreeMap;

/// One watched alarm as CloudWatch shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlarmState {
    pub name: String,
    /// `OK`, `ALARM`, `INSUFFICIENT_DATA`.
    pub state: String,
    pub reason: String,
    /// When the alarm entered its state (`StateTransitionedTimestamp`, or
    /// `StateUpdatedTimestamp` where that is missing: never earlier, so never lenient).
    pub since: Option<DateTime<Utc>>,
}

impl AlarmState {
    /// The state value CloudWatch uses for a firing alarm.
    pub const ALARM: &'static str = "ALARM";

    pub fn in_alarm(&self) -> bool {
        self.state == Self::ALARM
    }

    /// `since` for people: RFC 3339 to the second, or "an unknown time".
    pub fn since_text(&self) -> String {
        self.since
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
            .unwrap_or_else(|| "an unknown time".to_string())
    }
}

/// What one alarm's state means for a release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AlarmVerdict {
    /// Not in `ALARM`.
    Quiet,
    /// In `ALARM` since before the release started, and not out of it since: a warning.
    FiringSinceBeforeRelease,
    /// Went into `ALARM` after the release started (or when it did is unknown, or
    /// `fail_on_firing_alarms` is set): the release fails.
    Fired,
}

/// The rule: an alarm in `ALARM` fails the release unless it has been in `ALARM` since
/// before `release_started` and `strict` (`verify.fail_on_firing_alarms`) is off. An
/// alarm that went OK and back into `ALARM` after the start has a later transition, so it
/// fails, whether or not anyone saw it OK in between.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use pipeline_core::{judge_alarm, AlarmState, AlarmVerdict};
/// let start = Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap();
/// let alarm = AlarmState {
///     name: "cv-matcher-5xx-rate".into(),
///     state: "ALARM".into(),
///     reason: "Threshold Crossed".into(),
///     since: Some(start - chrono::Duration::minutes(20)),
/// };
/// assert_eq!(judge_alarm(&alarm, start, false), AlarmVerdict::FiringSinceBeforeRelease);
/// assert_eq!(judge_alarm(&alarm, start, true), AlarmVerdict::Fired);
/// ```
pub fn judge_alarm(
    alarm: &AlarmState,
    release_started: DateTime<Utc>,
    strict: bool,
) -> AlarmVerdict {
    if !alarm.in_alarm() {
        return AlarmVerdict::Quiet;
    }
    match alarm.since {
        Some(since) if !strict && since < release_started => AlarmVerdict::FiringSinceBeforeRelease,
        _ => AlarmVerdict::Fired,
    }
}

/// The warning for an alarm that was already firing when the release started.
pub fn firing_before_release_warning(alarm: &AlarmState) -> String {
    format!(
        "alarm {} was already in ALARM when the release started (since {}): {}; it fails the release only if it goes OK and back into ALARM",
        alarm.name,
        alarm.since_text(),
        alarm.reason.trim_end_matches('.')
    )
}

/// What the watched alarms say about a release, all at once (the Lambda's lifecycle hook
/// judges every look this way).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlarmFindings {
    /// Each fails the deployment: a missing alarm, one that went into ALARM after the
    /// release started.
    pub failures: Vec<String>,
    /// Alarms in ALARM since before the release started.
    pub warnings: Vec<String>,
}

/// Judges each of `names` (`verify.alarms`) by its state with [`judge_alarm`]; a name
/// CloudWatch does not know is a failure. `release_started` in Unix seconds.
pub fn judge_alarms(
    names: &[String],
    states: &BTreeMap<String, AlarmState>,
    release_started: u64,
    strict: bool,
) -> AlarmFindings {
    let started = i64::try_from(release_started)
        .ok()
        .and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let mut findings = AlarmFindings::default();
    for name in names {
        match states.get(name) {
            None => findings
                .failures
                .push(format!("CloudWatch has no alarm {name} (verify.alarms)")),
            Some(state) => match judge_alarm(state, started, strict) {
                AlarmVerdict::Quiet => {}
                AlarmVerdict::FiringSinceBeforeRelease => {
                    findings.warnings.push(firing_before_release_warning(state))
                }
                AlarmVerdict::Fired => findings.failures.push(format!(
                    "alarm {name} is in ALARM (since {}): {}",
                    state.since_text(),
                    state.reason.trim_end_matches('.')
                )),
            },
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use chrono::{Duration, TimeZone};

    fn start() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap()
    }

    fn alarm(state: &str, since: Option<DateTime<Utc>>) -> AlarmState {
        AlarmState {
            name: "cv-matcher-5xx-rate".into(),
            state: state.into(),
            reason: "Threshold Crossed: 1 datapoint [4.2] was greater than the threshold (1.0)."
                .into(),
            since,
        }
    }

    #[test]
    fn only_an_alarm_that_went_into_alarm_after_the_start_fails() {
        let before = Some(start() - Duration::seconds(1));
        let after = Some(start() + Duration::seconds(1));
        let cases = [
            ("OK", before, false, AlarmVerdict::Quiet),
            ("OK", after, true, AlarmVerdict::Quiet),
            ("INSUFFICIENT_DATA", after, false, AlarmVerdict::Quiet),
            (
                "ALARM",
                before,
                false,
                AlarmVerdict::FiringSinceBeforeRelease,
            ),
            ("ALARM", after, false, AlarmVerdict::Fired),
            // At the very second of the start: it may have been caused by the release.
            ("ALARM", Some(start()), false, AlarmVerdict::Fired),
            // When it fired is unknown: the safe side.
            ("ALARM", None, false, AlarmVerdict::Fired),
            // verify.fail_on_firing_alarms: any ALARM fails.
            ("ALARM", before, true, AlarmVerdict::Fired),
        ];
        for (state, since, strict, expected) in cases {
            assert_eq!(
                judge_alarm(&alarm(state, since), start(), strict),
                expected,
                "{state} since {since:?}, strict {strict}"
            );
        }
    }

    #[test]
    fn the_warning_names_the_alarm_its_start_and_reason() {
        let warning =
            firing_before_release_warning(&alarm("ALARM", Some(start() - Duration::minutes(20))));
        assert_eq!(
            warning,
            "alarm cv-matcher-5xx-rate was already in ALARM when the release started (since 2026-11-26T09:40:00Z): Threshold Crossed: 1 datapoint [4.2] was greater than the threshold (1.0); it fails the release only if it goes OK and back into ALARM"
        );
    }

    fn state(state: &str, since: i64) -> AlarmState {
        AlarmState {
            name: "cv-matcher-5xx-rate".into(),
            state: state.into(),
            reason: "Threshold Crossed.".into(),
            since: DateTime::<Utc>::from_timestamp(since, 0),
        }
    }

    #[test]
    fn alarms_are_judged_against_the_release_start_by_the_core_rule() {
        let names = vec![
            "cv-matcher-5xx-rate".to_string(),
            "cv-matcher-cpu-high".to_string(),
        ];
        let judge = |s: AlarmState, strict| {
            let states = BTreeMap::from([
                (s.name.clone(), s),
                (
                    "cv-matcher-cpu-high".to_string(),
                    AlarmState {
                        name: "cv-matcher-cpu-high".into(),
                        ..state("OK", 900)
                    },
                ),
            ]);
            judge_alarms(&names, &states, 1_000, strict)
        };

        let before = judge(state("ALARM", 999), false);
        assert!(before.failures.is_empty(), "{before:?}");
        assert_eq!(before.warnings.len(), 1);
        assert!(before.warnings[0].starts_with("alarm cv-matcher-5xx-rate was already in ALARM"));

        let after = judge(state("ALARM", 1_000), false);
        assert_eq!(
            after.failures,
            ["alarm cv-matcher-5xx-rate is in ALARM (since 1970-01-01T00:16:40Z): Threshold Crossed"]
        );
        assert!(after.warnings.is_empty());

        assert_eq!(judge(state("ALARM", 999), true).failures.len(), 1);
        assert_eq!(
            judge_alarms(&names, &BTreeMap::new(), 1_000, false).failures,
            [
                "CloudWatch has no alarm cv-matcher-5xx-rate (verify.alarms)",
                "CloudWatch has no alarm cv-matcher-cpu-high (verify.alarms)"
            ]
        );
    }
}
