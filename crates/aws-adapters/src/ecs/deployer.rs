//! [`Deployer`] on ECS: register (idempotent across lost answers), update the service
//! keeping its capacity, roll back (stopping only the release's own service deployment),
//! and prune revisions no environment may need.

use super::observe::EcsRolloutWatch;
use super::service_deployment::can_be_rolled_back;
use super::*;
use crate::errors::is_transient;
use crate::raw::replace_body;
use async_trait::async_trait;
use aws_sdk_ecs::types::{StopServiceDeploymentStopType, TaskDefinitionStatus};
use pipeline_core::config::StrategyKind;
use pipeline_core::task_definition::RenderedTaskDefinition;
use pipeline_core::{Deployer, RestoreRequest, RolloutWatch, UpdateRequest};
use std::collections::HashSet;

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
            backoff = (backoff * 2).min(MAX_REGISTER_BACKOFF);
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

    fn watch_rollout(
        &self,
        target: &DeployTarget,
        deployment: &DeploymentHandle,
    ) -> Box<dyn RolloutWatch> {
        Box::new(EcsRolloutWatch::new(
            self.clone(),
            target.clone(),
            deployment.clone(),
        ))
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
        let protected: HashSet<String> = protected
            .iter()
            .map(|r| revision_label(&r.id))
            .chain(protected.iter().map(|r| r.label.clone()))
            .collect();
        let candidates: Vec<String> = newest_of_family(arns, family)
            .into_iter()
            .skip(keep)
            .map(|(_, arn)| arn)
            .filter(|arn| !protected.contains(&revision_label(arn)))
            .collect();
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        // What the service runs right now is never removed, whatever the records say.
        let service = self.describe(target).await?;
        let in_use: HashSet<String> = service
            .deployments()
            .iter()
            .filter_map(Deployment::task_definition)
            .chain(service.task_definition())
            .map(revision_label)
            .collect();
        let mut removed = Vec::new();
        for arn in candidates {
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
