//! The DORA performance bands (elite, high, medium, low) of each of the four metrics.
//!
//! The thresholds are the software delivery performance levels of DORA's *Accelerate
//! State of DevOps Report 2023* ("How do you compare?"):
//!
//! | level  | deployment frequency                  | change lead time      | change failure rate | failed deployment recovery time |
//! | ------ | ------------------------------------- | --------------------- | ------------------- | ------------------------------- |
//! | elite  | on demand (several a day)             | less than one day     | 5%                  | less than one hour              |
//! | high   | between once a day and once a week    | one day to one week   | 10%                 | less than one day               |
//! | medium | between once a week and once a month  | one week to one month | 15%                 | one day to one week             |
//! | low    | less often than that                  | longer than that      | above 15% (64%)     | longer than a week              |
//!
//! Where that table leaves a gap or an overlap, these choices close it:
//! - The 2023 report gives medium and low the same frequency and lead time ranges;
//!   low here is "slower than medium", as in the 2019 report, whose ranges DORA's own
//!   Four Keys project buckets by (`dora-team/fourkeys`, `METRICS.md`: lead time under a
//!   day, a week, a month, six months).
//! - The change failure rates of 2023 are each level's typical value, not a range: a rate
//!   belongs to the best level whose value it does not exceed (≤ 5% elite, ≤ 10% high,
//!   ≤ 15% medium, else low).
//! - Recovery between one week and one month (the 2023 table skips it) is low.
//! - "On demand" is read as at least one successful release a day on average over the
//!   window; "once a month" as 12 a year.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A DORA performance level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Band {
    Elite,
    High,
    Medium,
    Low,
}

impl fmt::Display for Band {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Elite => "elite",
            Self::High => "high",
            Self::Medium => "medium",
            Self::Low => "low",
        })
    }
}

const HOUR: f64 = 3600.0;
const DAY: f64 = 24.0 * HOUR;
const WEEK: f64 = 7.0 * DAY;
/// A twelfth of a (non-leap) year.
const MONTH: f64 = 365.0 / 12.0 * DAY;

/// The band of a deployment frequency in successful releases per day.
pub fn deployment_frequency(per_day: f64) -> Band {
    if per_day >= 1.0 {
        Band::Elite
    } else if per_day >= DAY / WEEK {
        Band::High
    } else if per_day >= DAY / MONTH {
        Band::Medium
    } else {
        Band::Low
    }
}

/// The band of a (median) lead time for changes, in seconds.
pub fn lead_time(seconds: f64) -> Band {
    if seconds < DAY {
        Band::Elite
    } else if seconds < WEEK {
        Band::High
    } else if seconds < MONTH {
        Band::Medium
    } else {
        Band::Low
    }
}

/// The band of a change failure rate (0.0 to 1.0).
pub fn change_failure_rate(rate: f64) -> Band {
    if rate <= 0.05 {
        Band::Elite
    } else if rate <= 0.10 {
        Band::High
    } else if rate <= 0.15 {
        Band::Medium
    } else {
        Band::Low
    }
}

/// The band of a (median) time to restore, in seconds.
pub fn time_to_restore(seconds: f64) -> Band {
    if seconds < HOUR {
        Band::Elite
    } else if seconds < DAY {
        Band::High
    } else if seconds < WEEK {
        Band::Medium
    } else {
        Band::Low
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type BandOf = fn(f64) -> Band;

    #[test]
    fn each_band_starts_where_the_report_says() {
        let cases: [(&str, BandOf, f64, Band); 16] = [
            ("frequency 3/day", deployment_frequency, 3.0, Band::Elite),
            ("frequency 1/day", deployment_frequency, 1.0, Band::Elite),
            (
                "frequency 1/week",
                deployment_frequency,
                1.0 / 7.0,
                Band::High,
            ),
            (
                "frequency 1/month",
                deployment_frequency,
                12.0 / 365.0,
                Band::Medium,
            ),
            (
                "frequency 1/quarter",
                deployment_frequency,
                4.0 / 365.0,
                Band::Low,
            ),
            ("lead time 23h", lead_time, 23.0 * HOUR, Band::Elite),
            ("lead time 1 day", lead_time, DAY, Band::High),
            ("lead time 8 days", lead_time, 8.0 * DAY, Band::Medium),
            ("lead time 2 months", lead_time, 61.0 * DAY, Band::Low),
            ("failure rate 5%", change_failure_rate, 0.05, Band::Elite),
            ("failure rate 10%", change_failure_rate, 0.10, Band::High),
            ("failure rate 15%", change_failure_rate, 0.15, Band::Medium),
            ("failure rate 50%", change_failure_rate, 0.5, Band::Low),
            ("restore 59 min", time_to_restore, 59.0 * 60.0, Band::Elite),
            ("restore 3 h", time_to_restore, 3.0 * HOUR, Band::High),
            ("restore 2 weeks", time_to_restore, 2.0 * WEEK, Band::Low),
        ];
        for (name, band_of, value, expected) in cases {
            assert_eq!(band_of(value), expected, "{name}");
        }
        assert_eq!(time_to_restore(2.0 * DAY), Band::Medium);
    }
}
