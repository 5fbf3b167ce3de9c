//! The nouns every stage and front end shares: targets, images, revisions, releases,
//! deploy records and outcomes. None of them is specific to ECS: a revision is whatever
//! handle the deploy target gives a registered release definition.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// The service a release goes to: one environment of one app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployTarget {
    pub app: String,
    pub environment: String,
    pub cluster: String,
    pub service: String,
    pub region: Option<String>,
}

impl fmt::Display for DeployTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.cluster, self.service)
    }
}

/// A registered release definition (for ECS: a task definition revision).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Revision {
    /// The full identifier the target understands (for ECS the task definition ARN).
    pub id: String,
    /// A short name for people (for ECS `family:revision`).
    pub label: String,
}

impl Revision {
    pub fn new(id: impl Into<String>, label: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            label: label.into(),
        }
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

/// A rollout started by [`crate::Deployer::update_service`] or
/// [`crate::Deployer::roll_back`]: the deployment the waiter must follow, and only that one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentHandle {
    pub id: String,
    pub revision: Revision,
}

/// How an image is named when a user asks to deploy one that is already pushed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageReference {
    Tag(String),
    Digest(String),
}

impl ImageReference {
    /// `sha256:…` is a digest, anything else a tag. A full reference
    /// (`repo@sha256:…` or `repo:tag`) keeps only the part after the repository.
    pub fn parse(text: &str) -> Self {
        if let Some((_, digest)) = text.rsplit_once('@') {
            return Self::Digest(digest.to_string());
        }
        if text.starts_with("sha256:") {
            return Self::Digest(text.to_string());
        }
        match text.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') && !repo.is_empty() => {
                Self::Tag(tag.to_string())
            }
            _ => Self::Tag(text.to_string()),
        }
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tag(tag) => write!(f, "tag {tag}"),
            Self::Digest(digest) => write!(f, "digest {digest}"),
        }
    }
}

/// An image pinned by content digest: what every deploy uses, never a moving tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedImage {
    /// Where the image lives, without tag or digest (`123456789012.dkr.ecr.us-east-1.amazonaws.com/cv_matcher`).
    pub repository_uri: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Tags known to point at this digest.
    #[serde(default)]
    pub tags: Vec<String>,
}

impl PinnedImage {
    /// The reference a task definition carries: `repository@sha256:…`.
    pub fn reference(&self) -> String {
        format!("{}@{}", self.repository_uri, self.digest)
    }
}

/// An image the builder produced in the local engine, not yet pushed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuiltImage {
    /// The engine's image id (`sha256:…` of the config).
    pub image_id: String,
    /// Local names it was tagged with (`cv_matcher:<sha>`).
    pub local_tags: Vec<String>,
}

/// Where the code of a release comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GitInfo {
    pub sha: String,
    /// `refs/heads/develop`, `refs/tags/v1.2.0`, or a bare branch or tag name.
    pub git_ref: String,
    /// When the commit was authored (`git log -1 --format=%aI`): where a change's lead
    /// time starts. `None` when it is not known (the Lambda knows only an image tag, and
    /// records written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_at: Option<DateTime<Utc>>,
}

impl GitInfo {
    /// The version a `v*` tag names (`refs/tags/v1.2.0` → `v1.2.0`), if the ref is a tag.
    pub fn tag(&self) -> Option<&str> {
        self.git_ref.strip_prefix("refs/tags/")
    }

    pub fn short_sha(&self) -> &str {
        let end = self.sha.len().min(7);
        self.sha.get(..end).unwrap_or("")
    }
}

/// A release's id: sortable by time, readable, and unique per run.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReleaseId(pub String);

impl ReleaseId {
    /// `r20261126-141500-abc1234` for a run started at that time on that commit.
    pub fn new(at: DateTime<Utc>, git: &GitInfo) -> Self {
        let sha = git.short_sha();
        let sha = if sha.is_empty() { "nosha" } else { sha };
        Self(format!("r{}-{}", at.format("%Y%m%d-%H%M%S"), sha))
    }

    /// The start time the id was made from (to the second), for an id of that form.
    pub fn started_at(&self) -> Option<DateTime<Utc>> {
        let stamp = self.0.strip_prefix('r')?.get(..15)?;
        chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%d-%H%M%S")
            .ok()
            .map(|at| at.and_utc())
    }

    /// Whether the run certainly started before `since`, from its id alone: a store
    /// skips reading such a record. An id of another form never is.
    pub fn started_before(&self, since: DateTime<Utc>) -> bool {
        self.started_at()
            .is_some_and(|at| at + chrono::Duration::seconds(1) <= since)
    }
}

impl fmt::Display for ReleaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The pipeline's stages, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Test,
    Build,
    Push,
    Deploy,
    Verify,
    Rollback,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Test => "test",
            Self::Build => "build",
            Self::Push => "push",
            Self::Deploy => "deploy",
            Self::Verify => "verify",
            Self::Rollback => "rollback",
        };
        f.write_str(name)
    }
}

/// How a run ended, and the exit code every front end uses for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Exit 0: the release is live and verified.
    Succeeded,
    /// Exit 1: the release failed and the service is on the release that served before
    /// (rolled back, or never changed).
    FailedRestored,
    /// Exit 2: bad input (config, task definition, flags, event) or a held lock: nothing changed.
    BadInput,
    /// Exit 3: the release failed and the service could NOT be restored.
    FailedNotRestored,
}

impl Outcome {
    pub fn exit_code(self) -> i32 {
        match self {
            Self::Succeeded => 0,
            Self::FailedRestored => 1,
            Self::BadInput => 2,
            Self::FailedNotRestored => 3,
        }
    }
}

/// What a deploy record says happened to the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordOutcome {
    /// Started and not finished yet (the Lambda finishes releases from later events).
    InProgress,
    Succeeded,
    /// Failed before the service was changed: nothing to restore.
    FailedUnchanged,
    /// Failed after the service was changed, and rolled back to the previous release.
    RolledBack,
    /// Failed, and the rollback failed too (or there was nothing to roll back to).
    NotRestored,
    /// Refused before anything ran (bad input, lock held).
    Refused,
}

impl RecordOutcome {
    pub fn outcome(self) -> Outcome {
        match self {
            Self::InProgress | Self::Succeeded => Outcome::Succeeded,
            Self::FailedUnchanged | Self::RolledBack => Outcome::FailedRestored,
            Self::NotRestored => Outcome::FailedNotRestored,
            Self::Refused => Outcome::BadInput,
        }
    }
}

/// How long one stage took.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageTiming {
    pub stage: Stage,
    pub millis: u64,
    pub ok: bool,
}

/// The record written for every run, on every path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeployRecord {
    pub release_id: ReleaseId,
    pub app: String,
    pub environment: String,
    pub git: GitInfo,
    pub image: Option<PinnedImage>,
    /// The revision this release registered.
    pub revision: Option<Revision>,
    /// The revision that served before this release.
    pub previous_revision: Option<Revision>,
    pub outcome: RecordOutcome,
    /// Why it failed, for people.
    pub reason: Option<String>,
    pub stages: Vec<StageTiming>,
    /// Who ran it (`$GITHUB_ACTOR`, the local user, `lambda:<event id>`).
    pub actor: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Set when this run was a rollback to an earlier release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<ReleaseId>,
    /// The deployment the release's service update started (followed by later events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    /// The event that started this run (an EventBridge event id), so a redelivery is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// Who deployed an image the security-scan gate would have refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_override: Option<String>,
    /// The task definition this release registered, as rendered: a rollback to this
    /// release registers it again when the platform no longer has the revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_definition: Option<crate::task_definition::RenderedTaskDefinition>,
    /// What did not fail the release but people should know (an alarm already firing
    /// when it started).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// A rollback the event-driven front end started and ECS carries out: the record
    /// stays in progress (reason "…; rolling back to X (deployment D)") until this
    /// deployment's own event, or the sweep, concludes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_deployment_id: Option<String>,
    /// When that rollback was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_started_at: Option<DateTime<Utc>>,
    /// Who is concluding the release in progress: the invocation that won the
    /// conditional write of this record. Any other stops without touching the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concluding: Option<Concluding>,
    /// The one-off tasks (`before_deploy`) this release ran: task ARNs, exit codes,
    /// durations and last lines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub one_off_tasks: Vec<crate::diagnosis::RecordedOneOffTask>,
}

/// What the pointer at an environment's release in progress says
/// ([`crate::ReleaseRecords::in_progress`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InProgressPointer {
    /// No pointer is kept (a store written before there were pointers): look in the records.
    Unknown,
    /// No release is in progress.
    Nothing,
    /// This release is in progress.
    Release(ReleaseId),
}

/// An invocation's claim on concluding a release in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Concluding {
    /// What concludes it (`ecs event D COMPLETED`, `alarm A`, `the sweep`).
    pub by: String,
    pub since: DateTime<Utc>,
}

/// A record as stored, with the version a conditional write compares
/// ([`crate::ReleaseRecords::put_record_if`]).
#[derive(Clone, Debug, PartialEq)]
pub struct VersionedRecord {
    pub record: DeployRecord,
    pub version: String,
}

/// Puts records in the order [`crate::ReleaseRecords::history`] promises: newest first
/// (by start time, then release id).
pub fn sort_newest_first(records: &mut [DeployRecord]) {
    records.sort_by(|a, b| {
        b.started_at
            .cmp(&a.started_at)
            .then_with(|| b.release_id.cmp(&a.release_id))
    });
}

impl LockHolder {
    /// The lease of a lock written before leases existed, or with none recorded.
    pub const DEFAULT_LEASE_SECONDS: u64 = 120;

    /// When the lease runs out if it is not renewed. `fallback_lease` applies to locks
    /// that record none (old ones): they run out that long after `since`.
    pub fn lease_ends_at(&self, fallback_lease: Duration) -> DateTime<Utc> {
        let lease = self
            .lease_seconds
            .map_or(fallback_lease, Duration::from_secs);
        let from = self.renewed_at.unwrap_or(self.since);
        from + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX)
    }

    /// The lease ran out: the run holding it stopped renewing (it died) and the lock may
    /// be taken over.
    pub fn lease_ran_out(&self, now: DateTime<Utc>, fallback_lease: Duration) -> bool {
        self.lease_ends_at(fallback_lease) < now
    }

    /// The same run holds both: by token, or (for a lock whose token this side does not
    /// know, or an old lock) by release, holder and start.
    pub fn same_run(&self, other: &LockHolder) -> bool {
        if !self.run_token.is_empty() && !other.run_token.is_empty() {
            return self.run_token == other.run_token;
        }
        self.release_id == other.release_id && self.who == other.who && self.since == other.since
    }

    /// The error every store gives when this holder has the lock: who, which release,
    /// since when, when the lease runs out, and how to clear a lock whose run died.
    pub fn held_error(
        &self,
        app: &str,
        environment: &str,
        fallback_lease: Duration,
    ) -> crate::StageError {
        let secs = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let renewed = match self.renewed_at {
            Some(at) if at != self.since => format!(", last renewed {}", secs(at)),
            _ => String::new(),
        };
        crate::StageError::new(
            crate::StageErrorKind::LockHeld,
            format!(
                "{app}/{environment} is being deployed by {} (release {}, since {}{renewed}); its lease runs out at {} unless that run renews it; nothing was changed",
                self.who,
                self.release_id,
                secs(self.since),
                secs(self.lease_ends_at(fallback_lease)),
            ),
        )
        .with_help(format!(
            "wait for that run to finish, or deploy again after the lease ran out; if that run died, run `tugboat unlock --env {environment}`"
        ))
    }
}

/// The records of one service, newest first, as [`crate::ReleaseRecords`] returns them.
/// The last release that succeeded, other than `excluding`.
pub fn last_good_release<'a>(
    history: &'a [DeployRecord],
    excluding: Option<&ReleaseId>,
) -> Option<&'a DeployRecord> {
    history.iter().find(|record| {
        record.outcome == RecordOutcome::Succeeded
            && record.revision.is_some()
            && Some(&record.release_id) != excluding
    })
}

/// How a rollout that tugboat followed ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RolloutOutcome {
    /// The deployment is the primary one, complete, on the expected revision.
    Completed,
    /// The deployment failed (for ECS `rolloutState: FAILED`).
    Failed { reason: String },
    /// The platform rolled the deployment back itself (ECS circuit breaker): a failure.
    RolledBackByPlatform { reason: String },
    /// Another deployment took its place before it finished.
    Replaced { by: String },
    /// The deployment disappeared from the service.
    Gone,
    /// The timeout passed first.
    TimedOut { after: Duration },
}

impl RolloutOutcome {
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Completed)
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Completed => "rollout completed".to_string(),
            Self::Failed { reason } => format!("rollout failed: {reason}"),
            Self::RolledBackByPlatform { reason } => {
                format!("rollout failed and the platform rolled it back: {reason}")
            }
            Self::Replaced { by } => format!("rollout was replaced by deployment {by}"),
            Self::Gone => "the deployment disappeared from the service".to_string(),
            Self::TimedOut { after } => {
                format!("rollout did not finish within {}s", after.as_secs())
            }
        }
    }
}

/// One deployment of a service as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentStatus {
    pub id: String,
    /// `PRIMARY`, `ACTIVE`, `INACTIVE`.
    pub status: String,
    pub rollout_state: Option<String>,
    pub rollout_state_reason: Option<String>,
    pub revision: Revision,
    pub running: u32,
    pub pending: u32,
    pub desired: u32,
    pub failed_tasks: u32,
}

/// A line from the service's event log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEventLine {
    pub id: String,
    pub at: DateTime<Utc>,
    pub message: String,
}

/// What `tugboat status` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub target: DeployTarget,
    pub revision: Option<Revision>,
    pub running: u32,
    pub pending: u32,
    pub desired: u32,
    pub deployments: Vec<DeploymentStatus>,
    /// Newest first.
    pub events: Vec<ServiceEventLine>,
    /// Whether something else owns the desired count (for ECS an Application Auto
    /// Scaling scalable target on the service); `None` when it could not be told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaled: Option<bool>,
}

/// A `secrets` entry: the variable name and where the platform reads the value.
/// The value itself is never read by tugboat.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SecretRef {
    pub name: String,
    /// For Parameter Store, the parameter ARN.
    pub value_from: String,
}

/// A file a test run produced (coverage, JUnit XML), to keep with the release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    /// The path relative to the app folder (`coverage.xml`).
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Who holds a deploy lock, since when, and until when its lease runs.
///
/// The lock is a lease: it runs out `lease_seconds` after `renewed_at` unless its holder
/// renews it ([`crate::DeployLocks::renew_lock`]). Locks written before leases existed
/// have neither field; they run out `lease_seconds` of the run that finds them after
/// `since`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    pub who: String,
    pub release_id: ReleaseId,
    pub since: DateTime<Utc>,
    /// A random token of the run that holds the lock: the run finds its own lock by it
    /// (a write whose answer was lost and whose retry was refused). Empty in old locks.
    #[serde(default, rename = "token", skip_serializing_if = "String::is_empty")]
    pub run_token: String,
    /// When the holder last wrote the lock (took or renewed it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewed_at: Option<DateTime<Utc>>,
    /// How long after `renewed_at` the lock runs out if it is not renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_seconds: Option<u64>,
}

/// A held deploy lock; give it back to [`crate::DeployLocks::release_lock`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployLock {
    pub app: String,
    pub environment: String,
    pub holder: LockHolder,
    /// The store's version of the lock object as this run last wrote it (an S3 ETag):
    /// renewing and releasing are conditional on it. Empty when unknown (a lock kept
    /// across Lambda invocations): the store then finds the lock by its holder.
    pub token: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_reference_parses_tags_and_digests() {
        assert_eq!(
            ImageReference::parse("abc123"),
            ImageReference::Tag("abc123".into())
        );
        assert_eq!(
            ImageReference::parse("repo/name:v1.0.0"),
            ImageReference::Tag("v1.0.0".into())
        );
        assert_eq!(
            ImageReference::parse("sha256:0f0f"),
            ImageReference::Digest("sha256:0f0f".into())
        );
        assert_eq!(
            ImageReference::parse("1234.dkr.ecr.us-east-1.amazonaws.com/x@sha256:aa"),
            ImageReference::Digest("sha256:aa".into())
        );
    }

    #[test]
    fn exit_codes_are_the_documented_ones() {
        assert_eq!(Outcome::Succeeded.exit_code(), 0);
        assert_eq!(Outcome::FailedRestored.exit_code(), 1);
        assert_eq!(Outcome::BadInput.exit_code(), 2);
        assert_eq!(Outcome::FailedNotRestored.exit_code(), 3);
    }

    #[test]
    fn release_id_is_time_then_sha() {
        let at = DateTime::parse_from_rfc3339("2026-11-26T14:15:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let git = GitInfo {
            sha: "abc1234def".into(),
            git_ref: "refs/heads/develop".into(),
            committed_at: None,
        };
        assert_eq!(ReleaseId::new(at, &git).0, "r20261126-141500-abc1234");
        let id = ReleaseId::new(at + chrono::Duration::milliseconds(700), &git);
        assert_eq!(id.started_at(), Some(at));
        // The id keeps whole seconds: a run of 14:15:00.7 did not start before 14:15:00.5.
        assert!(!id.started_before(at + chrono::Duration::milliseconds(500)));
        assert!(id.started_before(at + chrono::Duration::seconds(1)));
        assert!(!ReleaseId("manual-1".into()).started_before(at));
    }
}
