//! The bake time on moto: CV Matcher's production alarms watched by `AlarmWatch` as a
//! verifier of the real orchestrator. An alarm that fires while the release bakes rolls
//! it back; alarms that stay OK let it succeed; one already firing when the release
//! starts is a warning (in the events and the record) unless it fires again or
//! `verify.fail_on_firing_alarms` is on.

use anyhow::Context;
use aws_adapters::{desired_infra, AlarmWatch, InfraReconciler};
use aws_sdk_cloudwatch::types::{ComparisonOperator, StateValue, Statistic};
use pipeline_core::{
    DeployTarget, EventSubscriber, Events, Outcome, PipelineEvent, RecordOutcome, ReleaseId,
    Revision, StageErrorKind, Verifier, VerifyContext,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tugboat_tests::aws::AwsFixture;
use tugboat_tests::cv_matcher::{self as cv, CvMatcher};

const POLL: Duration = Duration::from_millis(200);
const FIRING: &str = "cv-matcher-5xx-rate";
const STATE_REASON: &str =
    "Threshold Crossed: 1 datapoint [4.2 (26/11/26 10:01:00)] was greater than the threshold (1.0).";

/// Wakes a waiter when the alarm watch says it started baking.
struct BakeStarted(Arc<Notify>);

impl EventSubscriber for BakeStarted {
    fn on_event(&self, event: &PipelineEvent) {
        if let PipelineEvent::Info { message } = event {
            if message.starts_with("watching alarms") {
                self.0.notify_one();
            }
        }
    }
}

/// CV Matcher's production environment on moto with its five alarms created by
/// `tugboat infra apply`'s reconciler, and v1.1.0 pushed.
async fn cv_matcher_with_alarms() -> anyhow::Result<CvMatcher> {
    let cv = CvMatcher::setup(AwsFixture::start().await?).await?;
    let env = cv.project.environment(cv::ENVIRONMENT)?;
    let desired = desired_infra(&cv.project.config.app.name, &cv.target, env);
    InfraReconciler::new(&cv.aws.clients)
        .apply(&desired)
        .await
        .map_err(|err| anyhow::anyhow!("infra apply: {err}"))?;
    cv.put_image(cv::REPOSITORY, "v1.1.0").await?;
    Ok(cv)
}

fn watch(cv: &CvMatcher, bake: Duration) -> anyhow::Result<AlarmWatch> {
    let env = cv.project.environment(cv::ENVIRONMENT)?;
    Ok(AlarmWatch::new(
        cv.aws.clients.cloudwatch.clone(),
        env.verify.alarms.clone(),
        bake,
        POLL,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_firing_during_the_bake_time_rolls_the_release_back() -> anyhow::Result<()> {
    let cv = cv_matcher_with_alarms().await?;
    let bake = Duration::from_secs(5);
    let mut stages = cv.stages();
    stages.verifiers = vec![Arc::new(watch(&cv, bake)?)];
    let started = Arc::new(Notify::new());

    let cloudwatch = cv.aws.clients.cloudwatch.clone();
    let bake_started = started.clone();
    let fire = tokio::spawn(async move {
        bake_started.notified().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        cloudwatch
            .set_alarm_state()
            .alarm_name(FIRING)
            .state_value(StateValue::Alarm)
            .state_reason(STATE_REASON)
            .send()
            .await
            .context("SetAlarmState")?;
        Ok::<_, anyhow::Error>(Instant::now())
    });
    let run = cv
        .deploy_with(
            &cv.project,
            stages,
            Some(Arc::new(BakeStarted(started))),
            "v1.1.0",
            &cv::sha('c'),
        )
        .await;
    let returned = Instant::now();
    let fired_at = tokio::time::timeout(Duration::from_secs(5), fire).await???;

    assert_eq!(
        run.report.outcome,
        Outcome::FailedRestored,
        "{}\nmoto: {}",
        run.report.message,
        cv.aws.moto.log_tail()
    );
    assert!(
        returned - fired_at < bake,
        "the watch noticed the alarm and the rollback finished within the bake time \
         ({:?} after the alarm fired)",
        returned - fired_at
    );
    let record = run.record()?;
    assert_eq!(record.outcome, RecordOutcome::RolledBack);
    assert!(record.warnings.is_empty(), "{:?}", record.warnings);
    let reason = record.reason.clone().context("no reason in the record")?;
    eprintln!("{}", run.report.message);
    assert!(
        reason.contains(&format!("alarm {FIRING} entered ALARM at "))
            && reason.contains("during the bake time")
            && reason.contains(STATE_REASON.trim_end_matches('.')),
        "{reason}"
    );
    let stored = cv.stored_record(&record.release_id.0).await?;
    assert_eq!(stored.reason.as_deref(), Some(reason.as_str()));

    // The service serves the revision it had before, and the alarm is in ALARM.
    let service = cv.service().await?;
    assert_eq!(
        service.task_definition(),
        Some(cv.initial_revision.as_str())
    );
    let primary = service
        .deployments()
        .iter()
        .find(|d| d.status() == Some("PRIMARY"))
        .context("no PRIMARY deployment")?;
    assert_eq!(
        primary.task_definition(),
        Some(cv.initial_revision.as_str())
    );
    let alarms = cv
        .aws
        .clients
        .cloudwatch
        .describe_alarms()
        .alarm_names(FIRING)
        .send()
        .await?;
    assert_eq!(
        alarms.metric_alarms().first().and_then(|a| a.state_value()),
        Some(&StateValue::Alarm)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_that_stay_ok_let_the_release_through() -> anyhow::Result<()> {
    let cv = cv_matcher_with_alarms().await?;
    let bake = Duration::from_secs(1);
    let mut stages = cv.stages();
    stages.verifiers = vec![Arc::new(watch(&cv, bake)?)];

    let run = cv
        .deploy_with(&cv.project, stages, None, "v1.1.0", &cv::sha('d'))
        .await;

    assert_eq!(
        run.report.outcome,
        Outcome::Succeeded,
        "{}\nmoto: {}",
        run.report.message,
        cv.aws.moto.log_tail()
    );
    let infos: Vec<&str> = run
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            PipelineEvent::Info { message } => Some(message.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        infos.contains(&"no watched alarm fired in 1s"),
        "{infos:#?}"
    );
    let revision = run
        .record()?
        .revision
        .clone()
        .context("no revision in the record")?;
    assert_eq!(
        cv.service().await?.task_definition(),
        Some(revision.id.as_str())
    );
    Ok(())
}

fn context() -> VerifyContext {
    VerifyContext {
        target: DeployTarget {
            app: "cv-matcher".into(),
            environment: "production".into(),
            cluster: "cv-matcher-cluster".into(),
            service: "cv-matcher-service".into(),
            region: None,
        },
        release_id: ReleaseId("20261126T100000Z-cccccccc".into()),
        revision: Revision::new(
            "arn:aws:ecs:us-east-1:123456789012:task-definition/cv-matcher:2",
            "cv-matcher:2",
        ),
        image: None,
        release_started_at: chrono::Utc::now(),
    }
}

async fn put_cpu_alarm(aws: &AwsFixture, name: &str) -> anyhow::Result<()> {
    aws.clients
        .cloudwatch
        .put_metric_alarm()
        .alarm_name(name)
        .namespace("AWS/ECS")
        .metric_name("CPUUtilization")
        .statistic(Statistic::Average)
        .period(60)
        .evaluation_periods(3)
        .threshold(80.0)
        .comparison_operator(ComparisonOperator::GreaterThanThreshold)
        .send()
        .await
        .context("PutMetricAlarm")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_alarm_is_bad_input_found_before_baking() -> anyhow::Result<()> {
    let aws = AwsFixture::start().await?;
    put_cpu_alarm(&aws, "cv-matcher-cpu-high").await?;
    let watch = AlarmWatch::new(
        aws.clients.cloudwatch.clone(),
        vec!["cv-matcher-cpu-high".into(), "cv-matcher-typo".into()],
        Duration::from_secs(30),
        POLL,
    );
    let started = Instant::now();

    let error = watch
        .verify(&context(), &Events::new())
        .await
        .err()
        .context("a missing alarm passed")?;

    assert_eq!(error.kind, StageErrorKind::BadInput);
    assert_eq!(
        error.message,
        "CloudWatch has no alarm cv-matcher-typo (watched by verify.alarms)"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "found before baking"
    );
    let preflight = watch
        .ensure_exist()
        .await
        .err()
        .context("preflight passed")?;
    assert_eq!(preflight, error);
    Ok(())
}

async fn set_state(cv: &CvMatcher, state: StateValue, reason: &str) -> anyhow::Result<()> {
    cv.aws
        .clients
        .cloudwatch
        .set_alarm_state()
        .alarm_name(FIRING)
        .state_value(state)
        .state_reason(reason)
        .send()
        .await
        .context("SetAlarmState")?;
    Ok(())
}

fn warnings(events: &[(impl Sized, PipelineEvent)]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            PipelineEvent::Warning { message } => Some(message.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_already_firing_when_the_release_starts_is_a_warning() -> anyhow::Result<()> {
    let cv = cv_matcher_with_alarms().await?;
    // The incident the hotfix is for: the alarm fired before the release started.
    set_state(&cv, StateValue::Alarm, STATE_REASON).await?;
    // A second apart from the release's start, whatever the timestamps' precision.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let bake = Duration::from_secs(2);
    let mut stages = cv.stages();
    stages.verifiers = vec![Arc::new(watch(&cv, bake)?)];
    let started = Arc::new(Notify::new());

    // While it bakes, CloudWatch updates the reason of the still firing alarm: a new
    // StateUpdatedTimestamp, but no transition.
    let bake_started = started.clone();
    let cloudwatch = cv.aws.clients.cloudwatch.clone();
    let update = tokio::spawn(async move {
        bake_started.notified().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        cloudwatch
            .set_alarm_state()
            .alarm_name(FIRING)
            .state_value(StateValue::Alarm)
            .state_reason("Threshold Crossed: 1 datapoint [3.9 (26/11/26 10:02:00)] was greater than the threshold (1.0).")
            .send()
            .await
            .context("SetAlarmState")?;
        Ok::<_, anyhow::Error>(())
    });
    let run = cv
        .deploy_with(
            &cv.project,
            stages,
            Some(Arc::new(BakeStarted(started))),
            "v1.1.0",
            &cv::sha('e'),
        )
        .await;
    tokio::time::timeout(Duration::from_secs(5), update).await???;

    assert_eq!(
        run.report.outcome,
        Outcome::Succeeded,
        "{}\nmoto: {}",
        run.report.message,
        cv.aws.moto.log_tail()
    );
    let warned = warnings(&run.events);
    assert_eq!(warned.len(), 1, "{warned:#?}");
    let warning = warned[0];
    assert!(
        warning.starts_with(&format!(
            "alarm {FIRING} was already in ALARM when the release started (since "
        )) && warning.contains(STATE_REASON.trim_end_matches('.')),
        "{warning}"
    );
    let record = run.record()?;
    assert_eq!(record.outcome, RecordOutcome::Succeeded);
    assert_eq!(record.warnings, [warning]);
    let stored = cv.stored_record(&record.release_id.0).await?;
    assert_eq!(stored.warnings, record.warnings);
    let revision = record
        .revision
        .clone()
        .context("no revision in the record")?;
    assert_eq!(
        cv.service().await?.task_definition(),
        Some(revision.id.as_str())
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_firing_before_the_release_that_fires_again_during_the_bake_rolls_it_back(
) -> anyhow::Result<()> {
    let cv = cv_matcher_with_alarms().await?;
    set_state(&cv, StateValue::Alarm, STATE_REASON).await?;
    // A second apart from the release's start, whatever the timestamps' precision.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut stages = cv.stages();
    stages.verifiers = vec![Arc::new(watch(&cv, Duration::from_secs(10))?)];
    let started = Arc::new(Notify::new());

    // OK and back into ALARM between two looks: only the transition time shows it.
    let bake_started = started.clone();
    let cloudwatch = cv.aws.clients.cloudwatch.clone();
    let flap = tokio::spawn(async move {
        bake_started.notified().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        for (state, reason) in [
            (StateValue::Ok, "recovered"),
            (StateValue::Alarm, "fired again"),
        ] {
            cloudwatch
                .set_alarm_state()
                .alarm_name(FIRING)
                .state_value(state)
                .state_reason(reason)
                .send()
                .await
                .context("SetAlarmState")?;
        }
        Ok::<_, anyhow::Error>(())
    });
    let run = cv
        .deploy_with(
            &cv.project,
            stages,
            Some(Arc::new(BakeStarted(started))),
            "v1.1.0",
            &cv::sha('f'),
        )
        .await;
    tokio::time::timeout(Duration::from_secs(5), flap).await???;

    assert_eq!(
        run.report.outcome,
        Outcome::FailedRestored,
        "{}\nmoto: {}",
        run.report.message,
        cv.aws.moto.log_tail()
    );
    let record = run.record()?;
    assert_eq!(record.outcome, RecordOutcome::RolledBack);
    let reason = record.reason.clone().context("no reason in the record")?;
    assert!(
        reason.contains(&format!("alarm {FIRING} entered ALARM at "))
            && reason.ends_with("during the bake time: fired again"),
        "{reason}"
    );
    // It was firing when the release started: that was said too.
    assert_eq!(record.warnings.len(), 1, "{:?}", record.warnings);
    assert_eq!(
        cv.service().await?.task_definition(),
        Some(cv.initial_revision.as_str())
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fail_on_firing_alarms_an_alarm_already_firing_rolls_the_release_back(
) -> anyhow::Result<()> {
    let cv = cv_matcher_with_alarms().await?;
    set_state(&cv, StateValue::Alarm, "CPU at 97 %").await?;
    // A second apart from the release's start, whatever the timestamps' precision.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut project = cv.project.clone();
    let env = project
        .config
        .environments
        .get_mut(cv::ENVIRONMENT)
        .context("no production environment")?;
    env.verify.fail_on_firing_alarms = true;
    env.verify.bake_seconds = 30;
    let watch = AlarmWatch::for_settings(cv.aws.clients.cloudwatch.clone(), &env.verify)
        .context("no alarm watch for the settings")?;
    let mut stages = cv.stages();
    stages.verifiers = vec![Arc::new(watch)];
    let started = Instant::now();

    let run = cv
        .deploy_with(&project, stages, None, "v1.1.0", &cv::sha('a'))
        .await;

    assert_eq!(
        run.report.outcome,
        Outcome::FailedRestored,
        "{}\nmoto: {}",
        run.report.message,
        cv.aws.moto.log_tail()
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "failed at the first look"
    );
    let record = run.record()?;
    assert_eq!(record.outcome, RecordOutcome::RolledBack);
    let reason = record.reason.clone().context("no reason in the record")?;
    assert!(
        reason.contains(&format!(
            "alarm {FIRING} was already in ALARM when the release started (since "
        )) && reason.ends_with("and verify.fail_on_firing_alarms is on: CPU at 97 %"),
        "{reason}"
    );
    assert_eq!(
        cv.service().await?.task_definition(),
        Some(cv.initial_revision.as_str())
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bake_time_of_zero_is_one_look() -> anyhow::Result<()> {
    let aws = AwsFixture::start().await?;
    put_cpu_alarm(&aws, "cv-matcher-cpu-high").await?;
    aws.calls.reset();

    AlarmWatch::new(
        aws.clients.cloudwatch.clone(),
        vec!["cv-matcher-cpu-high".into()],
        Duration::ZERO,
        POLL,
    )
    .verify(&context(), &Events::new())
    .await
    .map_err(|err| anyhow::anyhow!("{err}"))?;

    assert_eq!(
        aws.calls.snapshot().calls_of("cloudwatch.DescribeAlarms"),
        1
    );
    Ok(())
}
