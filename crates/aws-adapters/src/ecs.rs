//! ECS: register task definitions, update services, and follow *our own* deployment
//! until it truly completes — a circuit-breaker rollback is a failure, never a success.

use crate::errors::{is_throttling, is_transient, stage_error};
use crate::raw::{replace_body, CaptureResponse};
use crate::service_deployments::{
    can_be_rolled_back, is_earlier_service_deployment, is_service_deployment_arn,
    judge_service_deployment, Following, ServiceDeploymentReporter, ServiceDeploymentView,
};
use async_trait::async_trait;
use aws_sdk_ecs::types::{
    AdvancedConfiguration, CanaryConfiguration, Deployment, DeploymentConfiguration,
    DeploymentLifecycleHook, DeploymentLifecycleHookStage, DeploymentLifecycleHookTargetType,
    DeploymentStrategy, LinearConfiguration, LoadBalancer, Service, StopServiceDeploymentStopType,
    TaskDefinitionStatus,
};
use chrono::{DateTime, TimeZone, Utc};
use pipeline_core::config::{StrategyKind, StrategySettings};
use pipeline_core::task_definition::RenderedTaskDefinition;
use pipeline_core::{
    DeployTarget, Deployer, DeploymentHandle, DeploymentStatus, Events, PipelineEvent,
    RestoreRequest, Revision, RolloutOutcome, ServiceEventLine, ServiceReader, ServiceStatus,
    StageError, TaskDefinition, UpdateRequest, WaitOptions,
};
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;

/// The longest pause between two looks while AWS throttles us.
const MAX_THROTTLE_BACKOFF: Duration = Duration::from_secs(30);
/// Consecutive failed looks (other than throttling) before the waiter gives up.
const MAX_CONSECUTIVE_ERRORS: u32 = 5;

/// The tag every revision tugboat registers carries: pruning touches no other.
const APP_TAG: &str = "tugboat:app";
/// The tag naming the release a revision was rendered for: one release, one revision.
const RELEASE_TAG: &str = "tugboat:release";
/// Tries of `RegisterTaskDefinition` (as many as the clients' own retries).
const REGISTER_ATTEMPTS: u32 = 6;
/// The first pause between two tries of `RegisterTaskDefinition`; doubled each time.
const REGISTER_BACKOFF: Duration = Duration::from_millis(200);
/// How many of a family's newest revisions are looked at for one already registered.
const REGISTERED_LOOKBACK: usize = 5;

/// [`Deployer`] and [`ServiceReader`] on ECS.
#[derive(Clone, Debug)]
pub struct EcsDeployer {
    client: aws_sdk_ecs::Client,
    strategy: StrategySettings,
    autoscaling: Option<aws_sdk_applicationautoscaling::Client>,
}

impl EcsDeployer {
    pub fn new(client: aws_sdk_ecs::Client) -> Self {
        Self {
            client,
            strategy: StrategySettings::default(),
            autoscaling: None,
        }
    }

    /// Application Auto Scaling, to tell whether a scalable target owns the service's
    /// desired count ([`ServiceStatus::autoscaled`]); without it that is unknown.
    pub fn with_autoscaling(mut self, client: aws_sdk_applicationautoscaling::Client) -> Self {
        self.autoscaling = Some(client);
        self
    }

    /// Whether a scalable target exists for the service's desired count.
    async fn autoscaled(&self, target: &DeployTarget) -> Result<Option<bool>, StageError> {
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
    async fn describe_revision(
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
    async fn registered_for_release(
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

    /// The environment's `[strategy]`: anything but rolling sets the service's
    /// `deploymentConfiguration` (and the load balancer's `advancedConfiguration`) on
    /// every `update_service`. Rolling changes nothing about the service.
    pub fn with_strategy(mut self, strategy: StrategySettings) -> Self {
        self.strategy = strategy;
        self
    }

    /// The `deploymentConfiguration` and `loadBalancers` an update sets for a non-rolling
    /// strategy; the service's other deployment settings (circuit breaker, alarms,
    /// percents) are kept as they are.
    fn strategy_update(&self, service: &Service) -> (DeploymentConfiguration, Vec<LoadBalancer>) {
        let strategy = &self.strategy;
        let current = service.deployment_configuration();
        let mut config = DeploymentConfiguration::builder()
            .set_deployment_circuit_breaker(
                current
                    .and_then(|c| c.deployment_circuit_breaker())
                    .cloned(),
            )
            .set_maximum_percent(current.and_then(|c| c.maximum_percent()))
            .set_minimum_healthy_percent(current.and_then(|c| c.minimum_healthy_percent()))
            .set_alarms(current.and_then(|c| c.alarms()).cloned())
            .strategy(DeploymentStrategy::from(strategy.kind.ecs_name()));
        if let Some(bake) = strategy.bake_minutes {
            config = config.bake_time_in_minutes(i32::try_from(bake).unwrap_or(1440));
        }
        let minutes = |m: Option<u32>| m.map(|m| i32::try_from(m).unwrap_or(1440));
        match strategy.kind {
            StrategyKind::Canary => {
                config = config.canary_configuration(
                    CanaryConfiguration::builder()
                        .set_canary_percent(strategy.canary_percent)
                        .set_canary_bake_time_in_minutes(minutes(strategy.canary_bake_minutes))
                        .build(),
                );
            }
            StrategyKind::Linear => {
                config = config.linear_configuration(
                    LinearConfiguration::builder()
                        .set_step_percent(strategy.linear_step_percent)
                        .set_step_bake_time_in_minutes(minutes(strategy.linear_step_bake_minutes))
                        .build(),
                );
            }
            StrategyKind::Rolling | StrategyKind::BlueGreen => {}
        }
        if let Some(hook) = &strategy.lifecycle_hook {
            config = config.lifecycle_hooks(
                DeploymentLifecycleHook::builder()
                    .target_type(DeploymentLifecycleHookTargetType::AwsLambda)
                    .hook_target_arn(&hook.function_arn)
                    .role_arn(&hook.role_arn)
                    .set_lifecycle_stages(Some(
                        hook.stages
                            .iter()
                            .map(|s| DeploymentLifecycleHookStage::from(s.ecs_name()))
                            .collect(),
                    ))
                    .build(),
            );
        }
        let advanced = AdvancedConfiguration::builder()
            .set_alternate_target_group_arn(strategy.alternate_target_group_arn.clone())
            .set_production_listener_rule(strategy.production_listener_rule.clone())
            .set_test_listener_rule(strategy.test_listener_rule.clone())
            .set_role_arn(strategy.role_arn.clone())
            .build();
        let load_balancers = service
            .load_balancers()
            .iter()
            .enumerate()
            .map(|(index, lb)| {
                let mut builder = LoadBalancer::builder()
                    .set_target_group_arn(lb.target_group_arn().map(str::to_string))
                    .set_load_balancer_name(lb.load_balancer_name().map(str::to_string))
                    .set_container_name(lb.container_name().map(str::to_string))
                    .set_container_port(lb.container_port());
                // The first (production) target group gets the alternate one.
                if index == 0 {
                    builder = builder.advanced_configuration(advanced.clone());
                } else {
                    builder =
                        builder.set_advanced_configuration(lb.advanced_configuration().cloned());
                }
                builder.build()
            })
            .collect();
        (config.build(), load_balancers)
    }

    /// The service deployment `arn`, as the waiter judges it.
    async fn describe_service_deployment(
        &self,
        arn: &str,
    ) -> Result<
        Option<ServiceDeploymentView>,
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

    async fn describe_raw(
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

    async fn describe(&self, target: &DeployTarget) -> Result<Service, StageError> {
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
fn is_rolling_back(status: &str) -> bool {
    matches!(
        status,
        "ROLLBACK_REQUESTED" | "ROLLBACK_IN_PROGRESS" | "ROLLBACK_SUCCESSFUL"
    )
}

/// The revision ARN a `RegisterTaskDefinition` answered with.
fn registered_revision(
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
fn newest_of_family(arns: Vec<String>, family: &str) -> Vec<(u64, String)> {
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

fn revision_of(id: &str) -> Revision {
    Revision::new(id, revision_label(id))
}

fn same_revision(a: &str, b: &str) -> bool {
    revision_label(a) == revision_label(b)
}

fn count(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

fn to_chrono(time: Option<&aws_smithy_types::DateTime>) -> DateTime<Utc> {
    time.and_then(|t| Utc.timestamp_opt(t.secs(), t.subsec_nanos()).single())
        .unwrap_or_default()
}

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

/// Whether the followed deployment is still going.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RolloutVerdict {
    InProgress,
    Finished(RolloutOutcome),
}

/// The rule from the ECS semantics: success only when *our* deployment is PRIMARY and
/// COMPLETED on the revision we registered (or, without `rolloutState`, the only
/// deployment with running == desired). FAILED, replaced, gone: failure.
pub fn judge_rollout(
    ours: &DeploymentHandle,
    service_status: Option<&str>,
    deployments: &[DeploymentView],
) -> RolloutVerdict {
    use RolloutOutcome as O;
    if matches!(service_status, Some("DRAINING" | "INACTIVE")) {
        return RolloutVerdict::Finished(O::Gone);
    }
    let primary = deployments.iter().find(|d| d.status == "PRIMARY");
    let Some(mine) = deployments.iter().find(|d| d.id == ours.id) else {
        return RolloutVerdict::Finished(O::Gone);
    };
    if mine.rollout_state.as_deref() == Some("FAILED") {
        let reason = mine
            .rollout_state_reason
            .clone()
            .unwrap_or_else(|| "the deployment failed".to_string());
        return RolloutVerdict::Finished(match primary {
            Some(p) if p.id != mine.id => O::RolledBackByPlatform {
                reason: format!(
                    "{reason} (ECS started deployment {} on {})",
                    p.id,
                    revision_label(&p.task_definition)
                ),
            },
            _ => O::Failed { reason },
        });
    }
    if mine.status != "PRIMARY" {
        let by = primary
            .map(|p| p.id.clone())
            .unwrap_or_else(|| "another deployment".into());
        return RolloutVerdict::Finished(O::Replaced { by });
    }
    if !same_revision(&mine.task_definition, &ours.revision.id) {
        return RolloutVerdict::Finished(O::Replaced {
            by: format!(
                "{} (revision {})",
                mine.id,
                revision_label(&mine.task_definition)
            ),
        });
    }
    let done = match mine.rollout_state.as_deref() {
        Some("COMPLETED") => true,
        Some(_) => false,
        None => deployments.len() == 1 && mine.running == mine.desired,
    };
    if done {
        RolloutVerdict::Finished(O::Completed)
    } else {
        RolloutVerdict::InProgress
    }
}

/// A deployment that vanished between two looks may have failed and been rolled back
/// by the circuit breaker in between: the service's events say so.
fn explain_disappearance(
    outcome: RolloutOutcome,
    service: &Service,
    ours: &DeploymentHandle,
) -> RolloutOutcome {
    if outcome != RolloutOutcome::Gone {
        return outcome;
    }
    let marker = format!("(deployment {})", ours.id);
    let failure = service.events().iter().find_map(|e| {
        let message = e.message()?;
        (message.contains(&marker) && message.contains("failed")).then(|| message.to_string())
    });
    match failure {
        Some(reason) => RolloutOutcome::RolledBackByPlatform {
            reason: format!(
                "{reason} (ECS rolled the service back to {})",
                primary(service)
                    .and_then(Deployment::task_definition)
                    .map(revision_label)
                    .unwrap_or_else(|| "an earlier revision".into())
            ),
        },
        None => outcome,
    }
}

fn handle_for(deployment: &Deployment) -> DeploymentHandle {
    let view = DeploymentView::from(deployment);
    DeploymentHandle {
        id: view.id,
        revision: revision_of(&view.task_definition),
    }
}

fn primary(service: &Service) -> Option<&Deployment> {
    service
        .deployments()
        .iter()
        .find(|d| d.status() == Some("PRIMARY"))
}

/// Reports counts, new service events and rising failures while following a rollout.
struct ProgressReporter<'a> {
    events: &'a Events,
    seen_events: HashSet<String>,
    first_look: bool,
    last_counts: Option<(Option<String>, u32, u32, u32, u32)>,
    last_failed: u32,
}

impl<'a> ProgressReporter<'a> {
    fn new(events: &'a Events) -> Self {
        Self {
            events,
            seen_events: HashSet::new(),
            first_look: true,
            last_counts: None,
            last_failed: 0,
        }
    }

    fn look(&mut self, service: &Service, ours: &DeploymentHandle) {
        let mine = service
            .deployments()
            .iter()
            .find(|d| d.id() == Some(ours.id.as_str()));
        let since = mine.map(|d| to_chrono(d.created_at()));
        let mut fresh: Vec<_> = service
            .events()
            .iter()
            .filter(|e| {
                self.seen_events
                    .insert(e.id().unwrap_or_default().to_string())
            })
            .filter(|e| !self.first_look || since.is_some_and(|s| to_chrono(e.created_at()) >= s))
            .collect();
        self.first_look = false;
        fresh.reverse();
        for event in fresh {
            self.events.emit(PipelineEvent::ServiceEvent {
                at: to_chrono(event.created_at()),
                message: event.message().unwrap_or_default().to_string(),
            });
        }
        if let Some(mine) = mine {
            let view = DeploymentView::from(mine);
            let counts = (
                view.rollout_state.clone(),
                view.running,
                view.pending,
                view.desired,
                view.failed_tasks,
            );
            if self.last_counts.as_ref() != Some(&counts) {
                self.events.emit(PipelineEvent::RolloutProgress {
                    deployment: view.id.clone(),
                    state: view
                        .rollout_state
                        .clone()
                        .unwrap_or_else(|| view.status.clone()),
                    running: view.running,
                    pending: view.pending,
                    desired: view.desired,
                    failed_tasks: view.failed_tasks,
                });
                self.last_counts = Some(counts);
            }
            if view.failed_tasks > self.last_failed {
                self.events.warn(format!(
                    "{} task(s) of deployment {} failed to start or stay healthy ({} in all); \
                     the circuit breaker may roll it back",
                    view.failed_tasks - self.last_failed,
                    view.id,
                    view.failed_tasks
                ));
                self.last_failed = view.failed_tasks;
            }
        }
    }
}

#[async_trait]
impl Deployer for EcsDeployer {
    async fn current_revision(
        &self,
        target: &DeployTarget,
    ) -> Result<Option<Revision>, StageError> {
        match self.describe_raw(target).await {
            Ok(Some(service)) => Ok(primary(&service)
                .and_then(Deployment::task_definition)
                .or(service.task_definition())
                .map(revision_of)),
            Ok(None) => Ok(None),
            Err(err) => Err(stage_error("DescribeServices", &err)),
        }
    }

    async fn register(
        &self,
        target: &DeployTarget,
        rendered: &RenderedTaskDefinition,
    ) -> Result<Revision, StageError> {
        let mut body = serde_json::to_value(&rendered.definition).map_err(|err| {
            StageError::failed(format!("cannot encode the task definition: {err}"))
        })?;
        if let Some(object) = body.as_object_mut() {
            if !rendered.tags.is_empty() {
                object.insert(
                    "tags".into(),
                    serde_json::to_value(&rendered.tags).unwrap_or_default(),
                );
            }
        }
        let body = serde_json::to_vec(&body).map_err(|err| {
            StageError::failed(format!("cannot encode the task definition: {err}"))
        })?;
        let release = rendered
            .tags
            .iter()
            .find(|t| t.key == RELEASE_TAG)
            .map(|t| t.value.as_str());
        let refused = |err: &aws_sdk_ecs::error::SdkError<_, _>| {
            let mut error = stage_error("RegisterTaskDefinition", err);
            if error.message.contains("ClientException") {
                error.kind = pipeline_core::StageErrorKind::BadInput;
                error = error.with_help(format!(
                    "ECS refused the task definition of {}; fix the task definition file",
                    target.app
                ));
            }
            error
        };
        let family = &rendered.definition.family;
        let Some(release) = release else {
            // Nothing to recognise a lost registration by: the SDK's retries as they are.
            let output = self
                .client
                .register_task_definition()
                .family(family)
                .customize()
                .mutate_request(replace_body(body))
                .send()
                .await
                .map_err(|err| refused(&err))?;
            return registered_revision(&output);
        };
        // Registering is not idempotent: a try whose answer was lost may have registered
        // a revision, and a blind retry registers another. So the SDK does not retry this
        // call; before each new try, a revision of this release already registered is
        // looked for and taken.
        let mut backoff = REGISTER_BACKOFF;
        let mut attempt = 1;
        loop {
            let result = self
                .client
                .register_task_definition()
                .family(family)
                .customize()
                .config_override(aws_sdk_ecs::config::Builder::default().retry_config(
                    aws_sdk_ecs::config::retry::RetryConfig::standard().with_max_attempts(1),
                ))
                .mutate_request(replace_body(body.clone()))
                .send()
                .await;
            match result {
                Ok(output) => return registered_revision(&output),
                Err(err) if attempt < REGISTER_ATTEMPTS && is_transient(&err) => {}
                Err(err) => return Err(refused(&err)),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_THROTTLE_BACKOFF);
            attempt += 1;
            if let Some(revision) = self.registered_for_release(family, release).await? {
                return Ok(revision);
            }
        }
    }

    async fn update_service(
        &self,
        target: &DeployTarget,
        request: &UpdateRequest,
    ) -> Result<DeploymentHandle, StageError> {
        let mut call = self
            .client
            .update_service()
            .cluster(&target.cluster)
            .service(&target.service)
            .task_definition(&request.revision.id)
            .force_new_deployment(request.force_new_deployment);
        if let Some(count) = request.desired_count {
            call = call.desired_count(i32::try_from(count).unwrap_or(i32::MAX));
        }
        if self.strategy.kind != StrategyKind::Rolling {
            let service = self.describe(target).await?;
            let (config, load_balancers) = self.strategy_update(&service);
            call = call.deployment_configuration(config);
            if !load_balancers.is_empty() {
                call = call.set_load_balancers(Some(load_balancers));
            }
        }
        let output = call
            .send()
            .await
            .map_err(|err| stage_error("UpdateService", &err))?;
        let service = output
            .service()
            .ok_or_else(|| StageError::failed("UpdateService returned no service"))?;
        let created = primary(service).ok_or_else(|| {
            StageError::failed("UpdateService left the service without a PRIMARY deployment")
        })?;
        Ok(handle_for(created))
    }

    async fn wait_for_rollout(
        &self,
        target: &DeployTarget,
        deployment: &DeploymentHandle,
        options: &WaitOptions,
        events: &Events,
    ) -> Result<RolloutOutcome, StageError> {
        let deadline = Instant::now() + options.timeout;
        let mut reporter = ProgressReporter::new(events);
        let mut sd_reporter = ServiceDeploymentReporter::new(events);
        let mut throttle_backoff: Option<Duration> = None;
        let mut consecutive_errors = 0;
        // A handle that is a service deployment ARN is a rollback tugboat asked for
        // (`roll_back`); a release is followed through its service deployment when the
        // service has one (blue/green, canary, linear, and rolling on newer ECS), else
        // through the `deployments` array (moto, older ECS).
        let mut followed: Option<(String, Following)> = is_service_deployment_arn(&deployment.id)
            .then(|| (deployment.id.clone(), Following::Rollback));
        let mut first_look = followed.is_none();
        let mut ours_created: Option<i64> = None;
        loop {
            if let Some((arn, following)) = &followed {
                match self.describe_service_deployment(arn).await {
                    Ok(Some(view))
                        if *following == Following::Release
                            && is_earlier_service_deployment(view.created_at, ours_created) =>
                    {
                        // Not the one carrying our deployment: follow `deployments`.
                        followed = None;
                        continue;
                    }
                    Ok(Some(view)) => {
                        consecutive_errors = 0;
                        throttle_backoff = None;
                        sd_reporter.look(&view);
                        if let RolloutVerdict::Finished(outcome) =
                            judge_service_deployment(&view, *following)
                        {
                            return Ok(outcome);
                        }
                    }
                    Ok(None) => return Ok(RolloutOutcome::Gone),
                    Err(err) if is_throttling(&err) => {
                        let next = throttle_backoff.map_or(options.poll_interval * 2, |b| b * 2);
                        throttle_backoff = Some(next.min(MAX_THROTTLE_BACKOFF));
                        events.warn(
                            "ECS is throttling DescribeServiceDeployments; looking less often",
                        );
                    }
                    Err(err) => {
                        consecutive_errors += 1;
                        if consecutive_errors >= MAX_CONSECUTIVE_ERRORS {
                            return Err(stage_error("DescribeServiceDeployments", &err));
                        }
                    }
                }
            } else {
                match self.describe_raw(target).await {
                    Ok(Some(service)) => {
                        consecutive_errors = 0;
                        throttle_backoff = None;
                        if std::mem::take(&mut first_look) {
                            let ours_is_primary = primary(&service).and_then(Deployment::id)
                                == Some(deployment.id.as_str());
                            ours_created = primary(&service)
                                .and_then(Deployment::created_at)
                                .map(|t| t.secs());
                            if let (Some(arn), true) =
                                (service.current_service_deployment(), ours_is_primary)
                            {
                                followed = Some((arn.to_string(), Following::Release));
                                continue;
                            }
                        }
                        reporter.look(&service, deployment);
                        let views: Vec<DeploymentView> = service
                            .deployments()
                            .iter()
                            .map(DeploymentView::from)
                            .collect();
                        if let RolloutVerdict::Finished(outcome) =
                            judge_rollout(deployment, service.status(), &views)
                        {
                            return Ok(explain_disappearance(outcome, &service, deployment));
                        }
                    }
                    Ok(None) => return Ok(RolloutOutcome::Gone),
                    Err(err) if is_throttling(&err) => {
                        let next = throttle_backoff.map_or(options.poll_interval * 2, |b| b * 2);
                        throttle_backoff = Some(next.min(MAX_THROTTLE_BACKOFF));
                        events.warn("ECS is throttling DescribeServices; looking less often");
                    }
                    Err(err) => {
                        consecutive_errors += 1;
                        if consecutive_errors >= MAX_CONSECUTIVE_ERRORS {
                            return Err(stage_error("DescribeServices", &err));
                        }
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(RolloutOutcome::TimedOut {
                    after: options.timeout,
                });
            }
            let pause = throttle_backoff.unwrap_or(options.poll_interval);
            tokio::time::sleep(pause.min(deadline - now)).await;
        }
    }

    async fn roll_back(
        &self,
        target: &DeployTarget,
        request: &RestoreRequest,
    ) -> Result<DeploymentHandle, StageError> {
        let to = &request.to;
        let service = self.describe(target).await?;
        // A service deployment still in progress that carries the release being
        // abandoned is stopped with a rollback: ECS moves the traffic back to the
        // revision that served before, and that service deployment ends in
        // ROLLBACK_SUCCESSFUL. One that is not the release's is never stopped, and a
        // finished one is never followed again.
        if let (Some(arn), Some(from)) = (service.current_service_deployment(), &request.from) {
            let view = self
                .describe_service_deployment(arn)
                .await
                .map_err(|err| stage_error("DescribeServiceDeployments", &err))?;
            let carries_release = primary(&service)
                .and_then(Deployment::task_definition)
                .is_some_and(|td| same_revision(td, &from.id));
            if let (Some(view), true) = (view, carries_release) {
                let handle = DeploymentHandle {
                    id: arn.to_string(),
                    revision: to.clone(),
                };
                if can_be_rolled_back(&view.status) {
                    let stopped = self
                        .client
                        .stop_service_deployment()
                        .service_deployment_arn(arn)
                        .stop_type(StopServiceDeploymentStopType::Rollback)
                        .send()
                        .await;
                    // The call has no client token: a try whose answer was lost may have
                    // started the rollback, and the SDK's retry of it is then refused.
                    // What ECS does now tells.
                    if let Err(err) = stopped {
                        let now = self
                            .describe_service_deployment(arn)
                            .await
                            .map_err(|err| stage_error("DescribeServiceDeployments", &err))?;
                        if !now.is_some_and(|v| is_rolling_back(&v.status)) {
                            return Err(stage_error("StopServiceDeployment", &err));
                        }
                    }
                    return Ok(handle);
                }
                // ECS is rolling it back already (alarm, circuit breaker, hook).
                if matches!(
                    view.status.as_str(),
                    "ROLLBACK_REQUESTED" | "ROLLBACK_IN_PROGRESS"
                ) {
                    return Ok(handle);
                }
            }
        }
        if let Some(current) = primary(&service) {
            let view = DeploymentView::from(current);
            // The circuit breaker may be restoring (or have restored) `to`: follow that
            // deployment instead of starting another.
            if same_revision(&view.task_definition, &to.id)
                && view.rollout_state.as_deref() != Some("FAILED")
            {
                return Ok(handle_for(current));
            }
        }
        self.update_service(
            target,
            &UpdateRequest {
                revision: to.clone(),
                desired_count: None,
                force_new_deployment: false,
            },
        )
        .await
    }

    async fn revision_active(&self, revision: &Revision) -> Result<bool, StageError> {
        Ok(self
            .describe_revision(&revision.id)
            .await?
            .is_some_and(|(status, _)| status == "ACTIVE"))
    }

    async fn prune_revisions(
        &self,
        target: &DeployTarget,
        family: &str,
        keep: usize,
        protected: &[Revision],
    ) -> Result<Vec<Revision>, StageError> {
        let arns: Vec<String> = self
            .client
            .list_task_definitions()
            .family_prefix(family)
            .status(TaskDefinitionStatus::Active)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|err| stage_error("ListTaskDefinitions", &err))?;
        let revisions = newest_of_family(arns, family);
        let service = self.describe(target).await?;
        let in_use: HashSet<String> = service
            .deployments()
            .iter()
            .filter_map(Deployment::task_definition)
            .chain(service.task_definition())
            .map(revision_label)
            .chain(protected.iter().map(|r| revision_label(&r.id)))
            .chain(protected.iter().map(|r| r.label.clone()))
            .collect();
        let mut removed = Vec::new();
        for (_, arn) in revisions.into_iter().skip(keep) {
            if in_use.contains(&revision_label(&arn)) {
                continue;
            }
            // Only revisions tugboat registered for this app: another tool's (or
            // another app's) revisions in a shared family are not ours to remove.
            let Some((_, tags)) = self.describe_revision(&arn).await? else {
                continue;
            };
            let ours = tags
                .iter()
                .any(|t| t.key() == Some(APP_TAG) && t.value() == Some(target.app.as_str()));
            if !ours {
                continue;
            }
            self.client
                .deregister_task_definition()
                .task_definition(&arn)
                .send()
                .await
                .map_err(|err| stage_error("DeregisterTaskDefinition", &err))?;
            removed.push(revision_of(&arn));
        }
        Ok(removed)
    }
}

#[async_trait]
impl ServiceReader for EcsDeployer {
    async fn status(&self, target: &DeployTarget) -> Result<ServiceStatus, StageError> {
        let service = self.describe(target).await?;
        let deployments = service
            .deployments()
            .iter()
            .map(|d| {
                let view = DeploymentView::from(d);
                DeploymentStatus {
                    id: view.id,
                    status: view.status,
                    rollout_state: view.rollout_state,
                    rollout_state_reason: view.rollout_state_reason,
                    revision: revision_of(&view.task_definition),
                    running: view.running,
                    pending: view.pending,
                    desired: view.desired,
                    failed_tasks: view.failed_tasks,
                }
            })
            .collect();
        let events = service
            .events()
            .iter()
            .take(20)
            .map(|e| ServiceEventLine {
                id: e.id().unwrap_or_default().to_string(),
                at: to_chrono(e.created_at()),
                message: e.message().unwrap_or_default().to_string(),
            })
            .collect();
        Ok(ServiceStatus {
            target: target.clone(),
            revision: primary(&service)
                .and_then(Deployment::task_definition)
                .or(service.task_definition())
                .map(revision_of),
            running: count(service.running_count()),
            pending: count(service.pending_count()),
            desired: count(service.desired_count()),
            deployments,
            events,
            autoscaled: self.autoscaled(target).await?,
        })
    }

    async fn registered_definition(
        &self,
        revision: &Revision,
    ) -> Result<TaskDefinition, StageError> {
        let capture = CaptureResponse::default();
        self.client
            .describe_task_definition()
            .task_definition(&revision.id)
            .customize()
            .interceptor(capture.clone())
            .send()
            .await
            .map_err(|err| stage_error("DescribeTaskDefinition", &err))?;
        let body = capture
            .take()
            .ok_or_else(|| StageError::failed("DescribeTaskDefinition returned no body"))?;
        let text = String::from_utf8_lossy(&body);
        let source = format!("registered revision {}", revision.label);
        TaskDefinition::parse(Path::new(&source), &text)
            .map_err(|err| StageError::failed(err.to_string()))
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
        let cases: Vec<(&str, Vec<DeploymentView>, RolloutVerdict)> = vec![
            (
                "in progress",
                vec![
                    view("ecs-svc/2", "PRIMARY", "app:2", Some("IN_PROGRESS"), 1, 2),
                    view("ecs-svc/1", "ACTIVE", "app:1", Some("COMPLETED"), 2, 2),
                ],
                RolloutVerdict::InProgress,
            ),
            (
                "completed",
                vec![view("ecs-svc/2", "PRIMARY", "app:2", Some("COMPLETED"), 2, 2)],
                RolloutVerdict::Finished(RolloutOutcome::Completed),
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
                RolloutVerdict::Finished(RolloutOutcome::RolledBackByPlatform {
                    reason: "ECS deployment circuit breaker: tasks failed to start. (ECS started deployment ecs-svc/3 on app:1)".into(),
                }),
            ),
            (
                "failed without rollback",
                vec![view("ecs-svc/2", "PRIMARY", "app:2", Some("FAILED"), 0, 2)],
                RolloutVerdict::Finished(RolloutOutcome::Failed { reason: "the deployment failed".into() }),
            ),
            (
                "replaced by someone else's deployment",
                vec![
                    view("ecs-svc/9", "PRIMARY", "app:3", Some("IN_PROGRESS"), 0, 2),
                    view("ecs-svc/2", "ACTIVE", "app:2", Some("IN_PROGRESS"), 1, 2),
                ],
                RolloutVerdict::Finished(RolloutOutcome::Replaced { by: "ecs-svc/9".into() }),
            ),
            (
                "gone",
                vec![view("ecs-svc/1", "PRIMARY", "app:1", Some("COMPLETED"), 2, 2)],
                RolloutVerdict::Finished(RolloutOutcome::Gone),
            ),
            (
                "no rolloutState: one deployment, running == desired",
                vec![view("ecs-svc/2", "PRIMARY", "app:2", None, 2, 2)],
                RolloutVerdict::Finished(RolloutOutcome::Completed),
            ),
            (
                "no rolloutState: old deployment still draining",
                vec![
                    view("ecs-svc/2", "PRIMARY", "app:2", None, 2, 2),
                    view("ecs-svc/1", "ACTIVE", "app:1", None, 1, 0),
                ],
                RolloutVerdict::InProgress,
            ),
        ];
        for (name, deployments, expected) in cases {
            assert_eq!(
                judge_rollout(&ours(), Some("ACTIVE"), &deployments),
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
            judge_rollout(&ours(), Some("DRAINING"), &deployments),
            RolloutVerdict::Finished(RolloutOutcome::Gone)
        );
    }

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
