//! `EcsDeployer` against scripted ECS answers (aws-smithy-mocks): the rollout waiter
//! fed with `DescribeServices` bodies shaped like real ECS output, and the exact body
//! `RegisterTaskDefinition` sends. Time is tokio's paused clock, so the polls cost
//! nothing and their spacing can be checked exactly.

#![allow(clippy::unwrap_used)]

use aws_adapters::EcsDeployer;
use aws_sdk_ecs::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_ecs::config::retry::RetryConfig;
use aws_sdk_ecs::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_ecs::error::BoxError;
use aws_sdk_ecs::Client;
use aws_smithy_mocks::{mock, mock_client, RuleMode};
use aws_smithy_runtime_api::http::{Response as HttpResponse, StatusCode};
use aws_smithy_types::body::SdkBody;
use pipeline_core::task_definition::{RenderedTaskDefinition, ResourceTag};
use pipeline_core::{
    DeployTarget, Deployer, DeploymentHandle, Events, PipelineEvent, RecordedEvents, Revision,
    RolloutOutcome, TaskDefinition, WaitOptions,
};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CLUSTER_ARN: &str = "arn:aws:ecs:us-east-1:123456789012:cluster/cv-matcher-cluster";
const SERVICE_ARN: &str =
    "arn:aws:ecs:us-east-1:123456789012:service/cv-matcher-cluster/cv-matcher-service";
const OURS: &str = "ecs-svc/4012873469829315224";
const OLD: &str = "ecs-svc/1851060735485356621";
const ROLLBACK: &str = "ecs-svc/7702148519911208934";

fn td(revision: u32) -> String {
    format!("arn:aws:ecs:us-east-1:123456789012:task-definition/cv-matcher:{revision}")
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
        timeout: Duration::from_secs(60),
        poll_interval: Duration::from_secs(1),
    }
}

/// One entry of `deployments`, with every field a Fargate rolling deployment has.
struct Dep {
    id: &'static str,
    status: &'static str,
    revision: u32,
    state: &'static str,
    reason: String,
    running: i32,
    failed: i32,
    created: f64,
}

impl Dep {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "status": self.status,
            "taskDefinition": td(self.revision),
            "desiredCount": 2,
            "pendingCount": if self.state == "IN_PROGRESS" { 2 - self.running } else { 0 },
            "runningCount": self.running,
            "failedTasks": self.failed,
            "createdAt": self.created,
            "updatedAt": self.created + 30.0,
            "launchType": "FARGATE",
            "platformVersion": "1.4.0",
            "platformFamily": "Linux",
            "networkConfiguration": {"awsvpcConfiguration": {
                "subnets": ["subnet-0a1b2c3d4e5f67890"],
                "securityGroups": ["sg-0123456789abcdef0"],
                "assignPublicIp": "DISABLED"
            }},
            "rolloutState": self.state,
            "rolloutStateReason": self.reason
        })
    }
}

fn ours(state: &'static str, status: &'static str, running: i32, failed: i32) -> Dep {
    let reason = match state {
        "COMPLETED" => format!("ECS deployment {OURS} completed."),
        "FAILED" => "ECS deployment circuit breaker: tasks failed to start.".to_string(),
        _ => format!("ECS deployment {OURS} in progress."),
    };
    Dep {
        id: OURS,
        status,
        revision: 7,
        state,
        reason,
        running,
        failed,
        created: 1_764_166_500.123,
    }
}

fn old() -> Dep {
    Dep {
        id: OLD,
        status: "ACTIVE",
        revision: 6,
        state: "COMPLETED",
        reason: format!("ECS deployment {OLD} completed."),
        running: 2,
        failed: 0,
        created: 1_764_080_000.5,
    }
}

/// A `DescribeServices` answer, as ECS sends it.
fn describe(deployments: &[Dep], events: &[(&str, f64, &str)]) -> HttpResponse {
    let primary = deployments.iter().find(|d| d.status == "PRIMARY").unwrap();
    let body = json!({
        "services": [{
            "serviceArn": SERVICE_ARN,
            "serviceName": "cv-matcher-service",
            "clusterArn": CLUSTER_ARN,
            "loadBalancers": [],
            "serviceRegistries": [],
            "status": "ACTIVE",
            "desiredCount": 2,
            "runningCount": deployments.iter().map(|d| d.running).sum::<i32>(),
            "pendingCount": 0,
            "launchType": "FARGATE",
            "platformVersion": "LATEST",
            "platformFamily": "Linux",
            "taskDefinition": td(primary.revision),
            "deploymentConfiguration": {
                "deploymentCircuitBreaker": {"enable": true, "rollback": true},
                "maximumPercent": 200,
                "minimumHealthyPercent": 100
            },
            "deployments": deployments.iter().map(Dep::json).collect::<Vec<_>>(),
            "roleArn": "arn:aws:iam::123456789012:role/aws-service-role/ecs.amazonaws.com/AWSServiceRoleForECS",
            "events": events.iter().map(|(id, at, message)| json!({
                "id": id, "createdAt": at, "message": message
            })).collect::<Vec<_>>(),
            "createdAt": 1_764_000_000.0,
            "placementConstraints": [],
            "placementStrategy": [],
            "schedulingStrategy": "REPLICA",
            "deploymentController": {"type": "ECS"},
            "createdBy": "arn:aws:iam::123456789012:role/github-deploy",
            "enableECSManagedTags": false,
            "propagateTags": "NONE",
            "enableExecuteCommand": false,
            "availabilityZoneRebalancing": "ENABLED"
        }],
        "failures": []
    });
    json_response(200, &body)
}

fn json_response(status: u16, body: &Value) -> HttpResponse {
    let mut response = HttpResponse::new(
        StatusCode::try_from(status).unwrap(),
        SdkBody::from(body.to_string()),
    );
    response
        .headers_mut()
        .insert("content-type", "application/x-amz-json-1.1");
    response
}

fn throttled() -> HttpResponse {
    let mut response = json_response(
        400,
        &json!({"__type": "com.amazonaws.ecs#ThrottlingException", "message": "Rate exceeded"}),
    );
    response.headers_mut().insert(
        "x-amzn-errortype",
        "ThrottlingException:http://internal.amazon.com/coral/com.amazon.coral.availability/",
    );
    response
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

#[tokio::test(start_paused = true)]
async fn in_progress_then_completed_is_completed() {
    let rule = mock!(Client::describe_services)
        .match_requests(|r| r.cluster() == Some("cv-matcher-cluster"))
        .sequence()
        .http_response(|| describe(&[ours("IN_PROGRESS", "PRIMARY", 1, 0), old()], &[]))
        .http_response(|| {
            describe(
                &[ours("COMPLETED", "PRIMARY", 2, 0)],
                &[(
                    "e2",
                    1_764_166_560.0,
                    "(service cv-matcher-service) has reached a steady state.",
                )],
            )
        })
        .build();
    let client = mock_client!(aws_sdk_ecs, RuleMode::Sequential, &[&rule], |c| c
        .retry_config(RetryConfig::disabled()));
    let started = tokio::time::Instant::now();

    let outcome = pipeline_core::follow_rollout(
        &EcsDeployer::new(client),
        &target(),
        &handle(),
        &options(),
        &Events::new(),
    )
    .await
    .unwrap();

    assert_eq!(outcome, RolloutOutcome::Completed);
    assert_eq!(rule.num_calls(), 2);
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(1),
        "one poll interval"
    );
}

#[tokio::test(start_paused = true)]
async fn circuit_breaker_rollback_is_rolled_back_by_platform() {
    let rule = mock!(Client::describe_services)
        .sequence()
        .http_response(|| describe(&[ours("IN_PROGRESS", "PRIMARY", 0, 2), old()], &[]))
        .http_response(|| {
            let rollback = Dep {
                id: ROLLBACK,
                status: "PRIMARY",
                revision: 6,
                state: "IN_PROGRESS",
                reason: format!("ECS deployment {ROLLBACK} in progress."),
                running: 0,
                failed: 0,
                created: 1_764_166_590.0,
            };
            describe(
                &[rollback, ours("FAILED", "ACTIVE", 0, 3), old()],
                &[(
                    "e3",
                    1_764_166_590.0,
                    "(service cv-matcher-service) (deployment ecs-svc/4012873469829315224) deployment failed: tasks failed to start.",
                )],
            )
        })
        .build();
    let client = mock_client!(aws_sdk_ecs, RuleMode::Sequential, &[&rule], |c| c
        .retry_config(RetryConfig::disabled()));
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

    match &outcome {
        RolloutOutcome::RolledBackByPlatform { reason } => {
            assert!(reason.contains("circuit breaker"), "{reason}");
            assert!(
                reason.contains(ROLLBACK) && reason.contains("cv-matcher:6"),
                "{reason}"
            );
        }
        other => panic!("expected RolledBackByPlatform, got {other:?}"),
    }
    assert!(!outcome.is_success());
    assert_eq!(rule.num_calls(), 2);
    let warnings = warnings(&recorded);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("failed to start or stay healthy")),
        "{warnings:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn throttling_backs_off_then_completes() {
    let rule = mock!(Client::describe_services)
        .sequence()
        .http_response(|| describe(&[ours("IN_PROGRESS", "PRIMARY", 1, 0), old()], &[]))
        .http_response(throttled)
        .http_response(|| describe(&[ours("COMPLETED", "PRIMARY", 2, 0)], &[]))
        .build();
    // SDK retries off, so the waiter itself meets the throttling error.
    let client = mock_client!(aws_sdk_ecs, RuleMode::Sequential, &[&rule], |c| c
        .retry_config(RetryConfig::disabled()));
    let recorded = RecordedEvents::new();
    let events = Events::new().with(recorded.clone());
    let started = tokio::time::Instant::now();

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
    assert_eq!(rule.num_calls(), 3);
    // 1 s poll, then twice the poll interval after the throttled look.
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    let warnings = warnings(&recorded);
    assert!(
        warnings.iter().any(|w| w.contains("throttling")),
        "{warnings:?}"
    );
}

/// Keeps the body of the last request the client sent.
#[derive(Clone, Debug, Default)]
struct CaptureRequest(Arc<Mutex<Option<Vec<u8>>>>);

impl Intercept for CaptureRequest {
    fn name(&self) -> &'static str {
        "CaptureRequest"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let bytes = context.request().body().bytes().map(<[u8]>::to_vec);
        *self.0.lock().unwrap() = bytes;
        Ok(())
    }
}

#[tokio::test]
async fn register_sends_fields_the_sdk_does_not_know() {
    let file = json!({
        "family": "cv-matcher",
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "256",
        "memory": "512",
        "runtimePlatform": {"cpuArchitecture": "ARM64", "operatingSystemFamily": "LINUX"},
        "someFieldFromTheFuture": {"enabled": true, "level": 3},
        "containerDefinitions": [{
            "name": "cv-matcher",
            "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/cv_matcher@sha256:0f0f",
            "portMappings": [{"containerPort": 8000, "protocol": "tcp"}],
            "restartPolicy": {"enabled": true, "restartAttemptPeriod": 60},
            "anotherNewContainerField": ["a", "b"]
        }]
    });
    let definition =
        TaskDefinition::parse(Path::new("task-definition.json"), &file.to_string()).unwrap();
    let rendered = RenderedTaskDefinition {
        definition,
        tags: vec![ResourceTag {
            key: "tugboat:release".into(),
            value: "r20261126-141500-abc1234".into(),
        }],
    };
    let rule = mock!(Client::register_task_definition).then_http_response(|| {
        json_response(
            200,
            &json!({"taskDefinition": {
                "taskDefinitionArn": td(8), "family": "cv-matcher", "revision": 8, "status": "ACTIVE",
                "containerDefinitions": []
            }, "tags": []}),
        )
    });
    let capture = CaptureRequest::default();
    let interceptor = capture.clone();
    let client = mock_client!(aws_sdk_ecs, RuleMode::Sequential, &[&rule], |c| c
        .interceptor(interceptor.clone()));

    let revision = EcsDeployer::new(client)
        .register(&target(), &rendered)
        .await
        .unwrap();

    assert_eq!(revision.label, "cv-matcher:8");
    let sent: Value = serde_json::from_slice(&capture.0.lock().unwrap().clone().unwrap()).unwrap();
    assert_eq!(
        sent["someFieldFromTheFuture"],
        json!({"enabled": true, "level": 3})
    );
    assert_eq!(sent["runtimePlatform"]["cpuArchitecture"], "ARM64");
    let container = &sent["containerDefinitions"][0];
    assert_eq!(container["anotherNewContainerField"], json!(["a", "b"]));
    assert_eq!(container["restartPolicy"]["restartAttemptPeriod"], 60);
    assert_eq!(container["portMappings"][0]["containerPort"], 8000);
    assert_eq!(
        sent["tags"],
        json!([{"key": "tugboat:release", "value": "r20261126-141500-abc1234"}])
    );
    assert_eq!(sent["cpu"], "256", "cpu stays a string");
}
