//! `TargetHealthCheck` on moto: an ECS service behind an ALB target group whose
//! registered targets are healthy, and a service with no load balancer at all.

use anyhow::Context;
use aws_adapters::TargetHealthCheck;
use aws_sdk_ecs::types::{LaunchType, LoadBalancer};
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, LoadBalancerTypeEnum, ProtocolEnum, TargetDescription,
    TargetHealthStateEnum, TargetTypeEnum,
};
use pipeline_core::{
    DeployTarget, Events, PipelineEvent, RecordedEvents, ReleaseId, Revision, Verifier,
    VerifyContext,
};
use std::time::Duration;
use tugboat_tests::aws::AwsFixture;
use tugboat_tests::cv_matcher::{self as cv, CvMatcher};

const WEB_SERVICE: &str = "cv-matcher-web";
const TARGET_IPS: [&str; 2] = ["172.31.1.17", "172.31.2.41"];

fn context(target: &DeployTarget, revision: &str) -> VerifyContext {
    VerifyContext {
        target: target.clone(),
        release_id: ReleaseId("20261126T100000Z-dddddddd".into()),
        revision: Revision::new(revision, cv::label(revision)),
        image: None,
        release_started_at: chrono::Utc::now(),
    }
}

fn infos(recorded: &RecordedEvents) -> Vec<String> {
    recorded
        .take()
        .into_iter()
        .filter_map(|e| match e {
            PipelineEvent::Info { message } => Some(message),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_targets_of_the_service_target_group_pass() -> anyhow::Result<()> {
    let cv = CvMatcher::setup(AwsFixture::start().await?).await?;
    let clients = &cv.aws.clients;
    let network = cv.aws.moto.default_network().await?;

    // An ALB in the default VPC, a target group of IP targets on port 8000 behind a
    // listener, the service's two task IPs registered in it.
    let balancer = clients
        .elbv2
        .create_load_balancer()
        .name("cv-matcher-alb")
        .r#type(LoadBalancerTypeEnum::Application)
        .set_subnets(Some(network.subnet_ids.iter().take(2).cloned().collect()))
        .send()
        .await
        .context("CreateLoadBalancer")?;
    let balancer_arn = balancer
        .load_balancers()
        .first()
        .and_then(|b| b.load_balancer_arn())
        .context("no load balancer ARN")?
        .to_string();
    let group = clients
        .elbv2
        .create_target_group()
        .name("cv-matcher-tg")
        .protocol(ProtocolEnum::Http)
        .port(8000)
        .vpc_id(&network.vpc_id)
        .target_type(TargetTypeEnum::Ip)
        .health_check_path("/health")
        .send()
        .await
        .context("CreateTargetGroup")?;
    let group_arn = group
        .target_groups()
        .first()
        .and_then(|g| g.target_group_arn())
        .context("no target group ARN")?
        .to_string();
    clients
        .elbv2
        .create_listener()
        .load_balancer_arn(&balancer_arn)
        .protocol(ProtocolEnum::Http)
        .port(80)
        .default_actions(
            Action::builder()
                .r#type(ActionTypeEnum::Forward)
                .target_group_arn(&group_arn)
                .build(),
        )
        .send()
        .await
        .context("CreateListener")?;
    let mut register = clients
        .elbv2
        .register_targets()
        .target_group_arn(&group_arn);
    for ip in TARGET_IPS {
        register = register.targets(TargetDescription::builder().id(ip).port(8000).build());
    }
    register.send().await.context("RegisterTargets")?;
    clients
        .ecs
        .create_service()
        .cluster(&cv.target.cluster)
        .service_name(WEB_SERVICE)
        .task_definition(&cv.initial_revision)
        .desired_count(2)
        .launch_type(LaunchType::Fargate)
        .load_balancers(
            LoadBalancer::builder()
                .target_group_arn(&group_arn)
                .container_name(cv::CONTAINER)
                .container_port(8000)
                .build(),
        )
        .send()
        .await
        .context("CreateService")?;
    let described = clients
        .ecs
        .describe_services()
        .cluster(&cv.target.cluster)
        .services(WEB_SERVICE)
        .send()
        .await?;
    assert_eq!(
        described
            .services()
            .first()
            .and_then(|s| s.load_balancers().first())
            .and_then(|l| l.target_group_arn()),
        Some(group_arn.as_str()),
        "ECS keeps the service's target group"
    );
    let health = clients
        .elbv2
        .describe_target_health()
        .target_group_arn(&group_arn)
        .send()
        .await?;
    let states: Vec<(Option<&str>, Option<&TargetHealthStateEnum>)> = health
        .target_health_descriptions()
        .iter()
        .map(|d| {
            (
                d.target().and_then(|t| t.id()),
                d.target_health().and_then(|h| h.state()),
            )
        })
        .collect();
    assert_eq!(
        states,
        TARGET_IPS
            .iter()
            .map(|ip| (Some(*ip), Some(&TargetHealthStateEnum::Healthy)))
            .collect::<Vec<_>>()
    );

    let web = DeployTarget {
        service: WEB_SERVICE.to_string(),
        ..cv.target.clone()
    };
    let recorded = RecordedEvents::new();
    let events = Events::new().with(recorded.clone());
    cv.aws.calls.reset();
    TargetHealthCheck::new(
        clients.ecs.clone(),
        clients.elbv2.clone(),
        Duration::from_secs(10),
    )
    .with_poll_interval(Duration::from_millis(200))
    .verify(&context(&web, &cv.initial_revision), &events)
    .await
    .map_err(|err| anyhow::anyhow!("{err}"))?;

    assert_eq!(infos(&recorded), ["2 target(s) healthy in cv-matcher-tg"]);
    let calls = cv.aws.calls.snapshot();
    assert_eq!(calls.calls_of("ecs.DescribeServices"), 1, "{calls}");
    assert_eq!(
        calls.calls_of("elastic load balancing v2.DescribeTargetHealth"),
        1,
        "{calls}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_load_balancers_has_nothing_to_check() -> anyhow::Result<()> {
    let cv = CvMatcher::setup(AwsFixture::start().await?).await?;
    let recorded = RecordedEvents::new();
    let events = Events::new().with(recorded.clone());

    TargetHealthCheck::new(
        cv.aws.clients.ecs.clone(),
        cv.aws.clients.elbv2.clone(),
        Duration::from_secs(10),
    )
    .verify(&context(&cv.target, &cv.initial_revision), &events)
    .await
    .map_err(|err| anyhow::anyhow!("{err}"))?;

    assert_eq!(
        infos(&recorded),
        [
            "service cv-matcher-cluster/cv-matcher-service has no load balancer target groups: \
          no target health to check"
        ]
    );
    Ok(())
}
