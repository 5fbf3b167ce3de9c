//! The rules that keep a release from damaging the service it deploys, as pure
//! functions: what a release does to the desired count, which revision a failure
//! restores, which running deployment a release must not start on top of, and which
//! revisions pruning must keep.

use crate::model::{DeployRecord, DeploymentStatus, RecordOutcome, Revision, ServiceStatus};

/// What a release's service update does with the desired count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DesiredCount {
    /// The update leaves `desiredCount` out: the service keeps the count it has.
    Leave { reason: String },
    /// The update sets `desiredCount` to `count`.
    Set { count: u32, reason: String },
}

impl DesiredCount {
    /// The count to send, if any.
    pub fn count(&self) -> Option<u32> {
        match self {
            Self::Leave { .. } => None,
            Self::Set { count, .. } => Some(*count),
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Self::Leave { reason } | Self::Set { reason, .. } => reason,
        }
    }
}

/// A release never lowers capacity: with autoscaling (a scalable target on the service,
/// or `[scaling]` in the config) the count is left to it; otherwise `desired_count` is
/// applied only to a service that does not exist yet or when it is above today's count.
pub fn desired_count_for_release(
    configured: Option<u32>,
    scaling_configured: bool,
    service: Option<&ServiceStatus>,
) -> DesiredCount {
    let Some(configured) = configured else {
        return DesiredCount::Leave {
            reason: "no desired_count configured".into(),
        };
    };
    let Some(service) = service else {
        return DesiredCount::Set {
            count: configured,
            reason: format!("desired count {configured} (new service)"),
        };
    };
    if service.autoscaled == Some(true) || scaling_configured {
        return DesiredCount::Leave {
            reason: format!(
                "desired count left to Application Auto Scaling (now {}; desired_count {configured} is not sent)",
                service.desired
            ),
        };
    }
    if configured > service.desired {
        DesiredCount::Set {
            count: configured,
            reason: format!(
                "desired count raised from {} to {configured}",
                service.desired
            ),
        }
    } else {
        DesiredCount::Leave {
            reason: format!(
                "desired count left at {} (desired_count {configured} would not raise it; a release never lowers capacity)",
                service.desired
            ),
        }
    }
}

/// A deployment of the service that is still rolling out: a release must not start on
/// top of it (it holds no tugboat lock, so it is not tugboat's).
pub fn rollout_in_progress(status: &ServiceStatus) -> Option<&DeploymentStatus> {
    status.deployments.iter().find(|d| {
        d.status == "PRIMARY"
            && matches!(d.rollout_state.as_deref(), Some("IN_PROGRESS" | "PENDING"))
    })
}

/// Two revisions are the same when their ids or their labels are.
pub fn same_revision(a: &Revision, b: &Revision) -> bool {
    a.id == b.id || a.label == b.label
}

/// The revision a failed release restores: what last completed. The primary deployment
/// when it completed; else the newest good release in the records; else the newest
/// completed deployment. Never a deployment that is in progress or failed.
pub fn restore_point(status: &ServiceStatus, history: &[DeployRecord]) -> Option<Revision> {
    let completed = |d: &&DeploymentStatus| d.rollout_state.as_deref() == Some("COMPLETED");
    let primary = status.deployments.iter().find(|d| d.status == "PRIMARY");
    if let Some(primary) = primary {
        // Without rolloutState (older controllers) the primary is all there is to go on.
        if completed(&primary) || primary.rollout_state.is_none() {
            return Some(primary.revision.clone());
        }
    } else if status.deployments.is_empty() {
        return status
            .revision
            .clone()
            .or_else(|| newest_good(history).cloned());
    }
    newest_good(history).cloned().or_else(|| {
        status
            .deployments
            .iter()
            .find(completed)
            .map(|d| d.revision.clone())
    })
}

fn newest_good(history: &[DeployRecord]) -> Option<&Revision> {
    history
        .iter()
        .find(|r| r.outcome == RecordOutcome::Succeeded)
        .and_then(|r| r.revision.as_ref())
}

/// The revisions one environment may need: what its service runs or is deploying, and
/// the revisions of its last `keep` good releases (never fewer than 2) with the one that
/// served before the oldest of them.
pub fn revisions_to_keep(
    status: Option<&ServiceStatus>,
    history: &[DeployRecord],
    keep: usize,
) -> Vec<Revision> {
    let mut kept: Vec<Revision> = Vec::new();
    let mut add = |revision: &Revision| {
        if !kept.iter().any(|k| same_revision(k, revision)) {
            kept.push(revision.clone());
        }
    };
    if let Some(status) = status {
        status.revision.iter().for_each(&mut add);
        status.deployments.iter().for_each(|d| add(&d.revision));
    }
    let good: Vec<&DeployRecord> = history
        .iter()
        .filter(|r| r.outcome == RecordOutcome::Succeeded && r.revision.is_some())
        .take(keep.max(2))
        .collect();
    for record in &good {
        record.revision.iter().for_each(&mut add);
    }
    // A release that is still in progress (the Lambda's) may be rolled back to what
    // served before it.
    for record in history
        .iter()
        .filter(|r| r.outcome == RecordOutcome::InProgress)
    {
        record.revision.iter().for_each(&mut add);
        record.previous_revision.iter().for_each(&mut add);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DeployTarget, GitInfo, ReleaseId};

    fn rev(n: u32) -> Revision {
        Revision::new(
            format!("arn:aws:ecs:us-east-1:123456789012:task-definition/app:{n}"),
            format!("app:{n}"),
        )
    }

    fn deployment(id: &str, status: &str, state: Option<&str>, n: u32) -> DeploymentStatus {
        DeploymentStatus {
            id: id.into(),
            status: status.into(),
            rollout_state: state.map(str::to_string),
            rollout_state_reason: None,
            revision: rev(n),
            running: 1,
            pending: 0,
            desired: 1,
            failed_tasks: 0,
        }
    }

    fn service(
        desired: u32,
        autoscaled: Option<bool>,
        deployments: Vec<DeploymentStatus>,
    ) -> ServiceStatus {
        ServiceStatus {
            target: DeployTarget {
                app: "app".into(),
                environment: "production".into(),
                cluster: "c".into(),
                service: "s".into(),
                region: None,
            },
            revision: deployments.first().map(|d| d.revision.clone()),
            running: desired,
            pending: 0,
            desired,
            deployments,
            events: Vec::new(),
            autoscaled,
        }
    }

    fn record(id: &str, outcome: RecordOutcome, n: u32, previous: Option<u32>) -> DeployRecord {
        DeployRecord {
            release_id: ReleaseId(id.into()),
            app: "app".into(),
            environment: "production".into(),
            git: GitInfo::default(),
            image: None,
            revision: Some(rev(n)),
            previous_revision: previous.map(rev),
            outcome,
            reason: None,
            stages: Vec::new(),
            actor: "alice".into(),
            started_at: chrono::DateTime::default(),
            finished_at: None,
            rollback_of: None,
            deployment_id: None,
            trigger: None,
            scan_override: None,
            task_definition: None,
            warnings: Vec::new(),
            rollback_deployment_id: None,
            rollback_started_at: None,
            concluding: None,
            one_off_tasks: Vec::new(),
        }
    }

    #[test]
    fn a_release_never_lowers_the_desired_count() {
        let completed = vec![deployment("d1", "PRIMARY", Some("COMPLETED"), 1)];
        let cases = [
            (
                "autoscaled",
                Some(2),
                false,
                Some(service(6, Some(true), completed.clone())),
                None,
            ),
            (
                "[scaling] configured",
                Some(2),
                true,
                Some(service(6, Some(false), completed.clone())),
                None,
            ),
            (
                "higher than today",
                Some(4),
                false,
                Some(service(2, Some(false), completed.clone())),
                Some(4),
            ),
            (
                "lower than today",
                Some(2),
                false,
                Some(service(6, Some(false), completed.clone())),
                None,
            ),
            (
                "equal",
                Some(6),
                false,
                Some(service(6, None, completed.clone())),
                None,
            ),
            (
                "unknown autoscaling, higher",
                Some(8),
                false,
                Some(service(6, None, completed.clone())),
                Some(8),
            ),
            ("new service", Some(2), false, None, Some(2)),
            (
                "nothing configured",
                None,
                false,
                Some(service(6, Some(false), completed.clone())),
                None,
            ),
        ];
        for (name, configured, scaling, status, expected) in cases {
            let decision = desired_count_for_release(configured, scaling, status.as_ref());
            assert_eq!(decision.count(), expected, "{name}: {}", decision.reason());
        }
    }

    #[test]
    fn the_restore_point_is_what_last_completed() {
        let history = vec![
            record("r3", RecordOutcome::RolledBack, 3, Some(2)),
            record("r2", RecordOutcome::Succeeded, 2, Some(1)),
        ];
        // Primary completed: that is what serves.
        let status = service(
            2,
            None,
            vec![deployment("d2", "PRIMARY", Some("COMPLETED"), 2)],
        );
        assert_eq!(restore_point(&status, &history), Some(rev(2)));
        // A failed primary (no circuit-breaker rollback): the newest good release.
        let status = service(
            2,
            None,
            vec![deployment("d3", "PRIMARY", Some("FAILED"), 3)],
        );
        assert_eq!(restore_point(&status, &history), Some(rev(2)));
        // The circuit breaker's rollback still in progress, no records: the completed one.
        let status = service(
            2,
            None,
            vec![
                deployment("d4", "PRIMARY", Some("IN_PROGRESS"), 5),
                deployment("d1", "ACTIVE", Some("COMPLETED"), 4),
            ],
        );
        assert_eq!(restore_point(&status, &[]), Some(rev(4)));
        // In progress, only failed ones besides it, no records: nothing to restore.
        let status = service(
            2,
            None,
            vec![
                deployment("d4", "PRIMARY", Some("IN_PROGRESS"), 5),
                deployment("d1", "ACTIVE", Some("FAILED"), 4),
            ],
        );
        assert_eq!(restore_point(&status, &[]), None);
    }

    #[test]
    fn a_rollout_in_progress_is_found() {
        let status = service(
            2,
            None,
            vec![
                deployment("d4", "PRIMARY", Some("IN_PROGRESS"), 5),
                deployment("d1", "ACTIVE", Some("COMPLETED"), 4),
            ],
        );
        assert_eq!(
            rollout_in_progress(&status).map(|d| d.id.as_str()),
            Some("d4")
        );
        let status = service(
            2,
            None,
            vec![deployment("d1", "PRIMARY", Some("COMPLETED"), 4)],
        );
        assert_eq!(rollout_in_progress(&status), None);
    }

    #[test]
    fn kept_revisions_cover_the_service_and_the_good_releases() {
        let history = vec![
            record("r9", RecordOutcome::InProgress, 9, Some(8)),
            record("r8", RecordOutcome::Succeeded, 8, Some(7)),
            record("r7", RecordOutcome::RolledBack, 7, Some(6)),
            record("r6", RecordOutcome::Succeeded, 6, Some(5)),
            record("r5", RecordOutcome::Succeeded, 5, Some(4)),
        ];
        let status = service(
            2,
            None,
            vec![deployment("d", "PRIMARY", Some("IN_PROGRESS"), 9)],
        );
        let labels: Vec<String> = revisions_to_keep(Some(&status), &history, 1)
            .iter()
            .map(|r| r.label.clone())
            .collect();
        // keep = 1 still keeps two good releases (8 and 6); 9 runs; 8 is 9's previous.
        assert_eq!(labels, vec!["app:9", "app:8", "app:6"]);
    }
}
