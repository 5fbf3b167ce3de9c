//! ECS: register task definitions, update services, and say where *our own* deployment
//! stands — a circuit-breaker rollback is a failure, never a success.
//!
//! - `deployer.rs`: [`Deployer`] on ECS (register, update, roll back, prune);
//! - `observe.rs`: a look at a deployment turned into the core's [`RolloutState`] (the
//!   `deployments` array; the core's wait loop does the waiting);
//! - `service_deployment.rs`: the same for service deployments (blue/green, canary,
//!   linear, and rolling on newer ECS), and the rollback's `StopServiceDeployment`;
//! - `strategy.rs`: the `deploymentConfiguration` a non-rolling strategy sets;
//! - `poller.rs`: [`ServicePoller`], one `DescribeServices` per 10 services per poll
//!   interval for every rollout a fleet follows in a region;
//! - `status.rs`: [`ServiceReader`] on ECS;
//! - `diagnose.rs`, `run_task.rs`: a failed deployment's stopped tasks, one-off tasks;
//! - `logs.rs`: the tasks' awslogs streams for `tugboat logs`.
//!
//! [`Deployer`]: pipeline_core::Deployer
//! [`ServiceReader`]: pipeline_core::ServiceReader
//! [`RolloutState`]: pipeline_core::RolloutState

mod deployer;
mod diagnose;
mod logs;
mod observe;
mod poller;
mod run_task;
mod service_deployment;
mod status;
mod strategy;

pub use diagnose::TaskDiagnoser;
pub use logs::EcsTaskLogs;
pub use observe::{observe_deployments, DeploymentView};
pub use poller::{ServicePoller, DESCRIBE_SERVICES_LIMIT};
pub use run_task::{OneOffTask, Placement, TaskRunner};
pub use service_deployment::{
    is_service_deployment_arn, observe_service_deployment, Following, ServiceDeploymentView,
};

use crate::errors::stage_error;
use aws_sdk_ecs::types::{Deployment, Service, TaskDefinitionStatus};
use chrono::{DateTime, TimeZone, Utc};
use pipeline_core::config::StrategySettings;
use pipeline_core::{DeployTarget, DeploymentHandle, Revision, StageError};
use service_deployment::ServiceDeploymentView as View;
use std::time::Duration;

/// The tag every revision tugboat registers carries: pruning touches no other.
const APP_TAG: &str = "tugboat:app";
/// The tag naming the release a revision was rendered for: one release, one revision.
const RELEASE_TAG: &str = "tugboat:release";
/// Tries of `RegisterTaskDefinition` (as many as the clients' own retries).
const REGISTER_ATTEMPTS: u32 = 6;
/// The first pause between two tries of `RegisterTaskDefinition`; doubled each time.
const REGISTER_BACKOFF: Duration = Duration::from_millis(200);
/// The longest pause between two tries of `RegisterTaskDefinition`.
const MAX_REGISTER_BACKOFF: Duration = Duration::from_secs(30);
/// How many of a family's newest revisions are looked at for one already registered.
const REGISTERED_LOOKBACK: usize = 5;

/// [`Deployer`] and [`ServiceReader`] on ECS.
#[derive(Clone, Debug)]
pub struct EcsDeployer {
    client: aws_sdk_ecs::Client,
    strategy: StrategySettings,
    autoscaling: Option<aws_sdk_applicationautoscaling::Client>,
    /// Rollouts are looked at through a poller shared with other services; `None`: one
    /// `DescribeServices` per look.
    poller: Option<ServicePoller>,
}

impl EcsDeployer {
    pub fn new(client: aws_sdk_ecs::Client) -> Self {
        Self {
            client,
            strategy: StrategySettings::default(),
            autoscaling: None,
            poller: None,
        }
    }

    /// Follows rollouts through `poller` (a fleet's services in one region share one).
    pub fn with_poller(mut self, poller: ServicePoller) -> Self {
        self.poller = Some(poller);
        self
    }

    /// Application Auto Scaling, to tell whether a scalable target owns the service's
    /// desired count ([`ServiceStatus::autoscaled`]); without it that is unknown.
    pub fn with_autoscaling(mut self, client: aws_sdk_applicationautoscaling::Client) -> Self {
        self.autoscaling = Some(client);
        self
    }

    /// Whether a scalable target exists for the service's desired count.
    pub(super) async fn autoscaled(
        &self,
        target: &DeployTarget,
    ) -> Result<Option<bool>, StageError> {
        use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};
        let Some(client) = &self.autoscaling else {
            return Ok(None);
        };
        let resource_id = format!("service/{}/{}", target.cluster, target.service);
        let output = client
            .describe_scalable_targets()
            .service_namespace(ServiceNamespace::Ecs)
            .resource_ids(&resource_id)
            .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
            .send()
            .await
            .map_err(|err| stage_error("DescribeScalableTargets", &err))?;
        Ok(Some(
            output
                .scalable_targets()
                .iter()
                .any(|t| t.resource_id() == resource_id),
        ))
    }

    /// A task definition's status (`ACTIVE`, `INACTIVE`, `DELETE_IN_PROGRESS`) and its
    /// tags; `None` when ECS does not know it.
    pub(super) async fn describe_revision(
        &self,
        revision: &str,
    ) -> Result<Option<(String, Vec<aws_sdk_ecs::types::Tag>)>, StageError> {
        let result = self
            .client
            .describe_task_definition()
            .task_definition(revision)
            .include(aws_sdk_ecs::types::TaskDefinitionField::Tags)
            .send()
            .await;
        match result {
            Ok(output) => Ok(Some((
                output
                    .task_definition()
                    .and_then(|t| t.status())
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
                output.tags().to_vec(),
            ))),
            Err(err) => {
                let error = stage_error("DescribeTaskDefinition", &err);
                // ECS answers ClientException "Unable to describe task definition" for an unknown one.
                if error.message.contains("ClientException") {
                    Ok(None)
                } else {
                    Err(error)
                }
            }
        }
    }

    /// The newest ACTIVE revision of `family` tagged for `release`, among the family's
    /// [`REGISTERED_LOOKBACK`] newest: a registration whose answer was lost.
    pub(super) async fn registered_for_release(
        &self,
        family: &str,
        release: &str,
    ) -> Result<Option<Revision>, StageError> {
        let arns: Vec<String> = self
            .client
            .list_task_definitions()
            .family_prefix(family)
            .status(TaskDefinitionStatus::Active)
            .sort(aws_sdk_ecs::types::SortOrder::Desc)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|err| stage_error("ListTaskDefinitions", &err))?;
        for (_, arn) in newest_of_family(arns, family)
            .into_iter()
            .take(REGISTERED_LOOKBACK)
        {
            let Some((status, tags)) = self.describe_revision(&arn).await? else {
                continue;
            };
            let tagged = tags
                .iter()
                .any(|t| t.key() == Some(RELEASE_TAG) && t.value() == Some(release));
            if tagged && status == "ACTIVE" {
                return Ok(Some(revision_of(&arn)));
            }
        }
        Ok(None)
    }

    /// The service deployment `arn`, as the waiter judges it.
    pub(super) async fn describe_service_deployment(
        &self,
        arn: &str,
    ) -> Result<
        Option<View>,
        aws_sdk_ecs::error::SdkError<
            aws_sdk_ecs::operation::describe_service_deployments::DescribeServiceDeploymentsError,
        >,
    > {
        let output = self
            .client
            .describe_service_deployments()
            .service_deployment_arns(arn)
            .send()
            .await?;
        Ok(output
            .service_deployments()
            .iter()
            .find(|d| d.service_deployment_arn() == Some(arn))
            .map(ServiceDeploymentView::from))
    }

    pub(super) async fn describe_raw(
        &self,
        target: &DeployTarget,
    ) -> Result<
        Option<Service>,
        aws_sdk_ecs::error::SdkError<
            aws_sdk_ecs::operation::describe_services::DescribeServicesError,
        >,
    > {
        let output = match self
            .client
            .describe_services()
            .cluster(&target.cluster)
            .services(&target.service)
            .send()
            .await
        {
            Ok(output) => output,
            // No cluster, no service: the same answer as a service that does not exist.
            Err(err)
                if err.as_service_error().and_then(|e| e.meta().code())
                    == Some("ClusterNotFoundException") =>
            {
                return Ok(None)
            }
            Err(err) => return Err(err),
        };
        Ok(output
            .services()
            .iter()
            .find(|s| s.status() != Some("INACTIVE"))
            .cloned())
    }

    pub(super) async fn describe(&self, target: &DeployTarget) -> Result<Service, StageError> {
        match self.describe_raw(target).await {
            Ok(Some(service)) => Ok(service),
            Ok(None) => Err(StageError::bad_input(format!(
                "service {} not found in cluster {}",
                target.service, target.cluster
            ))
            .with_help(format!(
                "check environments.{}.cluster and .service in tugboat.toml, or create the service first",
                target.environment
            ))),
            Err(err) => Err(stage_error("DescribeServices", &err)),
        }
    }
}

/// A service deployment that a `StopServiceDeployment` ROLLBACK has taken.
pub(super) fn is_rolling_back(status: &str) -> bool {
    matches!(
        status,
        "ROLLBACK_REQUESTED" | "ROLLBACK_IN_PROGRESS" | "ROLLBACK_SUCCESSFUL"
    )
}

/// The revision ARN a `RegisterTaskDefinition` answered with.
pub(super) fn registered_revision(
    output: &aws_sdk_ecs::operation::register_task_definition::RegisterTaskDefinitionOutput,
) -> Result<Revision, StageError> {
    let arn = output
        .task_definition()
        .and_then(|t| t.task_definition_arn())
        .ok_or_else(|| {
            StageError::failed("RegisterTaskDefinition returned no task definition ARN")
        })?;
    Ok(revision_of(arn))
}

/// `family`'s revisions among `arns` (a prefix also matches other families), newest
/// first by revision number: moto (and older APIs) ignore `sort`.
pub(super) fn newest_of_family(arns: Vec<String>, family: &str) -> Vec<(u64, String)> {
    let mut revisions: Vec<(u64, String)> = arns
        .into_iter()
        .filter_map(|arn| {
            let label = revision_label(&arn);
            let (fam, number) = label.rsplit_once(':')?;
            (fam == family).then(|| number.parse().ok().map(|n| (n, arn.clone())))?
        })
        .collect();
    revisions.sort_by_key(|r| std::cmp::Reverse(r.0));
    revisions
}

/// The label people use for a task definition: `family:revision` from an ARN or a label.
pub(crate) fn revision_label(id: &str) -> String {
    id.rsplit_once(":task-definition/")
        .map(|(_, label)| label.to_string())
        .unwrap_or_else(|| id.to_string())
}

pub(super) fn revision_of(id: &str) -> Revision {
    Revision::new(id, revision_label(id))
}

pub(super) fn same_revision(a: &str, b: &str) -> bool {
    revision_label(a) == revision_label(b)
}

pub(super) fn count(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

pub(super) fn to_chrono(time: Option<&aws_smithy_types::DateTime>) -> DateTime<Utc> {
    time.and_then(|t| Utc.timestamp_opt(t.secs(), t.subsec_nanos()).single())
        .unwrap_or_default()
}

pub(super) fn handle_for(deployment: &Deployment) -> DeploymentHandle {
    let view = DeploymentView::from(deployment);
    DeploymentHandle {
        id: view.id,
        revision: revision_of(&view.task_definition),
    }
}

pub(super) fn primary(service: &Service) -> Option<&Deployment> {
    service
        .deployments()
        .iter()
        .find(|d| d.status() == Some("PRIMARY"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_arns_or_stay() {
        assert_eq!(
            revision_label("arn:aws:ecs:us-east-1:1:task-definition/cv-matcher:7"),
            "cv-matcher:7"
        );
        assert_eq!(revision_label("cv-matcher:7"), "cv-matcher:7");
        assert!(same_revision(
            "arn:aws:ecs:us-east-1:1:task-definition/cv-matcher:7",
            "cv-matcher:7"
        ));
    }
}
