//! The one wait loop and the one success rule, for every deploy target.
//!
//! A [`Deployer`] only translates: [`Deployer::watch_rollout`] gives a [`RolloutWatch`]
//! whose every look says where the deployment stands ([`RolloutState`]), with its counts
//! and the service events new since the look before. This loop decides how often to look
//! (the poll interval, longer while the platform throttles), how long (the timeout), what
//! people are told (progress, events, rising task failures) and what the answer means
//! ([`judge_rollout`]). Cancellation is the caller's: the future is safe to drop between
//! looks.

use super::release_safety::same_revision;
use crate::events::{Events, PipelineEvent};
use crate::model::{DeployTarget, DeploymentHandle, RolloutOutcome};
use crate::stages::{
    Deployer, RolloutProgress, RolloutState, RolloutWatch, StageError, StageErrorKind, WaitOptions,
};
use std::time::Duration;
use tokio::time::Instant;

/// Errors in a row (not throttling) after which the loop stops looking and says why.
pub const MAX_CONSECUTIVE_ERRORS: u32 = 5;
/// The longest pause between two looks while the platform throttles.
pub const MAX_THROTTLE_BACKOFF: Duration = Duration::from_secs(30);

/// The success rule: a rollout succeeded only when *the deployment this run created*
/// completed and serves *the revision this run registered*. A deployment that completed
/// on another revision was replaced; failed, rolled back by the platform, replaced or
/// gone are failures. `None`: still going.
pub fn judge_rollout(expected: &DeploymentHandle, state: &RolloutState) -> Option<RolloutOutcome> {
    use RolloutOutcome as O;
    match state {
        RolloutState::InProgress => None,
        RolloutState::Completed { revision } if same_revision(revision, &expected.revision) => {
            Some(O::Completed)
        }
        RolloutState::Completed { revision } => Some(O::Replaced {
            by: format!(
                "{} (revision {}, not {})",
                expected.id, revision.label, expected.revision.label
            ),
        }),
        RolloutState::Failed { reason } => Some(O::Failed {
            reason: reason.clone(),
        }),
        RolloutState::RolledBackByPlatform { reason } => Some(O::RolledBackByPlatform {
            reason: reason.clone(),
        }),
        RolloutState::Replaced { by } => Some(O::Replaced { by: by.clone() }),
        RolloutState::Gone => Some(O::Gone),
    }
}

/// Follows the deployment `deployment` of `target` until [`judge_rollout`] has an answer
/// or `options.timeout` passes ([`RolloutOutcome::TimedOut`], after the watch was told to
/// abandon it). `Err` only when the platform could not be observed
/// [`MAX_CONSECUTIVE_ERRORS`] times in a row, or said the input was wrong.
pub async fn follow_rollout(
    deployer: &dyn Deployer,
    target: &DeployTarget,
    deployment: &DeploymentHandle,
    options: &WaitOptions,
    events: &Events,
) -> Result<RolloutOutcome, StageError> {
    let mut watch = deployer.watch_rollout(target, deployment);
    follow(watch.as_mut(), deployment, options, events).await
}

/// [`follow_rollout`] with a watch already made.
pub async fn follow(
    watch: &mut dyn RolloutWatch,
    deployment: &DeploymentHandle,
    options: &WaitOptions,
    events: &Events,
) -> Result<RolloutOutcome, StageError> {
    let deadline = Instant::now() + options.timeout;
    let mut told = Told::default();
    let mut throttle_backoff: Option<Duration> = None;
    let mut consecutive_errors = 0;
    loop {
        match watch.observe(events).await {
            Ok(observation) => {
                consecutive_errors = 0;
                throttle_backoff = None;
                if let Some(progress) = &observation.progress {
                    told.progress(progress, events);
                }
                for event in observation.new_events {
                    events.emit(PipelineEvent::ServiceEvent {
                        at: event.at,
                        message: event.message,
                    });
                }
                if let Some(what) = &observation.waiting_for {
                    told.waiting(what);
                }
                if let Some(outcome) = judge_rollout(deployment, &observation.state) {
                    return Ok(outcome);
                }
            }
            Err(err) if err.kind == StageErrorKind::Throttled => {
                let next = throttle_backoff.map_or(options.poll_interval * 2, |b| b * 2);
                throttle_backoff = Some(next.min(MAX_THROTTLE_BACKOFF));
                events.warn(format!("{}; looking less often", err.message));
            }
            Err(err)
                if matches!(
                    err.kind,
                    StageErrorKind::BadInput | StageErrorKind::LockHeld
                ) =>
            {
                return Err(err)
            }
            Err(err) => {
                consecutive_errors += 1;
                if consecutive_errors >= MAX_CONSECUTIVE_ERRORS {
                    return Err(err);
                }
            }
        }
        let now = Instant::now();
        if now >= deadline {
            let mut reason = format!("not ready within {}s", options.timeout.as_secs());
            if let Some(what) = &told.waiting_for {
                reason.push_str(&format!(": {what}"));
            }
            if let Err(err) = watch.abandon(&reason, events).await {
                events.warn(format!(
                    "the abandoned deployment {} was not stopped: {}",
                    deployment.id, err.message
                ));
            }
            return Ok(RolloutOutcome::TimedOut {
                after: options.timeout,
            });
        }
        let pause = throttle_backoff.unwrap_or(options.poll_interval);
        tokio::time::sleep(pause.min(deadline - now)).await;
    }
}

/// What the loop has told already, so that only changes are told again.
#[derive(Default)]
struct Told {
    counts: Option<(String, String, u32, u32, u32, u32)>,
    failed_tasks: u32,
    waiting_for: Option<String>,
}

impl Told {
    fn progress(&mut self, progress: &RolloutProgress, events: &Events) {
        let counts = (
            progress.deployment.clone(),
            progress.state.clone(),
            progress.running,
            progress.pending,
            progress.desired,
            progress.failed_tasks,
        );
        if self.counts.as_ref() != Some(&counts) {
            events.emit(PipelineEvent::RolloutProgress {
                deployment: progress.deployment.clone(),
                state: progress.state.clone(),
                running: progress.running,
                pending: progress.pending,
                desired: progress.desired,
                failed_tasks: progress.failed_tasks,
            });
            self.counts = Some(counts);
        }
        if progress.failed_tasks > self.failed_tasks {
            events.warn(format!(
                "{} task(s) of deployment {} failed to start or stay healthy ({} in all); \
                 the circuit breaker may roll it back",
                progress.failed_tasks - self.failed_tasks,
                progress.deployment,
                progress.failed_tasks
            ));
            self.failed_tasks = progress.failed_tasks;
        }
    }

    fn waiting(&mut self, what: &str) {
        if self.waiting_for.as_deref() != Some(what) {
            self.waiting_for = Some(what.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Revision;
    use crate::stages::{MockRolloutWatch, ObservedEvent, RolloutObservation};
    use crate::RecordedEvents;

    fn handle() -> DeploymentHandle {
        DeploymentHandle {
            id: "ecs-svc/1".into(),
            revision: Revision::new("arn:aws:ecs:r:1:task-definition/app:7", "app:7"),
        }
    }

    #[test]
    fn success_is_our_deployment_completed_on_our_revision_only() {
        use RolloutOutcome as O;
        let ours = handle();
        let other = Revision::new("arn:aws:ecs:r:1:task-definition/app:6", "app:6");
        let cases: Vec<(&str, RolloutState, Option<RolloutOutcome>)> = vec![
            ("in progress", RolloutState::InProgress, None),
            (
                "completed on ours",
                RolloutState::Completed {
                    revision: ours.revision.clone(),
                },
                Some(O::Completed),
            ),
            (
                "completed on ours, named by label only",
                RolloutState::Completed {
                    revision: Revision::new("app:7", "app:7"),
                },
                Some(O::Completed),
            ),
            (
                "completed on another revision",
                RolloutState::Completed { revision: other },
                Some(O::Replaced {
                    by: "ecs-svc/1 (revision app:6, not app:7)".into(),
                }),
            ),
            (
                "failed",
                RolloutState::Failed { reason: "x".into() },
                Some(O::Failed { reason: "x".into() }),
            ),
            (
                "rolled back",
                RolloutState::RolledBackByPlatform {
                    reason: "cb".into(),
                },
                Some(O::RolledBackByPlatform {
                    reason: "cb".into(),
                }),
            ),
            (
                "replaced",
                RolloutState::Replaced { by: "d2".into() },
                Some(O::Replaced { by: "d2".into() }),
            ),
            ("gone", RolloutState::Gone, Some(O::Gone)),
        ];
        for (name, state, expected) in cases {
            assert_eq!(judge_rollout(&ours, &state), expected, "{name}");
        }
    }

    fn progress(running: u32, failed: u32) -> RolloutProgress {
        RolloutProgress {
            deployment: "ecs-svc/1".into(),
            state: "IN_PROGRESS".into(),
            running,
            pending: 0,
            desired: 2,
            failed_tasks: failed,
        }
    }

    fn scripted(looks: Vec<Result<RolloutObservation, StageError>>) -> MockRolloutWatch {
        let mut watch = MockRolloutWatch::new();
        let mut looks = looks.into_iter();
        watch
            .expect_observe()
            .returning(move |_| looks.next().expect("looked once too often"));
        watch
    }

    fn in_progress(running: u32, failed: u32) -> Result<RolloutObservation, StageError> {
        Ok(RolloutObservation {
            progress: Some(progress(running, failed)),
            ..RolloutObservation::state(RolloutState::InProgress)
        })
    }

    const OPTIONS: WaitOptions = WaitOptions {
        timeout: Duration::from_secs(600),
        poll_interval: Duration::from_secs(5),
    };

    #[tokio::test(start_paused = true)]
    async fn tells_changes_once_and_finishes_on_the_rule() {
        let recorded = RecordedEvents::new();
        let events = Events::new().with(recorded.clone());
        let mut done = RolloutObservation::state(RolloutState::Completed {
            revision: handle().revision,
        });
        done.new_events.push(ObservedEvent {
            at: chrono::Utc::now(),
            message: "has reached a steady state.".into(),
        });
        let mut watch = scripted(vec![
            in_progress(0, 0),
            in_progress(0, 0),
            in_progress(1, 1),
            Ok(done),
        ]);
        let started = Instant::now();
        let outcome = follow(&mut watch, &handle(), &OPTIONS, &events).await;
        assert_eq!(outcome, Ok(RolloutOutcome::Completed));
        assert_eq!(started.elapsed(), Duration::from_secs(15), "three pauses");
        let seen = recorded.take();
        let progress_told = seen
            .iter()
            .filter(|e| matches!(e, PipelineEvent::RolloutProgress { .. }))
            .count();
        assert_eq!(progress_told, 2, "unchanged counts are not told again");
        assert!(seen.iter().any(|e| matches!(e,
            PipelineEvent::Warning { message } if message.contains("1 task(s) of deployment ecs-svc/1 failed"))));
        assert!(seen.iter().any(|e| matches!(e,
            PipelineEvent::ServiceEvent { message, .. } if message.contains("steady state"))));
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_doubles_the_pause_up_to_a_cap_and_errors_give_up_after_a_run() {
        let events = Events::new();
        let throttled = || Err(StageError::throttled("ECS is throttling DescribeServices"));
        let mut looks = vec![throttled(); 6];
        looks.push(in_progress(1, 0));
        looks.push(Ok(RolloutObservation::state(RolloutState::Gone)));
        let mut watch = scripted(looks);
        let started = Instant::now();
        let outcome = follow(&mut watch, &handle(), &OPTIONS, &events).await;
        assert_eq!(outcome, Ok(RolloutOutcome::Gone));
        // 10 + 20 + 30 + 30 + 30 + 30 while throttled, then the poll interval again.
        assert_eq!(started.elapsed(), Duration::from_secs(155));

        let failing = || Err(StageError::failed("DescribeServices failed: 500"));
        let mut watch = scripted(vec![
            failing(),
            failing(),
            in_progress(1, 0),
            failing(),
            failing(),
            failing(),
            failing(),
            failing(),
        ]);
        let outcome = follow(&mut watch, &handle(), &OPTIONS, &events).await;
        assert_eq!(
            outcome.map_err(|e| e.message),
            Err("DescribeServices failed: 500".to_string()),
            "five in a row, not five in all"
        );

        let mut watch = scripted(vec![Err(StageError::bad_input("state file is broken"))]);
        let outcome = follow(&mut watch, &handle(), &OPTIONS, &events).await;
        assert!(outcome.is_err(), "bad input is not retried");
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_deadline_the_watch_abandons_the_deployment_saying_what_it_waited_for() {
        let events = Events::new();
        let mut watch = MockRolloutWatch::new();
        watch.expect_observe().returning(|_| {
            Ok(RolloutObservation {
                waiting_for: Some("web: health check starting".into()),
                ..RolloutObservation::state(RolloutState::InProgress)
            })
        });
        watch
            .expect_abandon()
            .withf(|reason, _| reason == "not ready within 12s: web: health check starting")
            .times(1)
            .returning(|_, _| Ok(()));
        let options = WaitOptions {
            timeout: Duration::from_secs(12),
            poll_interval: Duration::from_secs(5),
        };
        let started = Instant::now();
        let outcome = follow(&mut watch, &handle(), &options, &events).await;
        assert_eq!(
            outcome,
            Ok(RolloutOutcome::TimedOut {
                after: Duration::from_secs(12)
            })
        );
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(12),
            "never past the deadline"
        );
    }
}
