//! One-off tasks (a `before_deploy` migration, `tugboat run`): `RunTask` of a revision
//! with one container's command overridden, on the service's network configuration and
//! launch type (`DescribeServices`), followed to STOPPED with its log lines streamed as
//! they appear (`GetLogEvents` from the `nextForwardToken` on), stopped with `StopTask`
//! once its time limit passes or the run is cancelled.
//!
//! Retry-safe: `RunTask` carries the caller's `clientToken`, so a retry (the SDK's, or a
//! rerun after an answer was lost) gets the task already started; `StopTask` of a stopped
//! task changes nothing; the rest are reads.

use super::diagnose::{awslogs_stream, log_lines, logs_client_for, task_id};
use crate::errors::stage_error;
use aws_sdk_ecs::types::{
    CapacityProviderStrategyItem, ContainerDefinition, ContainerOverride, LaunchType,
    NetworkConfiguration, Service, Task, TaskOverride,
};
use pipeline_core::diagnosis::{LogLine, LogStream, OneOffTaskRun, DEFAULT_LOG_LINES};
use pipeline_core::{
    CancellationToken, DeployTarget, LineSink, OneOffRequest, OneOffTasks, StageError,
};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// How long a task stopped for its time limit may take to reach STOPPED (ECS waits the
/// container's `stopTimeout`, 30 s by default, before it kills it).
const STOP_GRACE: Duration = Duration::from_secs(120);
/// ECS: a `RunTask` client token is 1 to 64 ASCII characters from `!` to `~`.
const CLIENT_TOKEN_MAX: usize = 64;

/// A one-off task to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OneOffTask {
    pub cluster: String,
    /// The service whose network configuration and launch type (or capacity provider
    /// strategy) the task takes.
    pub service: String,
    /// The revision to run: an ARN or `family:revision` (a release's new one).
    pub task_definition: String,
    /// The container whose command is overridden, and whose exit code counts.
    pub container: String,
    pub command: Vec<String>,
    /// `tugboat/<release>` ([`OneOffTask::started_by_for`]).
    pub started_by: String,
    /// The same for every try of one step of one release, so that a retry finds the task
    /// already started instead of starting another (1 to 64 characters from `!` to `~`).
    pub client_token: String,
    /// After this, the task is stopped (`StopTask`) and the run is `timed_out`.
    pub timeout: Duration,
    pub poll_interval: Duration,
}

impl OneOffTask {
    /// The `startedBy` of a release's one-off tasks.
    pub fn started_by_for(release: &str) -> String {
        format!("tugboat/{release}")
    }
}

/// Where a one-off task runs, as the service runs its own tasks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Placement {
    pub launch_type: Option<LaunchType>,
    pub capacity_provider_strategy: Vec<CapacityProviderStrategyItem>,
    pub network_configuration: Option<NetworkConfiguration>,
    pub platform_version: Option<String>,
}

/// The service's placement: its capacity provider strategy if it has one (then no
/// launch type: ECS takes one or the other), else its launch type.
pub fn placement_of(service: &Service) -> Placement {
    let strategy = service.capacity_provider_strategy().to_vec();
    Placement {
        launch_type: if strategy.is_empty() {
            service.launch_type().cloned()
        } else {
            None
        },
        capacity_provider_strategy: strategy,
        network_configuration: service.network_configuration().cloned(),
        platform_version: service.platform_version().map(str::to_string),
    }
}

/// What a stopped task says of `container`: its exit code, the task's stopped reason and
/// stop code. A task of one container counts that one whatever its name.
pub fn ending_of(task: &Task, container: &str) -> (Option<i32>, Option<String>, Option<String>) {
    let containers = task.containers();
    let chosen =
        containers
            .iter()
            .find(|c| c.name() == Some(container))
            .or(if containers.len() == 1 {
                containers.first()
            } else {
                None
            });
    (
        chosen.and_then(|c| c.exit_code()),
        task.stopped_reason().map(str::to_string),
        task.stop_code().map(|c| c.as_str().to_string()),
    )
}

/// Checks a `RunTask` client token as ECS would, before anything runs.
pub fn check_client_token(token: &str) -> Result<(), StageError> {
    let ok = !token.is_empty()
        && token.len() <= CLIENT_TOKEN_MAX
        && token.bytes().all(|b| (33..=126).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StageError::bad_input(format!(
            "the one-off task's client token must be 1 to {CLIENT_TOKEN_MAX} ASCII characters from '!' to '~', found {token:?}"
        )))
    }
}

/// Runs one-off tasks on ECS ([`OneOffTask`] → [`OneOffTaskRun`]).
///
/// ```no_run
/// # async fn example(clients: aws_adapters::AwsClients) -> Result<(), pipeline_core::StageError> {
/// use aws_adapters::{OneOffTask, TaskRunner};
/// use std::time::Duration;
/// let runner = TaskRunner::new(clients.ecs.clone(), clients.logs.clone());
/// let task = OneOffTask {
///     cluster: "cv-matcher-cluster".into(),
///     service: "cv-matcher-service".into(),
///     task_definition: "cv-matcher:7".into(),
///     container: "cv-matcher".into(),
///     command: vec!["python".into(), "-m".into(), "alembic".into(), "upgrade".into(), "head".into()],
///     started_by: OneOffTask::started_by_for("20261202-1600-abc1234"),
///     client_token: "20261202-1600-abc1234-before-deploy-0".into(),
///     timeout: Duration::from_secs(600),
///     poll_interval: Duration::from_secs(2),
/// };
/// let run = runner
///     .run(&task, &mut |line| println!("{}", line.message), &Default::default())
///     .await?;
/// std::process::exit(run.exit_code.unwrap_or(1));
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct TaskRunner {
    ecs: aws_sdk_ecs::Client,
    logs: aws_sdk_cloudwatchlogs::Client,
    /// How often a task run as a [`OneOffTasks`] stage is looked at.
    poll_interval: Duration,
}

/// How often a one-off task is looked at by default (its state and new log lines).
pub const ONE_OFF_POLL_INTERVAL: Duration = Duration::from_secs(2);

impl TaskRunner {
    pub fn new(ecs: aws_sdk_ecs::Client, logs: aws_sdk_cloudwatchlogs::Client) -> Self {
        Self {
            ecs,
            logs,
            poll_interval: ONE_OFF_POLL_INTERVAL,
        }
    }

    /// Looks at tasks run as a stage this often (tests: a fraction of a second).
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Starts `task` and follows it to STOPPED, handing each log line to `on_line` as it
    /// appears. Its time limit passing stops it (`timed_out`, and it is followed to
    /// STOPPED); `cancel` stops it and returns at once (`cancelled`, exit code unknown).
    /// A bad token, container or command is `BadInput` before anything runs; a task that
    /// ECS did not start is `Failed`.
    pub async fn run(
        &self,
        task: &OneOffTask,
        on_line: &mut (dyn FnMut(&LogLine) + Send),
        cancel: &CancellationToken,
    ) -> Result<OneOffTaskRun, StageError> {
        check_client_token(&task.client_token)?;
        if task.command.is_empty() {
            return Err(StageError::bad_input(format!(
                "the one-off task for container {} has an empty command",
                task.container
            )));
        }
        let placement = placement_of(&self.service(task).await?);
        let definition = self.container_definition(task).await?;
        let started = Instant::now();
        let arn = self.start(task, &placement).await?;
        let region = self.logs.config().region().map(|r| r.as_ref().to_string());
        let mut follower = LogFollower::new(
            awslogs_stream(&definition, task_id(&arn), region.as_deref()),
            logs_client_for(
                &self.logs,
                definition
                    .log_configuration()
                    .and_then(|c| c.options())
                    .and_then(|o| o.get("awslogs-region"))
                    .map(String::as_str),
            ),
        );
        let deadline = started + task.timeout;
        let mut stopping_since: Option<Instant> = None;
        loop {
            let described = self.describe(&task.cluster, &arn).await?;
            follower.pump(on_line).await;
            if let Some(stopped) = described
                .as_ref()
                .filter(|t| t.last_status() == Some("STOPPED"))
            {
                // Lines written just before the stop may land after our last look.
                follower.pump(on_line).await;
                let (exit_code, stopped_reason, stop_code) = ending_of(stopped, &task.container);
                return Ok(OneOffTaskRun {
                    task_arn: arn,
                    exit_code,
                    millis: millis(started.elapsed()),
                    timed_out: stopping_since.is_some(),
                    cancelled: false,
                    stopped_reason,
                    stop_code,
                    log_tail: follower.tail.into_iter().collect(),
                });
            }
            if cancel.is_cancelled() {
                self.stop(&task.cluster, &arn, "tugboat: the run was cancelled")
                    .await?;
                return Ok(OneOffTaskRun {
                    task_arn: arn,
                    exit_code: None,
                    millis: millis(started.elapsed()),
                    timed_out: false,
                    cancelled: true,
                    stopped_reason: None,
                    stop_code: None,
                    log_tail: follower.tail.into_iter().collect(),
                });
            }
            let now = Instant::now();
            match stopping_since {
                None if now >= deadline => {
                    let reason = format!(
                        "tugboat: the one-off task ran longer than its {} s timeout",
                        task.timeout.as_secs()
                    );
                    self.stop(&task.cluster, &arn, &reason).await?;
                    stopping_since = Some(now);
                }
                Some(since) if now.duration_since(since) >= STOP_GRACE => {
                    return Err(StageError::failed(format!(
                        "one-off task {} did not stop within {} s of StopTask",
                        task_id(&arn),
                        STOP_GRACE.as_secs()
                    ))
                    .with_help(format!(
                        "check it with `aws ecs describe-tasks --cluster {} --tasks {arn}`",
                        task.cluster
                    )));
                }
                _ => {}
            }
            let wait = match stopping_since {
                None => task
                    .poll_interval
                    .min(deadline.saturating_duration_since(now)),
                Some(_) => task.poll_interval,
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = cancel.cancelled(), if stopping_since.is_none() => {}
            }
        }
    }

    async fn service(&self, task: &OneOffTask) -> Result<Service, StageError> {
        let output = self
            .ecs
            .describe_services()
            .cluster(&task.cluster)
            .services(&task.service)
            .send()
            .await
            .map_err(|err| stage_error("DescribeServices", &err))?;
        output
            .services()
            .iter()
            .find(|s| s.status() != Some("INACTIVE"))
            .cloned()
            .ok_or_else(|| {
                StageError::bad_input(format!(
                    "service {} not found in cluster {}: a one-off task takes its network configuration",
                    task.service, task.cluster
                ))
            })
    }

    async fn container_definition(
        &self,
        task: &OneOffTask,
    ) -> Result<ContainerDefinition, StageError> {
        let output = self
            .ecs
            .describe_task_definition()
            .task_definition(&task.task_definition)
            .send()
            .await
            .map_err(|err| stage_error("DescribeTaskDefinition", &err))?;
        let containers = output
            .task_definition()
            .map(|td| td.container_definitions())
            .unwrap_or_default();
        containers
            .iter()
            .find(|c| c.name() == Some(task.container.as_str()))
            .cloned()
            .ok_or_else(|| {
                let names: Vec<&str> = containers.iter().filter_map(|c| c.name()).collect();
                StageError::bad_input(format!(
                    "container {} is not in task definition {} (it has: {})",
                    task.container,
                    task.task_definition,
                    names.join(", ")
                ))
            })
    }

    async fn start(&self, task: &OneOffTask, placement: &Placement) -> Result<String, StageError> {
        let strategy = (!placement.capacity_provider_strategy.is_empty())
            .then(|| placement.capacity_provider_strategy.clone());
        let output = self
            .ecs
            .run_task()
            .cluster(&task.cluster)
            .task_definition(&task.task_definition)
            .count(1)
            .started_by(&task.started_by)
            .client_token(&task.client_token)
            .overrides(
                TaskOverride::builder()
                    .container_overrides(
                        ContainerOverride::builder()
                            .name(&task.container)
                            .set_command(Some(task.command.clone()))
                            .build(),
                    )
                    .build(),
            )
            .set_launch_type(placement.launch_type.clone())
            .set_capacity_provider_strategy(strategy)
            .set_network_configuration(placement.network_configuration.clone())
            .set_platform_version(placement.platform_version.clone())
            .send()
            .await
            .map_err(|err| stage_error("RunTask", &err))?;
        if let Some(arn) = output.tasks().first().and_then(|t| t.task_arn()) {
            return Ok(arn.to_string());
        }
        let failures: Vec<String> = output
            .failures()
            .iter()
            .map(|f| {
                format!(
                    "{}{}",
                    f.reason().unwrap_or("no reason"),
                    f.detail().map(|d| format!(" ({d})")).unwrap_or_default()
                )
            })
            .collect();
        Err(StageError::failed(format!(
            "RunTask started no task of {}: {}",
            task.task_definition,
            if failures.is_empty() {
                "no failure given".to_string()
            } else {
                failures.join("; ")
            }
        )))
    }

    /// The task; `None` while ECS does not know it yet (it may answer MISSING just after
    /// `RunTask`).
    async fn describe(&self, cluster: &str, arn: &str) -> Result<Option<Task>, StageError> {
        let output = self
            .ecs
            .describe_tasks()
            .cluster(cluster)
            .tasks(arn)
            .send()
            .await
            .map_err(|err| stage_error("DescribeTasks", &err))?;
        Ok(output
            .tasks()
            .iter()
            .find(|t| t.task_arn() == Some(arn))
            .cloned())
    }

    async fn stop(&self, cluster: &str, arn: &str, reason: &str) -> Result<(), StageError> {
        self.ecs
            .stop_task()
            .cluster(cluster)
            .task(arn)
            .reason(reason)
            .send()
            .await
            .map_err(|err| stage_error("StopTask", &err))?;
        Ok(())
    }
}

/// The one-off tasks of a release run in the target's cluster, placed as its service.
#[async_trait::async_trait]
impl OneOffTasks for TaskRunner {
    async fn run_one_off(
        &self,
        target: &DeployTarget,
        request: &OneOffRequest,
        lines: &LineSink,
        cancel: &CancellationToken,
    ) -> Result<OneOffTaskRun, StageError> {
        let task = OneOffTask {
            cluster: target.cluster.clone(),
            service: target.service.clone(),
            task_definition: request.revision.id.clone(),
            container: request.container.clone(),
            command: request.command.clone(),
            started_by: request.started_by.clone(),
            client_token: request.client_token.clone(),
            timeout: request.timeout,
            poll_interval: self.poll_interval,
        };
        self.run(&task, &mut |line| lines.send(line), cancel).await
    }
}

/// Follows one log stream from its start: each look reads on from the last
/// `nextForwardToken`, and the last lines are kept.
struct LogFollower {
    stream: Option<LogStream>,
    client: aws_sdk_cloudwatchlogs::Client,
    next_token: Option<String>,
    tail: VecDeque<LogLine>,
    warned: bool,
}

impl LogFollower {
    fn new(stream: Option<LogStream>, client: aws_sdk_cloudwatchlogs::Client) -> Self {
        Self {
            stream,
            client,
            next_token: None,
            tail: VecDeque::new(),
            warned: false,
        }
    }

    /// Reads every line written since the last look. A stream that does not exist yet
    /// has no lines; another failure is warned about once and the task followed on (its
    /// exit code decides, not its logs).
    async fn pump(&mut self, on_line: &mut (dyn FnMut(&LogLine) + Send)) {
        let Some(stream) = &self.stream else {
            return;
        };
        loop {
            let result = self
                .client
                .get_log_events()
                .log_group_name(&stream.group)
                .log_stream_name(&stream.stream)
                .start_from_head(true)
                .set_next_token(self.next_token.clone())
                .send()
                .await;
            let output = match result {
                Ok(output) => output,
                Err(err)
                    if err
                        .as_service_error()
                        .is_some_and(|e| e.is_resource_not_found_exception()) =>
                {
                    return
                }
                Err(err) => {
                    if !self.warned {
                        self.warned = true;
                        tracing::warn!(
                            "the one-off task's logs in {} {} cannot be read: {}",
                            stream.group,
                            stream.stream,
                            stage_error("GetLogEvents", &err).message
                        );
                    }
                    return;
                }
            };
            let lines = log_lines(output.events());
            let token = output.next_forward_token().map(str::to_string);
            let same_token = token.is_none() || token == self.next_token;
            if token.is_some() {
                self.next_token = token;
            }
            for line in lines.iter() {
                on_line(line);
                self.tail.push_back(line.clone());
                if self.tail.len() > DEFAULT_LOG_LINES {
                    self.tail.pop_front();
                }
            }
            if lines.is_empty() || same_token {
                return;
            }
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::types::{AssignPublicIp, AwsVpcConfiguration, Container, TaskStopCode};

    fn network() -> NetworkConfiguration {
        NetworkConfiguration::builder()
            .awsvpc_configuration(
                AwsVpcConfiguration::builder()
                    .subnets("subnet-1")
                    .security_groups("sg-1")
                    .assign_public_ip(AssignPublicIp::Disabled)
                    .build()
                    .unwrap_or_else(|_| unreachable!()),
            )
            .build()
    }

    #[test]
    fn placement_follows_the_service() {
        let fargate = Service::builder()
            .launch_type(LaunchType::Fargate)
            .platform_version("1.4.0")
            .network_configuration(network())
            .build();
        assert_eq!(
            placement_of(&fargate),
            Placement {
                launch_type: Some(LaunchType::Fargate),
                capacity_provider_strategy: Vec::new(),
                network_configuration: Some(network()),
                platform_version: Some("1.4.0".into()),
            }
        );
        let spot = CapacityProviderStrategyItem::builder()
            .capacity_provider("FARGATE_SPOT")
            .weight(1)
            .build()
            .unwrap_or_else(|_| unreachable!());
        let with_strategy = Service::builder()
            .launch_type(LaunchType::Fargate)
            .capacity_provider_strategy(spot.clone())
            .build();
        let placement = placement_of(&with_strategy);
        assert_eq!(placement.launch_type, None, "ECS takes one or the other");
        assert_eq!(placement.capacity_provider_strategy, vec![spot]);
        assert_eq!(
            placement_of(&Service::builder().build()),
            Placement::default()
        );
    }

    #[test]
    fn the_named_containers_exit_code_counts() {
        let task = |containers: Vec<Container>| {
            Task::builder()
                .stopped_reason("Essential container in task exited")
                .stop_code(TaskStopCode::EssentialContainerExited)
                .set_containers(Some(containers))
                .build()
        };
        let c = |name: &str, code: Option<i32>| {
            Container::builder().name(name).set_exit_code(code).build()
        };
        let cases = [
            (vec![c("app", Some(3))], "app", Some(3)),
            (vec![c("other-name", Some(0))], "app", Some(0)),
            (
                vec![c("sidecar", Some(143)), c("app", Some(0))],
                "app",
                Some(0),
            ),
            (vec![c("sidecar", Some(143)), c("x", Some(1))], "app", None),
            (vec![c("app", None)], "app", None),
            (vec![], "app", None),
        ];
        for (containers, name, expected) in cases {
            let described = task(containers.clone());
            let (exit_code, reason, code) = ending_of(&described, name);
            assert_eq!(exit_code, expected, "{containers:?}");
            assert_eq!(
                reason.as_deref(),
                Some("Essential container in task exited")
            );
            assert_eq!(code.as_deref(), Some("EssentialContainerExited"));
        }
    }

    #[test]
    fn client_tokens_are_checked_as_ecs_does() {
        assert!(check_client_token("20261202-1600-abc1234-before-deploy-0").is_ok());
        assert!(check_client_token(&"a".repeat(64)).is_ok());
        for bad in ["", "has space", "tab\t", "é", &"a".repeat(65)] {
            let err = check_client_token(bad).err();
            assert_eq!(
                err.map(|e| e.kind),
                Some(pipeline_core::StageErrorKind::BadInput),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn started_by_names_the_release() {
        assert_eq!(OneOffTask::started_by_for("r-1"), "tugboat/r-1");
    }
}
