//! The Lambda as ECS's deployment lifecycle hook, called directly with the payload ECS
//! sends, against CV Matcher's production environment and its alarms on moto.

use anyhow::Context;
use aws_adapters::{desired_infra, InfraReconciler};
use aws_sdk_cloudwatch::types::StateValue;
use pipeline_core::config::{LifecycleHookSettings, LifecycleStage};
use serde_json::{json, Value};
use tugboat_lambda::{ConfigSource, Handler, LoadedConfig};
use tugboat_tests::aws::AwsFixture;
use tugboat_tests::cv_matcher::{self as cv, CvMatcher};

const ALARM: &str = "cv-matcher-5xx-rate";
const BLUE: &str = "arn:aws:ecs:us-east-1:123456789012:service-revision/cv-matcher-cluster/cv-matcher-service/1851060735485356621";
const GREEN: &str = "arn:aws:ecs:us-east-1:123456789012:service-revision/cv-matcher-cluster/cv-matcher-service/4012873469829315224";

/// Production only, hooked at POST_TEST_TRAFFIC_SHIFT, baking `bake_seconds`.
fn handler(cv: &CvMatcher, bake_seconds: u64) -> Handler {
    let mut project = cv.project.clone();
    project
        .config
        .environments
        .retain(|name, _| name == cv::ENVIRONMENT);
    for env in project.config.environments.values_mut() {
        env.verify.bake_seconds = bake_seconds;
        env.strategy.lifecycle_hook = Some(LifecycleHookSettings {
            function_arn: "arn:aws:lambda:us-east-1:123456789012:function:tugboat".into(),
            role_arn: "arn:aws:iam::123456789012:role/tugboat-hook".into(),
            stages: vec![LifecycleStage::PostTestTrafficShift],
        });
    }
    Handler::new(ConfigSource::File(cv::config_file()))
        .with_clients(cv.aws.clients.clone())
        .with_config(LoadedConfig {
            config: project.config,
            config_file: cv::config_file(),
            task_definition: None,
        })
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
async fn alarms_ok_succeed_and_an_alarm_in_alarm_fails_naming_it() -> anyhow::Result<()> {
    let cv = setup().await?;
    let handler = handler(&cv, 0);
    let service = service_arn(&cv).await?;

    let ok = answer(
        &handler,
        invocation(&service, "POST_TEST_TRAFFIC_SHIFT", 100.0, 0.0, None),
    )
    .await?;
    assert_eq!(ok["hookStatus"], "SUCCEEDED", "{ok}");

    set_alarm(&cv, StateValue::Alarm).await?;
    let failed = answer(
        &handler,
        invocation(&service, "POST_TEST_TRAFFIC_SHIFT", 100.0, 0.0, None),
    )
    .await?;
    assert_eq!(failed["hookStatus"], "FAILED", "{failed}");
    let message = failed["hookDetails"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains(ALARM), "{failed}");

    // A stage the environment does not check succeeds at once, alarm or not.
    let other = answer(
        &handler,
        invocation(&service, "POST_SCALE_UP", 0.0, 0.0, None),
    )
    .await?;
    assert_eq!(other["hookStatus"], "SUCCEEDED", "{other}");
    // Traffic going back to blue (a rollback) is not checked either.
    let back = answer(
        &handler,
        invocation(&service, "POST_TEST_TRAFFIC_SHIFT", 0.0, 0.0, None),
    )
    .await?;
    assert_eq!(back["hookStatus"], "SUCCEEDED", "{back}");
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
