//! Releases driven by events instead of one process waiting: the Lambda front end starts
//! a release (register, update, record it in progress, keep the lock) and returns; the
//! ECS deployment event finishes it (verify, record, notify, release the lock), an alarm
//! inside the bake window rolls it back, and any later invocation finishes a release
//! whose event never came. Every step is idempotent: events arrive at least once.
//!
//! Why one file of ~950 lines: the four event steps share the in-progress pointer and
//! the conditional conclusion of a record; split, each file would re-explain both.

use super::rollout::judge_rollout;
use super::{env_timeout, Ending, Orchestrator, Run};
use crate::model::{
    Concluding, DeployLock, DeployRecord, DeploymentHandle, ImageReference, InProgressPointer,
    LockHolder, RecordOutcome, ReleaseId, Revision, RolloutOutcome, VersionedRecord,
};
use crate::orchestrator::{DeployReport, DeployRequest, ReleaseSource};
use crate::stages::{Notification, NotificationKind, RestoreRequest, StageErrorKind};
use crate::EnvironmentConfig;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

mod fleet_rollback;

/// How ECS says a release's deployment ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeploymentResult {
    Completed,
    Failed { reason: String },
}

/// What an event-driven step did.
#[derive(Clone, Debug)]
pub enum EventOutcome {
    /// Nothing to do (a redelivery, a deployment tugboat does not follow, …), and why.
    Ignored(String),
    /// People were told; the service was not changed.
    Notified(String),
    /// A release (or rollback) was started or finished.
    Report(Box<DeployReport>),
    /// Nothing was changed, but the event must not be dropped: it cannot be acted on
    /// now (the deploy lock is held by a release in progress, AWS failed transiently).
    /// A front end hands it back for redelivery (the Lambda returns an error).
    Retry(String),
}

impl EventOutcome {
    fn report(report: DeployReport) -> Self {
        Self::Report(Box::new(report))
    }

    /// The exit code a front end would use (an ignored event is a success).
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Ignored(_) | Self::Notified(_) => 0,
            Self::Retry(_) => crate::Outcome::FailedRestored.exit_code(),
            Self::Report(report) => report.outcome.exit_code(),
        }
    }

    /// One line for a log.
    pub fn message(&self) -> &str {
        match self {
            Self::Ignored(message) | Self::Notified(message) | Self::Retry(message) => message,
            Self::Report(report) => &report.message,
        }
    }
}

/// How many records are read to find handled events and duplicate pushes (releases in
/// progress are found by their pointer, not in these).
const RECENT_RECORDS: usize = 50;

/// Kept free before the invocation's deadline: the record, the pointer and the lock
/// are written after any wait.
const DEADLINE_MARGIN: Duration = Duration::from_secs(10);

fn lock_of(record: &DeployRecord) -> DeployLock {
    DeployLock {
        app: record.app.clone(),
        environment: record.environment.clone(),
        holder: LockHolder {
            who: record.actor.clone(),
            release_id: record.release_id.clone(),
            since: record.started_at,
            run_token: String::new(),
            renewed_at: None,
            lease_seconds: None,
        },
        // Unknown across invocations: the store finds the lock by its holder.
        token: String::new(),
    }
}

impl Orchestrator {
    async fn recent(&self, environment: &str) -> Vec<DeployRecord> {
        match self
            .stages
            .records
            .history(&self.project.config.app.name, environment, RECENT_RECORDS)
            .await
        {
            Ok(records) => records,
            Err(err) => {
                self.events.warn(format!(
                    "could not read the deploy history of {environment}: {}",
                    err.message
                ));
                Vec::new()
            }
        }
    }

    /// Whether an event was acted on already. A refused run (lock held, bad input)
    /// changed nothing, so a retry of its event is not a redelivery.
    fn handled(records: &[DeployRecord], trigger: Option<&str>) -> bool {
        trigger.is_some_and(|t| {
            records
                .iter()
                .any(|r| r.trigger.as_deref() == Some(t) && r.outcome != RecordOutcome::Refused)
        })
    }

    /// Why a release request changes nothing: its event was handled already, or its
    /// image is already live or rolling out.
    fn duplicate(
        recent: &[DeployRecord],
        request: &DeployRequest,
        trigger: Option<&str>,
    ) -> Option<String> {
        if Self::handled(recent, trigger) {
            return Some(format!(
                "event {} was handled already",
                trigger.unwrap_or("")
            ));
        }
        let ReleaseSource::Image(ImageReference::Digest(digest)) = &request.source else {
            return None;
        };
        recent
            .iter()
            .find(|r| r.outcome != RecordOutcome::Refused)
            .filter(|r| {
                matches!(
                    r.outcome,
                    RecordOutcome::InProgress | RecordOutcome::Succeeded
                ) && r.image.as_ref().is_some_and(|i| &i.digest == digest)
            })
            .map(|r| {
                format!(
                    "{digest} is already {} as release {}",
                    if r.outcome == RecordOutcome::InProgress {
                        "rolling out"
                    } else {
                        "live"
                    },
                    r.release_id
                )
            })
    }

    /// Starts a release and returns once ECS has the new deployment: the release is
    /// recorded in progress and keeps the deploy lock until [`Orchestrator::finish_release`]
    /// (or [`Orchestrator::finish_overdue`]) ends it. A redelivered event (same `trigger`)
    /// or an image that is already live or rolling out changes nothing.
    pub async fn start_release(
        &self,
        mut request: DeployRequest,
        trigger: Option<String>,
    ) -> EventOutcome {
        let env = match self.project.environment(&request.environment) {
            Ok(env) => env.clone(),
            Err(err) => return EventOutcome::report(DeployReport::bad_input(err.to_string())),
        };
        // Pin the image first, so duplicates are recognised by digest.
        if let ReleaseSource::Image(ImageReference::Tag(tag)) = &request.source {
            match self
                .stages
                .registry
                .resolve(
                    &self.project.config.image.repository,
                    &ImageReference::Tag(tag.clone()),
                )
                .await
            {
                Ok(image) => {
                    request.source = ReleaseSource::Image(ImageReference::Digest(image.digest))
                }
                Err(err) if err.kind == StageErrorKind::BadInput => {
                    return EventOutcome::report(DeployReport::bad_input(err.message))
                }
                Err(err) => {
                    return EventOutcome::Retry(format!(
                        "could not resolve the image, nothing was changed: {}",
                        err.message
                    ))
                }
            }
        }
        // A redelivery is recognised before the lock: the release holding it may be the
        // very one this event started, and a refusal would be recorded under the same
        // release id (same second, same commit), overwriting that release's record.
        let recent = self.recent(&request.environment).await;
        if let Some(why) = Self::duplicate(&recent, &request, trigger.as_deref()) {
            return EventOutcome::Ignored(why);
        }
        let mut run = self.new_run(&request, &env);
        run.record.trigger = trigger.clone();
        // Kept across invocations with no renewer (until ECS's deployment event): the
        // lease covers the whole release.
        let lease = env.lock_lease()
            + Duration::from_secs(env.deploy.timeout_seconds + env.verify.bake_seconds);
        let lock = match self.try_lock(&run, lease).await {
            Ok(lock) => lock,
            // Another release holds the lock, or the store failed: nothing changed, and
            // the push must come again once that release is concluded.
            Err(err) if err.kind != StageErrorKind::BadInput => {
                return EventOutcome::Retry(format!(
                    "release {} not started, nothing was changed: {}",
                    run.record.release_id, err.message
                ))
            }
            Err(err) => {
                let ending = super::Ending::refused(&err);
                if recent.iter().any(|r| r.release_id == run.record.release_id) {
                    return EventOutcome::report(DeployReport {
                        outcome: ending.outcome.outcome(),
                        record: None,
                        message: ending.message,
                    });
                }
                return EventOutcome::report(self.finish(run, ending, false).await);
            }
        };
        // Again under the lock: another delivery may have started it meanwhile.
        let recent = self.recent(&request.environment).await;
        if let Some(why) = Self::duplicate(&recent, &request, trigger.as_deref()) {
            self.give_back(&lock).await;
            return EventOutcome::Ignored(why);
        }

        self.notify(&run, NotificationKind::Started, None).await;
        match self.start(&mut run, &env, &request).await {
            Ok(started) => {
                run.record.outcome = RecordOutcome::InProgress;
                self.record_in_progress(&run.record).await;
                let revision = run
                    .record
                    .revision
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                EventOutcome::report(DeployReport {
                    outcome: crate::Outcome::Succeeded,
                    message: format!(
                        "release {} started: deployment {} of {revision} on {}; it finishes when ECS reports the deployment",
                        run.record.release_id, started.deployment.id, run.target
                    ),
                    record: Some(run.record),
                })
            }
            Err(ending) => {
                self.give_back(&lock).await;
                EventOutcome::report(self.finish(run, ending, true).await)
            }
        }
    }

    /// Finishes the release in progress that follows `deployment_id`, from ECS's
    /// deployment event: verify and record on success; start a rollback (recorded, not
    /// waited for) on failure. The rollback's own deployment event concludes it. Only the
    /// invocation that wins the conditional write on the record acts.
    pub async fn finish_release(
        &self,
        environment: &str,
        deployment_id: &str,
        result: DeploymentResult,
    ) -> EventOutcome {
        let env = match self.project.environment(environment) {
            Ok(env) => env.clone(),
            Err(err) => return EventOutcome::report(DeployReport::bad_input(err.to_string())),
        };
        let Some(current) = self.release_in_progress(environment).await else {
            return EventOutcome::Ignored(format!(
                "no release of {environment} in progress follows deployment {deployment_id}"
            ));
        };
        let record = &current.record;
        let by = format!("ecs deployment {deployment_id}");
        if record.rollback_deployment_id.as_deref() == Some(deployment_id) {
            return self.finish_rollback(current, &env, result, by).await;
        }
        if record.deployment_id.as_deref() != Some(deployment_id) {
            return EventOutcome::Ignored(format!(
                "no release of {environment} in progress follows deployment {deployment_id}"
            ));
        }
        if let Some(why) = Self::taken(record) {
            return EventOutcome::Ignored(why);
        }
        let failure = match result {
            DeploymentResult::Completed => None,
            DeploymentResult::Failed { reason } => Some(format!("rollout failed: {reason}")),
        };
        self.conclude(current, &env, failure, by).await
    }

    /// Why a release in progress is not this event's to conclude: its rollback is under
    /// way, or another invocation claimed it.
    fn taken(record: &DeployRecord) -> Option<String> {
        if let Some(id) = &record.rollback_deployment_id {
            return Some(format!(
                "release {} is rolling back (deployment {id}): that deployment's event concludes it",
                record.release_id
            ));
        }
        record.concluding.as_ref().map(|c| {
            format!(
                "release {} is already being concluded by another invocation ({}, since {})",
                record.release_id, c.by, c.since
            )
        })
    }

    /// The environment's release in progress, by its pointer (by the newest records for
    /// one started before there were pointers), with the record's version.
    async fn release_in_progress(&self, environment: &str) -> Option<VersionedRecord> {
        let app = &self.project.config.app.name;
        let records = &self.stages.records;
        let id = match records.in_progress(app, environment).await {
            Ok(InProgressPointer::Release(id)) => id,
            Ok(InProgressPointer::Nothing) => return None,
            Ok(InProgressPointer::Unknown) => {
                self.recent(environment)
                    .await
                    .into_iter()
                    .find(|r| r.outcome == RecordOutcome::InProgress)?
                    .release_id
            }
            Err(err) => {
                self.events.warn(format!(
                    "could not read the release in progress of {environment}: {}",
                    err.message
                ));
                return None;
            }
        };
        match records.read_record(app, environment, &id).await {
            Ok(found) => found.filter(|v| v.record.outcome == RecordOutcome::InProgress),
            Err(err) => {
                self.events.warn(format!(
                    "could not read the record of release {id}: {}",
                    err.message
                ));
                None
            }
        }
    }

    /// Writes a release's in-progress record and points the environment at it.
    async fn record_in_progress(&self, record: &DeployRecord) {
        if let Err(err) = self.stages.records.put_record(record).await {
            self.events.warn(format!(
                "could not record release {} as in progress: {}",
                record.release_id, err.message
            ));
        }
        if let Err(err) = self
            .stages
            .records
            .set_in_progress(
                &record.app,
                &record.environment,
                Some(record.release_id.clone()),
            )
            .await
        {
            self.events.warn(format!(
                "could not point {} at its release in progress {}: {}",
                record.environment, record.release_id, err.message
            ));
        }
    }

    /// Claims the conclusion of a release in progress: a write conditional on the version
    /// read. The loser of a race (or a store that failed) gets the outcome to return.
    async fn claim(
        &self,
        current: VersionedRecord,
        by: String,
    ) -> Result<(DeployRecord, String), EventOutcome> {
        let mut record = current.record;
        record.concluding = Some(Concluding {
            by,
            since: self.clock.now(),
        });
        match self
            .stages
            .records
            .put_record_if(&record, &current.version)
            .await
        {
            Ok(Some(version)) => Ok((record, version)),
            Ok(None) => Err(EventOutcome::Ignored(format!(
                "release {} was already concluded by another invocation",
                record.release_id
            ))),
            Err(err) => Err(EventOutcome::Retry(format!(
                "could not claim release {}: {}",
                record.release_id, err.message
            ))),
        }
    }

    /// How long a wait may last: up to the deadline less the margin (no deadline: `wanted`).
    fn time_left(&self, wanted: Duration) -> Duration {
        match self.deadline {
            Some(deadline) => wanted.min(
                deadline
                    .saturating_duration_since(tokio::time::Instant::now())
                    .saturating_sub(DEADLINE_MARGIN),
            ),
            None => wanted,
        }
    }

    fn run_of(record: DeployRecord, env: &EnvironmentConfig) -> Run {
        let target = env.target(&record.app, &record.environment);
        Run {
            record,
            target,
            started: Instant::now(),
            cancel: CancellationToken::new(),
            lease: None,
            seen_at_start: None,
        }
    }

    /// Ends a release in progress that this invocation claims: verification after a
    /// completed rollout (cut short by the deadline: a failure), or a rollback started
    /// with `failure` as the reason.
    async fn conclude(
        &self,
        current: VersionedRecord,
        env: &EnvironmentConfig,
        failure: Option<String>,
        by: String,
    ) -> EventOutcome {
        let (record, version) = match self.claim(current, by).await {
            Ok(claimed) => claimed,
            Err(outcome) => return outcome,
        };
        let mut run = Self::run_of(record, env);
        let failure = match failure {
            Some(reason) => Some(reason),
            None => self.verify_completed(&mut run, env).await,
        };
        let Some(reason) = failure else {
            let keep = env.rollback.keep_revisions;
            if keep > 0 {
                self.prune(&run, keep).await;
            }
            let message = format!(
                "released {} to {} ({})",
                run.record.release_id, run.target.environment, run.target
            );
            let ending = Ending {
                outcome: RecordOutcome::Succeeded,
                reason: None,
                message,
            };
            return EventOutcome::report(self.conclude_with(run, ending, &version).await);
        };
        match self.issue_rollback(&mut run, env, &reason).await {
            Ok((to, deployment)) => {
                self.rolling_back(run, &reason, &to, &deployment, Some(&version))
                    .await
            }
            Err(ending) => EventOutcome::report(self.conclude_with(run, ending, &version).await),
        }
    }

    /// Verifies a completed rollout within the time left; `Some(reason)` when it failed.
    async fn verify_completed(&self, run: &mut Run, env: &EnvironmentConfig) -> Option<String> {
        let (Some(revision), Some(image)) = (run.record.revision.clone(), run.record.image.clone())
        else {
            return Some("the release record names no revision or image".into());
        };
        let cancel = CancellationToken::new();
        let wanted = Duration::from_secs(env.verify.bake_seconds) + env_timeout(env);
        let left = self.time_left(wanted);
        match tokio::time::timeout(left, self.verify(run, &revision, &image, &cancel)).await {
            Ok(verdict) => verdict,
            Err(_) => Some(format!(
                "verification did not finish within the invocation's time left ({}s)",
                left.as_secs()
            )),
        }
    }

    /// Issues the rollback of a release (no wait): the revision it goes back to and the
    /// rollback's deployment, or how the release ends when there is nothing to roll back
    /// to, automatic rollback is off, or ECS refused.
    async fn issue_rollback(
        &self,
        run: &mut Run,
        env: &EnvironmentConfig,
        reason: &str,
    ) -> Result<(Revision, DeploymentHandle), Ending> {
        let previous = run.record.previous_revision.clone();
        let Some(previous) = previous.filter(|_| env.rollback.automatic) else {
            // Nothing to wait for on these paths: `recover` only says why.
            return Err(self
                .recover(
                    run,
                    env,
                    run.record.previous_revision.clone().as_ref(),
                    reason,
                )
                .await);
        };
        let to = self.restorable(&run.target, &previous).await;
        let issued = match to {
            Ok(to) => self
                .stages
                .deployer
                .roll_back(
                    &run.target,
                    &RestoreRequest {
                        to: to.clone(),
                        from: run.record.revision.clone(),
                    },
                )
                .await
                .map(|deployment| (to, deployment))
                .map_err(|err| err.message),
            Err(failure) => Err(failure),
        };
        issued.map_err(|failure| Ending {
            outcome: RecordOutcome::NotRestored,
            reason: Some(format!("{reason}; rollback failed: {failure}")),
            message: format!(
                "{reason}. THE ROLLBACK TO {previous} FAILED ({failure}). Run `tugboat status --env {env}`, then `tugboat rollback --env {env} --to {previous}`.",
                env = run.target.environment
            ),
        })
    }

    /// Records a rollback under way: the record stays in progress, keeps the lock and
    /// names the rollback's deployment, whose event (or the sweep) concludes it.
    async fn rolling_back(
        &self,
        mut run: Run,
        reason: &str,
        to: &Revision,
        deployment: &DeploymentHandle,
        version: Option<&str>,
    ) -> EventOutcome {
        run.record.outcome = RecordOutcome::InProgress;
        run.record.reason = Some(format!(
            "{reason}; rolling back to {to} (deployment {})",
            deployment.id
        ));
        run.record.rollback_deployment_id = Some(deployment.id.clone());
        run.record.rollback_started_at = Some(self.clock.now());
        // Free for the rollback's own event to claim.
        run.record.concluding = None;
        match version {
            Some(version) => self.write_claimed(&run.record, version).await,
            None => self.record_in_progress(&run.record).await,
        }
        let message = format!(
            "{reason}; rolling back {} to {to} (deployment {}): it is concluded when ECS reports that deployment",
            run.target, deployment.id
        );
        EventOutcome::report(DeployReport {
            outcome: crate::Outcome::FailedRestored,
            record: Some(run.record),
            message,
        })
    }

    /// Writes a claimed record; a version that changed meanwhile is a warning (the claim
    /// was taken over by the sweep).
    async fn write_claimed(&self, record: &DeployRecord, version: &str) {
        match self.stages.records.put_record_if(record, version).await {
            Ok(Some(_)) => {}
            Ok(None) => self.events.warn(format!(
                "the record of release {} changed while this invocation concluded it",
                record.release_id
            )),
            Err(err) => self.events.warn(format!(
                "could not write the deploy record of {}: {}",
                record.release_id, err.message
            )),
        }
    }

    /// The final record (conditional on the claim), then the pointer, then the lock,
    /// then the notification.
    async fn conclude_with(&self, mut run: Run, ending: Ending, version: &str) -> DeployReport {
        run.record.outcome = ending.outcome;
        run.record.reason = ending.reason.clone();
        run.record.finished_at = Some(self.clock.now());
        self.write_claimed(&run.record, version).await;
        if let Err(err) = self
            .stages
            .records
            .set_in_progress(&run.record.app, &run.record.environment, None)
            .await
        {
            self.events.warn(format!(
                "could not clear the release in progress of {}: {}",
                run.record.environment, err.message
            ));
        }
        self.give_back(&lock_of(&run.record)).await;
        let kind = match ending.outcome {
            RecordOutcome::Succeeded | RecordOutcome::InProgress => NotificationKind::Succeeded,
            RecordOutcome::RolledBack => NotificationKind::RolledBack,
            _ => NotificationKind::Failed,
        };
        self.notify(&run, kind, ending.reason.clone()).await;
        DeployReport {
            outcome: ending.outcome.outcome(),
            record: Some(run.record),
            message: ending.message,
        }
    }

    /// The revision a rollback under way goes back to.
    fn rollback_target(record: &DeployRecord) -> Option<Revision> {
        if record.rollback_of.is_some() {
            record.revision.clone()
        } else {
            record.previous_revision.clone()
        }
    }

    /// Concludes a rollback under way from its deployment's end: rolled back, or not
    /// restored.
    async fn finish_rollback(
        &self,
        current: VersionedRecord,
        env: &EnvironmentConfig,
        result: DeploymentResult,
        by: String,
    ) -> EventOutcome {
        let (record, version) = match self.claim(current, by).await {
            Ok(claimed) => claimed,
            Err(outcome) => return outcome,
        };
        let run = Self::run_of(record, env);
        let why = run
            .record
            .reason
            .clone()
            .unwrap_or_else(|| "rolled back".into());
        let to = Self::rollback_target(&run.record)
            .map(|r| r.to_string())
            .unwrap_or_else(|| "the previous revision".into());
        let environment = run.target.environment.clone();
        let ending = match result {
            DeploymentResult::Completed => Ending {
                outcome: RecordOutcome::RolledBack,
                reason: Some(why.clone()),
                message: format!("{why}. Rolled back: the service {} is on {to} again.", run.target),
            },
            DeploymentResult::Failed { reason } => Ending {
                outcome: RecordOutcome::NotRestored,
                reason: Some(format!("{why}; rollback failed: {reason}")),
                message: format!(
                    "{why}. THE ROLLBACK TO {to} FAILED ({reason}). Run `tugboat status --env {environment}`, then `tugboat rollback --env {environment} --to {to}`."
                ),
            },
        };
        EventOutcome::report(self.conclude_with(run, ending, &version).await)
    }

    /// Looks once at a deployment: `None` completed, else why not.
    async fn look_once(
        &self,
        env: &EnvironmentConfig,
        record: &DeployRecord,
        handle: DeploymentHandle,
        timeout: Duration,
    ) -> Option<String> {
        let target = env.target(&record.app, &record.environment);
        // One look, judged by the same rule as the wait loop's; a look that finds it still
        // going abandons nothing (the caller decides).
        let mut watch = self.stages.deployer.watch_rollout(&target, &handle);
        match watch.observe(&self.events).await {
            Ok(observation) => match judge_rollout(&handle, &observation.state) {
                Some(RolloutOutcome::Completed) => None,
                Some(other) => Some(other.describe()),
                None => Some(format!(
                    "deployment {} did not finish within {}s",
                    handle.id,
                    timeout.as_secs()
                )),
            },
            Err(err) => Some(format!("could not look at the rollout: {}", err.message)),
        }
    }

    /// Finishes the release of `environment` in progress past its rollout timeout (its
    /// ECS event was lost), or its rollback past the timeout, or a conclusion an
    /// invocation claimed and never finished: looks at the deployment once, then
    /// verifies, rolls back or records the rollback's end.
    pub async fn finish_overdue(&self, environment: &str) -> Vec<EventOutcome> {
        let Ok(env) = self.project.environment(environment).cloned() else {
            return Vec::new();
        };
        let Some(current) = self.release_in_progress(environment).await else {
            return Vec::new();
        };
        let now = self.clock.now();
        let timeout = env_timeout(&env);
        let older = |since: chrono::DateTime<chrono::Utc>, than: Duration| {
            (now - since).to_std().is_ok_and(|age| age > than)
        };
        let record = current.record.clone();
        // A claim lasts as long as verification may (bake and the time to start it).
        let claim_lasts = timeout + Duration::from_secs(env.verify.bake_seconds);
        if record
            .concluding
            .as_ref()
            .is_some_and(|c| !older(c.since, claim_lasts))
        {
            return Vec::new();
        }
        if let Some(id) = &record.rollback_deployment_id {
            let since = record.rollback_started_at.unwrap_or(record.started_at);
            if !older(since, timeout) {
                return Vec::new();
            }
            let result = match Self::rollback_target(&record) {
                Some(revision) => {
                    let handle = DeploymentHandle {
                        id: id.clone(),
                        revision,
                    };
                    match self.look_once(&env, &record, handle, timeout).await {
                        None => DeploymentResult::Completed,
                        Some(reason) => DeploymentResult::Failed { reason },
                    }
                }
                None => DeploymentResult::Failed {
                    reason: "the record names no revision the rollback goes back to".into(),
                },
            };
            return vec![
                self.finish_rollback(current, &env, result, "the sweep".into())
                    .await,
            ];
        }
        if !older(record.started_at, timeout) {
            return Vec::new();
        }
        let failure = match (&record.deployment_id, &record.revision) {
            (Some(id), Some(revision)) => {
                let handle = DeploymentHandle {
                    id: id.clone(),
                    revision: revision.clone(),
                };
                self.look_once(&env, &record, handle, timeout)
                    .await
                    .map(|why| format!("release {}: {why}", record.release_id))
            }
            _ => Some("the release record names no deployment to look at".to_string()),
        };
        vec![
            self.conclude(current, &env, failure, "the sweep".into())
                .await,
        ]
    }

    /// An alarm entered ALARM. For each environment that watches it: roll the current
    /// release back while it is inside its bake window (or still rolling out); after
    /// that, only tell people.
    pub async fn alarm_fired(
        &self,
        alarm: &str,
        reason: &str,
        trigger: Option<String>,
    ) -> Vec<(String, EventOutcome)> {
        let watching: Vec<(String, EnvironmentConfig)> = self
            .project
            .config
            .environments
            .iter()
            .filter(|(_, env)| env.verify.alarms.iter().any(|a| a == alarm))
            .map(|(name, env)| (name.clone(), env.clone()))
            .collect();
        let mut outcomes = Vec::new();
        for (name, env) in watching {
            let outcome = self
                .alarm_in(&name, &env, alarm, reason, trigger.clone())
                .await;
            outcomes.push((name, outcome));
        }
        outcomes
    }

    /// [`Orchestrator::alarm_fired`] for one environment only (a front end whose stages
    /// serve that environment alone): `Ignored` when it does not watch the alarm.
    pub async fn alarm_fired_in(
        &self,
        environment: &str,
        alarm: &str,
        reason: &str,
        trigger: Option<String>,
    ) -> EventOutcome {
        let env = match self.project.environment(environment) {
            Ok(env) => env.clone(),
            Err(err) => return EventOutcome::report(DeployReport::bad_input(err.to_string())),
        };
        if !env.verify.alarms.iter().any(|a| a == alarm) {
            return EventOutcome::Ignored(format!(
                "{environment} does not watch alarm {alarm} (verify.alarms)"
            ));
        }
        self.alarm_in(environment, &env, alarm, reason, trigger)
            .await
    }

    async fn alarm_in(
        &self,
        environment: &str,
        env: &EnvironmentConfig,
        alarm: &str,
        reason: &str,
        trigger: Option<String>,
    ) -> EventOutcome {
        let recent = self.recent(environment).await;
        if Self::handled(&recent, trigger.as_deref()) {
            return EventOutcome::Ignored(format!(
                "alarm event {} was handled already",
                trigger.unwrap_or_default()
            ));
        }
        let why = format!("alarm {alarm} entered ALARM: {reason}");
        if let Some(current) = self.release_in_progress(environment).await {
            if let Some(taken) = Self::taken(&current.record) {
                return EventOutcome::Ignored(taken);
            }
            return self
                .conclude(current, env, Some(why), format!("alarm {alarm}"))
                .await;
        }
        let Some(latest) = recent
            .iter()
            .find(|r| r.outcome != RecordOutcome::Refused)
            .cloned()
        else {
            return EventOutcome::Ignored(format!("{environment} has no release to roll back"));
        };
        let bake = Duration::from_secs(env.verify.bake_seconds);
        let in_bake = latest.outcome == RecordOutcome::Succeeded
            && latest.rollback_of.is_none()
            && latest.finished_at.is_some_and(|done| {
                (self.clock.now() - done)
                    .to_std()
                    .map_or(true, |age| age <= bake)
            });
        match (&latest.previous_revision, in_bake) {
            (Some(previous), true) => {
                self.roll_back_to(
                    environment,
                    env,
                    previous.clone(),
                    Some(latest.release_id.clone()),
                    format!("alarm:{alarm}"),
                    why,
                    trigger,
                )
                .await
            }
            _ => {
                let message = format!(
                    "{why}; release {} of {environment} is past its bake window, so tugboat did not roll it back",
                    latest.release_id
                );
                let notification = Notification {
                    kind: NotificationKind::Failed,
                    app: latest.app.clone(),
                    environment: environment.to_string(),
                    release_id: latest.release_id.clone(),
                    image_digest: latest.image.as_ref().map(|i| i.digest.clone()),
                    duration: None,
                    reason: Some(message.clone()),
                };
                for notifier in &self.stages.notifiers {
                    if let Err(err) = notifier.notify(&notification).await {
                        self.events
                            .warn(format!("notification not sent: {}", err.message));
                    }
                }
                EventOutcome::Notified(message)
            }
        }
    }

    /// Starts rolling an environment back to `revision` under the lock, recording
    /// `rollback_of`, the reason and the triggering event: the record stays in progress
    /// and keeps the lock until the rollback's deployment event (or the sweep).
    #[allow(clippy::too_many_arguments)]
    async fn roll_back_to(
        &self,
        environment: &str,
        env: &EnvironmentConfig,
        revision: Revision,
        rollback_of: Option<ReleaseId>,
        actor: String,
        reason: String,
        trigger: Option<String>,
    ) -> EventOutcome {
        let request = DeployRequest {
            environment: environment.to_string(),
            source: ReleaseSource::Build,
            git: crate::model::GitInfo::default(),
            actor,
            cancel: CancellationToken::new(),
        };
        let mut run = self.new_run(&request, env);
        run.record.revision = Some(revision.clone());
        run.record.rollback_of = rollback_of;
        run.record.trigger = trigger;
        run.record.previous_revision = self
            .stages
            .deployer
            .current_revision(&run.target)
            .await
            .ok()
            .flatten();
        let lease = env.lock_lease() + env_timeout(env);
        let lock = match self.take_lock(&run, lease).await {
            Ok(lock) => lock,
            Err(ending) => return EventOutcome::report(self.finish(run, ending, false).await),
        };
        self.events
            .emit(crate::events::PipelineEvent::RollbackStarted {
                to: revision.clone(),
                reason: reason.clone(),
            });
        let issued = match self.restorable(&run.target, &revision).await {
            Ok(to) => self
                .stages
                .deployer
                .roll_back(
                    &run.target,
                    &RestoreRequest {
                        to: to.clone(),
                        from: run.record.previous_revision.clone(),
                    },
                )
                .await
                .map(|deployment| (to, deployment))
                .map_err(|err| err.message),
            Err(failure) => Err(failure),
        };
        match issued {
            Ok((to, deployment)) => {
                run.record.revision = Some(to.clone());
                self.rolling_back(run, &reason, &to, &deployment, None)
                    .await
            }
            Err(failure) => {
                self.give_back(&lock).await;
                let ending = Ending {
                    outcome: RecordOutcome::NotRestored,
                    reason: Some(format!("{reason}; rollback failed: {failure}")),
                    message: format!(
                        "{reason}. THE ROLLBACK TO {revision} FAILED ({failure}). Run `tugboat status --env {environment}`, then `tugboat rollback --env {environment} --to {revision}`."
                    ),
                };
                EventOutcome::report(self.finish(run, ending, true).await)
            }
        }
    }
}
