//! The stage traits. Each is small, async and object safe; each has an `automock` mock
//! for orchestration tests. Implementations live in adapter crates (`aws-adapters`,
//! `host-adapters`); nothing here talks to the outside world.
//!
//! Every method returns [`StageError`] on failure. Its [`StageErrorKind`] tells the
//! orchestrator whether the input was wrong (nothing was changed, exit 2) or the world
//! failed (exit 1 or 3, depending on what had already changed).
//!
//! Why one file of ~770 lines: every stage trait of the core, with the small types each
//! takes and returns, side by side, so that a new adapter reads one file; each trait is
//! a few methods.

use crate::events::Events;
use crate::model::{
    Artifact, BuiltImage, DeployLock, DeployRecord, DeployTarget, DeploymentHandle, ImageReference,
    InProgressPointer, LockHolder, PinnedImage, ReleaseId, Revision, SecretRef, ServiceStatus,
    VersionedRecord,
};
use crate::task_definition::{RenderedTaskDefinition, TaskDefinition};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
#[cfg(any(test, feature = "mocks"))]
use mockall::automock;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What kind of failure a stage met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageErrorKind {
    /// The input was wrong (a missing image, parameter or Dockerfile, a bad reference):
    /// nothing was changed, and the user must fix something.
    BadInput,
    /// Another run holds the deploy lock.
    LockHeld,
    /// The operation failed (a test failed, a build broke, an API call failed).
    Failed,
    /// The back end could not be reached (engine down, endpoint unreachable).
    Unavailable,
    /// The back end asked to be called less often (AWS throttling): try again later.
    Throttled,
}

/// A stage's failure, with what a person needs to act on it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StageError {
    pub kind: StageErrorKind,
    pub message: String,
    /// How to fix it, where a fix is known.
    pub help: Option<String>,
}

impl StageError {
    pub fn new(kind: StageErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            help: None,
        }
    }

    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(StageErrorKind::BadInput, message)
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(StageErrorKind::Failed, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StageErrorKind::Unavailable, message)
    }

    pub fn throttled(message: impl Into<String>) -> Self {
        Self::new(StageErrorKind::Throttled, message)
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// The test commands of a release and where to run them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestSpec {
    pub commands: Vec<String>,
    pub workdir: PathBuf,
    /// The time limit of each command.
    pub timeout: Duration,
    /// Files (relative to `workdir`) to collect after the commands passed.
    pub artifacts: Vec<String>,
    /// Variables of the runner's own environment the commands may see besides the basic
    /// ones (names, or prefixes ending in `*`); never deploy credentials.
    pub pass_env: Vec<String>,
    /// Variables set for the commands.
    pub env: BTreeMap<String, String>,
}

/// What a passing test run left behind.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TestReport {
    pub artifacts: Vec<Artifact>,
}

/// Runs the release's tests.
#[cfg_attr(any(test, feature = "mocks"), automock)]
#[async_trait]
pub trait TestRunner: Send + Sync {
    /// Runs every command in order, streaming output as [`crate::PipelineEvent::Output`].
    /// On success all commands exited 0 and the configured artifacts are returned.
    /// On failure nothing after the failing command ran; the error names that command,
    /// its exit status and the tail of its output.
    async fn run_tests(&self, spec: &TestSpec, events: &Events) -> Result<TestReport, StageError>;
}

/// How to build the release's image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildSpec {
    pub context: PathBuf,
    pub dockerfile: PathBuf,
    pub platform: Option<String>,
    pub build_args: BTreeMap<String, String>,
    /// BuildKit secret ids, each read from the builder's variable of the same name.
    pub secrets: Vec<String>,
    /// Local names to tag the image with (`cv_matcher:<sha>`, `cv_matcher:v1.2.0`).
    pub tags: Vec<String>,
    /// OCI labels (`org.opencontainers.image.revision` …).
    pub labels: BTreeMap<String, String>,
    /// Images to use as build cache (the previous release).
    pub cache_from: Vec<String>,
}

/// Builds images.
#[cfg_attr(any(test, feature = "mocks"), automock)]
#[async_trait]
pub trait ImageBuilder: Send + Sync {
    /// On success the image exists in the local engine under every tag of `spec`.
    /// On failure no image was tagged; the error says what was tried (engine address,
    /// Dockerfile path) and the tail of the build output.
    async fn build(&self, spec: &BuildSpec, events: &Events) -> Result<BuiltImage, StageError>;
}

/// How bad a vulnerability finding is, in ECR's words; ordered from least to most severe.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    Informational,
    Undefined,
    Untriaged,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// ECR's spelling (`CRITICAL`); unknown words are `Undefined`.
    pub fn parse(text: &str) -> Self {
        match text.to_ascii_uppercase().as_str() {
            "INFORMATIONAL" => Self::Informational,
            "UNTRIAGED" => Self::Untriaged,
            "LOW" => Self::Low,
            "MEDIUM" => Self::Medium,
            "HIGH" => Self::High,
            "CRITICAL" => Self::Critical,
            _ => Self::Undefined,
        }
    }
}

/// One vulnerability an image scan found.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Finding {
    /// `CVE-2024-1234`.
    pub name: String,
    pub severity: Severity,
    /// The affected package and version, where the scanner says.
    pub package: Option<String>,
}

/// Where an image's scan stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanReport {
    /// The scan finished with these findings.
    Complete(Vec<Finding>),
    /// Still running: look again later.
    InProgress,
    /// The registry has no scan of the image yet. Right after a push with scan on push
    /// that is normal (the registry starts the scan a little later), so it is waited for
    /// like [`ScanReport::InProgress`]; `how_to_start` says how to start one if none
    /// comes, e.g. the `aws ecr start-image-scan` command line.
    NotStarted { how_to_start: String },
    /// The registry cannot scan the image (the scan failed, the image is not supported,
    /// or it is not in the repository): what it said, and what to do about it.
    Unavailable { reason: String, help: String },
}

/// Stores images and pins them by digest.
#[cfg_attr(any(test, feature = "mocks"), automock)]
#[async_trait]
pub trait Registry: Send + Sync {
    /// Makes sure the repository exists (creating it with immutable tags and scan on
    /// push where the registry supports it) and returns its URI.
    async fn ensure_repository(&self, repository: &str) -> Result<String, StageError>;

    /// Pushes a built image under `tags` and returns it pinned by the digest the
    /// registry holds. Pushing a tag that already holds the same digest is a no-op;
    /// a tag that holds another digest in an immutable repository is an error.
    async fn push(
        &self,
        image: &BuiltImage,
        repository: &str,
        tags: &[String],
        events: &Events,
    ) -> Result<PinnedImage, StageError>;

    /// The vulnerability scan of a pushed image, without waiting.
    async fn scan_findings(
        &self,
        repository: &str,
        image: &PinnedImage,
    ) -> Result<ScanReport, StageError>;

    /// The image `repository:tag` holds, or `None` when the tag does not exist. Used to
    /// reuse the image already pushed for a commit instead of building it again.
    async fn find_tag(
        &self,
        repository: &str,
        tag: &str,
    ) -> Result<Option<PinnedImage>, StageError>;

    /// Resolves a tag or digest to a pinned image. An image that is not in the
    /// repository is a [`StageErrorKind::BadInput`] naming the repository and reference.
    async fn resolve(
        &self,
        repository: &str,
        reference: &ImageReference,
    ) -> Result<PinnedImage, StageError>;
}

/// What [`Deployer::update_service`] asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateRequest {
    pub revision: Revision,
    pub desired_count: Option<u32>,
    pub force_new_deployment: bool,
}

/// What [`Deployer::roll_back`] asks for: the revision to put back, and the one the
/// release being abandoned brought (only a rollout carrying it may be stopped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreRequest {
    pub to: Revision,
    /// The release's own revision; `None` for a manual rollback of whatever serves.
    pub from: Option<Revision>,
}

/// How to wait for a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitOptions {
    /// Give up (and report [`crate::model::RolloutOutcome::TimedOut`]) after this long.
    pub timeout: Duration,
    /// How often to look; the wait loop backs off only when throttled.
    pub poll_interval: Duration,
}

/// Where the deployment a deployer created stands, as one look at the platform shows it.
/// A translation of the platform's own states; the core decides what is success
/// ([`crate::orchestrator::judge_rollout`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RolloutState {
    /// Still going.
    InProgress,
    /// The deployment finished and is the one serving, on `revision`.
    Completed { revision: Revision },
    /// The deployment failed (for ECS `rolloutState: FAILED`, a stopped service deployment).
    Failed { reason: String },
    /// The platform rolled the deployment back itself (ECS circuit breaker, alarm, hook).
    RolledBackByPlatform { reason: String },
    /// Another deployment took its place before it finished.
    Replaced { by: String },
    /// The deployment (or the service) is no longer there.
    Gone,
}

/// Counts of the followed deployment's tasks, and the platform's word for its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutProgress {
    /// The deployment these counts are of (an ECS deployment id or service deployment ARN).
    pub deployment: String,
    pub state: String,
    pub running: u32,
    pub pending: u32,
    pub desired: u32,
    pub failed_tasks: u32,
}

/// A service event the platform wrote since the previous look.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedEvent {
    pub at: DateTime<Utc>,
    pub message: String,
}

/// One look at a rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutObservation {
    pub state: RolloutState,
    /// The deployment's counts, when the platform showed them.
    pub progress: Option<RolloutProgress>,
    /// Service events new since the previous look, oldest first.
    pub new_events: Vec<ObservedEvent>,
    /// What the rollout is waiting for, in a person's words, when the platform says.
    pub waiting_for: Option<String>,
}

impl RolloutObservation {
    pub fn state(state: RolloutState) -> Self {
        Self {
            state,
            progress: None,
            new_events: Vec::new(),
            waiting_for: None,
        }
    }
}

/// Looks at one deployment, again and again: the state a deployer keeps between looks
/// (which events it reported, which record of the deployment it follows). The core's
/// wait loop ([`crate::orchestrator::follow_rollout`]) decides how often to look, how
/// long, what to tell, and what the answer means.
#[cfg_attr(any(test, feature = "mocks"), automock)]
#[async_trait]
pub trait RolloutWatch: Send {
    /// One look. [`StageErrorKind::Throttled`] makes the loop look less often; other
    /// errors are tolerated a few times in a row.
    async fn observe(&mut self, events: &Events) -> Result<RolloutObservation, StageError>;

    /// The wait gave up on the deployment (its time ran out, `reason` says how): a
    /// deployer whose platform would carry on with it stops it here. ECS does nothing
    /// (the orchestrator rolls the service back).
    async fn abandon(&mut self, reason: &str, events: &Events) -> Result<(), StageError> {
        let _ = (reason, events);
        Ok(())
    }
}

/// Says why the tasks of a failed deployment stopped: stopped reasons, exit codes, the
/// last lines each failed container logged. Best effort: what cannot be read is a note
/// in the diagnosis, never an error, so a diagnosis never changes how a release ends.
#[cfg_attr(any(test, feature = "mocks"), automock)]
#[async_trait]
pub trait FailureDiagnostics: Send + Sync {
    async fn diagnose(
        &self,
        target: &DeployTarget,
        deployment: &DeploymentHandle,
    ) -> crate::diagnosis::FailureDiagnosis;
}

/// A one-off task to run with a release's revision (a `before_deploy` migration,
/// `tugboat run`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OneOffRequest {
    /// What people call it (`migrate`); it prefixes the task's log lines.
    pub name: String,
    /// The revision to run (the release's new one).
    pub revision: Revision,
    /// The container whose command is replaced, and whose exit code counts.
    pub container: String,
    pub command: Vec<String>,
    /// `tugboat/<release>`: whose task it is, for the platform's listings.
    pub started_by: String,
    /// The same for every try of one step of one release (ECS: the `RunTask` client
    /// token, 1 to 64 characters from `!` to `~`), so a retry finds the task it started.
    pub client_token: String,
    /// After this, the task is stopped and the run says `timed_out`.
    pub timeout: Duration,
}

/// Where a one-off task's log lines go as they come.
#[derive(Clone)]
pub struct LineSink(Arc<dyn Fn(&crate::diagnosis::LogLine) + Send + Sync>);

impl LineSink {
    pub fn new(f: impl Fn(&crate::diagnosis::LogLine) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    pub fn send(&self, line: &crate::diagnosis::LogLine) {
        (self.0)(line);
    }
}

impl std::fmt::Debug for LineSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LineSink")
    }
}

/// Runs one-off tasks on the target, as the service would run them (its network, its
/// launch type), to the end.
#[cfg_attr(any(test, feature = "mocks"), automock)]
#[async_trait]
pub trait OneOffTasks: Send + Sync {
    /// Starts the task and follows it until it stops, handing each log line to `lines`.
    /// Its time limit passing stops it (`timed_out`); `cancel` stops it and returns at
    /// once (`cancelled`). A task the platform did not start is an error.
    async fn run_one_off(
        &self,
        target: &DeployTarget,
        request: &OneOffRequest,
        lines: &LineSink,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<crate::diagnosis::OneOffTaskRun, StageError>;
}

/// Rolls releases out to a service and back.
#[cfg_attr(any(test, feature = "mocks"), automock)]
#[async_trait]
pub trait Deployer: Send + Sync {
    /// The revision the service runs now (its primary deployment's), if the service exists.
    async fn current_revision(&self, target: &DeployTarget)
        -> Result<Option<Revision>, StageError>;

    /// Registers the rendered definition, tagged as the release. Does not touch the service.
    async fn register(
        &self,
        target: &DeployTarget,
        rendered: &RenderedTaskDefinition,
    ) -> Result<Revision, StageError>;

    /// Points the service at a revision and returns the deployment that change created:
    /// the one [`Deployer::watch_rollout`] must follow.
    async fn update_service(
        &self,
        target: &DeployTarget,
        request: &UpdateRequest,
    ) -> Result<DeploymentHandle, StageError>;

    /// Starts looking at *that* deployment (one `update_service` or `roll_back`
    /// returned). The watch owns what it needs (clients are cheap to clone).
    fn watch_rollout(
        &self,
        target: &DeployTarget,
        deployment: &DeploymentHandle,
    ) -> Box<dyn RolloutWatch>;

    /// Puts the service back on `request.to` and returns the deployment to follow. If
    /// the platform is restoring `to` already (circuit breaker), returns that deployment
    /// instead of starting another. A rollout in progress is stopped only when it
    /// carries `request.from`; a finished one is never followed again.
    async fn roll_back(
        &self,
        target: &DeployTarget,
        request: &RestoreRequest,
    ) -> Result<DeploymentHandle, StageError>;

    /// Whether a release can still be started on `revision` (for ECS: the task
    /// definition is ACTIVE). `false` when it was deregistered or never existed.
    async fn revision_active(&self, revision: &Revision) -> Result<bool, StageError>;

    /// Removes old revisions of the release's family that this tool registered for the
    /// target's app, keeping the newest `keep`, every revision in `protected` (what any
    /// environment runs or may roll back to) and any revision a deployment of the
    /// target still uses. Returns what was removed.
    async fn prune_revisions(
        &self,
        target: &DeployTarget,
        family: &str,
        keep: usize,
        protected: &[Revision],
    ) -> Result<Vec<Revision>, StageError>;
}

/// Reads a service's state; never changes it.
#[cfg_attr(any(test, feature = "mocks"), automock)]
#[async_trait]
pub trait ServiceReader: Send + Sync {
    /// Deployments with their state and counts, current revision, last events.
    async fn status(&self, target: &DeployTarget) -> Result<ServiceStatus, StageError>;

    /// The definition a revision was registered with, as a registrable task definition.
    async fn registered_definition(
        &self,
        revision: &Revision,
    ) -> Result<TaskDefinition, StageError>;
}

/// What a verifier knows about the release it checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyContext {
    pub target: DeployTarget,
    pub release_id: ReleaseId,
    pub revision: Revision,
    pub image: Option<PinnedImage>,
    /// When the release started, before the service was changed: an alarm already in
    /// ALARM then was not set off by it.
    pub release_started_at: DateTime<Utc>,
}

/// Checks that a release that rolled out is healthy.
#[cfg_attr(any(test, feature = "mocks"), automock)]
#[async_trait]
pub trait Verifier: Send + Sync {
    /// A short name for progress lines (`http`, `alarms`).
    fn name(&self) -> String;

    /// On success the release passed this check. On failure the error says what was
    /// checked and what came back, and the orchestrator rolls the release back. A
    /// warning emitted on `events` ([`Events::warn`]) is kept in the release's
    /// [`crate::DeployRecord::warnings`] too.
    async fn verify(&self, context: &VerifyContext, events: &Events) -> Result<(), StageError>;
}

/// Where an environment's secrets live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretsSpec {
    /// Parameter Store path (`/cv-matcher/prod/`).
    pub path: String,
    /// The names under `path` to expose; `None` for every parameter under it.
    pub names: Option<Vec<String>>,
}

/// Turns secret locations into `secrets` entries; never reads a secret value.
#[cfg_attr(any(test, feature = "mocks"), automock)]
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// The `secrets` entries for an environment: one per parameter, its name the last
    /// path segment, `value_from` its ARN. A named parameter that does not exist is a
    /// [`StageErrorKind::BadInput`] naming it.
    async fn resolve(&self, spec: &SecretsSpec) -> Result<Vec<SecretRef>, StageError>;

    /// Fails with [`StageErrorKind::BadInput`], naming each missing one, unless every
    /// `value_from` (an ARN or a name) it can check exists. Returns the ones it could
    /// not check (ARNs in another account or region, which ECS resolves at task start
    /// with the execution role) so the caller can say so; never a value.
    async fn ensure_exist(&self, value_froms: &[String]) -> Result<Vec<String>, StageError>;
}

/// What to say about the secrets [`SecretStore::ensure_exist`] could not check: which
/// ones (their ARNs, never a value) and who resolves them instead.
pub fn unchecked_secrets(value_froms: &[String]) -> String {
    format!(
        "could not check {} secret(s) in another account or region (ECS resolves them at task start with the execution role, which needs access): {}",
        value_froms.len(),
        value_froms.join(", ")
    )
}

/// The deploy lock of each app environment, kept as a lease: one run at a time changes
/// an environment.
#[cfg_attr(any(test, feature = "mocks"), automock)]
#[async_trait]
pub trait DeployLocks: Send + Sync {
    /// Takes the lock of one app environment as a lease of `holder.lease_seconds`
    /// from now (the store sets `renewed_at`). If another run holds it and its lease has
    /// not run out, the error is [`StageErrorKind::LockHeld`] naming the holder and when
    /// the lease runs out ([`LockHolder::held_error`]). A lock whose lease ran out is
    /// taken over by a write conditional on its version, never removed first. A write
    /// refused or failed after a retry reads the lock back: holding `holder.run_token`,
    /// it is this run's.
    async fn acquire_lock(
        &self,
        app: &str,
        environment: &str,
        holder: &LockHolder,
    ) -> Result<DeployLock, StageError>;

    /// Extends the lease: writes the lock again with `renewed_at` = now, conditional on
    /// `lock.token`; returns the lock with its new version. [`StageErrorKind::LockHeld`]
    /// when the lock is no longer this run's (taken over or removed); any other error
    /// says nothing about who holds it.
    async fn renew_lock(&self, lock: &DeployLock) -> Result<DeployLock, StageError>;

    /// Gives the lock back: removes it, conditional on its version, only while it is
    /// still `lock`'s run's (by [`LockHolder::same_run`]); a lock taken over or already
    /// gone is left alone.
    async fn release_lock(&self, lock: &DeployLock) -> Result<(), StageError>;

    /// The lock of one app environment as it is stored, `None` when there is none
    /// (`tugboat unlock` shows it, then gives it to [`DeployLocks::release_lock`]).
    async fn read_lock(
        &self,
        app: &str,
        environment: &str,
    ) -> Result<Option<DeployLock>, StageError>;
}

/// The deploy records of each app environment (one per release: who, what, how it
/// ended) and the event-driven front end's pointer to its release in progress.
#[cfg_attr(any(test, feature = "mocks"), automock)]
#[async_trait]
pub trait ReleaseRecords: Send + Sync {
    /// Writes (or overwrites) the record of a release.
    async fn put_record(&self, record: &DeployRecord) -> Result<(), StageError>;

    /// The record of one release with its version, `None` when there is none.
    async fn read_record(
        &self,
        app: &str,
        environment: &str,
        release_id: &ReleaseId,
    ) -> Result<Option<VersionedRecord>, StageError> {
        let _ = (app, environment, release_id);
        Err(StageError::failed(
            "this store cannot read a record by its id",
        ))
    }

    /// Writes a record only while the stored one is still `version`: `Ok(Some(new
    /// version))` written, `Ok(None)` another writer changed it first (the caller lost
    /// the race and must not act on the release).
    async fn put_record_if(
        &self,
        record: &DeployRecord,
        version: &str,
    ) -> Result<Option<String>, StageError> {
        let _ = (record, version);
        Err(StageError::failed("this store has no conditional writes"))
    }

    /// The release of an environment that the event-driven front end started and has
    /// not concluded (a pointer kept next to the records).
    async fn in_progress(
        &self,
        app: &str,
        environment: &str,
    ) -> Result<InProgressPointer, StageError> {
        let _ = (app, environment);
        Ok(InProgressPointer::Unknown)
    }

    /// Points the environment at its release in progress, or at none (overwritten,
    /// never deleted).
    async fn set_in_progress(
        &self,
        app: &str,
        environment: &str,
        release_id: Option<ReleaseId>,
    ) -> Result<(), StageError> {
        let _ = (app, environment, release_id);
        Ok(())
    }

    /// The records of one app environment, newest first, at most `limit`.
    async fn history(
        &self,
        app: &str,
        environment: &str,
        limit: usize,
    ) -> Result<Vec<DeployRecord>, StageError>;

    /// Every record of one app environment whose run started at or after `since`, newest
    /// first (the delivery report's input). Stores with many records read them with
    /// bounded concurrency and skip, by name, those that started earlier. Records the
    /// store cannot read are skipped, as [`ReleaseRecords::history`] does.
    async fn records_since(
        &self,
        app: &str,
        environment: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<DeployRecord>, StageError> {
        let mut records = self.history(app, environment, usize::MAX).await?;
        records.retain(|record| record.started_at >= since);
        Ok(records)
    }
}

/// Keeps the test artifacts (coverage, reports) of a release.
#[cfg_attr(any(test, feature = "mocks"), automock)]
#[async_trait]
pub trait ArtifactStore: Send + Sync {
    /// Stores a test artifact with the release; returns where it went.
    async fn put_artifact(
        &self,
        app: &str,
        environment: &str,
        release_id: &ReleaseId,
        artifact: &Artifact,
    ) -> Result<String, StageError>;
}

/// Where an environment keeps its lock, records and artifacts. One store (an S3 bucket,
/// a folder) usually keeps all three:
///
/// ```
/// # use pipeline_core::{DeployLocks, ReleaseRecords, ArtifactStore, ReleaseStores};
/// # fn example<S: DeployLocks + ReleaseRecords + ArtifactStore + 'static>(bucket: S) {
/// let stores = ReleaseStores::all_in(std::sync::Arc::new(bucket));
/// # let _ = stores;
/// # }
/// ```
#[derive(Clone)]
pub struct ReleaseStores {
    pub locks: Arc<dyn DeployLocks>,
    pub records: Arc<dyn ReleaseRecords>,
    pub artifacts: Arc<dyn ArtifactStore>,
}

impl ReleaseStores {
    /// One store for the lock, the records and the artifacts.
    pub fn all_in<S>(store: Arc<S>) -> Self
    where
        S: DeployLocks + ReleaseRecords + ArtifactStore + 'static,
    {
        Self {
            locks: store.clone(),
            records: store.clone(),
            artifacts: store,
        }
    }
}

/// What a notification is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    Started,
    Succeeded,
    Failed,
    RolledBack,
}

/// A message to the team about a release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub kind: NotificationKind,
    pub app: String,
    pub environment: String,
    pub release_id: ReleaseId,
    pub image_digest: Option<String>,
    pub duration: Option<Duration>,
    pub reason: Option<String>,
}

/// Tells people about releases. A notifier's failure is a warning, never a failed deploy.
#[cfg_attr(any(test, feature = "mocks"), automock)]
#[async_trait]
pub trait Notifier: Send + Sync {
    async fn notify(&self, notification: &Notification) -> Result<(), StageError>;
}

/// Credentials for one registry server. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredentials {
    /// `host[:port]` of the registry (`123456789012.dkr.ecr.us-east-1.amazonaws.com`).
    pub server: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Moves built images into a registry server; a [`Registry`] uses it for the data
/// plane (the layers) while it handles the control plane itself.
#[cfg_attr(any(test, feature = "mocks"), automock)]
#[async_trait]
pub trait ImagePusher: Send + Sync {
    /// The digest `repository:tag` has on the server, `None` when the tag does not exist.
    async fn remote_digest(
        &self,
        credentials: &RegistryCredentials,
        repository: &str,
        tag: &str,
    ) -> Result<Option<String>, StageError>;

    /// Whether `repository:tag` on the server holds this very image (same image config
    /// digest), so that pushing it again can be skipped. `false` when unknown.
    async fn holds_image(
        &self,
        _credentials: &RegistryCredentials,
        _repository: &str,
        _tag: &str,
        _image: &BuiltImage,
    ) -> Result<bool, StageError> {
        Ok(false)
    }

    /// Pushes a local image as `server/repository:tag` and returns the manifest digest
    /// the server holds. The password goes to the engine in memory only: never on a
    /// command line, never in a file.
    async fn push(
        &self,
        image: &BuiltImage,
        credentials: &RegistryCredentials,
        repository: &str,
        tag: &str,
        events: &Events,
    ) -> Result<String, StageError>;
}

#[cfg(any(test, feature = "mocks"))]
impl RolloutState {
    /// The state a look shows for a rollout that ends as `outcome` on `revision`;
    /// [`crate::model::RolloutOutcome::TimedOut`] is one that stays in progress.
    pub fn ending_as(outcome: crate::model::RolloutOutcome, revision: &Revision) -> Self {
        use crate::model::RolloutOutcome as O;
        match outcome {
            O::Completed => Self::Completed {
                revision: revision.clone(),
            },
            O::Failed { reason } => Self::Failed { reason },
            O::RolledBackByPlatform { reason } => Self::RolledBackByPlatform { reason },
            O::Replaced { by } => Self::Replaced { by },
            O::Gone => Self::Gone,
            O::TimedOut { .. } => Self::InProgress,
        }
    }
}

/// A [`RolloutWatch`] that answers the same on every look: for tests of what happens
/// around a rollout (mocks of [`Deployer::watch_rollout`]).
#[cfg(any(test, feature = "mocks"))]
#[derive(Clone, Debug)]
pub struct ScriptedRollout(pub Result<RolloutObservation, StageError>);

#[cfg(any(test, feature = "mocks"))]
impl ScriptedRollout {
    /// Ends as `outcome` for a deployment of `revision` on the first look;
    /// [`RolloutOutcome::TimedOut`] is a rollout that stays in progress (the wait loop
    /// times out by its options).
    pub fn ending(
        outcome: Result<crate::model::RolloutOutcome, StageError>,
        revision: &Revision,
    ) -> Box<dyn RolloutWatch> {
        let state = outcome.map(|outcome| RolloutState::ending_as(outcome, revision));
        Box::new(Self(state.map(RolloutObservation::state)))
    }

    /// Completes on its first look.
    pub fn completing(revision: &Revision) -> Box<dyn RolloutWatch> {
        Self::ending(Ok(crate::model::RolloutOutcome::Completed), revision)
    }
}

#[cfg(any(test, feature = "mocks"))]
#[async_trait]
impl RolloutWatch for ScriptedRollout {
    async fn observe(&mut self, _events: &Events) -> Result<RolloutObservation, StageError> {
        self.0.clone()
    }
}
