//! The health of the service's load balancer targets as a [`Verifier`].

use crate::errors::stage_error;
use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2::types::{TargetHealthDescription, TargetHealthStateEnum};
use pipeline_core::{Events, StageError, Verifier, VerifyContext};
use std::time::Duration;
use tokio::time::Instant;

/// One registered target as `DescribeTargetHealth` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetView {
    /// The target group's name (or ARN when it has no name part).
    pub group: String,
    /// An IP address or instance id.
    pub id: String,
    pub port: Option<i32>,
    /// `initial`, `healthy`, `unhealthy`, `unused`, `draining`, `unavailable`, ...
    pub state: String,
    /// `Target.ResponseCodeMismatch`, `Elb.RegistrationInProgress`, ...
    pub reason: Option<String>,
    pub description: Option<String>,
}

impl TargetView {
    fn from_description(group: &str, description: &TargetHealthDescription) -> Self {
        let target = description.target();
        let health = description.target_health();
        Self {
            group: group.to_string(),
            id: target
                .and_then(|t| t.id())
                .unwrap_or("unknown target")
                .to_string(),
            port: target.and_then(|t| t.port()),
            state: health
                .and_then(|h| h.state())
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|| "unknown".to_string()),
            reason: health
                .and_then(|h| h.reason())
                .map(|r| r.as_str().to_string()),
            description: health.and_then(|h| h.description()).map(str::to_string),
        }
    }

    fn label(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.id),
            None => self.id.clone(),
        }
    }

    fn explained(&self) -> String {
        let mut text = format!("{} is {}", self.label(), self.state);
        match (&self.reason, &self.description) {
            (Some(reason), Some(description)) => {
                text.push_str(&format!(": {reason} ({description})"))
            }
            (Some(reason), None) => text.push_str(&format!(": {reason}")),
            (None, Some(description)) => text.push_str(&format!(": {description}")),
            (None, None) => {}
        }
        text
    }

    /// Draining targets are leaving the group (the previous release's tasks): they are
    /// not judged.
    fn leaving(&self) -> bool {
        self.state == TargetHealthStateEnum::Draining.as_str()
            || self.state == TargetHealthStateEnum::UnhealthyDraining.as_str()
    }
}

/// What the targets of one look say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetsVerdict {
    /// Every registered target of every group is `healthy`.
    Healthy,
    /// Some are still `initial` (or a group has none yet): look again.
    Waiting(String),
    /// Some target is `unhealthy` (or `unused`, `unavailable`): the release fails.
    Unhealthy(String),
}

/// Judges one look at every target group of the service: `groups` holds each group's
/// name and its targets.
pub fn judge_targets(groups: &[(String, Vec<TargetView>)]) -> TargetsVerdict {
    let mut bad = Vec::new();
    let mut waiting = Vec::new();
    for (group, targets) in groups {
        let judged: Vec<&TargetView> = targets.iter().filter(|t| !t.leaving()).collect();
        if judged.is_empty() {
            waiting.push(format!("target group {group} has no registered targets"));
            continue;
        }
        for target in judged {
            if target.state == TargetHealthStateEnum::Healthy.as_str() {
                continue;
            }
            let line = format!("target group {group}: {}", target.explained());
            if target.state == TargetHealthStateEnum::Initial.as_str() {
                waiting.push(line);
            } else {
                bad.push(line);
            }
        }
    }
    if !bad.is_empty() {
        TargetsVerdict::Unhealthy(bad.join("; "))
    } else if !waiting.is_empty() {
        TargetsVerdict::Waiting(waiting.join("; "))
    } else {
        TargetsVerdict::Healthy
    }
}

/// `arn:aws:elasticloadbalancing:…:targetgroup/cv-matcher-tg/6d0ecf831eec9f09` → `cv-matcher-tg`.
fn group_name(arn: &str) -> String {
    arn.split_once(":targetgroup/")
        .and_then(|(_, rest)| rest.split('/').next())
        .unwrap_or(arn)
        .to_string()
}

/// Checks that every target registered in the service's load balancer target groups
/// is `healthy` ([`Verifier`] `targets`).
///
/// The target groups come from the service's `loadBalancers` (ECS `DescribeServices`);
/// each one is read with `DescribeTargetHealth`. Targets in `initial` are waited for
/// (looking every poll interval) until `window` has passed; `unhealthy`, `unused` or
/// `unavailable` targets fail the release at once, naming the target and the reason.
/// `draining` targets (the previous release's tasks leaving) are not judged. A service
/// without target groups passes, with an info event saying there is nothing to check.
///
/// Targets are not mapped to the new task definition's tasks: the check covers every
/// target of the groups. After a completed rollout those are the new release's tasks
/// (ECS has drained the old ones), but a group shared with other services is judged
/// as a whole. (Mapping would need `ListTasks`/`DescribeTasks` for the task IPs, which
/// the emulator the tests run against does not model.)
///
/// ```no_run
/// # fn example(clients: aws_adapters::AwsClients) {
/// use aws_adapters::TargetHealthCheck;
/// let check = TargetHealthCheck::new(
///     clients.ecs.clone(),
///     clients.elbv2.clone(),
///     std::time::Duration::from_secs(120),
/// );
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct TargetHealthCheck {
    ecs: aws_sdk_ecs::Client,
    elbv2: aws_sdk_elasticloadbalancingv2::Client,
    window: Duration,
    poll: Duration,
}

impl TargetHealthCheck {
    /// How often targets are looked at while some are `initial`, unless told otherwise.
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);

    pub fn new(
        ecs: aws_sdk_ecs::Client,
        elbv2: aws_sdk_elasticloadbalancingv2::Client,
        window: Duration,
    ) -> Self {
        Self {
            ecs,
            elbv2,
            window,
            poll: Self::DEFAULT_POLL_INTERVAL,
        }
    }

    /// Looks every `poll` (at least every 100 ms) instead of every 5 s.
    pub fn with_poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll.max(Duration::from_millis(100));
        self
    }

    /// The target group ARNs of the service and its desired count.
    async fn service_groups(
        &self,
        context: &VerifyContext,
        events: &Events,
    ) -> Result<(Vec<String>, i32), StageError> {
        let target = &context.target;
        let output = self
            .ecs
            .describe_services()
            .cluster(&target.cluster)
            .services(&target.service)
            .send()
            .await
            .map_err(|err| stage_error("DescribeServices", &err))?;
        let service = output
            .services()
            .iter()
            .find(|s| s.status() != Some("INACTIVE"))
            .ok_or_else(|| {
                StageError::failed(format!(
                    "service {} not found in cluster {}",
                    target.service, target.cluster
                ))
            })?;
        let mut groups = Vec::new();
        for balancer in service.load_balancers() {
            match (balancer.target_group_arn(), balancer.load_balancer_name()) {
                (Some(arn), _) => {
                    if !groups.iter().any(|g| g == arn) {
                        groups.push(arn.to_string());
                    }
                }
                (None, Some(name)) => events.info(format!(
                    "classic load balancer {name} is not checked (only target groups are)"
                )),
                (None, None) => {}
            }
        }
        Ok((groups, service.desired_count()))
    }

    async fn look(&self, arns: &[String]) -> Result<Vec<(String, Vec<TargetView>)>, StageError> {
        let mut groups = Vec::new();
        for arn in arns {
            let output = self
                .elbv2
                .describe_target_health()
                .target_group_arn(arn)
                .send()
                .await
                .map_err(|err| stage_error("DescribeTargetHealth", &err))?;
            let name = group_name(arn);
            let targets = output
                .target_health_descriptions()
                .iter()
                .map(|d| TargetView::from_description(&name, d))
                .collect();
            groups.push((name, targets));
        }
        Ok(groups)
    }
}

#[async_trait]
impl Verifier for TargetHealthCheck {
    fn name(&self) -> String {
        "targets".to_string()
    }

    async fn verify(&self, context: &VerifyContext, events: &Events) -> Result<(), StageError> {
        let (arns, desired) = self.service_groups(context, events).await?;
        if arns.is_empty() {
            events.info(format!(
                "service {} has no load balancer target groups: no target health to check",
                context.target
            ));
            return Ok(());
        }
        if desired == 0 {
            events.info(format!(
                "service {} wants 0 tasks: no target health to check",
                context.target
            ));
            return Ok(());
        }
        let deadline = Instant::now() + self.window;
        loop {
            let groups = self.look(&arns).await?;
            match judge_targets(&groups) {
                TargetsVerdict::Healthy => {
                    let count: usize = groups.iter().map(|(_, t)| t.len()).sum();
                    let names: Vec<&str> = groups.iter().map(|(n, _)| n.as_str()).collect();
                    events.info(format!("{count} target(s) healthy in {}", names.join(", ")));
                    return Ok(());
                }
                TargetsVerdict::Unhealthy(why) => return Err(StageError::failed(why)),
                TargetsVerdict::Waiting(why) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(StageError::failed(format!(
                            "targets not healthy after {}s: {why}",
                            self.window.as_secs()
                        )));
                    }
                    tokio::time::sleep(self.poll.min(deadline - now)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use aws_sdk_elasticloadbalancingv2::operation::describe_target_health::DescribeTargetHealthOutput;
    use aws_sdk_elasticloadbalancingv2::types::{
        TargetDescription, TargetHealth, TargetHealthReasonEnum,
    };
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use pipeline_core::{DeployTarget, ReleaseId, Revision};

    const GROUP_ARN: &str =
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/cv-matcher-tg/6d0ecf831eec9f09";

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
            revision: Revision::new(
                "arn:aws:ecs:us-east-1:123456789012:task-definition/cv-matcher:2",
                "cv-matcher:2",
            ),
            image: None,
            release_started_at: chrono::Utc::now(),
        }
    }

    fn service_with_group() -> aws_sdk_ecs::operation::describe_services::DescribeServicesOutput {
        aws_sdk_ecs::operation::describe_services::DescribeServicesOutput::builder()
            .services(
                aws_sdk_ecs::types::Service::builder()
                    .service_name("cv-matcher-service")
                    .status("ACTIVE")
                    .desired_count(2)
                    .load_balancers(
                        aws_sdk_ecs::types::LoadBalancer::builder()
                            .target_group_arn(GROUP_ARN)
                            .container_name("cv-matcher")
                            .container_port(8000)
                            .build(),
                    )
                    .build(),
            )
            .build()
    }

    fn health(targets: &[(&str, TargetHealthStateEnum)]) -> DescribeTargetHealthOutput {
        let descriptions = targets
            .iter()
            .map(|(id, state)| target(id, state.clone()))
            .collect();
        DescribeTargetHealthOutput::builder()
            .set_target_health_descriptions(Some(descriptions))
            .build()
    }

    fn target(id: &str, state: TargetHealthStateEnum) -> TargetHealthDescription {
        let mut health = TargetHealth::builder().state(state.clone());
        if state == TargetHealthStateEnum::Unhealthy {
            health = health
                .reason(TargetHealthReasonEnum::FailedHealthChecks)
                .description("Health checks failed with these codes: [502]");
        }
        TargetHealthDescription::builder()
            .target(TargetDescription::builder().id(id).port(8000).build())
            .target_health(health.build())
            .build()
    }

    #[tokio::test(start_paused = true)]
    async fn an_unhealthy_target_fails_with_its_id_and_reason() {
        let ecs_rule =
            mock!(aws_sdk_ecs::Client::describe_services).then_output(service_with_group);
        let health_rule = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
            .match_requests(|r| r.target_group_arn() == Some(GROUP_ARN))
            .then_output(|| {
                health(&[
                    ("10.0.1.17", TargetHealthStateEnum::Healthy),
                    ("10.0.2.41", TargetHealthStateEnum::Unhealthy),
                ])
            });
        let ecs = mock_client!(aws_sdk_ecs, RuleMode::Sequential, &[&ecs_rule]);
        let elbv2 = mock_client!(
            aws_sdk_elasticloadbalancingv2,
            RuleMode::Sequential,
            &[&health_rule]
        );

        let error = TargetHealthCheck::new(ecs, elbv2, Duration::from_secs(60))
            .verify(&context(), &Events::new())
            .await
            .unwrap_err();

        assert_eq!(error.kind, pipeline_core::StageErrorKind::Failed);
        assert_eq!(
            error.message,
            "target group cv-matcher-tg: 10.0.2.41:8000 is unhealthy: \
             Target.FailedHealthChecks (Health checks failed with these codes: [502])"
        );
        assert_eq!(
            health_rule.num_calls(),
            1,
            "an unhealthy target fails at once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn initial_targets_are_waited_for_within_the_window() {
        let ecs_rule =
            mock!(aws_sdk_ecs::Client::describe_services).then_output(service_with_group);
        let health_rule = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
            .sequence()
            .output(|| {
                health(&[
                    ("10.0.1.17", TargetHealthStateEnum::Initial),
                    ("10.0.0.9", TargetHealthStateEnum::Draining),
                ])
            })
            .output(|| health(&[("10.0.1.17", TargetHealthStateEnum::Healthy)]))
            .build();
        let ecs = mock_client!(aws_sdk_ecs, RuleMode::Sequential, &[&ecs_rule]);
        let elbv2 = mock_client!(
            aws_sdk_elasticloadbalancingv2,
            RuleMode::Sequential,
            &[&health_rule]
        );
        let started = Instant::now();

        TargetHealthCheck::new(ecs, elbv2, Duration::from_secs(60))
            .with_poll_interval(Duration::from_secs(2))
            .verify(&context(), &Events::new())
            .await
            .unwrap();

        assert_eq!(health_rule.num_calls(), 2);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[test]
    fn judging() {
        let view = |state: &str| TargetView {
            group: "tg".into(),
            id: "10.0.0.1".into(),
            port: Some(80),
            state: state.into(),
            reason: None,
            description: None,
        };
        let one = |state: &str| vec![("tg".to_string(), vec![view(state)])];
        assert_eq!(judge_targets(&one("healthy")), TargetsVerdict::Healthy);
        assert!(matches!(
            judge_targets(&one("initial")),
            TargetsVerdict::Waiting(_)
        ));
        assert!(matches!(
            judge_targets(&one("unused")),
            TargetsVerdict::Unhealthy(_)
        ));
        assert!(matches!(
            judge_targets(&one("unavailable")),
            TargetsVerdict::Unhealthy(_)
        ));
        assert_eq!(
            judge_targets(&one("draining")),
            TargetsVerdict::Waiting("target group tg has no registered targets".into())
        );
        assert_eq!(
            group_name("arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/web/abc"),
            "web"
        );
    }
}
