//! The Lambda as ECS's deployment lifecycle hook, called directly with the payload ECS
//! sends, against CV Matcher's production environment and its alarms on moto. An alarm
//! fails the deployment only if it went into ALARM after the release started (the
//! record of the release in progress, or the hook's first look); one already firing
//! then is a warning.

use anyhow::Context;
use aws_adapters::{desired_infra, InfraReconciler};
use aws_sdk_cloudwatch::types::StateValue;
use pipeline_core::config::{LifecycleHookSettings, LifecycleStage};
use pipeline_core::{DeployRecord, ReleaseRecords};
use serde_json::{json, Value};
use std::time::Duration;
use tugboat_lambda::{ConfigSource, Handler, LoadedConfig};
use tugboat_tests::aws::AwsFixture;
use tugboat_tests::cv_matcher::{self as cv, CvMatcher};

const ALARM: &str = "cv-matcher-5xx-rate";
const BLUE: &str = "arn:aws:ecs:us-east-1:123456789012:service-revision/cv-matcher-cluster/cv-matcher-service/1851060735485356621";
const GREEN: &str = "arn:aws:ecs:us-east-1:123456789012:service-revision/cv-matcher-cluster/cv-matcher-service/4012873469829315224";

/// Production only, hooked at POST_TEST_TRAFFIC_SHIFT, baking `bake_seconds`.
fn handler(cv: &CvMatcher, bake_seconds: u64) -> Handler {
    handler_with(cv, bake_seconds, false)
}

/// [`handler`] with `verify.fail_on_firing_alarms` set to `strict`.
fn handler_with(cv: &CvMatcher, bake_seconds: u64, strict: bool) -> Handler {
    let mut project = cv.project.clone();
    project
        .config
        .environments
        .retain(|name, _| name == cv::ENVIRONMENT);
    for env in project.config.environments.values_mut() {
        env.verify.bake_seconds = bake_seconds;
        env.verify.fail_on_firing_alarms = strict;
        env.strategy.lifecycle_hook = Some(LifecycleHookSettings {
            function_arn: "arn:aws:lambda:us-east-1:123456789012:function:tugboat".into(),
            role_arn: "arn:aws:iam::123456789012:role/tugboat-hook".into(),
            stages: vec![LifecycleStage::PostTestTrafficShift],
        });
    }
    Handler::new(ConfigSource::File(cv::config_file()))
        .with_clients(cv.aws.clients.clone())
        .with_config(LoadedConfig::without_package(
            project.config,
            cv::config_file(),
        ))
}

async fn service_arn(cv: &CvMatcher) -> anyhow::Result<String> {
    cv.service()
        .await?
        .service_arn()
        .map(str::to_string)
        .context("the service has no ARN")
}

/// The payload ECS sends: `green` percent of test and `production` of production traffic
/// on the new revision.
fn invocation(
    service: &str,
    stage: &str,
    green: f64,
    production: f64,
    details: Option<Value>,
) -> Value {
    json!({
        "executionId": "7f0b6c9e-2d4a-4b8e-9c1d-3e5f7a9b0c2d",
        "lifecycleStage": stage,
        "resourceArn": "arn:aws:ecs:us-east-1:123456789012:service-deployment/cv-matcher-cluster/cv-matcher-service/r4Xb0Jt8pN2kQ5mZ1cVd7",
        "executionDetails": {
            "serviceArn": service,
            "targetServiceRevisionArn": GREEN,
            "testTrafficWeights": {GREEN: green, BLUE: 100.0 - green},
            "productionTrafficWeights": {GREEN: production, BLUE: 100.0 - production}
        },
        "hookDetails": details
    })
}

async fn answer(handler: &Handler, payload: Value) -> anyhow::Result<Value> {
    handler
        .handle_value(payload)
        .await
        .map_err(|err| anyhow::anyhow!("the hook failed: {err}"))
}

/// Lets the next timestamps fall in a later second than the ones before (the hook keeps
/// its times in whole seconds).
async fn next_second() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

fn status(answer: &Value) -> &str {
    answer["hookStatus"].as_str().unwrap_or_default()
}

fn message(answer: &Value) -> &str {
    answer["hookDetails"]["message"]
        .as_str()
        .unwrap_or_default()
}

/// Records a release of production in progress that started `ago` before now, as the
/// function's `start_release` does before ECS starts the deployment.
async fn release_in_progress(cv: &CvMatcher, ago: Duration) -> anyhow::Result<()> {
    let started = chrono::Utc::now() - chrono::Duration::from_std(ago)?;
    let record: DeployRecord = serde_json::from_value(json!({
        "release_id": format!("{}-cccccccc", started.format("%Y%m%dT%H%M%SZ")),
        "app": cv.project.config.app.name,
        "environment": cv::ENVIRONMENT,
        "git": {"sha": cv::sha('c'), "git_ref": "refs/tags/v1.1.0"},
        "image": null,
        "revision": null,
        "previous_revision": null,
        "outcome": "in_progress",
        "reason": null,
        "stages": [],
        "actor": "lambda:3f1c",
        "started_at": started,
        "finished_at": null,
        "deployment_id": "ecs-svc/1234567890123456789"
    }))?;
    cv.artifact_store()
        .put_record(&record)
        .await
        .map_err(|err| anyhow::anyhow!("put_record: {err}"))?;
    Ok(())
}

async fn set_alarm(cv: &CvMatcher, state: StateValue) -> anyhow::Result<()> {
    cv.aws
        .clients
        .cloudwatch
        .set_alarm_state()
        .alarm_name(ALARM)
        .state_value(state)
        .state_reason("Threshold Crossed: 1 datapoint [12.0] was greater than the threshold (5.0).")
        .send()
        .await?;
    Ok(())
}

/// CV Matcher on moto with its five alarms (OK) created by `tugboat infra apply`'s
/// reconciler.
async fn setup() -> anyhow::Result<CvMatcher> {
    let cv = CvMatcher::setup(AwsFixture::start().await?).await?;
    let env = cv.project.environment(cv::ENVIRONMENT)?;
    let desired = desired_infra(&cv.project.config.app.name, &cv.target, env);
    InfraReconciler::new(&cv.aws.clients)
        .apply(&desired)
        .await
        .map_err(|err| anyhow::anyhow!("infra apply: {err}"))?;
    for alarm in &env.verify.alarms {
        cv.aws
            .clients
            .cloudwatch
            .set_alarm_state()
            .alarm_name(alarm)
            .state_value(StateValue::Ok)
            .state_reason("quiet")
            .send()
            .await?;
    }
    Ok(cv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_ok_succeed_and_an_alarm_that_fired_after_the_release_started_fails(
) -> anyhow::Result<()> {
    let cv = setup().await?;
    let handler = handler(&cv, 0);
    let service = service_arn(&cv).await?;

    let ok = answer(
        &handler,
        invocation(&service, "POST_TEST_TRAFFIC_SHIFT", 100.0, 0.0, None),
    )
    .await?;
    assert_eq!(status(&ok), "SUCCEEDED", "{ok}");
    assert!(ok["hookDetails"].get("warnings").is_none(), "{ok}");

    // The release started (its record says when), then the alarm fired, then ECS called.
    release_in_progress(&cv, Duration::from_secs(30)).await?;
    set_alarm(&cv, StateValue::Alarm).await?;
    let failed = answer(
        &handler,
        invocation(&service, "POST_TEST_TRAFFIC_SHIFT", 100.0, 0.0, None),
    )
    .await?;
    assert_eq!(status(&failed), "FAILED", "{failed}");
    assert!(
        message(&failed).starts_with(&format!(
            "POST_TEST_TRAFFIC_SHIFT: alarm {ALARM} is in ALARM (since "
        )),
        "{failed}"
    );

    // A stage the environment does not check succeeds at once, alarm or not.
    let other = answer(
        &handler,
        invocation(&service, "POST_SCALE_UP", 0.0, 0.0, None),
    )
    .await?;
    assert_eq!(status(&other), "SUCCEEDED", "{other}");
    // Traffic going back to blue (a rollback) is not checked either.
    let back = answer(
        &handler,
        invocation(&service, "POST_TEST_TRAFFIC_SHIFT", 0.0, 0.0, None),
    )
    .await?;
    assert_eq!(status(&back), "SUCCEEDED", "{back}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_already_firing_is_a_warning_until_it_fires_again() -> anyhow::Result<()> {
    let cv = setup().await?;
    let service = service_arn(&cv).await?;
    // The incident the hotfix is for.
    set_alarm(&cv, StateValue::Alarm).await?;
    next_second().await;

    // No bake: SUCCEEDED, with the warning.
    let at_once = answer(
        &handler(&cv, 0),
        invocation(&service, "POST_TEST_TRAFFIC_SHIFT", 100.0, 0.0, None),
    )
    .await?;
    assert_eq!(status(&at_once), "SUCCEEDED", "{at_once}");
    let warning = at_once["hookDetails"]["warnings"][0]
        .as_str()
        .context("no warning")?;
    assert!(
        warning.starts_with(&format!(
            "alarm {ALARM} was already in ALARM when the release started (since "
        )),
        "{at_once}"
    );

    // A bake: IN_PROGRESS while it stays in ALARM, the release start carried along.
    let handler = handler(&cv, 600);
    let first = answer(
        &handler,
        invocation(&service, "POST_TEST_TRAFFIC_SHIFT", 100.0, 0.0, None),
    )
    .await?;
    assert_eq!(status(&first), "IN_PROGRESS", "{first}");
    assert_eq!(first["hookDetails"]["warnings"][0], warning, "{first}");
    let started = first["hookDetails"]["tugboatReleaseStartedAt"]
        .as_u64()
        .context("no release start")?;
    next_second().await;
    let second = answer(
        &handler,
        invocation(
            &service,
            "POST_TEST_TRAFFIC_SHIFT",
            100.0,
            0.0,
            Some(first["hookDetails"].clone()),
        ),
    )
    .await?;
    assert_eq!(status(&second), "IN_PROGRESS", "{second}");
    assert_eq!(second["hookDetails"]["tugboatReleaseStartedAt"], started);

    // OK and back into ALARM between two calls: FAILED.
    set_alarm(&cv, StateValue::Ok).await?;
    set_alarm(&cv, StateValue::Alarm).await?;
    let third = answer(
        &handler,
        invocation(
            &service,
            "POST_TEST_TRAFFIC_SHIFT",
            100.0,
            0.0,
            Some(second["hookDetails"].clone()),
        ),
    )
    .await?;
    assert_eq!(status(&third), "FAILED", "{third}");
    assert!(message(&third).contains(ALARM), "{third}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fail_on_firing_alarms_an_alarm_already_firing_fails() -> anyhow::Result<()> {
    let cv = setup().await?;
    let service = service_arn(&cv).await?;
    set_alarm(&cv, StateValue::Alarm).await?;
    next_second().await;

    let failed = answer(
        &handler_with(&cv, 600, true),
        invocation(&service, "POST_TEST_TRAFFIC_SHIFT", 100.0, 0.0, None),
    )
    .await?;
    assert_eq!(status(&failed), "FAILED", "{failed}");
    assert!(message(&failed).contains(ALARM), "{failed}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_bake_is_in_progress_and_carries_its_start() -> anyhow::Result<()> {
    let cv = setup().await?;
    let handler = handler(&cv, 600);
    let service = service_arn(&cv).await?;

    let first = answer(
        &handler,
        invocation(&service, "POST_TEST_TRAFFIC_SHIFT", 100.0, 0.0, None),
    )
    .await?;
    assert_eq!(first["hookStatus"], "IN_PROGRESS", "{first}");
    let delay = first["callBackDelay"]
        .as_u64()
        .context("no callBackDelay")?;
    assert!((1..=60).contains(&delay), "{first}");
    let started = first["hookDetails"]["tugboatBakeStartedAt"]
        .as_u64()
        .context("no start")?;

    let second = answer(
        &handler,
        invocation(
            &service,
            "POST_TEST_TRAFFIC_SHIFT",
            100.0,
            0.0,
            Some(first["hookDetails"].clone()),
        ),
    )
    .await?;
    assert_eq!(second["hookStatus"], "IN_PROGRESS", "{second}");
    assert_eq!(
        second["hookDetails"]["tugboatBakeStartedAt"], started,
        "{second}"
    );

    // A bake that started long enough ago is over.
    let over =
        json!({"tugboatStage": "POST_TEST_TRAFFIC_SHIFT", "tugboatBakeStartedAt": started - 600});
    let done = answer(
        &handler,
        invocation(&service, "POST_TEST_TRAFFIC_SHIFT", 100.0, 0.0, Some(over)),
    )
    .await?;
    assert_eq!(done["hookStatus"], "SUCCEEDED", "{done}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_alarm_is_no_verdict_and_ecs_calls_again() -> anyhow::Result<()> {
    let cv = setup().await?;
    let service = service_arn(&cv).await?;
    // CloudWatch cannot be reached (a port nothing listens on), everything else can.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    drop(std::net::TcpListener::bind(dead));
    let unreachable = tugboat_tests::aws::sdk_config(&format!("http://{dead}")).await;
    let mut clients = cv.aws.clients.clone();
    clients.cloudwatch = aws_sdk_cloudwatch::Client::from_conf(
        aws_sdk_cloudwatch::config::Builder::from(&unreachable)
            .retry_config(aws_sdk_cloudwatch::config::retry::RetryConfig::disabled())
            .build(),
    );
    let handler = handler(&cv, 60).with_clients(clients);
    let started = json!({"tugboatStage": "POST_TEST_TRAFFIC_SHIFT", "tugboatBakeStartedAt": 1_764_166_500_u64});

    let answered = answer(
        &handler,
        invocation(
            &service,
            "POST_TEST_TRAFFIC_SHIFT",
            100.0,
            0.0,
            Some(started),
        ),
    )
    .await?;

    assert_eq!(status(&answered), "IN_PROGRESS", "{answered}");
    assert_eq!(answered["callBackDelay"], json!(15), "{answered}");
    assert!(
        message(&answered).contains("cannot read the alarms"),
        "{answered}"
    );
    assert_eq!(
        answered["hookDetails"]["tugboatBakeStartedAt"],
        json!(1_764_166_500_u64),
        "what earlier calls carried is kept: {answered}"
    );
    Ok(())
}
