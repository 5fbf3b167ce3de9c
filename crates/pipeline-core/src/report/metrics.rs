//! How records are read for the metrics: what a run was (a release or a rollback), which
//! releases failed, when a failure was restored; and the statistics (median, p90).

use crate::model::{DeployRecord, RecordOutcome, Stage};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a run was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// `tugboat deploy` (or the Lambda's release of a pushed image).
    Release,
    /// `tugboat rollback`: the service put back on an earlier release.
    Rollback,
}

/// A manual rollback's record names the release it restored (`rollback_of`), or, rolled
/// back to a revision typed by hand, has only the rollback stage.
pub fn run_kind(record: &DeployRecord) -> RunKind {
    let only_rollback_stage =
        !record.stages.is_empty() && record.stages.iter().all(|s| s.stage == Stage::Rollback);
    if record.rollback_of.is_some() || only_rollback_stage {
        RunKind::Rollback
    } else {
        RunKind::Release
    }
}

/// A release that reached the service: it succeeded, or failed after changing it.
/// Runs that failed before the service changed (tests, build), were refused, or are
/// still in progress are not changes to production.
pub fn reached_service(record: &DeployRecord) -> bool {
    matches!(
        record.outcome,
        RecordOutcome::Succeeded | RecordOutcome::RolledBack | RecordOutcome::NotRestored
    )
}

/// Seconds from `from` to `to`, never negative (clocks of different machines).
pub fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> u64 {
    u64::try_from((to - from).num_seconds()).unwrap_or(0)
}

/// The median of `values` (the mean of the two middle ones for an even count).
pub fn median(values: &[u64]) -> Option<u64> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => sorted.get(n / 2).copied(),
        _ => {
            let low = sorted.get(n / 2 - 1).copied()?;
            let high = sorted.get(n / 2).copied()?;
            Some(low + (high - low) / 2)
        }
    }
}

/// The nearest-rank percentile `p` (0 < p ≤ 100) of `values`.
pub fn percentile(values: &[u64], p: u32) -> Option<u64> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = (n * p as usize).div_ceil(100).clamp(1, n);
    sorted.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p90_by_nearest_rank() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[5]), Some(5));
        assert_eq!(median(&[9, 1, 5]), Some(5));
        assert_eq!(median(&[1, 2, 3, 10]), Some(2));
        assert_eq!(percentile(&[], 90), None);
        let ten: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&ten, 90), Some(9));
        assert_eq!(percentile(&ten, 100), Some(10));
        assert_eq!(percentile(&[7], 90), Some(7));
    }
}
