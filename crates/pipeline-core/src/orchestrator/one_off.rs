//! One-off tasks: a release's `before_deploy` list (migrations), run with its new
//! revision after registration and before the service moves, and `tugboat run`.

use super::*;
use crate::config::OneOffTaskConfig;
use crate::diagnosis::{redact_text, RecordedOneOffTask};

/// How many of a failed one-off task's last lines its failure message repeats (they
/// were streamed as they came; these are for the summary at the end of a CI log).
const FAILURE_LINES: usize = 10;
/// ECS: a `RunTask` client token is at most 64 characters.
const CLIENT_TOKEN_MAX: usize = 64;

/// The client token of one-off task `index` of a release: the same on every try of
/// that step, different for every release and step; 1 to 64 characters from `!` to `~`.
pub fn one_off_client_token(release: &ReleaseId, index: usize) -> String {
    client_token(release, &format!("-before-deploy-{index}"))
}

/// The release id (its printable characters, cut to fit) followed by `suffix`.
fn client_token(release: &ReleaseId, suffix: &str) -> String {
    let mut base: String = release.0.chars().filter(|c| c.is_ascii_graphic()).collect();
    base.truncate(CLIENT_TOKEN_MAX - suffix.len());
    format!("{base}{suffix}")
}

/// The client token of a `tugboat run` started at `at`: the same on every retry of its
/// `RunTask`, different for every invocation.
fn run_client_token(release: &ReleaseId, at: DateTime<Utc>) -> String {
    client_token(release, &format!("-run-{}", at.timestamp_subsec_nanos()))
}

/// An ad hoc one-off task (`tugboat run`).
#[derive(Clone, Debug)]
pub struct RunRequest {
    pub environment: String,
    /// The image to run; the revision the service runs now when `None`.
    pub image: Option<ImageReference>,
    /// The container; the first of `task_definition.containers` when `None`.
    pub container: Option<String>,
    pub command: Vec<String>,
    pub git: GitInfo,
    pub timeout: Duration,
    pub cancel: CancellationToken,
}

impl Orchestrator {
    /// Refuses, before anything runs, an environment with `before_deploy` tasks and no
    /// stage to run them.
    pub(super) fn check_one_off_stage(&self, env: &EnvironmentConfig) -> Result<(), Ending> {
        if env.before_deploy.is_empty() || self.stages.one_off.is_some() {
            return Ok(());
        }
        Err(Ending::refused(
            &StageError::bad_input(
                "the environment has before_deploy tasks, and this target cannot run one-off tasks; nothing was changed",
            )
            .with_help("remove before_deploy from the environment, or deploy to a target that runs tasks (ECS, local)"),
        ))
    }

    /// Runs the environment's `before_deploy` tasks in order with the release's new
    /// revision. Each one's log lines are streamed as they come, and each one goes into
    /// the record. The first that does not exit 0 (or runs out of time, or cannot start)
    /// ends the release with nothing deployed.
    pub(super) async fn before_deploy(
        &self,
        run: &mut Run,
        env: &EnvironmentConfig,
        revision: &Revision,
        cancel: &CancellationToken,
    ) -> Result<(), Ending> {
        for (index, task) in env.before_deploy.iter().enumerate() {
            let request = self.one_off_request(run, task, index, revision);
            let recorded = self.run_one_off_task(&run.target, request, cancel).await;
            let recorded = match recorded {
                Ok(recorded) => recorded,
                Err(err) => {
                    let err = StageError {
                        message: format!(
                            "one-off task {} could not run: {}",
                            task.display_name(index),
                            err.message
                        ),
                        ..err
                    };
                    return Err(Ending::unchanged(Stage::Deploy, &err));
                }
            };
            run.record.one_off_tasks.push(recorded.clone());
            if recorded.run.cancelled {
                return Err(cancelled_before_change());
            }
            if !recorded.run.succeeded() {
                return Err(one_off_failed(&recorded));
            }
            self.events.info(recorded.ending());
        }
        Ok(())
    }

    fn one_off_request(
        &self,
        run: &Run,
        task: &OneOffTaskConfig,
        index: usize,
        revision: &Revision,
    ) -> OneOffRequest {
        let containers = &self.project.config.task_definition.containers;
        OneOffRequest {
            name: task.display_name(index),
            revision: revision.clone(),
            container: task
                .container_in(containers)
                .unwrap_or_default()
                .to_string(),
            command: task.command.clone(),
            started_by: format!("tugboat/{}", run.record.release_id),
            client_token: one_off_client_token(&run.record.release_id, index),
            timeout: self.within_deadline_time(task.timeout()),
        }
    }

    /// `timeout`, cut to end before the invocation's deadline (less a margin for the
    /// record) when there is one: the Lambda is never killed while a task runs.
    fn within_deadline_time(&self, timeout: Duration) -> Duration {
        self.within_deadline(WaitOptions {
            timeout,
            poll_interval: Duration::from_secs(1),
        })
        .timeout
        .max(Duration::from_secs(1))
    }

    /// Runs one task, its lines streamed (secret values removed) as
    /// [`PipelineEvent::TaskOutput`], its ending announced.
    async fn run_one_off_task(
        &self,
        target: &DeployTarget,
        request: OneOffRequest,
        cancel: &CancellationToken,
    ) -> Result<RecordedOneOffTask, StageError> {
        let Some(runner) = &self.stages.one_off else {
            return Err(StageError::bad_input(
                "this target cannot run one-off tasks",
            ));
        };
        self.events.info(format!(
            "one-off task {}: `{}` in container {} of {}",
            request.name,
            redact_text(&request.command.join(" "), &self.redact),
            request.container,
            request.revision
        ));
        let events = self.events.clone();
        let secrets = self.redact.clone();
        let name = request.name.clone();
        let sink = LineSink::new(move |line| {
            events.emit(PipelineEvent::TaskOutput {
                task: name.clone(),
                line: redact_text(&line.message, &secrets),
            });
        });
        let mut ran = runner.run_one_off(target, &request, &sink, cancel).await?;
        ran.redact(&self.redact);
        Ok(RecordedOneOffTask {
            name: request.name,
            container: request.container,
            command: request
                .command
                .iter()
                .map(|part| redact_text(part, &self.redact))
                .collect(),
            run: ran,
        })
    }

    /// `tugboat run`: one task with the service's revision (or a new one of `image`),
    /// placed as the service. The caller exits with its exit code.
    pub async fn run_task(&self, request: RunRequest) -> Result<RecordedOneOffTask, StageError> {
        let env = self
            .project
            .environment(&request.environment)
            .map_err(|err| StageError::bad_input(err.to_string()))?
            .clone();
        if request.command.is_empty() {
            return Err(StageError::bad_input("no command to run")
                .with_help("put the command after `--`: tugboat run --env staging -- python -m alembic current"));
        }
        if self.stages.one_off.is_none() {
            return Err(StageError::bad_input(format!(
                "environment {} cannot run one-off tasks (its target has no task runner)",
                request.environment
            )));
        }
        let target = env.target(&self.project.config.app.name, &request.environment);
        let containers = &self.project.config.task_definition.containers;
        let container = match request.container.clone() {
            Some(container) => container,
            None => containers.first().cloned().unwrap_or_default(),
        };
        let started_at = self.clock.now();
        let release_id = ReleaseId::new(started_at, &request.git);
        let revision = match &request.image {
            None => self
                .stages
                .deployer
                .current_revision(&target)
                .await?
                .ok_or_else(|| {
                    StageError::bad_input(format!(
                        "service {target} runs no revision yet, so there is nothing to run"
                    ))
                    .with_help("deploy first, or give --image to run an image")
                })?,
            Some(reference) => {
                let image = self
                    .stages
                    .registry
                    .resolve(&self.project.config.image.repository, reference)
                    .await?;
                let rendered = self
                    .prepare_release(&target, &release_id, &request.git, &env, &image)
                    .await?;
                let revision = self.stages.deployer.register(&target, &rendered).await?;
                self.events
                    .info(format!("registered {revision} for the task"));
                revision
            }
        };
        let cancel = request.cancel.clone();
        let request = OneOffRequest {
            name: "run".to_string(),
            revision,
            container,
            command: request.command.clone(),
            started_by: format!("tugboat/{release_id}"),
            // One per invocation (two runs of one commit may start in the same second).
            client_token: run_client_token(&release_id, started_at),
            timeout: request.timeout,
        };
        self.run_one_off_task(&target, request, &cancel).await
    }
}

/// How a one-off task that did not succeed ends the release: nothing deployed.
fn one_off_failed(recorded: &RecordedOneOffTask) -> Ending {
    let tail = &recorded.run.log_tail;
    let shown = &tail[tail.len().saturating_sub(FAILURE_LINES)..];
    let mut message = format!("{}; nothing was deployed", recorded.ending());
    if shown.is_empty() {
        message.push_str("\n  (it logged no lines)");
    } else {
        message.push_str(&format!("\n  its last {} line(s):", shown.len()));
        for line in shown {
            message.push_str(&format!("\n    {}", line.message));
        }
    }
    Ending {
        outcome: RecordOutcome::FailedUnchanged,
        reason: Some(recorded.ending()),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_tokens_fit_ecs_and_differ_by_step_and_invocation() {
        let release = ReleaseId("r20261202-160000-abc1234".into());
        let token = one_off_client_token(&release, 2);
        assert_eq!(token, "r20261202-160000-abc1234-before-deploy-2");
        let long = ReleaseId(format!("r{} spaced", "x".repeat(100)));
        let token = one_off_client_token(&long, 11);
        assert_eq!(token.len(), CLIENT_TOKEN_MAX);
        assert!(token.ends_with("-before-deploy-11"));
        assert!(token.bytes().all(|b| (33..=126).contains(&b)));
        let at = |nanos| DateTime::from_timestamp(1_796_000_000, nanos).unwrap_or_default();
        assert_ne!(
            run_client_token(&release, at(1)),
            run_client_token(&release, at(2))
        );
        assert!(run_client_token(&long, at(999_999_999)).len() <= CLIENT_TOKEN_MAX);
    }
}
