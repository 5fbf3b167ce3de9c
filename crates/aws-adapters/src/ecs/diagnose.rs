//! Why a deployment's tasks stopped, as ECS and CloudWatch Logs tell it: `ListTasks`
//! (desiredStatus STOPPED, `startedBy` the deployment id) and `DescribeTasks`, the newest
//! stopped few, and each failed container's last lines from the awslogs stream its task
//! definition names (`<awslogs-stream-prefix>/<container>/<task id>` in `awslogs-group`,
//! `awslogs-region`), read with `GetLogEvents`.
//!
//! Every call is a read, safe to retry (the clients retry by themselves). The ECS calls
//! failing fails the diagnosis; a log stream that cannot be read only leaves a note.

use crate::errors::stage_error;
use async_trait::async_trait;
use aws_sdk_ecs::types::{ContainerDefinition, DesiredStatus, LogDriver, Task};
use pipeline_core::diagnosis::{
    FailureDiagnosis, LogLine, LogStream, StoppedContainer, StoppedTask, DEFAULT_LOG_LINES,
    DIAGNOSED_TASKS,
};
use pipeline_core::{DeployTarget, DeploymentHandle, FailureDiagnostics, StageError};
use std::collections::HashMap;

use super::{revision_label, to_chrono};

/// `DescribeTasks` takes at most 100 tasks.
const DESCRIBE_TASKS_MAX: usize = 100;

/// Reads the stopped tasks of a deployment and the last log lines of their failed
/// containers ([`FailureDiagnosis`]).
///
/// ```no_run
/// # async fn example(clients: aws_adapters::AwsClients) -> Result<(), pipeline_core::StageError> {
/// let diagnoser = aws_adapters::TaskDiagnoser::new(clients.ecs.clone(), clients.logs.clone());
/// let diagnosis = diagnoser.diagnose("cv-matcher-cluster", "ecs-svc/1234567890123456789").await?;
/// println!("{}", diagnosis.redacted(&["known secret value".to_string()]));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct TaskDiagnoser {
    ecs: aws_sdk_ecs::Client,
    logs: aws_sdk_cloudwatchlogs::Client,
    log_lines: usize,
    tasks: usize,
}

impl TaskDiagnoser {
    pub fn new(ecs: aws_sdk_ecs::Client, logs: aws_sdk_cloudwatchlogs::Client) -> Self {
        Self {
            ecs,
            logs,
            log_lines: DEFAULT_LOG_LINES,
            tasks: DIAGNOSED_TASKS,
        }
    }

    /// How many of a failed container's last lines to read (default 20).
    pub fn with_log_lines(mut self, lines: usize) -> Self {
        self.log_lines = lines;
        self
    }

    /// How many of the newest stopped tasks to describe in full (default 3).
    pub fn with_tasks(mut self, tasks: usize) -> Self {
        self.tasks = tasks;
        self
    }

    /// The stopped tasks of `started_by` (a deployment id `ecs-svc/…`, or a RunTask's
    /// `startedBy`) in `cluster`, the newest stopped first, with their failed
    /// containers' last lines. No stopped task is an empty diagnosis, not an error.
    pub async fn diagnose(
        &self,
        cluster: &str,
        started_by: &str,
    ) -> Result<FailureDiagnosis, StageError> {
        let arns: Vec<String> = self
            .ecs
            .list_tasks()
            .cluster(cluster)
            .desired_status(DesiredStatus::Stopped)
            .started_by(started_by)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|err| stage_error("ListTasks", &err))?;
        let mut diagnosis = FailureDiagnosis {
            started_by: started_by.to_string(),
            stopped_tasks: arns.len(),
            ..Default::default()
        };
        if arns.is_empty() {
            return Ok(diagnosis);
        }
        let mut described = Vec::new();
        for chunk in arns.chunks(DESCRIBE_TASKS_MAX) {
            let output = self
                .ecs
                .describe_tasks()
                .cluster(cluster)
                .set_tasks(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|err| stage_error("DescribeTasks", &err))?;
            described.extend(output.tasks().iter().cloned());
        }
        let newest = newest_stopped(&described, self.tasks);
        let mut definitions: HashMap<String, Option<Vec<ContainerDefinition>>> = HashMap::new();
        for task in newest {
            let mut stopped = stopped_task(task);
            if let Some(arn) = task.task_definition_arn() {
                if !definitions.contains_key(arn) {
                    let containers = self.container_definitions(arn, &mut diagnosis.notes).await;
                    definitions.insert(arn.to_string(), containers);
                }
                if let Some(Some(containers)) = definitions.get(arn) {
                    locate_streams(&mut stopped, containers, self.region());
                }
            }
            for container in stopped.containers.iter_mut().filter(|c| c.failed()) {
                let Some(stream) = container.log_stream.clone() else {
                    continue;
                };
                match self.last_lines(&stream, self.log_lines).await {
                    Ok(Some(lines)) => container.log_lines = lines,
                    Ok(None) => diagnosis.notes.push(format!(
                        "no log stream {} in {} (the container may not have started)",
                        stream.stream, stream.group
                    )),
                    Err(err) => diagnosis.notes.push(format!(
                        "the logs of {} in task {} could not be read: {}",
                        container.name, stopped.task_id, err.message
                    )),
                }
            }
            diagnosis.tasks.push(stopped);
        }
        Ok(diagnosis)
    }

    fn region(&self) -> Option<&str> {
        self.logs.config().region().map(|r| r.as_ref())
    }

    /// The container definitions of a revision; `None` (and a note) when it cannot be read.
    async fn container_definitions(
        &self,
        arn: &str,
        notes: &mut Vec<String>,
    ) -> Option<Vec<ContainerDefinition>> {
        match self
            .ecs
            .describe_task_definition()
            .task_definition(arn)
            .send()
            .await
        {
            Ok(output) => Some(
                output
                    .task_definition()
                    .map(|td| td.container_definitions().to_vec())
                    .unwrap_or_default(),
            ),
            Err(err) => {
                notes.push(format!(
                    "the log streams of {} are unknown: {}",
                    revision_label(arn),
                    stage_error("DescribeTaskDefinition", &err).message
                ));
                None
            }
        }
    }

    /// The last `limit` lines of a stream, oldest first; `None` when the stream does not
    /// exist.
    pub(super) async fn last_lines(
        &self,
        stream: &LogStream,
        limit: usize,
    ) -> Result<Option<Vec<LogLine>>, StageError> {
        let client = logs_client_for(&self.logs, stream.region.as_deref());
        let result = client
            .get_log_events()
            .log_group_name(&stream.group)
            .log_stream_name(&stream.stream)
            .start_from_head(false)
            .limit(i32::try_from(limit.clamp(1, 10_000)).unwrap_or(10_000))
            .send()
            .await;
        match result {
            Ok(output) => Ok(Some(log_lines(output.events()))),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(err) => Err(stage_error("GetLogEvents", &err)),
        }
    }
}

/// A CloudWatch Logs client for `region` (awslogs may write to another region than the
/// service's): the same configuration otherwise.
pub(super) fn logs_client_for(
    client: &aws_sdk_cloudwatchlogs::Client,
    region: Option<&str>,
) -> aws_sdk_cloudwatchlogs::Client {
    let current = client.config().region().map(|r| r.as_ref().to_string());
    match region {
        Some(wanted) if current.as_deref() != Some(wanted) => {
            let config = client
                .config()
                .to_builder()
                .region(aws_sdk_cloudwatchlogs::config::Region::new(
                    wanted.to_string(),
                ))
                .build();
            aws_sdk_cloudwatchlogs::Client::from_conf(config)
        }
        _ => client.clone(),
    }
}

/// The task id people see: the last part of a task ARN.
pub fn task_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// A described task in the core's words (log streams not located yet).
pub fn stopped_task(task: &Task) -> StoppedTask {
    let arn = task.task_arn().unwrap_or_default();
    StoppedTask {
        task_id: task_id(arn).to_string(),
        task_arn: arn.to_string(),
        revision: task.task_definition_arn().map(revision_label),
        stopped_reason: task.stopped_reason().map(str::to_string),
        stop_code: task.stop_code().map(|c| c.as_str().to_string()),
        started_at: task.started_at().map(|t| to_chrono(Some(t))),
        stopped_at: task.stopped_at().map(|t| to_chrono(Some(t))),
        health_status: task.health_status().map(|h| h.as_str().to_string()),
        containers: task
            .containers()
            .iter()
            .map(|c| StoppedContainer {
                name: c.name().unwrap_or_default().to_string(),
                exit_code: c.exit_code(),
                reason: c.reason().map(str::to_string),
                health_status: c.health_status().map(|h| h.as_str().to_string()),
                log_stream: None,
                log_lines: Vec::new(),
            })
            .collect(),
    }
}

/// The orchestrator's view: the tasks the deployment started (`startedBy` its id). A
/// diagnosis that cannot be read is a note, never an error.
#[async_trait]
impl FailureDiagnostics for TaskDiagnoser {
    async fn diagnose(
        &self,
        target: &DeployTarget,
        deployment: &DeploymentHandle,
    ) -> FailureDiagnosis {
        match TaskDiagnoser::diagnose(self, &target.cluster, &deployment.id).await {
            Ok(diagnosis) => diagnosis,
            Err(err) => FailureDiagnosis {
                started_by: deployment.id.clone(),
                notes: vec![format!("could not read the stopped tasks: {}", err.message)],
                ..FailureDiagnosis::default()
            },
        }
    }
}

/// The `limit` tasks stopped last, newest first (a task with no `stoppedAt` counts as
/// the oldest; ties keep ECS's order).
pub fn newest_stopped(tasks: &[Task], limit: usize) -> Vec<&Task> {
    let mut stopped: Vec<&Task> = tasks
        .iter()
        .filter(|t| t.last_status() == Some("STOPPED") || t.desired_status() == Some("STOPPED"))
        .collect();
    stopped
        .sort_by_key(|t| std::cmp::Reverse(t.stopped_at().map(|s| (s.secs(), s.subsec_nanos()))));
    stopped.truncate(limit);
    stopped
}

/// Where awslogs writes a container of task `task_id`, from its definition's
/// `logConfiguration`: `None` for another driver or without a stream prefix (EC2 tasks
/// without one name streams by Docker container id, which tugboat does not know).
pub fn awslogs_stream(
    definition: &ContainerDefinition,
    task_id: &str,
    default_region: Option<&str>,
) -> Option<LogStream> {
    let config = definition.log_configuration()?;
    if config.log_driver() != &LogDriver::Awslogs {
        return None;
    }
    let options = config.options()?;
    let group = options.get("awslogs-group")?;
    let prefix = options.get("awslogs-stream-prefix")?;
    Some(LogStream {
        group: group.clone(),
        stream: format!("{prefix}/{}/{task_id}", definition.name()?),
        region: options
            .get("awslogs-region")
            .cloned()
            .or_else(|| default_region.map(str::to_string)),
    })
}

/// Fills in each container's log stream from the revision's container definitions.
pub fn locate_streams(
    task: &mut StoppedTask,
    definitions: &[ContainerDefinition],
    default_region: Option<&str>,
) {
    for container in &mut task.containers {
        container.log_stream = definitions
            .iter()
            .find(|d| d.name() == Some(container.name.as_str()))
            .and_then(|d| awslogs_stream(d, &task.task_id, default_region));
    }
}

/// `GetLogEvents`' events as log lines, in the order given (oldest first), one line per
/// event with its trailing newline removed.
pub fn log_lines(events: &[aws_sdk_cloudwatchlogs::types::OutputLogEvent]) -> Vec<LogLine> {
    events
        .iter()
        .map(|event| {
            LogLine::new(
                event
                    .timestamp()
                    .and_then(chrono::DateTime::from_timestamp_millis),
                event
                    .message()
                    .unwrap_or_default()
                    .trim_end_matches(['\n', '\r']),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_cloudwatchlogs::types::OutputLogEvent;
    use aws_sdk_ecs::types::{Container, HealthStatus, LogConfiguration, TaskStopCode};
    use aws_smithy_types::DateTime as SmithyTime;

    fn task(id: &str, stopped_at: Option<i64>, last_status: &str) -> Task {
        let mut builder = Task::builder()
            .task_arn(format!("arn:aws:ecs:us-east-1:123456789012:task/cv/{id}"))
            .task_definition_arn("arn:aws:ecs:us-east-1:123456789012:task-definition/cv-matcher:2")
            .last_status(last_status)
            .desired_status("STOPPED");
        if let Some(secs) = stopped_at {
            builder = builder.stopped_at(SmithyTime::from_secs(secs));
        }
        builder.build()
    }

    #[test]
    fn task_ids_are_the_last_part_of_the_arn() {
        for (arn, id) in [
            ("arn:aws:ecs:us-east-1:1:task/cluster/abc123", "abc123"),
            ("arn:aws:ecs:us-east-1:1:task/abc123", "abc123"),
            ("abc123", "abc123"),
        ] {
            assert_eq!(task_id(arn), id);
        }
    }

    #[test]
    fn a_described_task_in_the_cores_words() {
        let described = Task::builder()
            .task_arn("arn:aws:ecs:us-east-1:1:task/cv/t1")
            .task_definition_arn("arn:aws:ecs:us-east-1:1:task-definition/cv-matcher:2")
            .stopped_reason("Essential container in task exited")
            .stop_code(TaskStopCode::EssentialContainerExited)
            .started_at(SmithyTime::from_secs(1_796_227_000))
            .stopped_at(SmithyTime::from_secs(1_796_227_001))
            .health_status(HealthStatus::from("UNKNOWN"))
            .containers(
                Container::builder()
                    .name("cv-matcher")
                    .exit_code(1)
                    .health_status(HealthStatus::Unhealthy)
                    .build(),
            )
            .containers(
                Container::builder()
                    .name("sidecar")
                    .reason("CannotPullContainerError: pull access denied")
                    .build(),
            )
            .build();
        let stopped = stopped_task(&described);
        assert_eq!(stopped.task_id, "t1");
        assert_eq!(stopped.revision.as_deref(), Some("cv-matcher:2"));
        assert_eq!(
            stopped.stopped_reason.as_deref(),
            Some("Essential container in task exited")
        );
        assert_eq!(
            stopped.stop_code.as_deref(),
            Some("EssentialContainerExited")
        );
        assert_eq!(
            stopped.stopped_at.map(|t| t.timestamp()),
            Some(1_796_227_001)
        );
        assert_eq!(stopped.health_status.as_deref(), Some("UNKNOWN"));
        let containers: Vec<_> = stopped
            .containers
            .iter()
            .map(|c| {
                (
                    c.name.as_str(),
                    c.exit_code,
                    c.reason.as_deref(),
                    c.health_status.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            containers,
            [
                ("cv-matcher", Some(1), None, Some("UNHEALTHY")),
                (
                    "sidecar",
                    None,
                    Some("CannotPullContainerError: pull access denied"),
                    None
                ),
            ]
        );
        // Nothing at all still translates.
        let empty = stopped_task(&Task::builder().build());
        assert_eq!(empty.task_id, "");
        assert!(empty.containers.is_empty());
    }

    #[test]
    fn newest_stopped_first_at_most_limit() {
        let tasks = [
            task("old", Some(100), "STOPPED"),
            task("none", None, "STOPPED"),
            task("newest", Some(300), "STOPPED"),
            task("running", Some(400), "RUNNING"),
            task("middle", Some(200), "STOPPED"),
        ];
        let ids = |limit| -> Vec<String> {
            newest_stopped(&tasks, limit)
                .iter()
                .map(|t| task_id(t.task_arn().unwrap_or_default()).to_string())
                .collect()
        };
        // `running` is desired STOPPED but not stopped yet: it still counts, as ECS lists it.
        assert_eq!(ids(3), ["running", "newest", "middle"]);
        assert_eq!(ids(10), ["running", "newest", "middle", "old", "none"]);
        assert!(ids(0).is_empty());
    }

    fn container(name: &str, driver: LogDriver, options: &[(&str, &str)]) -> ContainerDefinition {
        let mut config = LogConfiguration::builder().log_driver(driver);
        for (k, v) in options {
            config = config.options(*k, *v);
        }
        ContainerDefinition::builder()
            .name(name)
            .log_configuration(config.build().unwrap_or_else(|_| unreachable!()))
            .build()
    }

    #[test]
    fn awslogs_streams_are_prefix_container_task() {
        let full = [
            ("awslogs-group", "/ecs/cv-matcher"),
            ("awslogs-region", "eu-west-1"),
            ("awslogs-stream-prefix", "ecs"),
        ];
        let cases: [(ContainerDefinition, Option<LogStream>); 5] = [
            (
                container("cv-matcher", LogDriver::Awslogs, &full),
                Some(LogStream {
                    group: "/ecs/cv-matcher".into(),
                    stream: "ecs/cv-matcher/t1".into(),
                    region: Some("eu-west-1".into()),
                }),
            ),
            // No region option: the default.
            (
                container(
                    "web",
                    LogDriver::Awslogs,
                    &[("awslogs-group", "g"), ("awslogs-stream-prefix", "p")],
                ),
                Some(LogStream {
                    group: "g".into(),
                    stream: "p/web/t1".into(),
                    region: Some("us-east-1".into()),
                }),
            ),
            // No prefix: the stream is named by the Docker container id.
            (
                container("web", LogDriver::Awslogs, &[("awslogs-group", "g")]),
                None,
            ),
            (container("web", LogDriver::Fluentd, &full), None),
            (ContainerDefinition::builder().name("web").build(), None),
        ];
        for (definition, expected) in cases {
            assert_eq!(
                awslogs_stream(&definition, "t1", Some("us-east-1")),
                expected,
                "{definition:?}"
            );
        }
    }

    #[test]
    fn streams_are_located_by_container_name() {
        let mut stopped = stopped_task(
            &Task::builder()
                .task_arn("arn:aws:ecs:us-east-1:1:task/cv/t7")
                .containers(Container::builder().name("cv-matcher").exit_code(1).build())
                .containers(Container::builder().name("unknown").exit_code(1).build())
                .build(),
        );
        let definitions = [container(
            "cv-matcher",
            LogDriver::Awslogs,
            &[
                ("awslogs-group", "/ecs/cv"),
                ("awslogs-stream-prefix", "ecs"),
            ],
        )];
        locate_streams(&mut stopped, &definitions, None);
        assert_eq!(
            stopped.containers[0]
                .log_stream
                .as_ref()
                .map(|s| s.stream.as_str()),
            Some("ecs/cv-matcher/t7")
        );
        assert_eq!(stopped.containers[1].log_stream, None);
    }

    #[test]
    fn log_events_become_lines_oldest_first() {
        let events = [
            OutputLogEvent::builder()
                .timestamp(1_796_227_000_123)
                .message("starting\n")
                .build(),
            OutputLogEvent::builder().message("no timestamp").build(),
            OutputLogEvent::builder()
                .timestamp(1_796_227_001_000)
                .build(),
        ];
        let lines = log_lines(&events);
        let seen: Vec<_> = lines
            .iter()
            .map(|l| (l.at.map(|t| t.timestamp_millis()), l.message.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                (Some(1_796_227_000_123), "starting"),
                (None, "no timestamp"),
                (Some(1_796_227_001_000), ""),
            ]
        );
    }
}
