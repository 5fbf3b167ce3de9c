//! `tugboat logs` on ECS: which tasks a service (or one deployment) has, where awslogs
//! writes each of their containers, and what a stream holds after a time or a token.
//!
//! - the service's running tasks: `ListTasks` serviceName, desiredStatus RUNNING;
//! - a deployment's: `ListTasks` startedBy its id, RUNNING and STOPPED;
//! - then `DescribeTasks`, the revision's container definitions (`DescribeTaskDefinition`,
//!   once per revision) for the awslogs streams (`prefix/container/task-id`), and
//!   `GetLogEvents` from a time (startFromHead) or on from a `nextForwardToken`.
//!
//! Reads only; the core's [`pipeline_core::logs::LogTail`] decides what to read when.

use super::diagnose::{awslogs_stream, log_lines, logs_client_for, task_id};
use crate::errors::stage_error;
use async_trait::async_trait;
use aws_sdk_ecs::types::{ContainerDefinition, DesiredStatus};
use chrono::{DateTime, Utc};
use pipeline_core::logs::{LogPage, LogScope, LogSource, TaskLogs};
use pipeline_core::{DeployTarget, StageError};
use std::collections::HashMap;
use std::sync::Mutex;

/// `DescribeTasks` takes at most 100 tasks.
const DESCRIBE_TASKS_MAX: usize = 100;
/// Pages of one stream read in one look (10 000 events each).
const PAGES_PER_READ: usize = 10;

/// [`TaskLogs`] on ECS and CloudWatch Logs.
///
/// ```no_run
/// # async fn example(clients: aws_adapters::AwsClients, target: pipeline_core::DeployTarget) -> Result<(), pipeline_core::StageError> {
/// use pipeline_core::logs::{LogScope, TaskLogs};
/// let logs = aws_adapters::EcsTaskLogs::new(clients.ecs.clone(), clients.logs.clone());
/// for source in logs.sources(&target, &LogScope::Running).await? {
///     let page = logs.read(&source, chrono::Utc::now() - chrono::Duration::minutes(10), None).await?;
///     println!("{} {}: {} lines", source.task_id, source.container, page.lines.len());
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct EcsTaskLogs {
    ecs: aws_sdk_ecs::Client,
    logs: aws_sdk_cloudwatchlogs::Client,
    /// Container definitions by revision ARN: a revision never changes.
    definitions: Mutex<HashMap<String, Vec<ContainerDefinition>>>,
}

impl EcsTaskLogs {
    pub fn new(ecs: aws_sdk_ecs::Client, logs: aws_sdk_cloudwatchlogs::Client) -> Self {
        Self {
            ecs,
            logs,
            definitions: Mutex::new(HashMap::new()),
        }
    }

    async fn task_arns(
        &self,
        target: &DeployTarget,
        scope: &LogScope,
    ) -> Result<Vec<String>, StageError> {
        let statuses: &[DesiredStatus] = match scope {
            LogScope::Running => &[DesiredStatus::Running],
            LogScope::StartedBy(_) => &[DesiredStatus::Running, DesiredStatus::Stopped],
        };
        let mut arns = Vec::new();
        for status in statuses {
            let mut request = self
                .ecs
                .list_tasks()
                .cluster(&target.cluster)
                .desired_status(status.clone());
            request = match scope {
                LogScope::Running => request.service_name(&target.service),
                LogScope::StartedBy(by) => request.started_by(by),
            };
            let found = request
                .into_paginator()
                .items()
                .send()
                .collect::<Result<Vec<_>, _>>()
                .await
                .map_err(|err| stage_error("ListTasks", &err))?;
            arns.extend(found);
        }
        Ok(arns)
    }

    async fn container_definitions(
        &self,
        revision: &str,
    ) -> Result<Vec<ContainerDefinition>, StageError> {
        if let Some(known) = self.known(revision) {
            return Ok(known);
        }
        let output = self
            .ecs
            .describe_task_definition()
            .task_definition(revision)
            .send()
            .await
            .map_err(|err| stage_error("DescribeTaskDefinition", &err))?;
        let containers = output
            .task_definition()
            .map(|d| d.container_definitions().to_vec())
            .unwrap_or_default();
        if let Ok(mut known) = self.definitions.lock() {
            known.insert(revision.to_string(), containers.clone());
        }
        Ok(containers)
    }

    fn known(&self, revision: &str) -> Option<Vec<ContainerDefinition>> {
        self.definitions.lock().ok()?.get(revision).cloned()
    }

    fn region(&self) -> Option<&str> {
        self.logs.config().region().map(|r| r.as_ref())
    }
}

#[async_trait]
impl TaskLogs for EcsTaskLogs {
    async fn sources(
        &self,
        target: &DeployTarget,
        scope: &LogScope,
    ) -> Result<Vec<LogSource>, StageError> {
        let arns = self.task_arns(target, scope).await?;
        let mut sources = Vec::new();
        for chunk in arns.chunks(DESCRIBE_TASKS_MAX) {
            let output = self
                .ecs
                .describe_tasks()
                .cluster(&target.cluster)
                .set_tasks(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|err| stage_error("DescribeTasks", &err))?;
            for task in output.tasks() {
                let Some(revision) = task.task_definition_arn() else {
                    continue;
                };
                let id = task_id(task.task_arn().unwrap_or_default()).to_string();
                let definitions = self.container_definitions(revision).await?;
                for container in task.containers() {
                    let name = container.name().unwrap_or_default();
                    let stream = definitions
                        .iter()
                        .find(|d| d.name() == Some(name))
                        .and_then(|d| awslogs_stream(d, &id, self.region()));
                    if let Some(stream) = stream {
                        sources.push(LogSource {
                            task_id: id.clone(),
                            container: name.to_string(),
                            stream,
                        });
                    }
                }
            }
        }
        Ok(sources)
    }

    async fn read(
        &self,
        source: &LogSource,
        since: DateTime<Utc>,
        token: Option<String>,
    ) -> Result<LogPage, StageError> {
        let client = logs_client_for(&self.logs, source.stream.region.as_deref());
        let mut page = LogPage {
            lines: Vec::new(),
            next: token,
        };
        for _ in 0..PAGES_PER_READ {
            let result = client
                .get_log_events()
                .log_group_name(&source.stream.group)
                .log_stream_name(&source.stream.stream)
                .start_from_head(true)
                .start_time(since.timestamp_millis())
                .set_next_token(page.next.clone())
                .send()
                .await;
            let output = match result {
                Ok(output) => output,
                Err(err)
                    if err
                        .as_service_error()
                        .is_some_and(|e| e.is_resource_not_found_exception()) =>
                {
                    return Ok(page);
                }
                Err(err) => return Err(stage_error("GetLogEvents", &err)),
            };
            let events = output.events();
            page.lines.extend(log_lines(events));
            let next = output.next_forward_token().map(str::to_string);
            // The same token again: the end of the stream for now.
            let at_end = events.is_empty() || next.is_none() || next == page.next;
            if next.is_some() {
                page.next = next;
            }
            if at_end {
                break;
            }
        }
        Ok(page)
    }
}
