//! ECS service deployments (`Service.currentServiceDeployment`,
//! `DescribeServiceDeployments`, `StopServiceDeployment`): the view the blue/green,
//! canary and linear strategies report through, and its pure translation into the core's
//! [`RolloutState`] (`observe.rs` holds the watch that follows one).
//!
//! moto does not model service deployments: a service without `currentServiceDeployment`
//! is followed through its `deployments` array as before (see `observe.rs`).

use aws_sdk_ecs::types::ServiceDeployment;
use pipeline_core::{Revision, RolloutState};

/// Whether the followed service deployment is a release or the rollback tugboat asked for
/// (`StopServiceDeployment` ROLLBACK): for a rollback, `ROLLBACK_SUCCESSFUL` is the goal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Following {
    Release,
    Rollback,
}

/// A service deployment as the waiter judges it.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ServiceDeploymentView {
    pub arn: String,
    /// `PENDING`, `IN_PROGRESS`, `SUCCESSFUL`, `ROLLBACK_SUCCESSFUL`, ...
    pub status: String,
    pub status_reason: Option<String>,
    /// `SCALE_UP`, `TEST_TRAFFIC_SHIFT`, `BAKE_TIME`, ...
    pub lifecycle_stage: Option<String>,
    pub rollback_reason: Option<String>,
    /// `TRIGGERED`, `MONITORING`, `MONITORING_COMPLETE`, `DISABLED`.
    pub circuit_breaker_status: Option<String>,
    pub circuit_breaker_failures: u32,
    pub circuit_breaker_threshold: u32,
    pub alarms_status: Option<String>,
    pub triggered_alarms: Vec<String>,
    pub running: u32,
    pub pending: u32,
    pub desired: u32,
    /// The new revision's share of production traffic, in percent.
    pub production_weight: Option<f64>,
    /// When ECS created it, in seconds since the epoch.
    pub created_at: Option<i64>,
}

fn count(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

impl From<&ServiceDeployment> for ServiceDeploymentView {
    fn from(deployment: &ServiceDeployment) -> Self {
        let target = deployment.target_service_revision();
        let breaker = deployment.deployment_circuit_breaker();
        let alarms = deployment.alarms();
        Self {
            arn: deployment
                .service_deployment_arn()
                .unwrap_or_default()
                .to_string(),
            status: deployment
                .status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            status_reason: deployment.status_reason().map(str::to_string),
            lifecycle_stage: deployment.lifecycle_stage().map(|s| s.as_str().to_string()),
            rollback_reason: deployment
                .rollback()
                .and_then(|r| r.reason())
                .map(str::to_string),
            circuit_breaker_status: breaker
                .and_then(|b| b.status())
                .map(|s| s.as_str().to_string()),
            circuit_breaker_failures: breaker.map_or(0, |b| count(b.failure_count())),
            circuit_breaker_threshold: breaker.map_or(0, |b| count(b.threshold())),
            alarms_status: alarms
                .and_then(|a| a.status())
                .map(|s| s.as_str().to_string()),
            triggered_alarms: alarms
                .map(|a| a.triggered_alarm_names().to_vec())
                .unwrap_or_default(),
            running: target.map_or(0, |t| count(t.running_task_count())),
            pending: target.map_or(0, |t| count(t.pending_task_count())),
            desired: target.map_or(0, |t| count(t.requested_task_count())),
            production_weight: target.and_then(|t| t.requested_production_traffic_weight()),
            created_at: deployment.created_at().map(|t| t.secs()),
        }
    }
}

impl ServiceDeploymentView {
    /// Why ECS rolled (or tried to roll) this deployment back, most specific cause first.
    pub fn failure_reason(&self) -> String {
        let mut parts = Vec::new();
        if !self.triggered_alarms.is_empty() {
            parts.push(format!(
                "CloudWatch alarm {} went into ALARM",
                self.triggered_alarms.join(", ")
            ));
        }
        if self.circuit_breaker_status.as_deref() == Some("TRIGGERED") {
            parts.push(format!(
                "the deployment circuit breaker tripped ({} of {} tasks failed)",
                self.circuit_breaker_failures, self.circuit_breaker_threshold
            ));
        }
        if let Some(reason) = &self.rollback_reason {
            parts.push(reason.clone());
        }
        if parts.is_empty() {
            parts.push(
                self.status_reason
                    .clone()
                    .unwrap_or_else(|| format!("service deployment {}", self.status)),
            );
        }
        parts.join("; ")
    }

    /// The progress line: status, lifecycle stage and traffic share.
    pub fn state_text(&self) -> String {
        let mut text = self.status.clone();
        if let Some(stage) = &self.lifecycle_stage {
            text.push_str(&format!(" {stage}"));
        }
        if let Some(weight) = self.production_weight {
            text.push_str(&format!(" (production traffic {weight}%)"));
        }
        text
    }
}

/// What a service deployment's status says: a release completes (on `revision`, the one
/// it carries) only on `SUCCESSFUL`; a rollback by ECS (alarm, circuit breaker, a failed
/// lifecycle hook) is rolled back by the platform, naming its cause; `STOPPED` and
/// `ROLLBACK_FAILED` are failures. A rollback tugboat asked for completes (on `revision`,
/// the one it restores) on `ROLLBACK_SUCCESSFUL`. Anything else is still going.
pub fn observe_service_deployment(
    deployment: &ServiceDeploymentView,
    following: Following,
    revision: &Revision,
) -> RolloutState {
    let completed = || RolloutState::Completed {
        revision: revision.clone(),
    };
    match (deployment.status.as_str(), following) {
        ("SUCCESSFUL", Following::Release) => completed(),
        ("SUCCESSFUL", Following::Rollback) => RolloutState::Failed {
            reason: format!(
                "service deployment {} completed before the rollback took effect",
                deployment.arn
            ),
        },
        ("ROLLBACK_SUCCESSFUL", Following::Release) => RolloutState::RolledBackByPlatform {
            reason: deployment.failure_reason(),
        },
        ("ROLLBACK_SUCCESSFUL", Following::Rollback) => completed(),
        ("ROLLBACK_FAILED", _) => RolloutState::Failed {
            reason: format!(
                "{} — and ECS could not roll it back{}",
                deployment.failure_reason(),
                deployment
                    .status_reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
        },
        ("STOPPED", _) => RolloutState::Failed {
            reason: format!(
                "service deployment {} was stopped{}",
                deployment.arn,
                deployment
                    .status_reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
        },
        _ => RolloutState::InProgress,
    }
}

/// Whether a deployment handle names a service deployment (`...:service-deployment/...`):
/// the handle `roll_back` returns after `StopServiceDeployment` ROLLBACK.
pub fn is_service_deployment_arn(id: &str) -> bool {
    id.starts_with("arn:") && id.contains(":service-deployment/")
}

/// How much earlier than tugboat's deployment a service deployment may be created and
/// still be the one that carries it.
pub const CREATED_SLACK_SECONDS: i64 = 60;

/// Whether `currentServiceDeployment` is still an earlier one (ECS had not switched it
/// yet): created well before the deployment `update_service` created. It must not be
/// judged for this release: its SUCCESSFUL would be someone else's success.
pub fn is_earlier_service_deployment(
    service_deployment_created: Option<i64>,
    ours_created: Option<i64>,
) -> bool {
    match (service_deployment_created, ours_created) {
        (Some(theirs), Some(ours)) => theirs < ours - CREATED_SLACK_SECONDS,
        _ => false,
    }
}

/// Statuses from which `StopServiceDeployment` ROLLBACK can still act.
pub(crate) fn can_be_rolled_back(status: &str) -> bool {
    matches!(status, "PENDING" | "IN_PROGRESS")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision() -> Revision {
        Revision::new(
            "arn:aws:ecs:us-east-1:123456789012:task-definition/app:2",
            "app:2",
        )
    }

    fn view(status: &str) -> ServiceDeploymentView {
        ServiceDeploymentView {
            arn: "arn:aws:ecs:us-east-1:123456789012:service-deployment/c/s/abc".into(),
            status: status.into(),
            ..ServiceDeploymentView::default()
        }
    }

    #[test]
    fn each_status_is_judged_for_a_release() {
        use RolloutState as O;
        let cases: Vec<(&str, ServiceDeploymentView, RolloutState)> = vec![
            ("pending", view("PENDING"), O::InProgress),
            ("in progress", view("IN_PROGRESS"), O::InProgress),
            ("stop requested", view("STOP_REQUESTED"), O::InProgress),
            ("rollback requested", view("ROLLBACK_REQUESTED"), O::InProgress),
            ("rollback in progress", view("ROLLBACK_IN_PROGRESS"), O::InProgress),
            ("successful", view("SUCCESSFUL"), O::Completed { revision: revision() }),
            (
                "rolled back by an alarm during bake",
                ServiceDeploymentView {
                    alarms_status: Some("TRIGGERED".into()),
                    triggered_alarms: vec!["cv-matcher-production-5xx".into()],
                    rollback_reason: Some("Service deployment rolled back because of a triggered alarm.".into()),
                    ..view("ROLLBACK_SUCCESSFUL")
                },
                O::RolledBackByPlatform {
                    reason: "CloudWatch alarm cv-matcher-production-5xx went into ALARM; Service deployment rolled back because of a triggered alarm.".into(),
                },
            ),
            (
                "rolled back by the circuit breaker",
                ServiceDeploymentView {
                    circuit_breaker_status: Some("TRIGGERED".into()),
                    circuit_breaker_failures: 3,
                    circuit_breaker_threshold: 3,
                    ..view("ROLLBACK_SUCCESSFUL")
                },
                O::RolledBackByPlatform {
                    reason: "the deployment circuit breaker tripped (3 of 3 tasks failed)".into(),
                },
            ),
            (
                "rolled back by a failed lifecycle hook",
                ServiceDeploymentView {
                    rollback_reason: Some("Lifecycle hook arn:aws:lambda:us-east-1:123456789012:function:tugboat returned FAILED at POST_TEST_TRAFFIC_SHIFT".into()),
                    ..view("ROLLBACK_SUCCESSFUL")
                },
                O::RolledBackByPlatform {
                    reason: "Lifecycle hook arn:aws:lambda:us-east-1:123456789012:function:tugboat returned FAILED at POST_TEST_TRAFFIC_SHIFT".into(),
                },
            ),
            (
                "the rollback itself failed",
                ServiceDeploymentView {
                    circuit_breaker_status: Some("TRIGGERED".into()),
                    circuit_breaker_failures: 2,
                    circuit_breaker_threshold: 2,
                    status_reason: Some("old revision tasks failed to start".into()),
                    ..view("ROLLBACK_FAILED")
                },
                O::Failed {
                    reason: "the deployment circuit breaker tripped (2 of 2 tasks failed) — and ECS could not roll it back: old revision tasks failed to start".into(),
                },
            ),
            (
                "stopped",
                ServiceDeploymentView {
                    status_reason: Some("stopped by user".into()),
                    ..view("STOPPED")
                },
                O::Failed {
                    reason: "service deployment arn:aws:ecs:us-east-1:123456789012:service-deployment/c/s/abc was stopped: stopped by user".into(),
                },
            ),
            (
                "rolled back, no cause given",
                view("ROLLBACK_SUCCESSFUL"),
                O::RolledBackByPlatform {
                    reason: "service deployment ROLLBACK_SUCCESSFUL".into(),
                },
            ),
        ];
        for (name, deployment, expected) in cases {
            assert_eq!(
                observe_service_deployment(&deployment, Following::Release, &revision()),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn a_rollback_tugboat_asked_for_succeeds_on_rollback_successful() {
        use RolloutState as O;
        assert_eq!(
            observe_service_deployment(
                &view("ROLLBACK_SUCCESSFUL"),
                Following::Rollback,
                &revision()
            ),
            O::Completed {
                revision: revision()
            }
        );
        assert_eq!(
            observe_service_deployment(
                &view("ROLLBACK_IN_PROGRESS"),
                Following::Rollback,
                &revision()
            ),
            O::InProgress
        );
        assert!(matches!(
            observe_service_deployment(&view("SUCCESSFUL"), Following::Rollback, &revision()),
            O::Failed { .. }
        ));
        assert!(matches!(
            observe_service_deployment(&view("ROLLBACK_FAILED"), Following::Rollback, &revision()),
            O::Failed { .. }
        ));
    }

    #[test]
    fn an_earlier_service_deployment_is_not_ours() {
        let ours = Some(1_764_166_500);
        assert!(is_earlier_service_deployment(Some(1_764_080_000), ours));
        assert!(!is_earlier_service_deployment(Some(1_764_166_499), ours));
        assert!(!is_earlier_service_deployment(Some(1_764_166_501), ours));
        assert!(!is_earlier_service_deployment(None, ours));
        assert!(!is_earlier_service_deployment(Some(1), None));
    }

    #[test]
    fn the_state_text_names_the_stage_and_the_traffic() {
        let deployment = ServiceDeploymentView {
            lifecycle_stage: Some("PRODUCTION_TRAFFIC_SHIFT".into()),
            production_weight: Some(30.0),
            ..view("IN_PROGRESS")
        };
        assert_eq!(
            deployment.state_text(),
            "IN_PROGRESS PRODUCTION_TRAFFIC_SHIFT (production traffic 30%)"
        );
        assert!(is_service_deployment_arn(&deployment.arn));
        assert!(!is_service_deployment_arn("ecs-svc/123"));
    }
}
