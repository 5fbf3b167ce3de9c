//! [`ServiceReader`] on ECS: the service's deployments, counts and events, and a
//! revision's registered definition.

use super::*;
use crate::raw::CaptureResponse;
use async_trait::async_trait;
use pipeline_core::{
    DeploymentStatus, ServiceEventLine, ServiceReader, ServiceStatus, TaskDefinition,
};
use std::path::Path;

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
