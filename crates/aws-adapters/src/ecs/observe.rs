//! A look at an ECS service's `deployments` array, turned into the core's
//! [`RolloutState`]: a pure translation (table-tested below), and the watch that keeps
//! what one look needs from the one before (the events already told, whether the
//! deployment is followed through its service deployment instead).

use super::service_deployment::{
    is_earlier_service_deployment, is_service_deployment_arn, observe_service_deployment, Following,
};
use super::*;
use crate::errors::is_throttling;
use async_trait::async_trait;
use pipeline_core::{
    Events, ObservedEvent, RolloutObservation, RolloutProgress, RolloutState, RolloutWatch,
};
use std::collections::HashSet;

/// A deployment as the waiter judges it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DeploymentView {
    pub id: String,
    /// `PRIMARY`, `ACTIVE`, `INACTIVE`.
    pub status: String,
    pub task_definition: String,
    /// `IN_PROGRESS`, `COMPLETED`, `FAILED`; absent outside the rolling controller.
    pub rollout_state: Option<String>,
    pub rollout_state_reason: Option<String>,
    pub running: u32,
    pub pending: u32,
    pub desired: u32,
    pub failed_tasks: u32,
}

impl From<&Deployment> for DeploymentView {
    fn from(deployment: &Deployment) -> Self {
        Self {
            id: deployment.id().unwrap_or_default().to_string(),
            status: deployment.status().unwrap_or_default().to_string(),
            task_definition: deployment.task_definition().unwrap_or_default().to_string(),
            rollout_state: deployment.rollout_state().map(|s| s.as_str().to_string()),
            rollout_state_reason: deployment.rollout_state_reason().map(str::to_string),
            running: count(deployment.running_count()),
            pending: count(deployment.pending_count()),
            desired: count(deployment.desired_count()),
            failed_tasks: count(deployment.failed_tasks()),
        }
    }
}

/// What ECS says of *our* deployment (`ours`, the one `update_service` created) in the
/// `deployments` array: PRIMARY and `COMPLETED` (or, without `rolloutState`, the only
/// deployment, with running == desired) is completed on its task definition; `FAILED` is
/// failed, or rolled back by the platform when another deployment took PRIMARY; not
/// PRIMARY is replaced; missing (or a draining service) is gone. Whether completed is
/// success is the core's rule (`pipeline_core::judge_rollout`).
pub fn observe_deployments(
    ours: &DeploymentHandle,
    service_status: Option<&str>,
    deployments: &[DeploymentView],
) -> RolloutState {
    if matches!(service_status, Some("DRAINING" | "INACTIVE")) {
        return RolloutState::Gone;
    }
    let primary = deployments.iter().find(|d| d.status == "PRIMARY");
    let Some(mine) = deployments.iter().find(|d| d.id == ours.id) else {
        return RolloutState::Gone;
    };
    if mine.rollout_state.as_deref() == Some("FAILED") {
        let reason = mine
            .rollout_state_reason
            .clone()
            .unwrap_or_else(|| "the deployment failed".to_string());
        return match primary {
            Some(p) if p.id != mine.id => RolloutState::RolledBackByPlatform {
                reason: format!(
                    "{reason} (ECS started deployment {} on {})",
                    p.id,
                    revision_label(&p.task_definition)
                ),
            },
            _ => RolloutState::Failed { reason },
        };
    }
    if mine.status != "PRIMARY" {
        let by = primary
            .map(|p| p.id.clone())
            .unwrap_or_else(|| "another deployment".into());
        return RolloutState::Replaced { by };
    }
    let done = match mine.rollout_state.as_deref() {
        Some("COMPLETED") => true,
        Some(_) => false,
        None => deployments.len() == 1 && mine.running == mine.desired,
    };
    if done {
        RolloutState::Completed {
            revision: revision_of(&mine.task_definition),
        }
    } else {
        RolloutState::InProgress
    }
}

/// A deployment that vanished between two looks may have failed and been rolled back
/// by the circuit breaker in between: the service's events say so.
fn explain_disappearance(
    state: RolloutState,
    service: &Service,
    ours: &DeploymentHandle,
) -> RolloutState {
    if state != RolloutState::Gone {
        return state;
    }
    let marker = format!("(deployment {})", ours.id);
    let failure = service.events().iter().find_map(|e| {
        let message = e.message()?;
        (message.contains(&marker) && message.contains("failed")).then(|| message.to_string())
    });
    match failure {
        Some(reason) => RolloutState::RolledBackByPlatform {
            reason: format!(
                "{reason} (ECS rolled the service back to {})",
                primary(service)
                    .and_then(Deployment::task_definition)
                    .map(revision_label)
                    .unwrap_or_else(|| "an earlier revision".into())
            ),
        },
        None => state,
    }
}

/// The counts of *our* deployment, as the wait loop tells them.
fn progress_of(mine: &DeploymentView) -> RolloutProgress {
    RolloutProgress {
        deployment: mine.id.clone(),
        state: mine
            .rollout_state
            .clone()
            .unwrap_or_else(|| mine.status.clone()),
        running: mine.running,
        pending: mine.pending,
        desired: mine.desired,
        failed_tasks: mine.failed_tasks,
    }
}

/// Follows one deployment for the core's wait loop. A handle that is a service deployment
/// ARN is a rollback tugboat asked for (`roll_back`); a release is followed through its
/// service deployment when the service has one (blue/green, canary, linear, and rolling
/// on newer ECS), else through the `deployments` array (moto, older ECS).
pub(super) struct EcsRolloutWatch {
    deployer: EcsDeployer,
    target: DeployTarget,
    ours: DeploymentHandle,
    followed: Option<(String, Following)>,
    /// Whether the next look at the service decides between the two ways to follow.
    choose_source: bool,
    /// When ECS created our deployment (its service deployment must not be older).
    ours_created: Option<i64>,
    seen_events: HashSet<String>,
    first_events_look: bool,
    /// Through a shared poller: the start of the round of the last look (the watch's
    /// creation before the first), so that every look is newer than the one before.
    polled_since: tokio::time::Instant,
}

impl EcsRolloutWatch {
    pub(super) fn new(deployer: EcsDeployer, target: DeployTarget, ours: DeploymentHandle) -> Self {
        let followed =
            is_service_deployment_arn(&ours.id).then(|| (ours.id.clone(), Following::Rollback));
        Self {
            choose_source: followed.is_none(),
            followed,
            deployer,
            target,
            ours,
            ours_created: None,
            seen_events: HashSet::new(),
            first_events_look: true,
            polled_since: tokio::time::Instant::now(),
        }
    }

    /// Service events not told yet, oldest first; on the first look only those since our
    /// deployment was created.
    fn new_events(&mut self, service: &Service) -> Vec<ObservedEvent> {
        let since = service
            .deployments()
            .iter()
            .find(|d| d.id() == Some(self.ours.id.as_str()))
            .map(|d| to_chrono(d.created_at()));
        let first = std::mem::take(&mut self.first_events_look);
        let mut fresh: Vec<ObservedEvent> = service
            .events()
            .iter()
            .filter(|e| {
                self.seen_events
                    .insert(e.id().unwrap_or_default().to_string())
            })
            .filter(|e| !first || since.is_some_and(|s| to_chrono(e.created_at()) >= s))
            .map(|e| ObservedEvent {
                at: to_chrono(e.created_at()),
                message: e.message().unwrap_or_default().to_string(),
            })
            .collect();
        fresh.reverse();
        fresh
    }

    async fn look_at_service_deployment(
        &mut self,
        arn: &str,
        following: Following,
    ) -> Result<Option<RolloutObservation>, StageError> {
        match self.deployer.describe_service_deployment(arn).await {
            Ok(Some(view))
                if following == Following::Release
                    && is_earlier_service_deployment(view.created_at, self.ours_created) =>
            {
                // Not the one carrying our deployment: follow `deployments`.
                self.followed = None;
                Ok(None)
            }
            Ok(Some(view)) => Ok(Some(RolloutObservation {
                state: observe_service_deployment(&view, following, &self.ours.revision),
                progress: Some(RolloutProgress {
                    deployment: view.arn.clone(),
                    state: view.state_text(),
                    running: view.running,
                    pending: view.pending,
                    desired: view.desired,
                    failed_tasks: view.circuit_breaker_failures,
                }),
                new_events: Vec::new(),
                waiting_for: None,
            })),
            Ok(None) => Ok(Some(RolloutObservation::state(RolloutState::Gone))),
            Err(err) if is_throttling(&err) => Err(StageError::throttled(
                "ECS is throttling DescribeServiceDeployments",
            )),
            Err(err) => Err(stage_error("DescribeServiceDeployments", &err)),
        }
    }

    async fn look_at_service(&mut self) -> Result<Option<RolloutObservation>, StageError> {
        let looked = match &self.deployer.poller {
            Some(poller) => {
                let (answer, round) = poller
                    .describe(
                        &self.target.cluster,
                        &self.target.service,
                        self.polled_since,
                    )
                    .await;
                self.polled_since = round;
                answer?
            }
            None => match self.deployer.describe_raw(&self.target).await {
                Ok(service) => service,
                Err(err) if is_throttling(&err) => {
                    return Err(StageError::throttled("ECS is throttling DescribeServices"))
                }
                Err(err) => return Err(stage_error("DescribeServices", &err)),
            },
        };
        let Some(service) = looked else {
            return Ok(Some(RolloutObservation::state(RolloutState::Gone)));
        };
        if std::mem::take(&mut self.choose_source) {
            let ours_is_primary =
                primary(&service).and_then(Deployment::id) == Some(self.ours.id.as_str());
            self.ours_created = primary(&service)
                .and_then(Deployment::created_at)
                .map(|t| t.secs());
            if let (Some(arn), true) = (service.current_service_deployment(), ours_is_primary) {
                self.followed = Some((arn.to_string(), Following::Release));
                return Ok(None);
            }
        }
        let new_events = self.new_events(&service);
        let views: Vec<DeploymentView> = service
            .deployments()
            .iter()
            .map(DeploymentView::from)
            .collect();
        let progress = views.iter().find(|d| d.id == self.ours.id).map(progress_of);
        let state = explain_disappearance(
            observe_deployments(&self.ours, service.status(), &views),
            &service,
            &self.ours,
        );
        Ok(Some(RolloutObservation {
            state,
            progress,
            new_events,
            waiting_for: None,
        }))
    }
}

#[async_trait]
impl RolloutWatch for EcsRolloutWatch {
    async fn observe(&mut self, _events: &Events) -> Result<RolloutObservation, StageError> {
        // At most one switch between the two ways to follow per look.
        for _ in 0..3 {
            let looked = match self.followed.clone() {
                Some((arn, following)) => self.look_at_service_deployment(&arn, following).await?,
                None => self.look_at_service().await?,
            };
            if let Some(observation) = looked {
                return Ok(observation);
            }
        }
        Err(StageError::failed(format!(
            "could not tell how to follow deployment {} of {}",
            self.ours.id, self.target
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(
        id: &str,
        status: &str,
        td: &str,
        state: Option<&str>,
        running: u32,
        desired: u32,
    ) -> DeploymentView {
        DeploymentView {
            id: id.into(),
            status: status.into(),
            task_definition: format!("arn:aws:ecs:us-east-1:123456789012:task-definition/{td}"),
            rollout_state: state.map(str::to_string),
            rollout_state_reason: None,
            running,
            pending: desired.saturating_sub(running),
            desired,
            failed_tasks: 0,
        }
    }

    fn ours() -> DeploymentHandle {
        DeploymentHandle {
            id: "ecs-svc/2".into(),
            revision: revision_of("arn:aws:ecs:us-east-1:123456789012:task-definition/app:2"),
        }
    }

    #[test]
    fn completed_only_when_ours_is_primary_completed_on_our_revision() {
        let cases: Vec<(&str, Vec<DeploymentView>, RolloutState)> = vec![
            (
                "in progress",
                vec![
                    view("ecs-svc/2", "PRIMARY", "app:2", Some("IN_PROGRESS"), 1, 2),
                    view("ecs-svc/1", "ACTIVE", "app:1", Some("COMPLETED"), 2, 2),
                ],
                RolloutState::InProgress,
            ),
            (
                "completed",
                vec![view("ecs-svc/2", "PRIMARY", "app:2", Some("COMPLETED"), 2, 2)],
                RolloutState::Completed { revision: ours().revision },
            ),
            (
                "stable again on the old revision after a circuit breaker rollback",
                vec![
                    view("ecs-svc/3", "PRIMARY", "app:1", Some("IN_PROGRESS"), 2, 2),
                    DeploymentView {
                        rollout_state_reason: Some("ECS deployment circuit breaker: tasks failed to start.".into()),
                        ..view("ecs-svc/2", "ACTIVE", "app:2", Some("FAILED"), 0, 2)
                    },
                ],
                RolloutState::RolledBackByPlatform {
                    reason: "ECS deployment circuit breaker: tasks failed to start. (ECS started deployment ecs-svc/3 on app:1)".into(),
                },
            ),
            (
                "completed on another revision: the core's rule says replaced",
                vec![view("ecs-svc/2", "PRIMARY", "app:3", Some("COMPLETED"), 2, 2)],
                RolloutState::Completed {
                    revision: revision_of("arn:aws:ecs:us-east-1:123456789012:task-definition/app:3"),
                },
            ),
            (
                "failed without rollback",
                vec![view("ecs-svc/2", "PRIMARY", "app:2", Some("FAILED"), 0, 2)],
                RolloutState::Failed { reason: "the deployment failed".into() },
            ),
            (
                "replaced by someone else's deployment",
                vec![
                    view("ecs-svc/9", "PRIMARY", "app:3", Some("IN_PROGRESS"), 0, 2),
                    view("ecs-svc/2", "ACTIVE", "app:2", Some("IN_PROGRESS"), 1, 2),
                ],
                RolloutState::Replaced { by: "ecs-svc/9".into() },
            ),
            (
                "gone",
                vec![view("ecs-svc/1", "PRIMARY", "app:1", Some("COMPLETED"), 2, 2)],
                RolloutState::Gone,
            ),
            (
                "no rolloutState: one deployment, running == desired",
                vec![view("ecs-svc/2", "PRIMARY", "app:2", None, 2, 2)],
                RolloutState::Completed { revision: ours().revision },
            ),
            (
                "no rolloutState: old deployment still draining",
                vec![
                    view("ecs-svc/2", "PRIMARY", "app:2", None, 2, 2),
                    view("ecs-svc/1", "ACTIVE", "app:1", None, 1, 0),
                ],
                RolloutState::InProgress,
            ),
        ];
        for (name, deployments, expected) in cases {
            assert_eq!(
                observe_deployments(&ours(), Some("ACTIVE"), &deployments),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn a_draining_service_is_gone() {
        let deployments = vec![view(
            "ecs-svc/2",
            "PRIMARY",
            "app:2",
            Some("COMPLETED"),
            2,
            2,
        )];
        assert_eq!(
            observe_deployments(&ours(), Some("DRAINING"), &deployments),
            RolloutState::Gone
        );
    }
}
