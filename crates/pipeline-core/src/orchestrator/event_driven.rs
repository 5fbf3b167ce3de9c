//! Releases driven by events instead of one process waiting: the Lambda front end starts
//! a release (register, update, record it in progress, keep the lock) and returns; the
//! ECS deployment event finishes it (verify, record, notify, release the lock), an alarm
//! inside the bake window rolls it back, and any later invocation finishes a release
//! whose event never came. Every step is idempotent: events arrive at least once.

use super::{env_timeout, Ending, Orchestrator, Run};
use crate::model::{
    DeployLock, DeployRecord, DeploymentHandle, ImageReference, LockHolder, RecordOutcome,
    ReleaseId, RolloutOutcome,
};
use crate::orchestrator::{DeployReport, DeployRequest, ReleaseSource};
use crate::stages::{Notification, NotificationKind, StageErrorKind, WaitOptions};
use crate::EnvironmentConfig;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

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

/// How many records are read to find in-progress releases and handled events.
const RECENT_RECORDS: usize = 50;

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
            .artifacts
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
                if let Err(err) = self.stages.artifacts.put_record(&run.record).await {
                    self.events.warn(format!(
                        "could not record release {} as in progress: {}",
                        run.record.release_id, err.message
                    ));
                }
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

    /// Finishes the in-progress release that follows `deployment_id`, from ECS's
    /// deployment event: verify and record on success; roll back (unless ECS already
    /// did) on failure. Releases the deploy lock.
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
        let recent = self.recent(environment).await;
        let Some(record) = recent
            .iter()
            .find(|r| {
                r.outcome == RecordOutcome::InProgress
                    && r.deployment_id.as_deref() == Some(deployment_id)
            })
            .cloned()
        else {
            return EventOutcome::Ignored(format!(
                "no release of {environment} in progress follows deployment {deployment_id}"
            ));
        };
        let ending = match result {
            DeploymentResult::Completed => None,
            DeploymentResult::Failed { reason } => Some(format!("rollout failed: {reason}")),
        };
        EventOutcome::report(self.conclude(record, &env, ending).await)
    }

    /// Ends an in-progress release: verification after a completed rollout, or a
    /// rollback with `failure` as the reason; then the record, the notification and the lock.
    async fn conclude(
        &self,
        record: DeployRecord,
        env: &EnvironmentConfig,
        failure: Option<String>,
    ) -> DeployReport {
        let lock = lock_of(&record);
        let target = env.target(&record.app, &record.environment);
        let mut run = Run {
            record,
            target,
            started: Instant::now(),
            cancel: CancellationToken::new(),
            lease: None,
        };
        let ending = match failure {
            None => {
                self.after_rollout(&mut run, env, &CancellationToken::new())
                    .await
            }
            Some(reason) => {
                let previous = run.record.previous_revision.clone();
                self.recover(&mut run, env, previous.as_ref(), &reason)
                    .await
            }
        };
        self.give_back(&lock).await;
        self.finish(run, ending, true).await
    }

    /// Finishes releases of `environment` still in progress past their rollout
    /// timeout (their ECS event was lost): looks at the deployment once, then verifies or
    /// rolls back.
    pub async fn finish_overdue(&self, environment: &str) -> Vec<EventOutcome> {
        let Ok(env) = self.project.environment(environment).cloned() else {
            return Vec::new();
        };
        let now = self.clock.now();
        let timeout = env_timeout(&env);
        let overdue: Vec<DeployRecord> = self
            .recent(environment)
            .await
            .into_iter()
            .filter(|r| r.outcome == RecordOutcome::InProgress)
            .filter(|r| (now - r.started_at).to_std().is_ok_and(|age| age > timeout))
            .collect();
        let mut outcomes = Vec::new();
        for record in overdue {
            let target = env.target(&record.app, &record.environment);
            let failure = match (&record.deployment_id, &record.revision) {
                (Some(id), Some(revision)) => {
                    let handle = DeploymentHandle {
                        id: id.clone(),
                        revision: revision.clone(),
                    };
                    let once = WaitOptions {
                        timeout: Duration::ZERO,
                        poll_interval: Duration::from_millis(1),
                    };
                    match self
                        .stages
                        .deployer
                        .wait_for_rollout(&target, &handle, &once, &self.events)
                        .await
                    {
                        Ok(RolloutOutcome::Completed) => None,
                        Ok(RolloutOutcome::TimedOut { .. }) => Some(format!(
                            "release {} did not finish within {}s",
                            record.release_id,
                            timeout.as_secs()
                        )),
                        Ok(other) => Some(other.describe()),
                        Err(err) => Some(format!("could not look at the rollout: {}", err.message)),
                    }
                }
                _ => Some("the release record names no deployment to look at".to_string()),
            };
            outcomes.push(EventOutcome::report(
                self.conclude(record, &env, failure).await,
            ));
        }
        outcomes
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
        let Some(latest) = recent
            .iter()
            .find(|r| r.outcome != RecordOutcome::Refused)
            .cloned()
        else {
            return EventOutcome::Ignored(format!("{environment} has no release to roll back"));
        };
        let why = format!("alarm {alarm} entered ALARM: {reason}");
        if latest.outcome == RecordOutcome::InProgress {
            return EventOutcome::report(self.conclude(latest, env, Some(why)).await);
        }
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
                let report = self
                    .roll_back_to(
                        environment,
                        env,
                        previous.clone(),
                        Some(latest.release_id.clone()),
                        format!("alarm:{alarm}"),
                        why,
                        trigger,
                    )
                    .await;
                EventOutcome::report(report)
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

    /// Rolls an environment back to `revision` under the lock, recording `rollback_of`,
    /// the reason and the triggering event.
    #[allow(clippy::too_many_arguments)]
    async fn roll_back_to(
        &self,
        environment: &str,
        env: &EnvironmentConfig,
        revision: crate::model::Revision,
        rollback_of: Option<ReleaseId>,
        actor: String,
        reason: String,
        trigger: Option<String>,
    ) -> DeployReport {
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
        let result = match self.perform_rollback(&mut run, env, &reason).await {
            Ok(result) => result,
            Err(ending) => return self.finish(run, ending, false).await,
        };
        let ending = match result {
            Ok(()) => Ending {
                outcome: RecordOutcome::RolledBack,
                reason: Some(reason.clone()),
                message: format!("{reason}. Rolled back: {} is on {revision} again.", run.target),
            },
            Err(failure) => Ending {
                outcome: RecordOutcome::NotRestored,
                reason: Some(format!("{reason}; rollback failed: {failure}")),
                message: format!(
                    "{reason}. THE ROLLBACK TO {revision} FAILED ({failure}). Run `tugboat status --env {environment}`, then `tugboat rollback --env {environment} --to {revision}`."
                ),
            },
        };
        self.finish(run, ending, true).await
    }
}
