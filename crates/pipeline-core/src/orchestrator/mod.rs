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
    ArtifactStore, BuildSpec, DeployLocks, Deployer, FailureDiagnostics, ImageBuilder, LineSink,
    Notification, NotificationKind, Notifier, OneOffRequest, OneOffTasks, Registry, ReleaseRecords,
    RestoreRequest, SecretStore, SecretsSpec, ServiceReader, StageError, StageErrorKind,
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

mod build;
mod deploy;
mod event_driven;
mod fleet;
mod history;
mod lease;
mod lock;
mod one_off;
mod plan;
mod recover;
mod release_safety;
mod rollback;
mod rollout;
pub use event_driven::{DeploymentResult, EventOutcome};
pub use fleet::{
    FleetRecord, FleetReport, FleetRequest, FleetServiceRecord, FleetWiring, ServiceState,
};
pub use one_off::{one_off_client_token, RunRequest};
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
    /// The deploy lock of each environment.
    pub locks: Arc<dyn DeployLocks>,
    /// The deploy records (often the same store as `locks` and `artifacts`).
    pub records: Arc<dyn ReleaseRecords>,
    /// Where test artifacts go.
    pub artifacts: Arc<dyn ArtifactStore>,
    pub notifiers: Vec<Arc<dyn Notifier>>,
    /// Why a failed rollout's tasks stopped, told in the failure; `None`: not told.
    pub diagnostics: Option<Arc<dyn FailureDiagnostics>>,
    /// Runs one-off tasks (`before_deploy`, `tugboat run`); `None`: an environment with
    /// `before_deploy` is refused before anything changes.
    pub one_off: Option<Arc<dyn OneOffTasks>>,
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
    /// Why, as the record says; `None`: "manual rollback by <actor>".
    pub reason: Option<String>,
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
    /// Values that never appear in what tugboat prints or records of the platform's
    /// words (log lines, stopped reasons): the credentials the front end holds
    /// ([`Orchestrator::with_redaction`]).
    redact: Vec<String>,
    /// A fleet's services in one region share the image's resolution and scan gate.
    shared_image: Option<Arc<SharedImageCheck>>,
}

/// A fleet release's image as one region's services see it: resolved in that region's
/// registry and through the scan gate by the first of them to start, the same answer
/// (or refusal) for the others, instead of the same calls once per service.
#[derive(Default)]
pub(super) struct SharedImageCheck {
    checked: tokio::sync::Mutex<Option<Result<CheckedImage, Ending>>>,
}

/// An image through the scan gate, and who overrode the gate's refusal.
#[derive(Clone)]
struct CheckedImage {
    image: PinnedImage,
    scan_override: Option<String>,
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
    /// What the release read under its lock before changing the service; the clean-up
    /// after its rollout needs nothing newer about its own environment.
    seen_at_start: Option<SeenAtStart>,
}

/// The service and its records as a release found them, before it changed anything.
struct SeenAtStart {
    status: crate::model::ServiceStatus,
    /// Newest first, as many as pruning looks at ([`history_depth`]).
    history: Vec<DeployRecord>,
}

/// How many records of an environment say which revisions it may need.
fn history_depth(keep: usize) -> usize {
    (keep.max(2) * 4).max(RECENT_RECORDS)
}

/// A release whose service update went through: the deployment to follow.
struct Started {
    deployment: DeploymentHandle,
    /// When the deploy stage began (for its timing).
    clock: Instant,
}

/// How the work under the lock ended.
#[derive(Clone)]
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
            redact: Vec::new(),
            shared_image: None,
        }
    }

    /// Shares the image's resolution and scan gate with the other orchestrators given
    /// the same `check` (a fleet's services in one region).
    pub(super) fn sharing_image_check(mut self, check: Arc<SharedImageCheck>) -> Self {
        self.shared_image = Some(check);
        self
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

    /// Secret values the front end holds (the Slack token, AWS keys, a registry
    /// password): replaced by `<redacted>` wherever the platform's words are repeated
    /// (one-off tasks' log lines, a failed release's diagnosis). Empty ones are ignored.
    pub fn with_redaction(mut self, values: impl IntoIterator<Item = String>) -> Self {
        self.redact
            .extend(values.into_iter().filter(|value| !value.is_empty()));
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

    async fn finish(&self, mut run: Run, ending: Ending, notify: bool) -> DeployReport {
        run.record.outcome = ending.outcome;
        run.record.reason = ending.reason.clone();
        run.record.finished_at = Some(self.clock.now());
        if let Err(err) = self.stages.records.put_record(&run.record).await {
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
