//! The orchestrator: test → build → push → deploy → verify for one environment, with
//! automatic rollback once the service has been changed, the deploy lock held for the
//! whole run, and a deploy record written on every path.

use crate::config::{EnvironmentConfig, Project};
use crate::events::{Events, PipelineEvent, RecordedEvents};
use crate::model::{
    last_good_release, BuiltImage, DeployLock, DeployRecord, DeployTarget, DeploymentHandle,
    GitInfo, ImageReference, LockHolder, Outcome, PinnedImage, RecordOutcome, ReleaseId, Revision,
    RolloutOutcome, Stage, StageTiming,
};
use crate::stages::{
    ArtifactStore, BuildSpec, Deployer, ImageBuilder, Notification, NotificationKind, Notifier,
    Registry, RestoreRequest, SecretStore, SecretsSpec, ServiceReader, StageError, StageErrorKind,
    TestRunner, TestSpec, UpdateRequest, Verifier, VerifyContext, WaitOptions,
};
use crate::task_definition::{self, ReleaseInputs, RenderedTaskDefinition, ResourceTag};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

mod event_driven;
mod lease;
mod release_safety;
mod rollout;
pub use event_driven::{DeploymentResult, EventOutcome};
pub use release_safety::{
    desired_count_for_release, restore_point, revisions_to_keep, rollout_in_progress,
    same_revision, DesiredCount,
};
pub use rollout::{
    follow, follow_rollout, judge_rollout, MAX_CONSECUTIVE_ERRORS, MAX_THROTTLE_BACKOFF,
};

/// How many records are read to find a rollback target's task definition (a rare path).
const RECORDS_READ: usize = 100;
/// How many of the newest records a release reads (every release, so few: each is a
/// GetObject): enough for the last good release and for a run that died recently.
const RECENT_RECORDS: usize = 20;

/// Where time comes from; tests pin it.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The stage implementations one environment runs with.
#[derive(Clone)]
pub struct Stages {
    /// Needed only when the release is built here.
    pub test_runner: Option<Arc<dyn TestRunner>>,
    /// Needed only when the release is built here.
    pub image_builder: Option<Arc<dyn ImageBuilder>>,
    pub registry: Arc<dyn Registry>,
    pub deployer: Arc<dyn Deployer>,
    pub service_reader: Arc<dyn ServiceReader>,
    pub verifiers: Vec<Arc<dyn Verifier>>,
    pub secrets: Arc<dyn SecretStore>,
    pub artifacts: Arc<dyn ArtifactStore>,
    pub notifiers: Vec<Arc<dyn Notifier>>,
}

/// Where the release's image comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReleaseSource {
    /// Test, build and push it from the project's folder.
    Build,
    /// Deploy an image that is already in the registry: no test, build or push.
    Image(ImageReference),
}

/// A request to release to one environment.
#[derive(Clone, Debug)]
pub struct DeployRequest {
    pub environment: String,
    pub source: ReleaseSource,
    pub git: GitInfo,
    /// Who runs it (`$GITHUB_ACTOR`, the local user, `lambda:<event id>`).
    pub actor: String,
    /// Cancelling it stops the run; once the service was changed, it is rolled back.
    pub cancel: CancellationToken,
}

/// Which release a manual rollback goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RollbackTo {
    /// A revision label (`cv-matcher:6`) or id (a task definition ARN).
    Revision(String),
    /// A release id from `tugboat history`.
    Release(ReleaseId),
}

/// A request for a manual rollback.
#[derive(Clone, Debug)]
pub struct RollbackRequest {
    pub environment: String,
    /// `None`: the last good release before the one serving now.
    pub to: Option<RollbackTo>,
    pub actor: String,
    /// Cancelling it stops following the rollback after the grace period (the rollback
    /// itself was already issued).
    pub cancel: CancellationToken,
}

/// What a run did: the outcome (and so the exit code), the record written, and a
/// message for people that says what state the service is in.
#[derive(Clone, Debug)]
pub struct DeployReport {
    pub outcome: Outcome,
    pub record: Option<DeployRecord>,
    pub message: String,
}

impl DeployReport {
    /// Refused before anything ran.
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::BadInput,
            record: None,
            message: message.into(),
        }
    }
}

/// What `deploy` would do; built without changing anything.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub environment: String,
    pub target: DeployTarget,
    pub current_revision: Option<Revision>,
    pub steps: Vec<String>,
    pub rendered: RenderedTaskDefinition,
    /// Unified diff of the registered definition against the rendered one; empty when
    /// they are the same.
    pub diff: String,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "plan for environment {} ({})",
            self.environment, self.target
        )?;
        for (index, step) in self.steps.iter().enumerate() {
            writeln!(f, "  {}. {step}", index + 1)?;
        }
        if self.diff.is_empty() {
            writeln!(f, "task definition: no changes")
        } else {
            writeln!(f, "task definition changes:")?;
            f.write_str(&self.diff)
        }
    }
}

/// Runs releases for a project with a set of stages.
pub struct Orchestrator {
    project: Project,
    stages: Stages,
    events: Events,
    clock: Arc<dyn Clock>,
    /// Who accepted deploying images the security-scan gate refuses.
    scan_override: Option<String>,
    /// When the invocation running the event-driven steps is killed: any wait is cut
    /// short before it ([`Orchestrator::with_deadline`]).
    deadline: Option<tokio::time::Instant>,
}

/// The state of one run as it goes.
struct Run {
    record: DeployRecord,
    target: DeployTarget,
    started: Instant,
    /// Cancelled by a signal (or an embedder): a changed service is rolled back at once,
    /// and the rollback is followed only for the environment's grace period.
    cancel: CancellationToken,
    /// The deploy lock's lease while a renewer keeps it.
    lease: Option<Arc<lease::Lease>>,
}

/// A release whose service update went through: the deployment to follow.
struct Started {
    deployment: DeploymentHandle,
    /// When the deploy stage began (for its timing).
    clock: Instant,
}

/// How the work under the lock ended.
struct Ending {
    outcome: RecordOutcome,
    reason: Option<String>,
    message: String,
}

impl Ending {
    /// Says why the run stopped when its lease was lost.
    fn with_lease(mut self, lost: Option<lease::LeaseLost>) -> Self {
        if let Some(lost) = lost {
            if !self.message.contains(&lost.reason) {
                self.message = format!("{} (the run stopped: {})", self.message, lost.reason);
            }
            let reason = self.reason.take().unwrap_or_default();
            if !reason.contains(&lost.reason) {
                self.reason = Some(if reason.is_empty() {
                    lost.reason
                } else {
                    format!("{reason}; {}", lost.reason)
                });
            } else {
                self.reason = Some(reason);
            }
        }
        self
    }

    fn refused(error: &StageError) -> Self {
        let message = describe_error(error);
        Self {
            outcome: RecordOutcome::Refused,
            reason: Some(error.message.clone()),
            message,
        }
    }

    fn unchanged(stage: Stage, error: &StageError) -> Self {
        if error.kind == StageErrorKind::BadInput {
            return Self::refused(error);
        }
        Self {
            outcome: RecordOutcome::FailedUnchanged,
            reason: Some(format!("{stage} failed: {}", error.message)),
            message: format!(
                "{stage} failed, nothing was deployed: {}",
                describe_error(error)
            ),
        }
    }
}

fn describe_error(error: &StageError) -> String {
    match &error.help {
        Some(help) => format!("{}\n  help: {help}", error.message),
        None => error.message.clone(),
    }
}

impl Orchestrator {
    pub fn new(project: Project, stages: Stages, events: Events) -> Self {
        Self {
            project,
            stages,
            events,
            clock: Arc::new(SystemClock),
            scan_override: None,
            deadline: None,
        }
    }

    /// `options` with a timeout that ends before the deadline (less 10 s to write the
    /// record), when there is one: an invocation is never killed while it waits.
    fn within_deadline(&self, options: WaitOptions) -> WaitOptions {
        match self.deadline {
            Some(deadline) => {
                let left = deadline
                    .saturating_duration_since(tokio::time::Instant::now())
                    .saturating_sub(Duration::from_secs(10));
                WaitOptions {
                    timeout: options.timeout.min(left),
                    ..options
                }
            }
            None => options,
        }
    }

    /// The event-driven steps never wait past `deadline` (less a margin for writing the
    /// record): the Lambda passes its invocation's deadline.
    pub fn with_deadline(mut self, deadline: tokio::time::Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Deploys images even when the security-scan gate finds blocking vulnerabilities;
    /// `who` is written to the deploy record.
    pub fn override_scan_gate(mut self, who: impl Into<String>) -> Self {
        self.scan_override = Some(who.into());
        self
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn project(&self) -> &Project {
        &self.project
    }

    /// The service an environment deploys to.
    pub fn target(&self, environment: &str) -> Result<DeployTarget, crate::ConfigError> {
        self.project.target(environment)
    }

    /// Runs a release. Never panics on a failed stage: every path ends in a report whose
    /// outcome maps to the exit code.
    pub async fn deploy(&self, request: DeployRequest) -> DeployReport {
        let env = match self.project.environment(&request.environment) {
            Ok(env) => env.clone(),
            Err(err) => return DeployReport::bad_input(err.to_string()),
        };
        let mut run = self.new_run(&request, &env);
        let lease = match self.take_lease(&run, &env, &request.cancel).await {
            Ok(lease) => lease,
            Err(ending) => return self.finish(run, ending, false).await,
        };
        run.lease = Some(lease.clone());
        // A lost lease cancels the run as a signal would.
        let request = DeployRequest {
            cancel: lease.cancel.clone(),
            ..request
        };
        self.notify(&run, NotificationKind::Started, None).await;
        let work = self.execute(&mut run, &env, &request);
        let ending = lease::while_renewing(&lease, &*self.stages.artifacts, &self.events, work)
            .await
            .with_lease(lease.lost());
        self.give_back(&lease.lock()).await;
        self.finish(run, ending, true).await
    }

    /// A new run for a request, announced with [`PipelineEvent::ReleaseStarted`].
    fn new_run(&self, request: &DeployRequest, env: &EnvironmentConfig) -> Run {
        let started_at = self.clock.now();
        let release_id = ReleaseId::new(started_at, &request.git);
        let target = env.target(&self.project.config.app.name, &request.environment);
        self.events.emit(PipelineEvent::ReleaseStarted {
            release_id: release_id.0.clone(),
            app: target.app.clone(),
            environment: target.environment.clone(),
        });
        Run {
            record: DeployRecord {
                release_id,
                app: target.app.clone(),
                environment: target.environment.clone(),
                git: request.git.clone(),
                image: None,
                revision: None,
                previous_revision: None,
                outcome: RecordOutcome::InProgress,
                reason: None,
                stages: Vec::new(),
                actor: request.actor.clone(),
                started_at,
                finished_at: None,
                rollback_of: None,
                deployment_id: None,
                trigger: None,
                scan_override: None,
                task_definition: None,
                warnings: Vec::new(),
                rollback_deployment_id: None,
                rollback_started_at: None,
                concluding: None,
            },
            target,
            started: Instant::now(),
            cancel: request.cancel.clone(),
            lease: None,
        }
    }

    /// Takes the run's deploy lock and the lease a renewer keeps ([`lease::while_renewing`]);
    /// losing it cancels a child of `cancel`.
    async fn take_lease(
        &self,
        run: &Run,
        env: &EnvironmentConfig,
        cancel: &CancellationToken,
    ) -> Result<Arc<lease::Lease>, Ending> {
        let taken_at = tokio::time::Instant::now();
        let lock = self.take_lock(run, env.lock_lease()).await?;
        Ok(Arc::new(lease::Lease::new(lock, taken_at, cancel)))
    }

    /// Takes the run's deploy lock as a lease of `lease`, or says how the run ends
    /// without it.
    async fn take_lock(&self, run: &Run, lease: Duration) -> Result<DeployLock, Ending> {
        self.try_lock(run, lease)
            .await
            .map_err(|err| match err.kind {
                StageErrorKind::LockHeld | StageErrorKind::BadInput => Ending::refused(&err),
                _ => Ending {
                    outcome: RecordOutcome::FailedUnchanged,
                    reason: Some(err.message.clone()),
                    message: format!(
                        "could not take the deploy lock, nothing was changed: {}",
                        describe_error(&err)
                    ),
                },
            })
    }

    /// Takes the run's deploy lock as a lease of `lease`, with the store's error.
    async fn try_lock(&self, run: &Run, lease: Duration) -> Result<DeployLock, StageError> {
        let holder = LockHolder {
            who: run.record.actor.clone(),
            release_id: run.record.release_id.clone(),
            since: run.record.started_at,
            run_token: uuid::Uuid::new_v4().to_string(),
            renewed_at: None,
            lease_seconds: Some(lease.as_secs().max(1)),
        };
        self.stages
            .artifacts
            .acquire_lock(&run.target.app, &run.target.environment, &holder)
            .await
    }

    /// Releases a deploy lock; a failure is a warning (the lease runs out on its own).
    async fn give_back(&self, lock: &DeployLock) {
        if let Err(err) = self.stages.artifacts.release_lock(lock).await {
            self.events.warn(format!(
                "could not release the deploy lock of {}/{}: {}; its lease runs out on its own, or run `tugboat unlock --env {}`",
                lock.app, lock.environment, err.message, lock.environment
            ));
        }
    }

    async fn finish(&self, mut run: Run, ending: Ending, notify: bool) -> DeployReport {
        run.record.outcome = ending.outcome;
        run.record.reason = ending.reason.clone();
        run.record.finished_at = Some(self.clock.now());
        if let Err(err) = self.stages.artifacts.put_record(&run.record).await {
            self.events.warn(format!(
                "could not write the deploy record of {}: {}",
                run.record.release_id, err.message
            ));
        }
        if notify {
            let kind = match ending.outcome {
                RecordOutcome::Succeeded | RecordOutcome::InProgress => NotificationKind::Succeeded,
                RecordOutcome::RolledBack => NotificationKind::RolledBack,
                _ => NotificationKind::Failed,
            };
            self.notify(&run, kind, ending.reason.clone()).await;
        }
        DeployReport {
            outcome: ending.outcome.outcome(),
            record: Some(run.record),
            message: ending.message,
        }
    }

    async fn notify(&self, run: &Run, kind: NotificationKind, reason: Option<String>) {
        let notification = Notification {
            kind,
            app: run.target.app.clone(),
            environment: run.target.environment.clone(),
            release_id: run.record.release_id.clone(),
            image_digest: run.record.image.as_ref().map(|i| i.digest.clone()),
            duration: (kind != NotificationKind::Started).then(|| run.started.elapsed()),
            reason,
        };
        for notifier in &self.stages.notifiers {
            if let Err(err) = notifier.notify(&notification).await {
                self.events.warn(format!(
                    "notification not sent (the release goes on): {}",
                    err.message
                ));
            }
        }
    }

    fn begin(&self, stage: Stage) -> Instant {
        self.events.emit(PipelineEvent::StageStarted { stage });
        Instant::now()
    }

    fn end(&self, run: &mut Run, stage: Stage, started: Instant, ok: bool) {
        let millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.events.emit(PipelineEvent::StageFinished {
            stage,
            duration_ms: millis,
            ok,
        });
        run.record.stages.push(StageTiming { stage, millis, ok });
    }

    async fn execute(
        &self,
        run: &mut Run,
        env: &EnvironmentConfig,
        request: &DeployRequest,
    ) -> Ending {
        let cancel = &request.cancel;
        let started = match self.start(run, env, request).await {
            Ok(started) => started,
            Err(ending) => return ending,
        };
        let options = wait_options(env);
        let waited = tokio::select! {
            waited = follow_rollout(self.stages.deployer.as_ref(), &run.target, &started.deployment, &options, &self.events) => Some(waited),
            () = cancel.cancelled() => None,
        };
        let failure = match waited {
            Some(Ok(RolloutOutcome::Completed)) => None,
            Some(Ok(outcome)) => Some(outcome.describe()),
            Some(Err(err)) => Some(format!("could not follow the rollout: {}", err.message)),
            None => Some("the run was cancelled during the rollout".to_string()),
        };
        self.end(run, Stage::Deploy, started.clock, failure.is_none());
        if let Some(reason) = failure {
            return self
                .recover(
                    run,
                    env,
                    run.record.previous_revision.clone().as_ref(),
                    &reason,
                )
                .await;
        }
        self.after_rollout(run, env, cancel).await
    }

    /// Everything up to and including the service update: the image (tested, built and
    /// pushed, or resolved), secrets, rendering, registration, `update_service`.
    async fn start(
        &self,
        run: &mut Run,
        env: &EnvironmentConfig,
        request: &DeployRequest,
    ) -> Result<Started, Ending> {
        let cancel = &request.cancel;
        let image = match &request.source {
            ReleaseSource::Build => self.test_build_push(run, request, cancel).await?,
            ReleaseSource::Image(reference) => {
                match self
                    .stages
                    .registry
                    .resolve(&self.project.config.image.repository, reference)
                    .await
                {
                    Ok(image) => image,
                    Err(err) => return Err(Ending::unchanged(Stage::Deploy, &err)),
                }
            }
        };
        run.record.image = Some(image.clone());
        self.events.info(format!("image {}", image.reference()));
        self.scan_gate(run, env, &image).await?;

        // Everything up to the service update only reads or registers: a failure here
        // leaves the service as it was.
        let started = self.begin(Stage::Deploy);
        let prepared = self.prepare_release(run, env, &image).await;
        let rendered = match prepared {
            Ok(rendered) => rendered,
            Err(err) => {
                self.end(run, Stage::Deploy, started, false);
                return Err(Ending::unchanged(Stage::Deploy, &err));
            }
        };
        let status = match self.service_before_release(run, env, cancel).await {
            Ok(status) => status,
            Err(ending) => {
                self.end(run, Stage::Deploy, started, false);
                return Err(ending);
            }
        };
        let history = self.records_of(&run.target, RECENT_RECORDS).await;
        self.report_unfinished(run, &status, &history);
        let previous = restore_point(&status, &history);
        let serving_before = status.revision.clone();
        run.record.previous_revision = previous.clone();
        if cancel.is_cancelled() {
            self.end(run, Stage::Deploy, started, false);
            return Err(cancelled_before_change());
        }
        run.record.task_definition = Some(rendered.clone());
        let revision = match self.stages.deployer.register(&run.target, &rendered).await {
            Ok(revision) => revision,
            Err(err) => {
                self.end(run, Stage::Deploy, started, false);
                return Err(Ending::unchanged(Stage::Deploy, &err));
            }
        };
        self.events.info(format!("registered {revision}"));
        run.record.revision = Some(revision.clone());

        // The record says what is about to change before it changes: a run that dies
        // from here on leaves an in-progress record naming both revisions.
        run.record.outcome = RecordOutcome::InProgress;
        if let Err(err) = self.stages.artifacts.put_record(&run.record).await {
            self.events.warn(format!(
                "could not record release {} as in progress: {}",
                run.record.release_id, err.message
            ));
        }
        let desired =
            desired_count_for_release(env.desired_count, env.scaling.is_some(), Some(&status));
        self.events.info(desired.reason().to_string());
        if cancel.is_cancelled() {
            self.end(run, Stage::Deploy, started, false);
            return Err(cancelled_before_change());
        }
        let update = UpdateRequest {
            revision: revision.clone(),
            desired_count: desired.count(),
            force_new_deployment: env.deploy.force_new_deployment,
        };
        let deployment = match self
            .stages
            .deployer
            .update_service(&run.target, &update)
            .await
        {
            Ok(deployment) => deployment,
            Err(err) => {
                self.end(run, Stage::Deploy, started, false);
                // The call failed, but it may have reached the service: look before
                // claiming nothing changed.
                let now = self.stages.deployer.current_revision(&run.target).await;
                return Err(match now {
                    Ok(current) if current == serving_before => {
                        Ending::unchanged(Stage::Deploy, &err)
                    }
                    _ => {
                        let reason = format!("updating the service failed: {}", err.message);
                        self.recover(run, env, previous.as_ref(), &reason).await
                    }
                });
            }
        };
        run.record.deployment_id = Some(deployment.id.clone());
        Ok(Started {
            deployment,
            clock: started,
        })
    }

    /// The service as a release finds it. A deployment still rolling out (not
    /// tugboat's: this run holds the lock) is refused, or waited for when the
    /// environment says so.
    async fn service_before_release(
        &self,
        run: &Run,
        env: &EnvironmentConfig,
        cancel: &CancellationToken,
    ) -> Result<crate::model::ServiceStatus, Ending> {
        let read = || async {
            self.stages
                .service_reader
                .status(&run.target)
                .await
                .map_err(|err| Ending::unchanged(Stage::Deploy, &err))
        };
        let status = read().await?;
        let Some(foreign) = rollout_in_progress(&status).cloned() else {
            return Ok(status);
        };
        if !env.deploy.wait_for_other_deployments {
            return Err(Ending::refused(
                &StageError::bad_input(format!(
                    "the service {} is rolling out deployment {} ({}) that is not this release's; nothing was changed",
                    run.target, foreign.id, foreign.revision
                ))
                .with_help(format!(
                    "wait for it to finish (`tugboat status --env {}`), or deploy with --wait-for-deployment \
                     (deploy.wait_for_other_deployments = true) to wait for it",
                    run.target.environment
                )),
            ));
        }
        self.events.warn(format!(
            "waiting for deployment {} ({}) to finish before releasing",
            foreign.id, foreign.revision
        ));
        let handle = DeploymentHandle {
            id: foreign.id.clone(),
            revision: foreign.revision.clone(),
        };
        let options = wait_options(env);
        let waited = tokio::select! {
            waited = follow_rollout(self.stages.deployer.as_ref(), &run.target, &handle, &options, &self.events) => waited,
            () = cancel.cancelled() => return Err(cancelled_before_change()),
        };
        match waited {
            Ok(outcome) => self.events.info(format!(
                "deployment {} finished: {}",
                foreign.id,
                outcome.describe()
            )),
            Err(err) => return Err(Ending::unchanged(Stage::Deploy, &err)),
        }
        let status = read().await?;
        match rollout_in_progress(&status) {
            Some(still) => Err(Ending::refused(&StageError::bad_input(format!(
                "the service {} is still rolling out deployment {}; nothing was changed",
                run.target, still.id
            )))),
            None => Ok(status),
        }
    }

    /// Says what a run that died (it holds the lock no more, yet its record is still in
    /// progress) left behind: the service's revision and deployment, and whether that
    /// deployment finished. The note goes into this run's record too.
    fn report_unfinished(
        &self,
        run: &mut Run,
        status: &crate::model::ServiceStatus,
        history: &[DeployRecord],
    ) {
        let unfinished = history.iter().take(10).filter(|r| {
            r.outcome == RecordOutcome::InProgress && r.release_id != run.record.release_id
        });
        for dead in unfinished {
            let primary = status.deployments.iter().find(|d| d.status == "PRIMARY");
            let left = match primary {
                Some(d) => format!(
                    "the service is on {} (deployment {}, {})",
                    d.revision,
                    d.id,
                    match d.rollout_state.as_deref() {
                        Some("COMPLETED") => "finished".to_string(),
                        Some(state) => format!("not finished: {state}"),
                        None => "state unknown".to_string(),
                    }
                ),
                None => format!(
                    "the service is on {}",
                    status
                        .revision
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_else(|| "nothing".into())
                ),
            };
            let note = format!(
                "release {} (by {}, started {}) never finished: its run died while moving the service from {} to {}; {left}",
                dead.release_id,
                dead.actor,
                dead.started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                dead.previous_revision
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "nothing".into()),
                dead.revision
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "a revision it had not registered yet".into()),
            );
            self.events.warn(note.clone());
            run.record.warnings.push(note);
        }
    }

    /// The records of an environment, newest first; an unreadable history is a warning
    /// (the service's own state still decides what a failure restores).
    async fn records_of(&self, target: &DeployTarget, limit: usize) -> Vec<DeployRecord> {
        match self
            .stages
            .artifacts
            .history(&target.app, &target.environment, limit)
            .await
        {
            Ok(history) => history,
            Err(err) => {
                self.events.warn(format!(
                    "could not read the deploy records of {}/{}: {}",
                    target.app, target.environment, err.message
                ));
                Vec::new()
            }
        }
    }

    /// Every revision some environment of this app may need: what each environment's
    /// service (same platform and region as `this`) runs or deploys, and its last good
    /// releases. `Err` when any of it could not be read: nothing is pruned then.
    async fn revisions_needed(
        &self,
        this: &DeployTarget,
        keep: usize,
    ) -> Result<Vec<Revision>, String> {
        let this_env = self
            .project
            .environment(&this.environment)
            .map_err(|err| err.to_string())?;
        let mut needed = Vec::new();
        for (name, env) in &self.project.config.environments {
            if env.target != this_env.target {
                continue;
            }
            let target = env.target(&self.project.config.app.name, name);
            if target.region != this.region {
                continue;
            }
            let status = match self.stages.service_reader.status(&target).await {
                Ok(status) => Some(status),
                // A service that does not exist runs nothing.
                Err(err) if err.kind == StageErrorKind::BadInput => None,
                Err(err) => return Err(format!("cannot read {target}: {}", err.message)),
            };
            let history = self
                .stages
                .artifacts
                // The last `keep` good releases, with room for failed ones between them.
                .history(
                    &target.app,
                    &target.environment,
                    (keep.max(2) * 4).max(RECENT_RECORDS),
                )
                .await
                .map_err(|err| format!("cannot read the records of {name}: {}", err.message))?;
            needed.extend(revisions_to_keep(status.as_ref(), &history, keep));
        }
        Ok(needed)
    }

    /// `to` when the platform can still deploy it; otherwise the same definition
    /// registered again (from the deploy record that registered it, else from the
    /// platform's own copy), so a rollback never depends on the platform keeping it.
    async fn restorable(&self, target: &DeployTarget, to: &Revision) -> Result<Revision, String> {
        match self.stages.deployer.revision_active(to).await {
            Ok(true) => return Ok(to.clone()),
            Ok(false) => {}
            Err(err) => {
                self.events.warn(format!(
                    "could not tell whether {to} is still registered ({}); rolling back to it",
                    err.message
                ));
                return Ok(to.clone());
            }
        }
        let history = self.records_of(target, RECORDS_READ).await;
        let kept = history
            .iter()
            .filter(|r| {
                r.revision
                    .as_ref()
                    .is_some_and(|rev| same_revision(rev, to))
            })
            .find_map(|r| r.task_definition.clone());
        let (rendered, source) = match kept {
            Some(rendered) => (rendered, "its deploy record"),
            None => {
                let definition = self
                    .stages
                    .service_reader
                    .registered_definition(to)
                    .await
                    .map_err(|err| {
                        format!(
                            "{to} is deregistered and no deploy record keeps its task definition ({})",
                            err.message
                        )
                    })?;
                let mut tags = target_tags(target);
                tags.push(ResourceTag {
                    key: "tugboat:restored-from".into(),
                    value: to.label.clone(),
                });
                (
                    RenderedTaskDefinition { definition, tags },
                    "the deregistered revision",
                )
            }
        };
        let again = self
            .stages
            .deployer
            .register(target, &rendered)
            .await
            .map_err(|err| {
                format!(
                    "{to} is deregistered and registering it again failed: {}",
                    err.message
                )
            })?;
        self.events.warn(format!(
            "{to} was deregistered; registered its task definition again from {source} as {again}"
        ));
        Ok(again)
    }

    /// After the release's own deployment completed: verification, then revision
    /// clean-up; a failed verification rolls back.
    async fn after_rollout(
        &self,
        run: &mut Run,
        env: &EnvironmentConfig,
        cancel: &CancellationToken,
    ) -> Ending {
        let previous = run.record.previous_revision.clone();
        let (Some(revision), Some(image)) = (run.record.revision.clone(), run.record.image.clone())
        else {
            return Ending {
                outcome: RecordOutcome::NotRestored,
                reason: Some("the release record names no revision or image".into()),
                message: "internal error: a completed release without a revision or image; run `tugboat status`".into(),
            };
        };
        if let Some(reason) = self.verify(run, &revision, &image, cancel).await {
            return self.recover(run, env, previous.as_ref(), &reason).await;
        }

        let keep = env.rollback.keep_revisions;
        let lease_held = run
            .lease
            .as_ref()
            .is_none_or(|lease| lease.lost().is_none());
        if keep > 0 && lease_held {
            self.prune(run, keep).await;
        }
        Ending {
            outcome: RecordOutcome::Succeeded,
            reason: None,
            message: format!(
                "released {} to {} ({}): {revision} with {}",
                run.record.release_id,
                run.target.environment,
                run.target,
                image.reference()
            ),
        }
    }

    /// Deregisters old revisions that no environment may need (see `revisions_needed`).
    async fn prune(&self, run: &Run, keep: usize) {
        let protected = match self.revisions_needed(&run.target, keep).await {
            Ok(protected) => protected,
            Err(why) => {
                self.events
                    .warn(format!("old revisions were not cleaned up: {why}"));
                return;
            }
        };
        let family = &self.project.task_definition.family;
        match self
            .stages
            .deployer
            .prune_revisions(&run.target, family, keep.max(2), &protected)
            .await
        {
            Ok(removed) if !removed.is_empty() => {
                let labels: Vec<String> = removed.iter().map(ToString::to_string).collect();
                self.events
                    .info(format!("deregistered old revisions: {}", labels.join(", ")));
            }
            Ok(_) => {}
            Err(err) => self.events.warn(format!(
                "old revisions were not cleaned up: {}",
                err.message
            )),
        }
    }

    async fn test_build_push(
        &self,
        run: &mut Run,
        request: &DeployRequest,
        cancel: &CancellationToken,
    ) -> Result<PinnedImage, Ending> {
        let config = &self.project.config;
        let missing = |what: &str| {
            Ending::refused(
                &StageError::bad_input(format!(
                    "this front end has no {what}, so it cannot build a release"
                ))
                .with_help("deploy an image that is already pushed (--image TAG)"),
            )
        };
        // A commit's image is immutable once pushed: a rerun (a retried CI job, a deploy
        // of the same commit to another environment) deploys that image, not a rebuild.
        if !request.git.sha.is_empty() {
            match self
                .stages
                .registry
                .find_tag(&config.image.repository, &request.git.sha)
                .await
            {
                Ok(Some(image)) => {
                    self.events.info(format!(
                        "commit {} is already built and pushed as {}; skipping test, build and push",
                        request.git.short_sha(),
                        image.reference()
                    ));
                    return Ok(image);
                }
                Ok(None) => {}
                Err(err) => self.events.warn(format!(
                    "could not look for an image of commit {} ({}); building it",
                    request.git.short_sha(),
                    err.message
                )),
            }
        }
        if !config.test.commands.is_empty() {
            let runner = self
                .stages
                .test_runner
                .clone()
                .ok_or_else(|| missing("test runner"))?;
            let spec = TestSpec {
                commands: config.test.commands.clone(),
                workdir: self.project.root.join(&config.test.workdir),
                timeout: Duration::from_secs(config.test.timeout_seconds),
                artifacts: config.test.artifacts.clone(),
                pass_env: config.test.pass_env.clone(),
                env: config.test.env.clone(),
            };
            let started = self.begin(Stage::Test);
            let result = cancellable(runner.run_tests(&spec, &self.events), cancel).await;
            self.end(run, Stage::Test, started, result.is_ok());
            let report = result.map_err(|err| Ending::unchanged(Stage::Test, &err))?;
            for artifact in &report.artifacts {
                let stored = self
                    .stages
                    .artifacts
                    .put_artifact(
                        &run.target.app,
                        &run.target.environment,
                        &run.record.release_id,
                        artifact,
                    )
                    .await;
                match stored {
                    Ok(location) => self
                        .events
                        .info(format!("kept {} at {location}", artifact.name)),
                    Err(err) => self.events.warn(format!(
                        "test artifact {} was not kept: {}",
                        artifact.name, err.message
                    )),
                }
            }
        }

        let builder = self
            .stages
            .image_builder
            .clone()
            .ok_or_else(|| missing("image builder"))?;
        let spec = self.build_spec(&request.git);
        let started = self.begin(Stage::Build);
        let result = cancellable(builder.build(&spec, &self.events), cancel).await;
        self.end(run, Stage::Build, started, result.is_ok());
        let built: BuiltImage = result.map_err(|err| Ending::unchanged(Stage::Build, &err))?;

        let started = self.begin(Stage::Push);
        let repository = &config.image.repository;
        let tags = release_tags(&self.project, &request.git);
        let pushed = async {
            self.stages.registry.ensure_repository(repository).await?;
            self.stages
                .registry
                .push(&built, repository, &tags, &self.events)
                .await
        };
        let result = cancellable(pushed, cancel).await;
        self.end(run, Stage::Push, started, result.is_ok());
        result.map_err(|err| Ending::unchanged(Stage::Push, &err))
    }

    fn build_spec(&self, git: &GitInfo) -> BuildSpec {
        let config = &self.project.config;
        let repository = &config.image.repository;
        let tags: Vec<String> = release_tags(&self.project, git)
            .iter()
            .map(|tag| format!("{repository}:{tag}"))
            .collect();
        let mut labels = BTreeMap::new();
        labels.insert(
            "org.opencontainers.image.revision".to_string(),
            git.sha.clone(),
        );
        labels.insert(
            "org.opencontainers.image.created".to_string(),
            self.clock
                .now()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
        labels.insert(
            "org.opencontainers.image.title".to_string(),
            config.app.name.clone(),
        );
        if let Some(source) = &config.app.source {
            labels.insert(
                "org.opencontainers.image.source".to_string(),
                source.clone(),
            );
        }
        if let Some(version) = git.tag() {
            labels.insert(
                "org.opencontainers.image.version".to_string(),
                version.to_string(),
            );
        }
        BuildSpec {
            context: self.project.root.join(&config.image.context),
            dockerfile: self.project.root.join(&config.image.dockerfile),
            platform: config.image.platform.clone(),
            build_args: config.image.build_args.clone(),
            secrets: config.image.secrets.clone(),
            tags,
            labels,
            cache_from: vec![format!("{repository}:latest-build")],
        }
    }

    /// Refuses an image whose scan has findings at or above the environment's
    /// `scan.block_at`, waiting up to `scan.wait_seconds` for a scan that is running or
    /// not registered yet (scan on push starts it shortly after the push). An override
    /// lets findings through and is recorded.
    async fn scan_gate(
        &self,
        run: &mut Run,
        env: &EnvironmentConfig,
        image: &PinnedImage,
    ) -> Result<(), Ending> {
        use crate::stages::ScanReport;
        let Some(block_at) = env.scan.block_at else {
            return Ok(());
        };
        let repository = &self.project.config.image.repository;
        // Validation keeps both in range; a config built in code cannot make this panic.
        let deadline = Instant::now().checked_add(Duration::from_secs(env.scan.wait_seconds));
        let poll = Duration::try_from_secs_f64(env.scan.poll_seconds.max(0.05))
            .unwrap_or(Duration::from_secs(5));
        let refuse = |message: String, help: String| {
            Ending::refused(&StageError::bad_input(message).with_help(help))
        };
        let mut waiting_said = false;
        let findings = loop {
            let report = match self.stages.registry.scan_findings(repository, image).await {
                Ok(report) => report,
                Err(err) => return Err(Ending::unchanged(Stage::Deploy, &err)),
            };
            let time_left = deadline.is_none_or(|d| Instant::now() < d);
            match report {
                ScanReport::Complete(findings) => break findings,
                ScanReport::InProgress | ScanReport::NotStarted { .. } if time_left => {
                    if !waiting_said {
                        self.events.info(format!(
                            "waiting up to {}s for the security scan of {}",
                            env.scan.wait_seconds, image.digest
                        ));
                        waiting_said = true;
                    }
                    tokio::time::sleep(poll).await;
                }
                ScanReport::InProgress => {
                    return Err(refuse(
                        format!(
                            "the security scan of {} did not finish within {}s",
                            image.reference(),
                            env.scan.wait_seconds
                        ),
                        format!("raise scan.wait_seconds (now {}) or release again once the scan has finished", env.scan.wait_seconds),
                    ))
                }
                ScanReport::NotStarted { how_to_start } => {
                    return Err(refuse(
                        format!(
                            "there is no security scan of {}: none started within {}s (scan.wait_seconds)",
                            image.reference(),
                            env.scan.wait_seconds
                        ),
                        how_to_start,
                    ))
                }
                ScanReport::Unavailable { reason, help } => {
                    return Err(refuse(
                        format!("no usable security scan of {}: {reason}", image.reference()),
                        help,
                    ))
                }
            }
        };
        let blocking: Vec<&crate::stages::Finding> =
            findings.iter().filter(|f| f.severity >= block_at).collect();
        if blocking.is_empty() {
            self.events.info(format!(
                "security scan: {} finding(s), none at or above {block_at:?}",
                findings.len()
            ));
            return Ok(());
        }
        let listed: Vec<String> = blocking
            .iter()
            .map(|f| {
                format!(
                    "{} ({:?}{})",
                    f.name,
                    f.severity,
                    f.package
                        .as_ref()
                        .map(|p| format!(", {p}"))
                        .unwrap_or_default()
                )
            })
            .collect();
        match &self.scan_override {
            Some(who) => {
                self.events.warn(format!(
                    "{who} overrode the security-scan gate: {} finding(s) at or above {block_at:?}: {}",
                    blocking.len(),
                    listed.join(", ")
                ));
                run.record.scan_override = Some(who.clone());
                Ok(())
            }
            None => Err(refuse(
                format!(
                    "the image {} has {} finding(s) at or above {block_at:?}: {}",
                    image.reference(),
                    blocking.len(),
                    listed.join(", ")
                ),
                "fix the findings and release again, or deploy anyway with --override-scan (recorded in the deploy record)".into(),
            )),
        }
    }

    /// Secrets resolved and checked, the task definition rendered: all before any change.
    async fn prepare_release(
        &self,
        run: &Run,
        env: &EnvironmentConfig,
        image: &PinnedImage,
    ) -> Result<RenderedTaskDefinition, StageError> {
        let secrets = match &env.secrets_path {
            Some(path) => {
                let spec = SecretsSpec {
                    path: path.clone(),
                    names: env.secrets.clone(),
                };
                self.stages.secrets.resolve(&spec).await?
            }
            None => Vec::new(),
        };
        let rendered = self.render(
            &run.target,
            &run.record.release_id,
            &run.record.git,
            env,
            image,
            &secrets,
        )?;
        // Parameters `resolve` just found exist; check only the ones the file names.
        let sources: Vec<String> = rendered
            .definition
            .secret_sources()
            .into_iter()
            .filter(|source| !secrets.iter().any(|s| &s.value_from == source))
            .collect();
        if !sources.is_empty() {
            let unchecked = self.stages.secrets.ensure_exist(&sources).await?;
            if !unchecked.is_empty() {
                self.events
                    .warn(crate::stages::unchecked_secrets(&unchecked));
            }
        }
        Ok(rendered)
    }

    fn render(
        &self,
        target: &DeployTarget,
        release_id: &ReleaseId,
        git: &GitInfo,
        env: &EnvironmentConfig,
        image: &PinnedImage,
        secrets: &[crate::model::SecretRef],
    ) -> Result<RenderedTaskDefinition, StageError> {
        let mut tags = target_tags(target);
        tags.extend([
            ResourceTag {
                key: "tugboat:release".into(),
                value: release_id.0.clone(),
            },
            ResourceTag {
                key: "tugboat:git-sha".into(),
                value: if git.sha.is_empty() {
                    "unknown".into()
                } else {
                    git.sha.clone()
                },
            },
        ]);
        let inputs = ReleaseInputs {
            image,
            containers: &self.project.config.task_definition.containers,
            environment: &env.environment,
            secrets,
            execution_role_arn: env.execution_role_arn.as_deref(),
            task_role_arn: env.task_role_arn.as_deref(),
            tags,
        };
        self.project
            .task_definition
            .render(&inputs)
            .map_err(StageError::bad_input)
    }

    async fn verify(
        &self,
        run: &mut Run,
        revision: &Revision,
        image: &PinnedImage,
        cancel: &CancellationToken,
    ) -> Option<String> {
        if self.stages.verifiers.is_empty() {
            return None;
        }
        let started = self.begin(Stage::Verify);
        let context = VerifyContext {
            target: run.target.clone(),
            release_id: run.record.release_id.clone(),
            revision: revision.clone(),
            image: Some(image.clone()),
            release_started_at: run.record.started_at,
        };
        // A verifier's warnings go into the record as well as to the subscribers.
        let seen = RecordedEvents::new();
        let events = self.events.clone().with(seen.clone());
        let mut failure = None;
        for verifier in &self.stages.verifiers {
            let result = cancellable(verifier.verify(&context, &events), cancel).await;
            if let Err(err) = result {
                failure = Some(format!(
                    "verification {} failed: {}",
                    verifier.name(),
                    err.message
                ));
                break;
            }
        }
        for event in seen.take() {
            if let PipelineEvent::Warning { message } = event {
                if !run.record.warnings.contains(&message) {
                    run.record.warnings.push(message);
                }
            }
        }
        self.end(run, Stage::Verify, started, failure.is_none());
        failure
    }

    /// After the service changed and the release failed: roll back to `previous` and
    /// check that the rollback itself completed.
    async fn recover(
        &self,
        run: &mut Run,
        env: &EnvironmentConfig,
        previous: Option<&Revision>,
        reason: &str,
    ) -> Ending {
        let environment = run.target.environment.clone();
        let new = run
            .record
            .revision
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| "the new revision".into());
        if let Some(why) = run.lease.as_ref().and_then(|lease| lease.taken_over()) {
            return Ending {
                outcome: RecordOutcome::NotRestored,
                reason: Some(format!("{reason}; {why}")),
                message: format!(
                    "{reason}; {why}. Not rolling back: another run holds the deploy lock of {environment} now, and a rollback would undo its release. \
                     The service {} may still be on {new}; check `tugboat status --env {environment}`.",
                    run.target
                ),
            };
        }
        let Some(previous) = previous else {
            return Ending {
                outcome: RecordOutcome::NotRestored,
                reason: Some(reason.to_string()),
                message: format!(
                    "{reason}. The service {} had no earlier revision, so there is nothing to roll back to: \
                     it is on {new}, not working. Fix the release and run `tugboat deploy --env {environment}` again, \
                     or scale it down with `aws ecs update-service --cluster {} --service {} --desired-count 0`.",
                    run.target, run.target.cluster, run.target.service
                ),
            };
        };
        if !env.rollback.automatic {
            return Ending {
                outcome: RecordOutcome::NotRestored,
                reason: Some(reason.to_string()),
                message: format!(
                    "{reason}. Automatic rollback is off for {environment}: the service {} is on {new}. \
                     Run `tugboat rollback --env {environment} --to {previous}` to restore the release that served before.",
                    run.target
                ),
            };
        }
        if run.cancel.is_cancelled() {
            return self.roll_back_cancelled(run, env, previous, reason).await;
        }
        let started = self.begin(Stage::Rollback);
        self.events.emit(PipelineEvent::RollbackStarted {
            to: previous.clone(),
            reason: reason.to_string(),
        });
        let from = run.record.revision.clone();
        let result = self
            .roll_back_and_wait(&run.target, previous, from.as_ref(), env, &run.cancel)
            .await;
        self.end(run, Stage::Rollback, started, result.is_ok());
        match result {
            Ok(restored) => Ending {
                outcome: RecordOutcome::RolledBack,
                reason: Some(reason.to_string()),
                message: if same_revision(&restored, previous) {
                    format!(
                        "{reason}. Rolled back: the service {} is on {previous} again, as before this release.",
                        run.target
                    )
                } else {
                    format!(
                        "{reason}. Rolled back: the service {} runs the task definition of {previous} again, \
                         registered anew as {restored} because {previous} had been deregistered.",
                        run.target
                    )
                },
            },
            Err(rollback_failure) => Ending {
                outcome: RecordOutcome::NotRestored,
                reason: Some(format!("{reason}; rollback failed: {rollback_failure}")),
                message: format!(
                    "{reason}. THE ROLLBACK TO {previous} FAILED TOO ({rollback_failure}). The service {} may be running \
                     {new}, {previous}, or both. Run `tugboat status --env {environment}` to see its deployments, then \
                     `tugboat rollback --env {environment} --to {previous}`.",
                    run.target
                ),
            },
        }
    }

    /// The run was cancelled (a signal) after the service changed: the rollback is issued
    /// at once, recorded as "cancelled, rolling back to X (deployment D)" before anything
    /// else, and followed only for `deploy.cancel_grace_seconds`; a runner that kills the
    /// process after that finds the record already written.
    async fn roll_back_cancelled(
        &self,
        run: &mut Run,
        env: &EnvironmentConfig,
        previous: &Revision,
        reason: &str,
    ) -> Ending {
        let environment = run.target.environment.clone();
        let started = self.begin(Stage::Rollback);
        self.events.emit(PipelineEvent::RollbackStarted {
            to: previous.clone(),
            reason: reason.to_string(),
        });
        let to = match self.restorable(&run.target, previous).await {
            Ok(to) => to,
            Err(why) => {
                self.events.warn(why);
                previous.clone()
            }
        };
        let request = RestoreRequest {
            to,
            from: run.record.revision.clone(),
        };
        let deployment = match self.stages.deployer.roll_back(&run.target, &request).await {
            Ok(deployment) => deployment,
            Err(err) => {
                self.end(run, Stage::Rollback, started, false);
                return Ending {
                    outcome: RecordOutcome::NotRestored,
                    reason: Some(format!(
                        "cancelled; the rollback to {previous} failed: {}",
                        err.message
                    )),
                    message: format!(
                        "cancelled. THE ROLLBACK TO {previous} FAILED ({}): the service {} may be running the new release. \
                         Run `tugboat rollback --env {environment} --to {previous}` now.",
                        err.message, run.target
                    ),
                };
            }
        };
        let rolling_back = format!(
            "cancelled, rolling back to {previous} (deployment {})",
            deployment.id
        );
        self.events.warn(rolling_back.clone());
        run.record.outcome = RecordOutcome::RolledBack;
        run.record.reason = Some(rolling_back.clone());
        if let Err(err) = self.stages.artifacts.put_record(&run.record).await {
            self.events.warn(format!(
                "could not record the cancellation of {}: {}",
                run.record.release_id, err.message
            ));
        }
        let grace = cancel_grace(env);
        // Within the grace, look often: the runner may kill the process any moment.
        let options = WaitOptions {
            timeout: grace,
            poll_interval: wait_options(env)
                .poll_interval
                .min(Duration::from_millis(500)),
        };
        let waited = tokio::time::timeout(
            grace,
            follow_rollout(
                self.stages.deployer.as_ref(),
                &run.target,
                &deployment,
                &options,
                &self.events,
            ),
        )
        .await;
        let completed = matches!(waited, Ok(Ok(RolloutOutcome::Completed)));
        self.end(run, Stage::Rollback, started, completed);
        let message = if completed {
            format!(
                "{reason}. Rolled back: the service {} is on {previous} again (deployment {}).",
                run.target, deployment.id
            )
        } else {
            format!(
                "{reason}. The rollback to {previous} was issued (deployment {}) and ECS carries it on; it was not \
                 followed past the {}s grace. Check it with `tugboat status --env {environment}`.",
                deployment.id,
                grace.as_secs_f64()
            )
        };
        Ending {
            outcome: RecordOutcome::RolledBack,
            reason: Some(if completed {
                format!(
                    "cancelled; rolled back to {previous} (deployment {})",
                    deployment.id
                )
            } else {
                rolling_back
            }),
            message,
        }
    }

    /// Rolls `target` back to `to` (registered again first if the platform lost it) and
    /// waits for that rollout; then checks that the service really is on it, and points
    /// it there with a plain update if not. Returns the revision the service is on.
    async fn roll_back_and_wait(
        &self,
        target: &DeployTarget,
        to: &Revision,
        from: Option<&Revision>,
        env: &EnvironmentConfig,
        cancel: &CancellationToken,
    ) -> Result<Revision, String> {
        let to = self.restorable(target, to).await?;
        let request = RestoreRequest {
            to: to.clone(),
            from: from.cloned(),
        };
        for attempt in 0..2 {
            let deployment: DeploymentHandle = self
                .stages
                .deployer
                .roll_back(target, &request)
                .await
                .map_err(|err| err.message)?;
            let options = self.within_deadline(wait_options(env));
            let wait = follow_rollout(
                self.stages.deployer.as_ref(),
                target,
                &deployment,
                &options,
                &self.events,
            );
            tokio::pin!(wait);
            // Cancelled while following the rollback: it was issued and ECS carries it on;
            // it is followed only for the grace period.
            let outcome = tokio::select! {
                outcome = &mut wait => outcome,
                () = cancel.cancelled() => match tokio::time::timeout(cancel_grace(env), &mut wait).await {
                    Ok(outcome) => outcome,
                    Err(_) => return Err(format!(
                        "cancelled: the rollback to {to} was issued (deployment {}) and not followed past the grace period",
                        deployment.id
                    )),
                },
            }
            .map_err(|err| err.message)?;
            if !outcome.is_success() {
                return Err(outcome.describe());
            }
            let now = self
                .stages
                .deployer
                .current_revision(target)
                .await
                .map_err(|err| err.message)?;
            match now {
                Some(now) if same_revision(&now, &to) => return Ok(to),
                now if attempt == 0 => self.events.warn(format!(
                    "the rollback ended with the service on {}, not {to}; pointing it at {to}",
                    now.map(|n| n.to_string())
                        .unwrap_or_else(|| "nothing".into())
                )),
                now => {
                    return Err(format!(
                        "the service is on {}, not {to}, after rolling back twice",
                        now.map(|n| n.to_string())
                            .unwrap_or_else(|| "nothing".into())
                    ))
                }
            }
        }
        Err(format!("the service did not return to {to}"))
    }

    /// Puts an environment back on an earlier release, under the deploy lock, and
    /// records it.
    pub async fn rollback(&self, request: RollbackRequest) -> DeployReport {
        let env = match self.project.environment(&request.environment) {
            Ok(env) => env.clone(),
            Err(err) => {
                return DeployReport {
                    outcome: Outcome::BadInput,
                    record: None,
                    message: err.to_string(),
                }
            }
        };
        let target = env.target(&self.project.config.app.name, &request.environment);
        let refuse = |message: String| DeployReport {
            outcome: Outcome::BadInput,
            record: None,
            message,
        };
        let history = match self
            .stages
            .artifacts
            .history(&target.app, &target.environment, 100)
            .await
        {
            Ok(history) => history,
            Err(err) => {
                return refuse(format!(
                    "cannot read the deploy history: {}",
                    describe_error(&err)
                ))
            }
        };
        let current = match self.stages.deployer.current_revision(&target).await {
            Ok(current) => current,
            Err(err) => {
                return refuse(format!("cannot read the service: {}", describe_error(&err)))
            }
        };
        let mut served_before: Option<ReleaseId> = None;
        let chosen = match &request.to {
            Some(RollbackTo::Release(id)) => match history.iter().find(|r| &r.release_id == id) {
                Some(record) => record.revision.clone().map(|rev| (rev, Some(record.release_id.clone()))),
                None => return refuse(format!(
                    "release {id} is not in the history of {}/{}; run `tugboat history --env {}` to list releases",
                    target.app, target.environment, target.environment
                )),
            },
            Some(RollbackTo::Revision(text)) => {
                let known = history.iter().find_map(|r| {
                    r.revision
                        .as_ref()
                        .filter(|rev| &rev.label == text || &rev.id == text)
                        .map(|rev| (rev.clone(), Some(r.release_id.clone())))
                });
                Some(known.unwrap_or_else(|| (Revision::new(text.clone(), text.clone()), None)))
            }
            None => {
                // The release serving now is the newest record that put the current
                // revision in place; when that was a manual rollback, the release it
                // restored. "Before" counts from there, so a second rollback goes
                // further back instead of forward to the release just rolled back from.
                let serving = history
                    .iter()
                    .position(|r| r.revision.is_some() && r.revision == current);
                let origin = serving.and_then(|index| match &history[index].rollback_of {
                    Some(id) => history.iter().position(|r| &r.release_id == id),
                    None => Some(index),
                });
                let older = origin.map_or(&history[..], |index| &history[index + 1..]);
                let candidates: Vec<DeployRecord> = older
                    .iter()
                    .filter(|r| r.revision.is_some() && r.revision != current)
                    .cloned()
                    .collect();
                last_good_release(&candidates, None)
                    .and_then(|r| r.revision.clone().map(|rev| (rev, Some(r.release_id.clone()))))
                    .or_else(|| {
                        // No earlier good release (tugboat was adopted one release ago): the
                        // revision that served before the current release, from its record.
                        let record = &history[origin?];
                        let before = record.previous_revision.clone()?;
                        served_before = Some(record.release_id.clone());
                        Some((before, None))
                    })
            }
        };
        let Some((revision, release)) = chosen else {
            return refuse(format!(
                "no earlier good release of {}/{} to roll back to; pass --to <revision> (for example {}:<number>)",
                target.app, target.environment, self.project.task_definition.family
            ));
        };
        // A revision typed by hand may not exist: find out before touching the service.
        if release.is_none() {
            if let Err(err) = self
                .stages
                .service_reader
                .registered_definition(&revision)
                .await
            {
                return refuse(format!(
                    "cannot roll back to {revision}: {}; nothing was changed\n  help: `tugboat history --env {}` lists the releases and their revisions",
                    err.message, target.environment
                ));
            }
        }
        // A revision typed by hand has its text as both id and label: match either.
        let already_serving = current
            .as_ref()
            .is_some_and(|c| c.id == revision.id || c.label == revision.label);
        if already_serving {
            return refuse(format!(
                "the service {target} already runs {revision}; nothing to roll back"
            ));
        }

        let started_at = self.clock.now();
        let git = release
            .as_ref()
            .and_then(|id| history.iter().find(|r| &r.release_id == id))
            .map(|r| r.git.clone())
            .unwrap_or_default();
        let mut run = Run {
            record: DeployRecord {
                release_id: ReleaseId::new(started_at, &git),
                app: target.app.clone(),
                environment: target.environment.clone(),
                git,
                image: release
                    .as_ref()
                    .and_then(|id| history.iter().find(|r| &r.release_id == id))
                    .and_then(|r| r.image.clone()),
                revision: Some(revision.clone()),
                previous_revision: current.clone(),
                outcome: RecordOutcome::InProgress,
                reason: None,
                stages: Vec::new(),
                actor: request.actor.clone(),
                started_at,
                finished_at: None,
                rollback_of: release,
                deployment_id: None,
                trigger: None,
                scan_override: None,
                task_definition: None,
                warnings: Vec::new(),
                rollback_deployment_id: None,
                rollback_started_at: None,
                concluding: None,
            },
            target,
            started: Instant::now(),
            cancel: request.cancel.clone(),
            lease: None,
        };
        let reason = format!("manual rollback by {}", request.actor);
        let result = match self.perform_rollback(&mut run, &env, &reason).await {
            Ok(result) => result,
            Err(ending) => return self.finish(run, ending, false).await,
        };
        let from = current
            .map(|c| c.to_string())
            .unwrap_or_else(|| "nothing".into());
        let ending = match result {
            Ok(()) => {
                let restored = run.record.revision.clone().unwrap_or(revision.clone());
                let mut message = format!("rolled {} back from {from} to {restored}", run.target);
                if !same_revision(&restored, &revision) {
                    message.push_str(&format!(
                        " (the task definition of {revision}, registered again: {revision} had been deregistered)"
                    ));
                }
                if let Some(release) = &served_before {
                    message.push_str(&format!(
                        "; no earlier good release is recorded, so this is the revision that served before release {release}"
                    ));
                }
                Ending {
                    outcome: RecordOutcome::Succeeded,
                    reason: None,
                    message,
                }
            }
            Err(failure) => Ending {
                outcome: RecordOutcome::NotRestored,
                reason: Some(failure.clone()),
                message: format!(
                    "the rollback of {} to {revision} did not complete ({failure}); the service may still be on {from}. \
                     Run `tugboat status --env {}` to see its deployments.",
                    run.target, run.target.environment
                ),
            },
        };
        self.finish(run, ending, true).await
    }

    /// Rolls `run.target` back to `run.record.revision` under the deploy lock and waits
    /// for that rollout; `Err` when the lock could not be taken (nothing changed).
    async fn perform_rollback(
        &self,
        run: &mut Run,
        env: &EnvironmentConfig,
        reason: &str,
    ) -> Result<Result<(), String>, Ending> {
        let Some(revision) = run.record.revision.clone() else {
            return Ok(Err("no revision to roll back to".to_string()));
        };
        let lease = self.take_lease(run, env, &CancellationToken::new()).await?;
        let started = self.begin(Stage::Rollback);
        self.events.emit(PipelineEvent::RollbackStarted {
            to: revision.clone(),
            reason: reason.to_string(),
        });
        let from = run.record.previous_revision.clone();
        let work = self.roll_back_and_wait(&run.target, &revision, from.as_ref(), env, &run.cancel);
        let result =
            lease::while_renewing(&lease, &*self.stages.artifacts, &self.events, work).await;
        self.end(run, Stage::Rollback, started, result.is_ok());
        self.give_back(&lease.lock()).await;
        Ok(result.map(|restored| {
            run.record.revision = Some(restored);
        }))
    }

    /// What `deploy` would do, changing nothing: steps and the task definition diff.
    pub async fn plan(
        &self,
        environment: &str,
        source: &ReleaseSource,
        git: &GitInfo,
    ) -> Result<Plan, StageError> {
        let env = self
            .project
            .environment(environment)
            .map_err(|err| StageError::bad_input(err.to_string()))?
            .clone();
        let target = env.target(&self.project.config.app.name, environment);
        let config = &self.project.config;
        let mut steps = Vec::new();
        let image = match source {
            ReleaseSource::Build => {
                if !config.test.commands.is_empty() {
                    steps.push(format!(
                        "test: run {} in {}",
                        config
                            .test
                            .commands
                            .iter()
                            .map(|c| format!("`{c}`"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        config.test.workdir.display()
                    ));
                }
                let spec = self.build_spec(git);
                steps.push(format!(
                    "build: {} ({}) as {}",
                    config.image.dockerfile.display(),
                    config
                        .image
                        .platform
                        .as_deref()
                        .unwrap_or("engine's platform"),
                    spec.tags.join(", ")
                ));
                steps.push(format!(
                    "push: to repository {} with tags {}",
                    config.image.repository,
                    release_tags(&self.project, git).join(", ")
                ));
                PinnedImage {
                    repository_uri: config.image.repository.clone(),
                    digest: "<digest of the image built from this commit>".to_string(),
                    tags: Vec::new(),
                }
            }
            ReleaseSource::Image(reference) => {
                let image = self
                    .stages
                    .registry
                    .resolve(&config.image.repository, reference)
                    .await?;
                steps.push(format!(
                    "use the pushed image {} ({reference})",
                    image.reference()
                ));
                image
            }
        };
        let secrets = match &env.secrets_path {
            Some(path) => {
                let spec = SecretsSpec {
                    path: path.clone(),
                    names: env.secrets.clone(),
                };
                self.stages.secrets.resolve(&spec).await?
            }
            None => Vec::new(),
        };
        let release_id = ReleaseId("<release id>".into());
        let rendered = self.render(&target, &release_id, git, &env, &image, &secrets)?;
        let current = self.stages.deployer.current_revision(&target).await?;
        let diff = match &current {
            Some(revision) => {
                let registered = self
                    .stages
                    .service_reader
                    .registered_definition(revision)
                    .await?;
                task_definition::diff(&registered, &rendered.definition)
            }
            None => {
                let empty = crate::task_definition::TaskDefinition {
                    family: rendered.definition.family.clone(),
                    network_mode: None,
                    requires_compatibilities: Vec::new(),
                    cpu: None,
                    memory: None,
                    container_definitions: Vec::new(),
                    extra: serde_json::Map::new(),
                };
                task_definition::diff(&empty, &rendered.definition)
            }
        };
        if let Some(block_at) = env.scan.block_at {
            steps.push(format!(
                "scan gate: refuse the image if its scan has findings at or above {block_at:?}{}",
                if self.scan_override.is_some() {
                    " (overridden)"
                } else {
                    ""
                }
            ));
        }
        steps.push(format!(
            "register: a new revision of family {} ({} secrets from {})",
            rendered.definition.family,
            rendered.definition.secret_sources().len(),
            env.secrets_path.as_deref().unwrap_or("the task definition")
        ));
        steps.push(format!(
            "update: service {target} from {} to the new revision{}",
            current
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_else(|| "nothing".into()),
            {
                let status = self.stages.service_reader.status(&target).await.ok();
                let decision = desired_count_for_release(
                    env.desired_count,
                    env.scaling.is_some(),
                    status.as_ref(),
                );
                format!("; {}", decision.reason())
            }
        ));
        steps.push(format!(
            "wait: for that deployment to complete (timeout {}s, polling every {}s)",
            env.deploy.timeout_seconds, env.deploy.poll_interval_seconds
        ));
        let mut checks = Vec::new();
        if let Some(url) = &env.verify.url {
            checks.push(format!(
                "GET {}{} expects {}",
                url.trim_end_matches('/'),
                env.verify.health_path,
                env.verify.expected_status
            ));
        }
        if !env.verify.alarms.is_empty() {
            checks.push(format!(
                "alarms {} stay out of ALARM for {}s",
                env.verify.alarms.join(", "),
                env.verify.bake_seconds
            ));
        }
        if !checks.is_empty() {
            steps.push(format!("verify: {}", checks.join("; ")));
        }
        steps.push(match (&current, env.rollback.automatic) {
            (Some(previous), true) => format!("on failure: roll back to {previous}"),
            (None, true) => "on failure: nothing to roll back to (first release)".to_string(),
            (_, false) => "on failure: stop (automatic rollback is off)".to_string(),
        });
        Ok(Plan {
            environment: environment.to_string(),
            target,
            current_revision: current,
            steps,
            rendered,
            diff,
        })
    }
}

fn cancelled_before_change() -> Ending {
    Ending {
        outcome: RecordOutcome::FailedUnchanged,
        reason: Some("cancelled".into()),
        message: "cancelled before the service was changed; nothing was deployed".into(),
    }
}

async fn cancellable<T>(
    work: impl Future<Output = Result<T, StageError>>,
    cancel: &CancellationToken,
) -> Result<T, StageError> {
    tokio::select! {
        result = work => result,
        () = cancel.cancelled() => Err(StageError::failed("cancelled")),
    }
}

fn env_timeout(env: &EnvironmentConfig) -> Duration {
    Duration::from_secs(env.deploy.timeout_seconds)
}

fn wait_options(env: &EnvironmentConfig) -> WaitOptions {
    WaitOptions {
        timeout: Duration::from_secs(env.deploy.timeout_seconds),
        poll_interval: Duration::from_secs_f64(env.deploy.poll_interval_seconds),
    }
}

/// The tags a built image is pushed with: the git sha, the version of a `v*` tag, and
/// the configured extras.
pub fn release_tags(project: &Project, git: &GitInfo) -> Vec<String> {
    let mut tags = Vec::new();
    if !git.sha.is_empty() {
        tags.push(git.sha.clone());
    }
    if let Some(version) = git.tag() {
        tags.push(version.to_string());
    }
    for tag in &project.config.image.tags {
        if !tags.contains(tag) {
            tags.push(tag.clone());
        }
    }
    tags
}

/// How long a rollback issued on cancellation is followed (a bad value is refused by the
/// config's validation; here it only must not panic).
fn cancel_grace(env: &EnvironmentConfig) -> Duration {
    let seconds = env.deploy.cancel_grace_seconds;
    if seconds.is_finite() && seconds > 0.0 {
        Duration::from_secs_f64(seconds.min(3600.0))
    } else {
        Duration::ZERO
    }
}

/// The tags every revision tugboat registers carries: pruning touches only these.
fn target_tags(target: &DeployTarget) -> Vec<ResourceTag> {
    vec![
        ResourceTag {
            key: "tugboat:app".into(),
            value: target.app.clone(),
        },
        ResourceTag {
            key: "tugboat:environment".into(),
            value: target.environment.clone(),
        },
    ]
}
