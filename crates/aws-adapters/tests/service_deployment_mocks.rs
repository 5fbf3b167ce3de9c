//! `EcsDeployer` following ECS *service deployments* (blue/green, canary, linear) against
//! scripted answers shaped like real `DescribeServiceDeployments` output; the strategy it
//! sets on `UpdateService`; and a rollback through `StopServiceDeployment`.

#![allow(clippy::unwrap_used)]

use aws_adapters::EcsDeployer;
use aws_sdk_ecs::config::retry::RetryConfig;
use aws_sdk_ecs::types::{DeploymentStrategy, StopServiceDeploymentStopType};
use aws_sdk_ecs::Client;
use aws_smithy_mocks::{mock, mock_client, RuleMode};
use aws_smithy_runtime_api::http::{Response as HttpResponse, StatusCode};
use aws_smithy_types::body::SdkBody;
use pipeline_core::config::{
    LifecycleHookSettings, LifecycleStage, StrategyKind, StrategySettings,
};
use pipeline_core::{
    DeployTarget, Deployer, DeploymentHandle, Events, PipelineEvent, RecordedEvents,
    RestoreRequest, Revision, RolloutOutcome, UpdateRequest, WaitOptions,
};
use serde_json::{json, Value};
use std::time::Duration;

const CLUSTER_ARN: &str = "arn:aws:ecs:us-east-1:123456789012:cluster/cv-matcher-cluster";
const SERVICE_ARN: &str =
    "arn:aws:ecs:us-east-1:123456789012:service/cv-matcher-cluster/cv-matcher-service";
const SD_ARN: &str = "arn:aws:ecs:us-east-1:123456789012:service-deployment/cv-matcher-cluster/cv-matcher-service/r4Xb0Jt8pN2kQ5mZ1cVd7";
const OURS: &str = "ecs-svc/4012873469829315224";
const BLUE_TG: &str =
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/cv-matcher-blue/6d0ecf831eec9f09";
const GREEN_TG: &str =
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/cv-matcher-green/7e1fd0942ffd0a1a";
const PROD_RULE: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener-rule/app/cv-matcher-alb/50dc6c495c0c9188/f2f7dc8efc522ab2/9683b2d02a6cabee";
const ALARM: &str = "cv-matcher-production-5xx";

fn td(revision: u32) -> String {
    format!("arn:aws:ecs:us-east-1:123456789012:task-definition/cv-matcher:{revision}")
}

fn revision_arn(id: &str) -> String {
    format!("arn:aws:ecs:us-east-1:123456789012:service-revision/cv-matcher-cluster/cv-matcher-service/{id}")
}

fn target() -> DeployTarget {
    DeployTarget {
        app: "cv-matcher".into(),
        environment: "production".into(),
        cluster: "cv-matcher-cluster".into(),
        service: "cv-matcher-service".into(),
        region: Some("us-east-1".into()),
    }
}

fn handle() -> DeploymentHandle {
    DeploymentHandle {
        id: OURS.into(),
        revision: Revision::new(td(7), "cv-matcher:7"),
    }
}

fn options() -> WaitOptions {
    WaitOptions {
        timeout: Duration::from_secs(600),
        poll_interval: Duration::from_secs(5),
    }
}

fn json_response(body: &Value) -> HttpResponse {
    let mut response = HttpResponse::new(
        StatusCode::try_from(200).unwrap(),
        SdkBody::from(body.to_string()),
    );
    response
        .headers_mut()
        .insert("content-type", "application/x-amz-json-1.1");
    response
}

/// The service as `DescribeServices` (or `UpdateService`) shows it during a blue/green
/// release: our deployment PRIMARY, and `currentServiceDeployment` set.
fn service(strategy: &str) -> Value {
    json!({
        "serviceArn": SERVICE_ARN,
        "serviceName": "cv-matcher-service",
        "clusterArn": CLUSTER_ARN,
        "loadBalancers": [{
            "targetGroupArn": BLUE_TG,
            "containerName": "cv-matcher",
            "containerPort": 8000
        }],
        "status": "ACTIVE",
        "desiredCount": 2,
        "runningCount": 2,
        "pendingCount": 0,
        "launchType": "FARGATE",
        "taskDefinition": td(7),
        "deploymentConfiguration": {
            "deploymentCircuitBreaker": {"enable": true, "rollback": true},
            "maximumPercent": 200,
            "minimumHealthyPercent": 100,
            "alarms": {"alarmNames": [ALARM], "enable": true, "rollback": true},
            "strategy": strategy,
            "bakeTimeInMinutes": 10
        },
        "deployments": [
            {
                "id": OURS, "status": "PRIMARY", "taskDefinition": td(7),
                "desiredCount": 2, "pendingCount": 2, "runningCount": 0, "failedTasks": 0,
                "createdAt": 1_764_166_500.123, "updatedAt": 1_764_166_500.123,
                "launchType": "FARGATE", "rolloutState": "IN_PROGRESS",
                "rolloutStateReason": format!("ECS deployment {OURS} in progress.")
            },
            {
                "id": "ecs-svc/1851060735485356621", "status": "ACTIVE", "taskDefinition": td(6),
                "desiredCount": 2, "pendingCount": 0, "runningCount": 2, "failedTasks": 0,
                "createdAt": 1_764_080_000.5, "updatedAt": 1_764_080_030.5,
                "launchType": "FARGATE", "rolloutState": "COMPLETED",
                "rolloutStateReason": "ECS deployment ecs-svc/1851060735485356621 completed."
            }
        ],
        "currentServiceDeployment": SD_ARN,
        "events": [],
        "createdAt": 1_764_000_000.0,
        "schedulingStrategy": "REPLICA",
        "deploymentController": {"type": "ECS"}
    })
}

fn describe_services(strategy: &str) -> HttpResponse {
    json_response(&json!({"services": [service(strategy)], "failures": []}))
}

/// One `ServiceDeployment` with the fields ECS returns.
struct Sd {
    status: &'static str,
    stage: &'static str,
    running: i32,
    production_weight: f64,
    strategy: &'static str,
    breaker: &'static str,
    alarms: &'static str,
    triggered: &'static [&'static str],
    rollback: Option<&'static str>,
    status_reason: &'static str,
}

fn sd(status: &'static str, stage: &'static str, running: i32, weight: f64) -> Sd {
    Sd {
        status,
        stage,
        running,
        production_weight: weight,
        strategy: "BLUE_GREEN",
        breaker: "MONITORING",
        alarms: "MONITORING",
        triggered: &[],
        rollback: None,
        status_reason: "",
    }
}

fn describe_sd(sd: &Sd) -> HttpResponse {
    describe_sd_created(sd, 1_764_166_500.2)
}

fn describe_sd_created(sd: &Sd, created: f64) -> HttpResponse {
    let mut deployment = json!({
        "serviceDeploymentArn": SD_ARN,
        "serviceArn": SERVICE_ARN,
        "clusterArn": CLUSTER_ARN,
        "createdAt": created,
        "startedAt": 1_764_166_501.0,
        "updatedAt": 1_764_166_560.0,
        "sourceServiceRevisions": [{
            "arn": revision_arn("2298311426612094011"),
            "requestedTaskCount": 2, "runningTaskCount": 2, "pendingTaskCount": 0
        }],
        "targetServiceRevision": {
            "arn": revision_arn("4012873469829315224"),
            "requestedTaskCount": 2,
            "runningTaskCount": sd.running,
            "pendingTaskCount": 2 - sd.running,
            "requestedTestTrafficWeight": 100.0,
            "requestedProductionTrafficWeight": sd.production_weight
        },
        "status": sd.status,
        "lifecycleStage": sd.stage,
        "deploymentConfiguration": {
            "deploymentCircuitBreaker": {"enable": true, "rollback": true},
            "maximumPercent": 200,
            "minimumHealthyPercent": 100,
            "alarms": {"alarmNames": [ALARM], "enable": true, "rollback": true},
            "strategy": sd.strategy,
            "bakeTimeInMinutes": 10
        },
        "deploymentCircuitBreaker": {"status": sd.breaker, "failureCount": 0, "threshold": 3},
        "alarms": {
            "status": sd.alarms,
            "alarmNames": [ALARM],
            "triggeredAlarmNames": sd.triggered
        }
    });
    if !sd.status_reason.is_empty() {
        deployment["statusReason"] = json!(sd.status_reason);
    }
    if let Some(reason) = sd.rollback {
        deployment["rollback"] = json!({
            "reason": reason,
            "startedAt": 1_764_166_700.0,
            "serviceRevisionArn": revision_arn("2298311426612094011")
        });
    }
    json_response(&json!({"serviceDeployments": [deployment], "failures": []}))
}

fn progress(recorded: &RecordedEvents) -> Vec<String> {
    recorded
        .take()
        .into_iter()
        .filter_map(|e| match e {
            PipelineEvent::RolloutProgress { state, .. } => Some(state),
            _ => None,
        })
        .collect()
}

fn blue_green() -> StrategySettings {
    StrategySettings {
        kind: StrategyKind::BlueGreen,
        bake_minutes: Some(10),
        alternate_target_group_arn: Some(GREEN_TG.into()),
        production_listener_rule: Some(PROD_RULE.into()),
        role_arn: Some("arn:aws:iam::123456789012:role/ecs-infrastructure-lb".into()),
        lifecycle_hook: Some(LifecycleHookSettings {
            function_arn: "arn:aws:lambda:us-east-1:123456789012:function:tugboat".into(),
            role_arn: "arn:aws:iam::123456789012:role/tugboat-hook".into(),
            stages: vec![LifecycleStage::PostTestTrafficShift],
        }),
        ..StrategySettings::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_blue_green_release_sets_the_strategy_and_succeeds() {
    let describe = mock!(Client::describe_services)
        .sequence()
        .http_response(|| describe_services("ROLLING"))
        .http_response(|| describe_services("BLUE_GREEN"))
        .build();
    let update = mock!(Client::update_service)
        .match_requests(|r| {
            let config = r.deployment_configuration().unwrap();
            let lb = &r.load_balancers()[0];
            let advanced = lb.advanced_configuration().unwrap();
            let hook = &config.lifecycle_hooks()[0];
            config.strategy() == Some(&DeploymentStrategy::BlueGreen)
                && config.bake_time_in_minutes() == Some(10)
                && config.maximum_percent() == Some(200)
                && config.alarms().is_some()
                && config.deployment_circuit_breaker().is_some()
                && lb.target_group_arn() == Some(BLUE_TG)
                && lb.container_port() == Some(8000)
                && advanced.alternate_target_group_arn() == Some(GREEN_TG)
                && advanced.production_listener_rule() == Some(PROD_RULE)
                && hook.lifecycle_stages().len() == 1
                && hook.lifecycle_stages()[0].as_str() == "POST_TEST_TRAFFIC_SHIFT"
        })
        .then_http_response(|| json_response(&json!({"service": service("BLUE_GREEN")})));
    let deployments = mock!(Client::describe_service_deployments)
        .match_requests(|r| r.service_deployment_arns() == [SD_ARN.to_string()])
        .sequence()
        .http_response(|| describe_sd(&sd("IN_PROGRESS", "SCALE_UP", 1, 0.0)))
        .http_response(|| describe_sd(&sd("IN_PROGRESS", "TEST_TRAFFIC_SHIFT", 2, 0.0)))
        .http_response(|| describe_sd(&sd("IN_PROGRESS", "PRODUCTION_TRAFFIC_SHIFT", 2, 100.0)))
        .http_response(|| describe_sd(&sd("IN_PROGRESS", "BAKE_TIME", 2, 100.0)))
        .http_response(|| describe_sd(&sd("SUCCESSFUL", "CLEAN_UP", 2, 100.0)))
        .build();
    let client = mock_client!(
        aws_sdk_ecs,
        RuleMode::MatchAny,
        &[&describe, &update, &deployments],
        |c| c.retry_config(RetryConfig::disabled())
    );
    let deployer = EcsDeployer::new(client).with_strategy(blue_green());
    let recorded = RecordedEvents::new();
    let events = Events::new().with(recorded.clone());

    let handle = deployer
        .update_service(
            &target(),
            &UpdateRequest {
                revision: Revision::new(td(7), "cv-matcher:7"),
                desired_count: None,
                force_new_deployment: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(handle.id, OURS);
    assert_eq!(update.num_calls(), 1, "the strategy was set on the update");
    let outcome = pipeline_core::follow_rollout(&deployer, &target(), &handle, &options(), &events)
        .await
        .unwrap();

    assert_eq!(outcome, RolloutOutcome::Completed);
    assert_eq!(deployments.num_calls(), 5);
    assert_eq!(
        progress(&recorded),
        [
            "IN_PROGRESS SCALE_UP (production traffic 0%)",
            "IN_PROGRESS TEST_TRAFFIC_SHIFT (production traffic 0%)",
            "IN_PROGRESS PRODUCTION_TRAFFIC_SHIFT (production traffic 100%)",
            "IN_PROGRESS BAKE_TIME (production traffic 100%)",
            "SUCCESSFUL CLEAN_UP (production traffic 100%)",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn an_alarm_during_bake_rolls_back_and_the_failure_names_it() {
    let describe =
        mock!(Client::describe_services).then_http_response(|| describe_services("BLUE_GREEN"));
    let deployments = mock!(Client::describe_service_deployments)
        .sequence()
        .http_response(|| describe_sd(&sd("IN_PROGRESS", "BAKE_TIME", 2, 100.0)))
        .http_response(|| {
            describe_sd(&Sd {
                alarms: "TRIGGERED",
                triggered: &[ALARM],
                rollback: Some(
                    "Service deployment rolled back because the CloudWatch alarm was triggered.",
                ),
                ..sd("ROLLBACK_IN_PROGRESS", "PRODUCTION_TRAFFIC_SHIFT", 2, 0.0)
            })
        })
        .http_response(|| {
            describe_sd(&Sd {
                alarms: "TRIGGERED",
                triggered: &[ALARM],
                rollback: Some(
                    "Service deployment rolled back because the CloudWatch alarm was triggered.",
                ),
                status_reason: "Service deployment rolled back.",
                ..sd("ROLLBACK_SUCCESSFUL", "CLEAN_UP", 0, 0.0)
            })
        })
        .build();
    let client = mock_client!(
        aws_sdk_ecs,
        RuleMode::MatchAny,
        &[&describe, &deployments],
        |c| c.retry_config(RetryConfig::disabled())
    );

    let outcome = pipeline_core::follow_rollout(
        &EcsDeployer::new(client),
        &target(),
        &handle(),
        &options(),
        &Events::new(),
    )
    .await
    .unwrap();

    match &outcome {
        RolloutOutcome::RolledBackByPlatform { reason } => {
            assert!(reason.contains(ALARM), "{reason}");
            assert!(reason.contains("went into ALARM"), "{reason}");
        }
        other => panic!("expected RolledBackByPlatform, got {other:?}"),
    }
    assert!(!outcome.is_success());
}

#[tokio::test(start_paused = true)]
async fn a_canary_whose_hook_fails_is_rolled_back_with_the_hook_named() {
    const HOOK_REASON: &str = "Lifecycle hook arn:aws:lambda:us-east-1:123456789012:function:tugboat failed in POST_TEST_TRAFFIC_SHIFT: hookStatus FAILED";
    let describe =
        mock!(Client::describe_services).then_http_response(|| describe_services("CANARY"));
    let deployments = mock!(Client::describe_service_deployments)
        .sequence()
        .http_response(|| {
            describe_sd(&Sd {
                strategy: "CANARY",
                ..sd("IN_PROGRESS", "POST_TEST_TRAFFIC_SHIFT", 2, 0.0)
            })
        })
        .http_response(|| {
            describe_sd(&Sd {
                strategy: "CANARY",
                rollback: Some(HOOK_REASON),
                ..sd("ROLLBACK_SUCCESSFUL", "CLEAN_UP", 0, 0.0)
            })
        })
        .build();
    let client = mock_client!(
        aws_sdk_ecs,
        RuleMode::MatchAny,
        &[&describe, &deployments],
        |c| c.retry_config(RetryConfig::disabled())
    );

    let outcome = pipeline_core::follow_rollout(
        &EcsDeployer::new(client),
        &target(),
        &handle(),
        &options(),
        &Events::new(),
    )
    .await
    .unwrap();

    assert_eq!(
        outcome,
        RolloutOutcome::RolledBackByPlatform {
            reason: HOOK_REASON.into()
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_linear_release_reports_each_step() {
    let linear = |stage, weight| Sd {
        strategy: "LINEAR",
        ..sd("IN_PROGRESS", stage, 2, weight)
    };
    let describe =
        mock!(Client::describe_services).then_http_response(|| describe_services("LINEAR"));
    let deployments = mock!(Client::describe_service_deployments)
        .sequence()
        .http_response(move || describe_sd(&linear("SCALE_UP", 0.0)))
        .http_response(move || describe_sd(&linear("PRODUCTION_TRAFFIC_SHIFT", 25.0)))
        .http_response(move || describe_sd(&linear("PRODUCTION_TRAFFIC_SHIFT", 25.0)))
        .http_response(move || describe_sd(&linear("PRODUCTION_TRAFFIC_SHIFT", 50.0)))
        .http_response(move || describe_sd(&linear("PRODUCTION_TRAFFIC_SHIFT", 75.0)))
        .http_response(move || describe_sd(&linear("PRODUCTION_TRAFFIC_SHIFT", 100.0)))
        .http_response(move || describe_sd(&linear("BAKE_TIME", 100.0)))
        .http_response(|| {
            describe_sd(&Sd {
                strategy: "LINEAR",
                breaker: "MONITORING_COMPLETE",
                alarms: "MONITORING_COMPLETE",
                ..sd("SUCCESSFUL", "CLEAN_UP", 2, 100.0)
            })
        })
        .build();
    let client = mock_client!(
        aws_sdk_ecs,
        RuleMode::MatchAny,
        &[&describe, &deployments],
        |c| c.retry_config(RetryConfig::disabled())
    );
    let recorded = RecordedEvents::new();
    let events = Events::new().with(recorded.clone());

    let outcome = pipeline_core::follow_rollout(
        &EcsDeployer::new(client),
        &target(),
        &handle(),
        &options(),
        &events,
    )
    .await
    .unwrap();

    assert_eq!(outcome, RolloutOutcome::Completed);
    assert_eq!(
        progress(&recorded),
        [
            "IN_PROGRESS SCALE_UP (production traffic 0%)",
            "IN_PROGRESS PRODUCTION_TRAFFIC_SHIFT (production traffic 25%)",
            "IN_PROGRESS PRODUCTION_TRAFFIC_SHIFT (production traffic 50%)",
            "IN_PROGRESS PRODUCTION_TRAFFIC_SHIFT (production traffic 75%)",
            "IN_PROGRESS PRODUCTION_TRAFFIC_SHIFT (production traffic 100%)",
            "IN_PROGRESS BAKE_TIME (production traffic 100%)",
            "SUCCESSFUL CLEAN_UP (production traffic 100%)",
        ],
        "one progress event per step, none for an unchanged look"
    );
}

#[tokio::test(start_paused = true)]
async fn roll_back_stops_a_service_deployment_in_progress_and_waits_for_rollback_successful() {
    let describe =
        mock!(Client::describe_services).then_http_response(|| describe_services("BLUE_GREEN"));
    let deployments = mock!(Client::describe_service_deployments)
        .sequence()
        .http_response(|| describe_sd(&sd("IN_PROGRESS", "BAKE_TIME", 2, 100.0)))
        .http_response(|| {
            describe_sd(&sd(
                "ROLLBACK_IN_PROGRESS",
                "PRODUCTION_TRAFFIC_SHIFT",
                2,
                0.0,
            ))
        })
        .http_response(|| describe_sd(&sd("ROLLBACK_SUCCESSFUL", "CLEAN_UP", 0, 0.0)))
        .build();
    let stop = mock!(Client::stop_service_deployment)
        .match_requests(|r| {
            r.service_deployment_arn() == Some(SD_ARN)
                && r.stop_type() == Some(&StopServiceDeploymentStopType::Rollback)
        })
        .then_http_response(|| json_response(&json!({"serviceDeploymentArn": SD_ARN})));
    let update = mock!(Client::update_service)
        .then_http_response(|| json_response(&json!({"service": service("BLUE_GREEN")})));
    let client = mock_client!(
        aws_sdk_ecs,
        RuleMode::MatchAny,
        &[&describe, &deployments, &stop, &update],
        |c| c.retry_config(RetryConfig::disabled())
    );
    let deployer = EcsDeployer::new(client);
    let previous = Revision::new(td(6), "cv-matcher:6");

    let request = RestoreRequest {
        to: previous,
        from: Some(Revision::new(td(7), "cv-matcher:7")),
    };
    let rollback = deployer.roll_back(&target(), &request).await.unwrap();
    assert_eq!(rollback.id, SD_ARN);
    assert_eq!(stop.num_calls(), 1);
    assert_eq!(update.num_calls(), 0, "no new deployment is started");
    let outcome =
        pipeline_core::follow_rollout(&deployer, &target(), &rollback, &options(), &Events::new())
            .await
            .unwrap();

    assert_eq!(outcome, RolloutOutcome::Completed);
}

#[tokio::test(start_paused = true)]
async fn an_earlier_current_service_deployment_is_not_taken_for_ours() {
    // ECS still names yesterday's (SUCCESSFUL) service deployment: its success is not
    // this release's; the `deployments` array decides.
    let describe = mock!(Client::describe_services)
        .sequence()
        .http_response(|| describe_services("BLUE_GREEN"))
        .http_response(|| {
            let mut service = service("BLUE_GREEN");
            service["deployments"][0]["rolloutState"] = json!("FAILED");
            service["deployments"][0]["rolloutStateReason"] =
                json!("ECS deployment circuit breaker: tasks failed to start.");
            json_response(&json!({"services": [service], "failures": []}))
        })
        .build();
    let deployments = mock!(Client::describe_service_deployments).then_http_response(|| {
        describe_sd_created(&sd("SUCCESSFUL", "CLEAN_UP", 2, 100.0), 1_764_080_000.5)
    });
    let client = mock_client!(
        aws_sdk_ecs,
        RuleMode::MatchAny,
        &[&describe, &deployments],
        |c| c.retry_config(RetryConfig::disabled())
    );

    let outcome = pipeline_core::follow_rollout(
        &EcsDeployer::new(client),
        &target(),
        &handle(),
        &options(),
        &Events::new(),
    )
    .await
    .unwrap();

    assert_eq!(
        outcome,
        RolloutOutcome::Failed {
            reason: "ECS deployment circuit breaker: tasks failed to start.".into()
        }
    );
    assert_eq!(deployments.num_calls(), 1);
}

/// `roll_back` when the service's current service deployment is in `status`: which of
/// StopServiceDeployment and UpdateService it calls.
async fn roll_back_with_service_deployment(
    status: &'static str,
    from: u32,
) -> (usize, usize, String) {
    let describe =
        mock!(Client::describe_services).then_http_response(|| describe_services("BLUE_GREEN"));
    let deployments = mock!(Client::describe_service_deployments)
        .then_http_response(move || describe_sd(&sd(status, "BAKE_TIME", 2, 100.0)));
    let stop = mock!(Client::stop_service_deployment)
        .then_http_response(|| json_response(&json!({"serviceDeploymentArn": SD_ARN})));
    let update = mock!(Client::update_service)
        .match_requests(|r| {
            r.task_definition() == Some(td(6).as_str()) && r.desired_count().is_none()
        })
        .then_http_response(|| {
            let mut service = service("BLUE_GREEN");
            service["deployments"][0]["id"] = json!("ecs-svc/restore");
            service["deployments"][0]["taskDefinition"] = json!(td(6));
            json_response(&json!({"service": service}))
        });
    let client = mock_client!(
        aws_sdk_ecs,
        RuleMode::MatchAny,
        &[&describe, &deployments, &stop, &update],
        |c| c.retry_config(RetryConfig::disabled())
    );
    let request = RestoreRequest {
        to: Revision::new(td(6), "cv-matcher:6"),
        from: Some(Revision::new(td(from), format!("cv-matcher:{from}"))),
    };
    let handle = EcsDeployer::new(client)
        .roll_back(&target(), &request)
        .await
        .unwrap();
    (stop.num_calls(), update.num_calls(), handle.id)
}

#[tokio::test]
async fn a_service_deployment_that_does_not_carry_the_release_is_not_stopped() {
    // The service deployment in progress carries cv-matcher:7; the release being
    // abandoned registered cv-matcher:8 (someone else's deployment took over).
    let (stops, updates, followed) = roll_back_with_service_deployment("IN_PROGRESS", 8).await;
    assert_eq!(
        stops, 0,
        "someone else's service deployment is never stopped"
    );
    assert_eq!(updates, 1, "the service is pointed at the target instead");
    assert_eq!(followed, "ecs-svc/restore");
}

#[tokio::test]
async fn a_finished_rollback_is_never_followed_again() {
    // An old ROLLBACK_SUCCESSFUL service deployment is not this rollback: the service is
    // on cv-matcher:7, so it is updated to cv-matcher:6.
    let (stops, updates, followed) =
        roll_back_with_service_deployment("ROLLBACK_SUCCESSFUL", 7).await;
    assert_eq!(stops, 0);
    assert_eq!(updates, 1);
    assert_eq!(followed, "ecs-svc/restore");
}

#[tokio::test]
async fn a_rollback_in_progress_for_the_release_is_followed() {
    let (stops, updates, followed) =
        roll_back_with_service_deployment("ROLLBACK_IN_PROGRESS", 7).await;
    assert_eq!((stops, updates), (0, 0), "ECS is rolling it back already");
    assert_eq!(followed, SD_ARN);
}

/// What ECS answers a `StopServiceDeployment` for a deployment no longer in progress.
fn not_stoppable() -> HttpResponse {
    HttpResponse::new(
        StatusCode::try_from(400).unwrap(),
        SdkBody::from(
            json!({
                "__type": "InvalidParameterException",
                "message": "The service deployment is not in a state that can be stopped."
            })
            .to_string(),
        ),
    )
}

/// `roll_back` whose StopServiceDeployment is refused, with the service deployment in
/// `after` when it is described again.
async fn roll_back_with_refused_stop(after: &'static str) -> Result<String, String> {
    let describe =
        mock!(Client::describe_services).then_http_response(|| describe_services("BLUE_GREEN"));
    let deployments = mock!(Client::describe_service_deployments)
        .sequence()
        .http_response(|| describe_sd(&sd("IN_PROGRESS", "BAKE_TIME", 2, 100.0)))
        .http_response(move || describe_sd(&sd(after, "PRODUCTION_TRAFFIC_SHIFT", 2, 0.0)))
        .build();
    let stop = mock!(Client::stop_service_deployment).then_http_response(not_stoppable);
    let update = mock!(Client::update_service)
        .then_http_response(|| json_response(&json!({"service": service("BLUE_GREEN")})));
    let client = mock_client!(
        aws_sdk_ecs,
        RuleMode::MatchAny,
        &[&describe, &deployments, &stop, &update],
        |c| c.retry_config(RetryConfig::disabled())
    );
    let request = RestoreRequest {
        to: Revision::new(td(6), "cv-matcher:6"),
        from: Some(Revision::new(td(7), "cv-matcher:7")),
    };
    let result = EcsDeployer::new(client)
        .roll_back(&target(), &request)
        .await
        .map(|handle| handle.id)
        .map_err(|err| err.message);
    assert_eq!(stop.num_calls(), 1);
    assert_eq!(update.num_calls(), 0, "no new deployment is started");
    result
}

#[tokio::test(start_paused = true)]
async fn a_refused_stop_of_a_deployment_already_rolling_back_is_the_rollback() {
    // The first try's answer was lost; the SDK's retry is refused since ECS is rolling
    // the deployment back already, as asked.
    assert_eq!(
        roll_back_with_refused_stop("ROLLBACK_IN_PROGRESS").await,
        Ok(SD_ARN.to_string())
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_stop_of_a_deployment_still_in_progress_fails() {
    let result = roll_back_with_refused_stop("IN_PROGRESS").await;
    assert!(
        result
            .as_ref()
            .is_err_and(|m| m.contains("StopServiceDeployment")),
        "{result:?}"
    );
}
