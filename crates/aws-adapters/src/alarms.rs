//! CloudWatch alarms as a [`Verifier`]: a release that sets off one of the watched
//! alarms during its bake time is rolled back. Which alarm fails a release is
//! [`pipeline_core::judge_alarm`]'s rule; this file reads the states and polls.

use crate::errors::{is_throttling, stage_error};
use async_trait::async_trait;
use aws_sdk_cloudwatch::types::AlarmType;
use chrono::{DateTime, TimeZone, Utc};
use pipeline_core::config::VerifySettings;
use pipeline_core::{
    firing_before_release_warning, judge_alarm, AlarmVerdict, Events, StageError, Verifier,
    VerifyContext,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::time::Instant;

/// `DescribeAlarms` takes at most this many names in one call.
const NAMES_PER_CALL: usize = 100;
/// Consecutive failed looks (other than throttling) before the watch gives up.
const MAX_CONSECUTIVE_ERRORS: u32 = 5;
/// The longest pause between two looks while AWS throttles us.
const MAX_THROTTLE_BACKOFF: Duration = Duration::from_secs(60);

/// One watched alarm as `DescribeAlarms` shows it (`since` is its
/// `StateTransitionedTimestamp`).
pub use pipeline_core::AlarmState;

/// Watches CloudWatch alarms for a bake time after a rollout ([`Verifier`] `alarms`).
///
/// At the start every watched alarm must exist (a missing one is
/// [`pipeline_core::StageErrorKind::BadInput`], naming it). Then `DescribeAlarms` is
/// polled every `poll` until `bake` has passed; the first watched alarm seen in `ALARM`
/// that went into it after the release started
/// ([`VerifyContext::release_started_at`]) fails the release with its name, its state
/// reason and when it fired. One in `ALARM` since before the start is a warning, and
/// fails the release only once it has gone OK and back into `ALARM` (or always, with
/// [`AlarmWatch::fail_on_firing_alarms`]). A bake of zero is a single look.
///
/// An alarm that enters and leaves `ALARM` between two looks is not seen: keep the poll
/// interval well below the alarms' period (the default 10 s against 60 s periods).
///
/// ```no_run
/// # async fn example(clients: aws_adapters::AwsClients) {
/// use aws_adapters::AlarmWatch;
/// use std::time::Duration;
/// let watch = AlarmWatch::new(
///     clients.cloudwatch.clone(),
///     vec!["cv-matcher-cpu-high".into(), "cv-matcher-5xx-rate".into()],
///     Duration::from_secs(300),
///     AlarmWatch::DEFAULT_POLL_INTERVAL,
/// );
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct AlarmWatch {
    client: aws_sdk_cloudwatch::Client,
    names: Vec<String>,
    bake: Duration,
    poll: Duration,
    fail_on_firing: bool,
}

impl AlarmWatch {
    /// How often the alarms are looked at unless told otherwise.
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);

    pub fn new(
        client: aws_sdk_cloudwatch::Client,
        names: Vec<String>,
        bake: Duration,
        poll: Duration,
    ) -> Self {
        let mut names = names;
        names.sort();
        names.dedup();
        Self {
            client,
            names,
            bake,
            // A zero interval would spin: look at most every 100 ms.
            poll: poll.max(Duration::from_millis(100)),
            fail_on_firing: false,
        }
    }

    /// `verify.fail_on_firing_alarms`: an alarm already in `ALARM` when the release
    /// started fails it too.
    pub fn fail_on_firing_alarms(mut self, fail: bool) -> Self {
        self.fail_on_firing = fail;
        self
    }

    /// The watch an environment's `verify` settings ask for: its `alarms` for
    /// `bake_seconds`, looked at every [`AlarmWatch::DEFAULT_POLL_INTERVAL`], strict
    /// when `fail_on_firing_alarms` is set. `None` when the environment watches no alarm.
    pub fn for_settings(
        client: aws_sdk_cloudwatch::Client,
        verify: &VerifySettings,
    ) -> Option<Self> {
        (!verify.alarms.is_empty()).then(|| {
            Self::new(
                client,
                verify.alarms.clone(),
                Duration::from_secs(verify.bake_seconds),
                Self::DEFAULT_POLL_INTERVAL,
            )
            .fail_on_firing_alarms(verify.fail_on_firing_alarms)
        })
    }

    /// The watched alarm names, sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Fails with [`pipeline_core::StageErrorKind::BadInput`], naming each one, unless
    /// every watched alarm exists. Changes nothing: usable as a preflight check.
    pub async fn ensure_exist(&self) -> Result<(), StageError> {
        let states = self
            .states()
            .await
            .map_err(|err| stage_error("DescribeAlarms", &err))?;
        self.check_exist(&states)
    }

    /// One look: the current state of every watched alarm that exists, by name (a
    /// missing one is absent).
    pub async fn current_states(&self) -> Result<BTreeMap<String, AlarmState>, StageError> {
        self.states()
            .await
            .map_err(|err| stage_error("DescribeAlarms", &err))
    }

    fn check_exist(&self, states: &BTreeMap<String, AlarmState>) -> Result<(), StageError> {
        let missing: Vec<&str> = self
            .names
            .iter()
            .filter(|name| !states.contains_key(*name))
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(StageError::bad_input(format!(
            "CloudWatch has no alarm {} (watched by verify.alarms)",
            missing.join(", ")
        ))
        .with_help(
            "create the alarms with `tugboat infra apply`, or remove them from verify.alarms",
        ))
    }

    /// The current state of every watched alarm that exists, by name.
    async fn states(
        &self,
    ) -> Result<
        BTreeMap<String, AlarmState>,
        aws_sdk_cloudwatch::error::SdkError<
            aws_sdk_cloudwatch::operation::describe_alarms::DescribeAlarmsError,
        >,
    > {
        let mut states = BTreeMap::new();
        for chunk in self.names.chunks(NAMES_PER_CALL) {
            let pages = self
                .client
                .describe_alarms()
                .set_alarm_names(Some(chunk.to_vec()))
                .alarm_types(AlarmType::MetricAlarm)
                .alarm_types(AlarmType::CompositeAlarm)
                .into_paginator()
                .send()
                .collect::<Result<Vec<_>, _>>()
                .await?;
            for page in pages {
                let metric = page.metric_alarms().iter().map(|a| {
                    (
                        a.alarm_name(),
                        a.state_value(),
                        a.state_reason(),
                        a.state_transitioned_timestamp()
                            .or(a.state_updated_timestamp()),
                    )
                });
                let composite = page.composite_alarms().iter().map(|a| {
                    (
                        a.alarm_name(),
                        a.state_value(),
                        a.state_reason(),
                        a.state_transitioned_timestamp()
                            .or(a.state_updated_timestamp()),
                    )
                });
                for (name, state, reason, since) in metric.chain(composite) {
                    let Some(name) = name else { continue };
                    states.insert(
                        name.to_string(),
                        AlarmState {
                            name: name.to_string(),
                            state: state
                                .map(|s| s.as_str().to_string())
                                .unwrap_or_else(|| "INSUFFICIENT_DATA".to_string()),
                            reason: reason.unwrap_or("no reason given").to_string(),
                            since: since.and_then(|t| {
                                Utc.timestamp_opt(t.secs(), t.subsec_nanos()).single()
                            }),
                        },
                    );
                }
            }
        }
        Ok(states)
    }
}

/// Where in the release a failing alarm was seen.
#[derive(Clone, Copy)]
enum Look {
    /// The first look, when the bake time starts.
    First,
    /// A later one.
    Baking,
}

fn fired(alarm: &AlarmState, release_started: DateTime<Utc>, look: Look) -> StageError {
    let when = match (alarm.since, look) {
        (Some(since), _) if since < release_started => format!(
            "was already in ALARM when the release started (since {}) and verify.fail_on_firing_alarms is on",
            alarm.since_text()
        ),
        (_, Look::First) => format!(
            "entered ALARM at {} after the release started",
            alarm.since_text()
        ),
        (_, Look::Baking) => format!(
            "entered ALARM at {} during the bake time",
            alarm.since_text()
        ),
    };
    // AWS's state reasons end with a period; messages here do not.
    StageError::failed(format!(
        "alarm {} {when}: {}",
        alarm.name,
        alarm.reason.trim_end_matches('.')
    ))
}

#[async_trait]
impl Verifier for AlarmWatch {
    fn name(&self) -> String {
        "alarms".to_string()
    }

    async fn verify(&self, context: &VerifyContext, events: &Events) -> Result<(), StageError> {
        if self.names.is_empty() {
            return Ok(());
        }
        let release_started = context.release_started_at;
        // Alarms warned about as firing since before the release, each once.
        let mut warned = BTreeSet::new();
        let mut judge = |states: &BTreeMap<String, AlarmState>, look: Look| {
            let mut failure = None;
            for alarm in states.values() {
                match judge_alarm(alarm, release_started, self.fail_on_firing) {
                    AlarmVerdict::Quiet => {}
                    AlarmVerdict::FiringSinceBeforeRelease => {
                        if warned.insert(alarm.name.clone()) {
                            events.warn(firing_before_release_warning(alarm));
                        }
                    }
                    AlarmVerdict::Fired => {
                        failure.get_or_insert_with(|| fired(alarm, release_started, look));
                    }
                }
            }
            failure.map_or(Ok(()), Err)
        };
        let started = Instant::now();
        let deadline = started + self.bake;
        let first = self
            .states()
            .await
            .map_err(|err| stage_error("DescribeAlarms", &err))?;
        self.check_exist(&first)?;
        judge(&first, Look::First)?;
        events.info(format!(
            "watching alarms {} for {}s",
            self.names.join(", "),
            self.bake.as_secs()
        ));
        let mut last: BTreeMap<String, String> = first
            .values()
            .map(|a| (a.name.clone(), a.state.clone()))
            .collect();
        let mut throttle_backoff: Option<Duration> = None;
        let mut consecutive_errors = 0;
        loop {
            let now = Instant::now();
            if now >= deadline {
                events.info(format!(
                    "no watched alarm fired in {}s",
                    self.bake.as_secs()
                ));
                return Ok(());
            }
            let pause = throttle_backoff.unwrap_or(self.poll);
            tokio::time::sleep(pause.min(deadline - now)).await;
            match self.states().await {
                Ok(states) => {
                    consecutive_errors = 0;
                    throttle_backoff = None;
                    judge(&states, Look::Baking)?;
                    for name in &self.names {
                        match states.get(name) {
                            None => {
                                return Err(StageError::failed(format!(
                                    "alarm {name} was deleted during the bake time"
                                )))
                            }
                            Some(alarm) => {
                                if last.get(name) != Some(&alarm.state) {
                                    events.info(format!(
                                        "alarm {name} is {}: {}",
                                        alarm.state, alarm.reason
                                    ));
                                    last.insert(name.clone(), alarm.state.clone());
                                }
                            }
                        }
                    }
                }
                Err(err) if is_throttling(&err) => {
                    let next = throttle_backoff.map_or(self.poll * 2, |b| b * 2);
                    throttle_backoff = Some(next.min(MAX_THROTTLE_BACKOFF));
                    events.warn("CloudWatch is throttling DescribeAlarms; looking less often");
                }
                Err(err) => {
                    consecutive_errors += 1;
                    if consecutive_errors >= MAX_CONSECUTIVE_ERRORS {
                        return Err(stage_error("DescribeAlarms", &err));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use aws_sdk_cloudwatch::operation::describe_alarms::DescribeAlarmsOutput;
    use aws_sdk_cloudwatch::types::{MetricAlarm, StateValue};
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use pipeline_core::{
        DeployTarget, PipelineEvent, RecordedEvents, ReleaseId, Revision, StageErrorKind,
    };

    fn context() -> VerifyContext {
        VerifyContext {
            target: DeployTarget {
                app: "cv-matcher".into(),
                environment: "production".into(),
                cluster: "cv-matcher-cluster".into(),
                service: "cv-matcher-service".into(),
                region: None,
            },
            release_id: ReleaseId("r1".into()),
            revision: Revision::new("cv-matcher:2", "cv-matcher:2"),
            image: None,
            release_started_at: Utc.timestamp_opt(RELEASE_STARTED, 0).unwrap(),
        }
    }

    /// 2026-11-26T11:00:00Z; the alarms of [`alarms`] changed state a minute later.
    const RELEASE_STARTED: i64 = 1_795_690_800;

    /// Alarms with the second their state last changed (`StateTransitionedTimestamp`).
    fn alarms_since(states: &[(&str, StateValue, i64)]) -> DescribeAlarmsOutput {
        let alarms = states
            .iter()
            .map(|(name, state, since)| {
                MetricAlarm::builder()
                    .alarm_name(*name)
                    .state_value(state.clone())
                    .state_reason(format!("{name} is {}", state.as_str()))
                    // Updated (a new reason) after the start, transitioned before it.
                    .state_updated_timestamp(aws_smithy_types::DateTime::from_secs(
                        RELEASE_STARTED + 30,
                    ))
                    .state_transitioned_timestamp(aws_smithy_types::DateTime::from_secs(*since))
                    .build()
            })
            .collect();
        DescribeAlarmsOutput::builder()
            .set_metric_alarms(Some(alarms))
            .build()
    }

    fn warnings(recorded: &RecordedEvents) -> Vec<String> {
        recorded
            .take()
            .into_iter()
            .filter_map(|e| match e {
                PipelineEvent::Warning { message } => Some(message),
                _ => None,
            })
            .collect()
    }

    fn alarms(states: &[(&str, StateValue)]) -> DescribeAlarmsOutput {
        let alarms = states
            .iter()
            .map(|(name, state)| {
                MetricAlarm::builder()
                    .alarm_name(*name)
                    .state_value(state.clone())
                    .state_reason(format!("{name} is {}", state.as_str()))
                    .state_updated_timestamp(aws_smithy_types::DateTime::from_secs(1_795_690_860))
                    .build()
            })
            .collect();
        DescribeAlarmsOutput::builder()
            .set_metric_alarms(Some(alarms))
            .build()
    }

    fn watch(client: aws_sdk_cloudwatch::Client, bake: u64) -> AlarmWatch {
        AlarmWatch::new(
            client,
            vec!["cpu".into(), "5xx".into()],
            Duration::from_secs(bake),
            Duration::from_secs(10),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn looks_every_poll_interval_until_the_bake_time_has_passed() {
        let rule = mock!(aws_sdk_cloudwatch::Client::describe_alarms)
            .match_requests(|r| r.alarm_names() == ["5xx", "cpu"])
            .sequence()
            .output(|| alarms(&[("cpu", StateValue::Ok), ("5xx", StateValue::Ok)]))
            .times(4)
            .build();
        let client = mock_client!(aws_sdk_cloudwatch, RuleMode::Sequential, &[&rule]);
        let started = Instant::now();

        watch(client, 25)
            .verify(&context(), &Events::new())
            .await
            .unwrap();

        // At 0, 10, 20 and 25 s: the last look is at the end of the bake time.
        assert_eq!(rule.num_calls(), 4);
        assert_eq!(started.elapsed(), Duration::from_secs(25));
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_alarm_to_fire_fails_the_release_with_its_reason_and_time() {
        let rule = mock!(aws_sdk_cloudwatch::Client::describe_alarms)
            .sequence()
            .output(|| alarms(&[("cpu", StateValue::Ok), ("5xx", StateValue::Ok)]))
            .output(|| {
                alarms(&[
                    ("cpu", StateValue::InsufficientData),
                    ("5xx", StateValue::Ok),
                ])
            })
            .output(|| alarms(&[("cpu", StateValue::Ok), ("5xx", StateValue::Alarm)]))
            .build();
        let client = mock_client!(aws_sdk_cloudwatch, RuleMode::Sequential, &[&rule]);
        let started = Instant::now();

        let error = watch(client, 300)
            .verify(&context(), &Events::new())
            .await
            .unwrap_err();

        assert_eq!(error.kind, StageErrorKind::Failed);
        assert_eq!(
            error.message,
            "alarm 5xx entered ALARM at 2026-11-26T11:01:00Z during the bake time: 5xx is ALARM"
        );
        assert_eq!(started.elapsed(), Duration::from_secs(20));
    }

    #[tokio::test(start_paused = true)]
    async fn an_alarm_firing_since_before_the_release_is_a_warning_once() {
        let before = RELEASE_STARTED - 1_200;
        let rule = mock!(aws_sdk_cloudwatch::Client::describe_alarms)
            .sequence()
            .output(move || {
                alarms_since(&[
                    ("cpu", StateValue::Ok, before),
                    ("5xx", StateValue::Alarm, before),
                ])
            })
            .times(3)
            .build();
        let client = mock_client!(aws_sdk_cloudwatch, RuleMode::Sequential, &[&rule]);
        let recorded = RecordedEvents::new();

        watch(client, 20)
            .verify(&context(), &Events::new().with(recorded.clone()))
            .await
            .unwrap();

        assert_eq!(
            warnings(&recorded),
            ["alarm 5xx was already in ALARM when the release started (since 2026-11-26T10:40:00Z): 5xx is ALARM; it fails the release only if it goes OK and back into ALARM"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_alarm_that_goes_ok_and_back_into_alarm_fails_the_release() {
        let before = RELEASE_STARTED - 1_200;
        let rule = mock!(aws_sdk_cloudwatch::Client::describe_alarms)
            .sequence()
            .output(move || {
                alarms_since(&[
                    ("cpu", StateValue::Ok, before),
                    ("5xx", StateValue::Alarm, before),
                ])
            })
            // Between two looks it went OK and fired again: only the time tells.
            .output(move || {
                alarms_since(&[
                    ("cpu", StateValue::Ok, before),
                    ("5xx", StateValue::Alarm, RELEASE_STARTED + 65),
                ])
            })
            .build();
        let client = mock_client!(aws_sdk_cloudwatch, RuleMode::Sequential, &[&rule]);

        let error = watch(client, 300)
            .verify(&context(), &Events::new())
            .await
            .unwrap_err();

        assert_eq!(
            error.message,
            "alarm 5xx entered ALARM at 2026-11-26T11:01:05Z during the bake time: 5xx is ALARM"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_strict_switch_fails_on_an_alarm_firing_since_before_the_release() {
        let rule = mock!(aws_sdk_cloudwatch::Client::describe_alarms)
            .sequence()
            .output(|| {
                alarms_since(&[
                    ("cpu", StateValue::Ok, RELEASE_STARTED - 1_200),
                    ("5xx", StateValue::Alarm, RELEASE_STARTED - 1_200),
                ])
            })
            .build();
        let client = mock_client!(aws_sdk_cloudwatch, RuleMode::Sequential, &[&rule]);

        let error = watch(client, 300)
            .fail_on_firing_alarms(true)
            .verify(&context(), &Events::new())
            .await
            .unwrap_err();

        assert_eq!(
            error.message,
            "alarm 5xx was already in ALARM when the release started (since 2026-11-26T10:40:00Z) and verify.fail_on_firing_alarms is on: 5xx is ALARM"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_alarms_means_no_look() {
        let client = mock_client!(aws_sdk_cloudwatch, RuleMode::Sequential, &[]);
        AlarmWatch::new(client, Vec::new(), Duration::from_secs(300), Duration::ZERO)
            .verify(&context(), &Events::new())
            .await
            .unwrap();
    }
}
