//! The delivery report: the four DORA metrics and the release timeline, computed from
//! deploy records alone ([`DeliveryReport::compute`], a pure function).
//!
//! - **Deployment frequency**: releases that succeeded, per day and per week of the window.
//! - **Lead time for changes**: from the commit's author time (`git.committed_at`) to the
//!   release's success (`finished_at`); median and p90. Records without a commit time
//!   (older ones, the Lambda's) are counted in `without_commit_time`.
//! - **Change failure rate**: releases that failed after changing the service (rolled
//!   back, or not restored), or that succeeded and were rolled back by hand later,
//!   divided by the releases that reached the service.
//! - **Time to restore**: per failed release, from its start (or, rolled back later, from
//!   when it went live) until the service was on a good release again: the record's own
//!   end when tugboat rolled it back itself, else the end of the next successful release
//!   or rollback on that environment; median. A failure with none yet is `unrestored`.
//!
//! Bands: [`bands`]. A run's kind (release or rollback): [`metrics::run_kind`].

pub mod bands;
pub mod metrics;

pub use bands::Band;
pub use metrics::RunKind;

use crate::model::{DeployRecord, RecordOutcome, ReleaseId, Stage};
use chrono::{DateTime, Utc};
use metrics::{median, percentile, reached_service, run_kind, seconds_between};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What to report on: one app, some environments, a time window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportRequest {
    pub app: String,
    /// Every environment when empty.
    pub environments: Vec<String>,
    /// Runs that started at or after this.
    pub since: DateTime<Utc>,
    /// The end of the window (now).
    pub until: DateTime<Utc>,
}

/// Everything `tugboat report` shows, in the terminal, as JSON and as a page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliveryReport {
    pub app: String,
    pub environments: Vec<String>,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// The window's length in days.
    pub days: f64,
    pub counts: Counts,
    pub deployment_frequency: DeploymentFrequency,
    pub lead_time: LeadTime,
    pub change_failure_rate: ChangeFailureRate,
    pub time_to_restore: TimeToRestore,
    /// Stages by median duration, slowest first.
    pub slowest_stages: Vec<StageDuration>,
    /// Every release and rollback of the window (not the refused ones), newest first.
    pub releases: Vec<ReleaseRow>,
}

/// How many runs of each kind the window holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Releases that reached the service (succeeded, rolled back, not restored).
    pub releases: usize,
    pub succeeded: usize,
    /// Failed after changing the service, and tugboat rolled back.
    pub rolled_back: usize,
    /// Failed, and the service could not be restored.
    pub not_restored: usize,
    /// Succeeded, then rolled back by hand (`tugboat rollback`).
    pub rolled_back_later: usize,
    /// Failed before the service changed (tests, build, push, a missing secret).
    pub failed_before_change: usize,
    pub in_progress: usize,
    /// Manual rollbacks (`tugboat rollback`).
    pub rollbacks: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeploymentFrequency {
    /// Successful releases.
    pub releases: usize,
    pub per_day: f64,
    pub per_week: f64,
    pub band: Band,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadTime {
    /// Successful releases whose commit time is known.
    pub samples: usize,
    /// Successful releases whose record has no commit time.
    pub without_commit_time: usize,
    pub median_seconds: Option<u64>,
    pub p90_seconds: Option<u64>,
    pub band: Option<Band>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeFailureRate {
    pub failed: usize,
    pub releases: usize,
    /// `failed / releases`, none without releases.
    pub rate: Option<f64>,
    pub band: Option<Band>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeToRestore {
    /// Failures that were restored.
    pub samples: usize,
    /// Failures after which no good release or rollback is recorded yet.
    pub unrestored: usize,
    pub median_seconds: Option<u64>,
    pub band: Option<Band>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageDuration {
    pub stage: Stage,
    pub runs: usize,
    pub median_seconds: f64,
}

/// One run in the timeline and the release table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRow {
    pub release_id: ReleaseId,
    pub environment: String,
    pub kind: RunKind,
    pub outcome: RecordOutcome,
    /// A release that succeeded and was rolled back by hand later.
    pub rolled_back_later: bool,
    /// Counts in the change failure rate.
    pub failed_change: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_seconds: Option<u64>,
    /// Commit to success, for a successful release with a commit time.
    pub lead_time_seconds: Option<u64>,
    /// For a failed change that was restored: how long until it was.
    pub restored_after_seconds: Option<u64>,
    pub sha: String,
    pub git_ref: String,
    pub revision: Option<String>,
    pub actor: String,
    pub reason: Option<String>,
}

impl DeliveryReport {
    /// The report over `records` (any order, any app or environment: those outside the
    /// request are left out).
    pub fn compute(request: &ReportRequest, records: &[DeployRecord]) -> Self {
        let wanted = |r: &DeployRecord| {
            r.app == request.app
                && (request.environments.is_empty()
                    || request.environments.contains(&r.environment))
        };
        // Oldest first; later runs (after the window's start) decide what restored a
        // failure, so they are kept apart from the window's own.
        let mut all: Vec<&DeployRecord> = records
            .iter()
            .filter(|r| wanted(r) && r.outcome != RecordOutcome::Refused)
            .collect();
        all.sort_by(|a, b| {
            a.started_at
                .cmp(&b.started_at)
                .then_with(|| a.release_id.cmp(&b.release_id))
        });
        let in_window =
            |r: &DeployRecord| r.started_at >= request.since && r.started_at <= request.until;

        let rolled_back_later = rolled_back_later(&all);
        let mut counts = Counts::default();
        let mut rows = Vec::new();
        let mut lead_times = Vec::new();
        let mut restore_times = Vec::new();
        // In the order stages first appear, so that ties keep the pipeline's order.
        let mut stage_millis: Vec<(Stage, Vec<u64>)> = Vec::new();
        for (index, record) in all.iter().enumerate() {
            if !in_window(record) {
                continue;
            }
            let kind = run_kind(record);
            let later = rolled_back_later.get(&index).copied();
            for timing in &record.stages {
                match stage_millis
                    .iter_mut()
                    .find(|(stage, _)| *stage == timing.stage)
                {
                    Some((_, millis)) => millis.push(timing.millis),
                    None => stage_millis.push((timing.stage, vec![timing.millis])),
                }
            }
            let mut row = ReleaseRow {
                release_id: record.release_id.clone(),
                environment: record.environment.clone(),
                kind,
                outcome: record.outcome,
                rolled_back_later: later.is_some(),
                failed_change: false,
                started_at: record.started_at,
                finished_at: record.finished_at,
                duration_seconds: record
                    .finished_at
                    .map(|end| seconds_between(record.started_at, end)),
                lead_time_seconds: None,
                restored_after_seconds: None,
                sha: record.git.short_sha().to_string(),
                git_ref: record.git.git_ref.clone(),
                revision: record.revision.as_ref().map(|r| r.label.clone()),
                actor: record.actor.clone(),
                reason: record.reason.clone(),
            };
            match kind {
                RunKind::Rollback => counts.rollbacks += 1,
                RunKind::Release => match record.outcome {
                    RecordOutcome::InProgress => counts.in_progress += 1,
                    RecordOutcome::FailedUnchanged => counts.failed_before_change += 1,
                    RecordOutcome::Succeeded => counts.succeeded += 1,
                    RecordOutcome::RolledBack => counts.rolled_back += 1,
                    RecordOutcome::NotRestored => counts.not_restored += 1,
                    RecordOutcome::Refused => {}
                },
            }
            if kind == RunKind::Release && reached_service(record) {
                counts.releases += 1;
                if record.outcome == RecordOutcome::Succeeded {
                    if let (Some(committed), Some(finished)) =
                        (record.git.committed_at, record.finished_at)
                    {
                        let seconds = seconds_between(committed, finished);
                        row.lead_time_seconds = Some(seconds);
                        lead_times.push(seconds);
                    }
                }
                let failed = record.outcome != RecordOutcome::Succeeded || later.is_some();
                if failed {
                    row.failed_change = true;
                    if later.is_some() {
                        counts.rolled_back_later += 1;
                    }
                    if let Some(seconds) = restored_after(record, later, &all[index + 1..]) {
                        row.restored_after_seconds = Some(seconds);
                        restore_times.push(seconds);
                    }
                }
            }
            rows.push(row);
        }
        rows.reverse();

        let days = (seconds_between(request.since, request.until) as f64 / 86_400.0).max(1.0);
        let per_day = counts.succeeded as f64 / days;
        let failed = counts.rolled_back + counts.not_restored + counts.rolled_back_later;
        let rate = (counts.releases > 0).then(|| failed as f64 / counts.releases as f64);
        let lead_median = median(&lead_times);
        let restore_median = median(&restore_times);
        let mut slowest_stages: Vec<StageDuration> = stage_millis
            .into_iter()
            .filter_map(|(stage, millis)| {
                Some(StageDuration {
                    stage,
                    runs: millis.len(),
                    median_seconds: round(median(&millis)? as f64 / 1000.0, 1),
                })
            })
            .collect();
        slowest_stages.sort_by(|a, b| b.median_seconds.total_cmp(&a.median_seconds));

        Self {
            app: request.app.clone(),
            environments: request.environments.clone(),
            since: request.since,
            until: request.until,
            days: round(days, 2),
            deployment_frequency: DeploymentFrequency {
                releases: counts.succeeded,
                per_day: round(per_day, 3),
                per_week: round(per_day * 7.0, 2),
                band: bands::deployment_frequency(per_day),
            },
            lead_time: LeadTime {
                samples: lead_times.len(),
                without_commit_time: rows
                    .iter()
                    .filter(|r| {
                        r.kind == RunKind::Release
                            && r.outcome == RecordOutcome::Succeeded
                            && r.lead_time_seconds.is_none()
                    })
                    .count(),
                median_seconds: lead_median,
                p90_seconds: percentile(&lead_times, 90),
                band: lead_median.map(|s| bands::lead_time(s as f64)),
            },
            change_failure_rate: ChangeFailureRate {
                failed,
                releases: counts.releases,
                rate: rate.map(|r| round(r, 4)),
                band: rate.map(bands::change_failure_rate),
            },
            time_to_restore: TimeToRestore {
                samples: restore_times.len(),
                unrestored: rows
                    .iter()
                    .filter(|r| r.failed_change && r.restored_after_seconds.is_none())
                    .count(),
                median_seconds: restore_median,
                band: restore_median.map(|s| bands::time_to_restore(s as f64)),
            },
            counts,
            slowest_stages,
            releases: rows,
        }
    }
}

/// The manual rollbacks that undid a successful release: index of the release in `all`
/// (oldest first) → the rollback's record. The release is the newest successful one on
/// the same environment before the rollback that was serving what it rolled back from
/// (its `previous_revision`).
fn rolled_back_later<'a>(all: &[&'a DeployRecord]) -> BTreeMap<usize, &'a DeployRecord> {
    let mut undone = BTreeMap::new();
    for (at, rollback) in all.iter().enumerate() {
        if run_kind(rollback) != RunKind::Rollback {
            continue;
        }
        let undid = all[..at].iter().rposition(|r| {
            r.environment == rollback.environment
                && run_kind(r) == RunKind::Release
                && r.outcome == RecordOutcome::Succeeded
                && (rollback.previous_revision.is_none()
                    || r.revision == rollback.previous_revision)
        });
        if let Some(index) = undid {
            undone.entry(index).or_insert(*rollback);
        }
    }
    undone
}

/// How long the service took to be on a good release again after `failed`.
fn restored_after(
    failed: &DeployRecord,
    rolled_back_by: Option<&DeployRecord>,
    later: &[&DeployRecord],
) -> Option<u64> {
    // A release that went live and was rolled back by hand was bad from its success on.
    let (broken_from, not_before) = match rolled_back_by {
        Some(rollback) => (failed.finished_at?, rollback.started_at),
        None => (failed.started_at, failed.started_at),
    };
    if rolled_back_by.is_none() && failed.outcome == RecordOutcome::RolledBack {
        return failed
            .finished_at
            .map(|end| seconds_between(broken_from, end));
    }
    later
        .iter()
        .filter(|r| r.environment == failed.environment && r.started_at >= not_before)
        .find(|r| r.outcome == RecordOutcome::Succeeded)
        .and_then(|good| good.finished_at)
        .map(|end| seconds_between(broken_from, end))
}

fn round(value: f64, decimals: i32) -> f64 {
    let factor = 10f64.powi(decimals);
    (value * factor).round() / factor
}

#[cfg(test)]
mod tests;
