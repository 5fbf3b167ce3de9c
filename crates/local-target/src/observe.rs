//! The local target's controller as the core's wait loop drives it: one step per look.
//! A look checks the release's containers (started, healthy, essential ones running)
//! and, once they are ready, switches the proxy to them; a failed one is removed. What a
//! stored deployment and a look say is translated by pure functions (table-tested).

use super::deployer::{LocalDeployer, Progress};
use super::state::{DeploymentState, LocalDeployment};
use async_trait::async_trait;
use pipeline_core::{
    DeployTarget, DeploymentHandle, Events, Revision, RolloutObservation, RolloutProgress,
    RolloutState, RolloutWatch, StageError,
};

/// What a stored deployment says on its own: finished (`Some`), or still to be looked at.
pub(super) fn settled_state(
    deployment: &LocalDeployment,
    all: &[LocalDeployment],
    revision: &Revision,
) -> Option<RolloutState> {
    match deployment.state {
        DeploymentState::Completed => Some(RolloutState::Completed {
            revision: revision.clone(),
        }),
        DeploymentState::Failed => Some(RolloutState::Failed {
            reason: deployment.reason.clone().unwrap_or_default(),
        }),
        DeploymentState::Stopped => Some(RolloutState::Gone),
        DeploymentState::Replaced => {
            let by = all
                .iter()
                .rev()
                .find(|d| d.created_at > deployment.created_at)
                .map(|d| d.id.clone())
                .unwrap_or_else(|| "another deployment".into());
            Some(RolloutState::Replaced { by })
        }
        DeploymentState::InProgress => None,
    }
}

/// What a look at the containers says: ready is completed (once the proxy switched),
/// a failure is failed, anything else in progress, waiting for what the look names.
pub(super) fn observation_of(
    progress: Progress,
    counts: (u32, u32, u32),
    deployment: &str,
    revision: &Revision,
) -> RolloutObservation {
    let mut observation = RolloutObservation {
        progress: Some(RolloutProgress {
            deployment: deployment.to_string(),
            state: "IN_PROGRESS".into(),
            running: counts.0,
            pending: counts.1,
            desired: counts.2,
            failed_tasks: 0,
        }),
        ..RolloutObservation::state(RolloutState::InProgress)
    };
    match progress {
        Progress::Ready => {
            observation.state = RolloutState::Completed {
                revision: revision.clone(),
            }
        }
        Progress::Failed(reason) => observation.state = RolloutState::Failed { reason },
        Progress::Waiting(what) => observation.waiting_for = Some(what),
    }
    observation
}

pub(super) struct LocalRolloutWatch {
    deployer: LocalDeployer,
    target: DeployTarget,
    handle: DeploymentHandle,
}

impl LocalRolloutWatch {
    pub(super) fn new(
        deployer: LocalDeployer,
        target: DeployTarget,
        handle: DeploymentHandle,
    ) -> Self {
        Self {
            deployer,
            target,
            handle,
        }
    }
}

#[async_trait]
impl RolloutWatch for LocalRolloutWatch {
    async fn observe(&mut self, events: &Events) -> Result<RolloutObservation, StageError> {
        let deployer = &self.deployer;
        let state = deployer.state.load()?;
        let Some(mut deployment) = state.deployment(&self.handle.id).cloned() else {
            return Ok(RolloutObservation::state(RolloutState::Gone));
        };
        if let Some(settled) = settled_state(&deployment, &state.deployments, &self.handle.revision)
        {
            return Ok(RolloutObservation::state(settled));
        }
        let (progress, counts) = deployer.look(&self.target, &mut deployment).await?;
        // Ports may have changed when a container had to be created again.
        let mut latest = deployer.state.load()?;
        if let Some(stored) = latest.deployment_mut(&deployment.id) {
            if stored.containers != deployment.containers || stored.front != deployment.front {
                stored.containers = deployment.containers.clone();
                stored.front = deployment.front.clone();
                deployer.state.save(&latest)?;
            }
        }
        let observation = observation_of(progress, counts, &deployment.id, &self.handle.revision);
        match &observation.state {
            RolloutState::Completed { .. } => {
                deployer
                    .switch_to(&self.target, &deployment, events)
                    .await?;
            }
            RolloutState::Failed { reason } => {
                deployer
                    .fail(&self.target, &deployment, reason.clone(), events)
                    .await?;
            }
            _ => {}
        }
        Ok(observation)
    }

    /// A release not ready in time is failed like one whose container died: its
    /// containers are removed and the serving release keeps serving.
    async fn abandon(&mut self, reason: &str, events: &Events) -> Result<(), StageError> {
        let state = self.deployer.state.load()?;
        let Some(deployment) = state.deployment(&self.handle.id).cloned() else {
            return Ok(());
        };
        if deployment.state == DeploymentState::InProgress {
            events.warn(format!("{}: {reason}", deployment.id));
            self.deployer
                .fail(&self.target, &deployment, reason.to_string(), events)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn deployment(id: &str, state: DeploymentState, minute: u32) -> LocalDeployment {
        LocalDeployment {
            id: id.into(),
            revision: 2,
            state,
            reason: None,
            restores: None,
            network: "tugboat-app-local".into(),
            containers: Vec::new(),
            front: None,
            created_at: Utc
                .with_ymd_and_hms(2026, 12, 2, 10, minute, 0)
                .single()
                .unwrap_or_default(),
        }
    }

    fn revision() -> Revision {
        Revision::new("local:app:2", "app:2")
    }

    #[test]
    fn a_stored_deployment_says_whether_it_finished() {
        let newer = deployment("d3", DeploymentState::InProgress, 5);
        let cases = vec![
            (
                "in progress: look at it",
                DeploymentState::InProgress,
                None,
                None,
            ),
            (
                "completed",
                DeploymentState::Completed,
                None,
                Some(RolloutState::Completed {
                    revision: revision(),
                }),
            ),
            (
                "failed, with its reason",
                DeploymentState::Failed,
                Some("web exited with 1"),
                Some(RolloutState::Failed {
                    reason: "web exited with 1".into(),
                }),
            ),
            (
                "stopped",
                DeploymentState::Stopped,
                None,
                Some(RolloutState::Gone),
            ),
            (
                "replaced by the newer one",
                DeploymentState::Replaced,
                None,
                Some(RolloutState::Replaced { by: "d3".into() }),
            ),
        ];
        for (name, state, reason, expected) in cases {
            let mut ours = deployment("d2", state, 1);
            ours.reason = reason.map(str::to_string);
            let all = vec![ours.clone(), newer.clone()];
            assert_eq!(settled_state(&ours, &all, &revision()), expected, "{name}");
        }
    }

    #[test]
    fn a_look_at_the_containers_is_translated() {
        let ready = observation_of(Progress::Ready, (2, 0, 2), "d2", &revision());
        assert_eq!(
            ready.state,
            RolloutState::Completed {
                revision: revision()
            }
        );
        assert_eq!(ready.progress.map(|p| (p.running, p.desired)), Some((2, 2)));

        let failed = observation_of(
            Progress::Failed("web is unhealthy".into()),
            (1, 0, 2),
            "d2",
            &revision(),
        );
        assert_eq!(
            failed.state,
            RolloutState::Failed {
                reason: "web is unhealthy".into()
            }
        );

        let waiting = observation_of(
            Progress::Waiting("web: health check starting".into()),
            (0, 2, 2),
            "d2",
            &revision(),
        );
        assert_eq!(waiting.state, RolloutState::InProgress);
        assert_eq!(
            waiting.waiting_for.as_deref(),
            Some("web: health check starting")
        );
    }
}
