//! One invocation's work on an event: which environments it concerns (see
//! [`crate::route`]), the orchestrator of each (built once per invocation), and the
//! sweep of overdue releases.

use crate::config_source::LoadedConfig;
use crate::events::{
    self, AlarmStateChange, EcrImageAction, EcsDeploymentStateChange, Event, EventBridgeEvent,
    ServiceArn,
};
use crate::handler::{describe, severity, Action, Handler, InvocationResult, OverdueResult};
use crate::logging::LogEvents;
use crate::route::{release_config, Routes};
use crate::{wiring, HandlerError};
use futures_util::StreamExt;
use pipeline_core::config::glob_match;
use pipeline_core::config::FailurePolicy;
use pipeline_core::{
    CancellationToken, Config, DeployRequest, DeploymentResult, EventOutcome, Events, GitInfo,
    ImageReference, Orchestrator, Project, RecordOutcome, ReleaseSource,
};
use std::collections::BTreeMap;
use std::sync::Arc;

/// How many services of a fleet one push starts at once.
const STARTS_AT_ONCE: usize = 4;

/// The state of one invocation: the orchestrators built so far, one per environment.
pub(crate) struct Invocation<'a> {
    pub handler: &'a Handler,
    pub config: &'a Config,
    pub loaded: &'a LoadedConfig,
    pub routes: &'a Routes,
    pub built: BTreeMap<String, Arc<Orchestrator>>,
    pub deadline: Option<tokio::time::Instant>,
}

impl Invocation<'_> {
    /// The orchestrator of one releasable environment (a fleet: one service in one
    /// region), with that environment's stages and the task definition from the package
    /// or its service. Its project also holds every environment that may share the task
    /// definition family, so pruning spares their rollback targets; events only ever
    /// reach the environment they were routed to.
    pub async fn orchestrator(
        &mut self,
        environment: &str,
    ) -> Result<Arc<Orchestrator>, HandlerError> {
        if let Some(built) = self.built.get(environment) {
            return Ok(built.clone());
        }
        let route = self
            .routes
            .get(environment)
            .ok_or_else(|| HandlerError::Setup {
                problem: format!("the config releases no environment {environment:?}"),
                help: None,
            })?;
        let env = &route.config;
        let clients = self.handler.clients(env.region.as_deref()).await;
        let stages = wiring::stages(environment, env, &clients, &self.handler.notifiers)?;
        let config = release_config(self.config, route, &self.loaded.service_definitions);
        let packaged = match &route.unit {
            Some(unit) => self.loaded.service_definitions.get(&unit.service),
            None => self.loaded.task_definition.as_ref(),
        };
        let task_definition = match packaged {
            Some(definition) => definition.clone(),
            None => {
                let target = env.target(&config.app.name, environment);
                wiring::current_task_definition(&stages, &target).await?
            }
        };
        let project =
            Project::from_parts(config, self.loaded.config_file.clone(), task_definition)?;
        let held = pipeline_core::diagnosis::HELD_SECRET_VARIABLES
            .into_iter()
            .filter_map(|name| std::env::var(name).ok());
        let mut orchestrator =
            Orchestrator::new(project, stages, Events::new().with(LogEvents::new()))
                .with_redaction(held);
        if let Some(deadline) = self.deadline {
            orchestrator = orchestrator.with_deadline(deadline);
        }
        let orchestrator = Arc::new(orchestrator);
        self.built
            .insert(environment.to_string(), orchestrator.clone());
        Ok(orchestrator)
    }

    pub async fn dispatch(
        &mut self,
        envelope: &EventBridgeEvent,
        event: Event,
    ) -> Result<InvocationResult, HandlerError> {
        match event {
            Event::EcrImageAction(detail) => self.image_pushed(envelope, &detail).await,
            Event::EcsDeploymentStateChange(detail) => {
                self.deployment_changed(envelope, &detail).await
            }
            Event::AlarmStateChange(detail) => self.alarm_changed(envelope, &detail).await,
            Event::Other
                if envelope.source == "aws.events" && envelope.detail_type == "Scheduled Event" =>
            {
                Ok(InvocationResult::ignored(
                    "the scheduled sweep of overdue releases",
                ))
            }
            Event::Other => Ok(InvocationResult::ignored(format!(
                "{} from {} is not an event tugboat acts on",
                envelope.detail_type, envelope.source
            ))),
        }
    }

    async fn image_pushed(
        &mut self,
        envelope: &EventBridgeEvent,
        detail: &EcrImageAction,
    ) -> Result<InvocationResult, HandlerError> {
        let repository = &self.config.image.repository;
        if detail.action_type != "PUSH" || detail.result != "SUCCESS" {
            return Ok(InvocationResult::ignored(format!(
                "ECR {} {} in {}: only successful pushes start releases",
                detail.action_type, detail.result, detail.repository_name
            )));
        }
        if &detail.repository_name != repository {
            return Ok(InvocationResult::ignored(format!(
                "a push to {}, not to the app's repository {repository}",
                detail.repository_name
            )));
        }
        let Some(tag) = detail.image_tag.as_deref().filter(|t| !t.is_empty()) else {
            return Ok(InvocationResult::ignored(format!(
                "an image pushed to {repository} without a tag: no environment rule can match it"
            )));
        };
        let Some(digest) = detail.image_digest.clone().filter(|d| !d.is_empty()) else {
            return Err(HandlerError::MalformedEvent {
                what: events::ECR_IMAGE_ACTION.into(),
                field: "detail.image-digest".into(),
                problem: "missing: a successful push names the image's digest".into(),
            });
        };
        // Trust nothing in the event: anyone allowed to invoke the function can send one.
        if let Some(why) = self.handler.foreign(&envelope.account).await {
            tracing::warn!("push event refused: {why}");
            return Ok(InvocationResult::ignored(format!(
                "a push to {repository}: {why}; nothing deployed"
            )));
        }
        let environments = match self.routes.for_push(self.config, tag, &envelope.region) {
            Ok(environments) => environments,
            Err(why) => return Ok(InvocationResult::ignored(why)),
        };
        let region = self
            .routes
            .get(&environments[0])
            .and_then(|route| route.config.region.clone());
        let clients = self.handler.clients(region.as_deref()).await;
        let registry = aws_adapters::EcrRegistry::new(clients.ecr.clone());
        match pipeline_core::Registry::resolve(
            &registry,
            repository,
            &ImageReference::Tag(tag.to_string()),
        )
        .await
        {
            Ok(image) if image.digest == digest => {}
            Ok(image) => {
                tracing::warn!(tag, event_digest = %digest, actual = %image.digest, "push event refused");
                return Ok(InvocationResult::ignored(format!(
                    "the event says {repository}:{tag} is {digest}, but ECR has {tag} on {}: nothing deployed",
                    image.digest
                )));
            }
            Err(err) if err.kind == pipeline_core::StageErrorKind::BadInput => {
                return Ok(InvocationResult::ignored(format!(
                    "the event names {repository}:{tag}, which ECR does not hold: nothing deployed ({})",
                    err.message
                )));
            }
            // A transient error: fail the invocation so that Lambda delivers it again.
            Err(err) => {
                return Err(HandlerError::Retry {
                    problem: format!(
                        "cannot check the pushed image {repository}:{tag} ({})",
                        err.message
                    ),
                })
            }
        }
        let source = ReleaseSource::Image(ImageReference::Digest(digest));
        let git = git_of_tag(self.config, tag);
        let mut orchestrators = Vec::with_capacity(environments.len());
        for environment in &environments {
            orchestrators.push((environment.clone(), self.orchestrator(environment).await?));
        }
        // Each unit of a fleet on its own lock and record; a redelivered push is
        // recognised by each (its trigger), so a retry only starts what did not start.
        let starts = futures_util::stream::iter(orchestrators.into_iter().map(
            |(environment, orchestrator)| {
                let request = DeployRequest {
                    environment: environment.clone(),
                    source: source.clone(),
                    git: git.clone(),
                    actor: format!("lambda:{}", envelope.id),
                    cancel: CancellationToken::new(),
                };
                async move {
                    let outcome = orchestrator
                        .start_release(request, Some(envelope.id.clone()))
                        .await;
                    (environment, outcome)
                }
            },
        ))
        .buffered(STARTS_AT_ONCE)
        .collect::<Vec<_>>()
        .await;
        // Returned as an error, so that Lambda delivers the push again (and then the
        // dead-letter queue keeps it): a success would drop it for good.
        let retry: Vec<String> = starts
            .iter()
            .filter_map(|(environment, outcome)| match outcome {
                EventOutcome::Retry(problem) => Some(format!("{environment}: {problem}")),
                _ => None,
            })
            .collect();
        if !retry.is_empty() {
            return Err(HandlerError::Retry {
                problem: retry.join("; "),
            });
        }
        let mut results = Vec::with_capacity(starts.len());
        for (environment, outcome) in &starts {
            let result = InvocationResult::of(Action::StartRelease, environment, outcome);
            results.push(self.and_fleet(environment, outcome, result).await?);
        }
        Ok(combined(results).unwrap_or_else(|| {
            InvocationResult::ignored(format!("a push of {repository}:{tag} released nothing"))
        }))
    }

    async fn deployment_changed(
        &mut self,
        envelope: &EventBridgeEvent,
        detail: &EcsDeploymentStateChange,
    ) -> Result<InvocationResult, HandlerError> {
        let result = match detail.event_name.as_str() {
            "SERVICE_DEPLOYMENT_COMPLETED" => DeploymentResult::Completed,
            "SERVICE_DEPLOYMENT_FAILED" => DeploymentResult::Failed {
                reason: detail
                    .reason
                    .clone()
                    .unwrap_or_else(|| "ECS reported the deployment failed".into()),
            },
            other => {
                return Ok(InvocationResult::ignored(format!(
                    "{other} of deployment {}: tugboat acts on COMPLETED and FAILED",
                    detail.deployment_id
                )))
            }
        };
        let service = service_of(envelope)?;
        if let Some(why) = self.handler.foreign(&service.account).await {
            tracing::warn!("deployment event refused: {why}");
            return Ok(InvocationResult::ignored(format!(
                "a deployment of {}: {why}",
                service.service
            )));
        }
        let environment = self.routes.for_service(&service);
        let Some(environment) = environment else {
            return Ok(InvocationResult::ignored(format!(
                "no environment deploys to the service {}/{}",
                service.cluster.as_deref().unwrap_or("?"),
                service.service
            )));
        };
        let orchestrator = self.orchestrator(&environment).await?;
        let outcome = orchestrator
            .finish_release(&environment, &detail.deployment_id, result)
            .await;
        if let EventOutcome::Retry(problem) = outcome {
            return Err(HandlerError::Retry { problem });
        }
        let result = InvocationResult::of(Action::FinishRelease, &environment, &outcome);
        self.and_fleet(&environment, &outcome, result).await
    }

    async fn alarm_changed(
        &mut self,
        envelope: &EventBridgeEvent,
        detail: &AlarmStateChange,
    ) -> Result<InvocationResult, HandlerError> {
        let alarm = &detail.alarm_name;
        if detail.state.value != "ALARM" {
            return Ok(InvocationResult::ignored(format!(
                "alarm {alarm} went to {}: only ALARM matters",
                detail.state.value
            )));
        }
        let watching = self.routes.watching(alarm);
        if watching.is_empty() {
            return Ok(InvocationResult::ignored(format!(
                "no environment watches alarm {alarm} (verify.alarms)"
            )));
        }
        let mut results = Vec::new();
        for environment in &watching {
            let orchestrator = self.orchestrator(environment).await?;
            let outcome = orchestrator
                .alarm_fired_in(
                    environment,
                    alarm,
                    &detail.state.reason,
                    Some(envelope.id.clone()),
                )
                .await;
            if let EventOutcome::Retry(problem) = outcome {
                return Err(HandlerError::Retry { problem });
            }
            let result = InvocationResult::of(Action::AlarmFired, environment, &outcome);
            results.push(self.and_fleet(environment, &outcome, result).await?);
        }
        Ok(combined(results).unwrap_or_else(|| {
            InvocationResult::ignored(format!("no environment acted on alarm {alarm}"))
        }))
    }

    /// `on_failure = "rollback_all"` of a fleet released by a push: when a service's
    /// release of that push failed (`outcome`), every other service of the fleet that the
    /// same push released goes back too (see [`Orchestrator::roll_back_with_fleet`]).
    /// Returns what each of them did; those with nothing to do are left out.
    async fn with_fleet(
        &mut self,
        environment: &str,
        outcome: &EventOutcome,
    ) -> Result<Vec<Followed>, HandlerError> {
        let Some(unit) = self.routes.get(environment).and_then(|r| r.unit.clone()) else {
            return Ok(Vec::new());
        };
        let policy = self
            .config
            .environments
            .get(&unit.fleet_environment)
            .and_then(|env| env.on_failure)
            .unwrap_or_default();
        let EventOutcome::Report(report) = outcome else {
            return Ok(Vec::new());
        };
        let Some(record) = &report.record else {
            return Ok(Vec::new());
        };
        let failed = match record.outcome {
            RecordOutcome::RolledBack
            | RecordOutcome::NotRestored
            | RecordOutcome::FailedUnchanged => true,
            // Rolling back, concluded by its deployment's event.
            RecordOutcome::InProgress => record.rollback_deployment_id.is_some(),
            RecordOutcome::Succeeded | RecordOutcome::Refused => false,
        };
        let Some(push) = record.trigger.clone() else {
            return Ok(Vec::new());
        };
        if policy != FailurePolicy::RollbackAll || !failed || record.rollback_of.is_some() {
            return Ok(Vec::new());
        }
        let why = record
            .reason
            .as_deref()
            .unwrap_or(outcome.message())
            .lines()
            .next()
            .and_then(|line| line.split("; ").next())
            .unwrap_or_default()
            .to_string();
        let reason = format!(
            "on_failure = \"rollback_all\": {environment} of the same release failed ({why})"
        );
        // The same for every delivery of every event that reports this failure.
        let trigger = format!("{environment}/{}/rollback_all", record.release_id);
        let others: Vec<String> = self
            .routes
            .names()
            .into_iter()
            .filter(|name| {
                name != environment
                    && self.routes.get(name).is_some_and(|route| {
                        route
                            .unit
                            .as_ref()
                            .is_some_and(|u| u.fleet_environment == unit.fleet_environment)
                    })
            })
            .collect();
        let mut followed = Vec::new();
        for other in others {
            let orchestrator = self.orchestrator(&other).await?;
            let outcome = orchestrator
                .roll_back_with_fleet(&other, &push, &reason, Some(trigger.clone()))
                .await;
            match outcome {
                EventOutcome::Retry(problem) => {
                    return Err(HandlerError::Retry {
                        problem: format!("{other}: {problem}"),
                    })
                }
                EventOutcome::Ignored(_) => {}
                outcome => {
                    let summary = outcome
                        .message()
                        .strip_prefix(reason.as_str())
                        .map(|rest| rest.trim_start_matches(['.', ';', ' ']))
                        .unwrap_or(outcome.message())
                        .to_string();
                    followed.push(Followed {
                        environment: other,
                        outcome,
                        summary,
                    });
                }
            }
        }
        Ok(followed)
    }

    /// `result` of `environment`, and what the fleet's `rollback_all` did because of it.
    async fn and_fleet(
        &mut self,
        environment: &str,
        outcome: &EventOutcome,
        result: InvocationResult,
    ) -> Result<InvocationResult, HandlerError> {
        let followed = self.with_fleet(environment, outcome).await?;
        if followed.is_empty() {
            return Ok(result);
        }
        let each: Vec<String> = followed
            .iter()
            .map(|f| format!("{}: {}", f.environment, f.summary))
            .collect();
        Ok(InvocationResult {
            message: format!(
                "{}; rolled back with the fleet (on_failure = \"rollback_all\"): {}",
                result.message,
                each.join("; ")
            ),
            ..result
        })
    }

    /// Finishes every environment's releases past their rollout timeout. An
    /// environment that cannot be wired is skipped with a warning.
    pub async fn finish_overdue(&mut self) -> Vec<OverdueResult> {
        let mut finished = Vec::new();
        let home = self.handler.home_region.clone();
        let names = self.routes.names().into_iter().filter(|name| {
            let region = self.routes.get(name).and_then(|r| r.config.region.clone());
            match (&home, region) {
                (Some(home), Some(region)) => *home == region,
                _ => true,
            }
        });
        let names: Vec<String> = names.collect();
        for environment in names {
            let orchestrator = match self.orchestrator(&environment).await {
                Ok(orchestrator) => orchestrator,
                Err(err) => {
                    tracing::warn!("overdue releases of {environment} not checked: {err}");
                    continue;
                }
            };
            for outcome in orchestrator.finish_overdue(&environment).await {
                let followed = match self.with_fleet(&environment, &outcome).await {
                    Ok(followed) => followed,
                    Err(err) => {
                        tracing::warn!("the fleet of {environment} was not rolled back: {err}");
                        Vec::new()
                    }
                };
                for followed in followed {
                    let (name, release_id) = describe(&followed.outcome);
                    finished.push(OverdueResult {
                        environment: followed.environment,
                        outcome: name,
                        message: followed.outcome.message().to_string(),
                        release_id,
                    });
                }
                let (name, release_id) = describe(&outcome);
                tracing::info!(
                    environment = %environment,
                    outcome = %name,
                    "overdue release finished: {}",
                    outcome.message()
                );
                finished.push(OverdueResult {
                    environment: environment.clone(),
                    outcome: name,
                    message: outcome.message().to_string(),
                    release_id,
                });
            }
        }
        finished
    }
}

/// What a fleet's `rollback_all` did to one other service.
struct Followed {
    environment: String,
    outcome: EventOutcome,
    /// Its message without the shared reason.
    summary: String,
}

/// One result for what several environments answered to one event: the one, or the
/// worst outcome with every environment's message (`production.web: …; …`).
fn combined(results: Vec<InvocationResult>) -> Option<InvocationResult> {
    let worst = results.iter().max_by_key(|r| severity(&r.outcome))?.clone();
    if results.len() == 1 {
        return Some(worst);
    }
    let environments: Vec<&str> = results
        .iter()
        .filter_map(|r| r.environment.as_deref())
        .collect();
    Some(InvocationResult {
        environment: Some(environments.join(",")),
        message: results
            .iter()
            .map(|r| format!("{}: {}", r.environment.as_deref().unwrap_or("?"), r.message))
            .collect::<Vec<_>>()
            .join("; "),
        ..worst
    })
}

/// The service an ECS event is about, from its `resources`.
fn service_of(envelope: &EventBridgeEvent) -> Result<ServiceArn, HandlerError> {
    let malformed = |field: &str, problem: String| HandlerError::MalformedEvent {
        what: events::ECS_DEPLOYMENT_STATE_CHANGE.into(),
        field: field.into(),
        problem,
    };
    let Some(first) = envelope.resources.first() else {
        return Err(malformed(
            "resources",
            "empty: an ECS deployment event names its service's ARN there".into(),
        ));
    };
    envelope
        .resources
        .iter()
        .find_map(|arn| ServiceArn::parse(arn))
        .ok_or_else(|| {
            malformed(
                "resources[0]",
                format!(
                    "expected arn:aws:ecs:REGION:ACCOUNT:service/CLUSTER/SERVICE, found {first:?}"
                ),
            )
        })
}

/// The git facts an image tag gives: a release tag (one an environment's `tags` rule
/// matches) is `refs/tags/<tag>`; a tag that looks like a commit sha is the sha.
pub fn git_of_tag(config: &Config, tag: &str) -> GitInfo {
    let release_tag = config
        .environments
        .values()
        .any(|env| env.tags.iter().any(|pattern| glob_match(pattern, tag)));
    let looks_like_sha =
        (7..=40).contains(&tag.len()) && tag.bytes().all(|b| b.is_ascii_hexdigit());
    GitInfo {
        sha: if looks_like_sha {
            tag.to_ascii_lowercase()
        } else {
            String::new()
        },
        git_ref: if release_tag {
            format!("refs/tags/{tag}")
        } else {
            tag.to_string()
        },
        // An image tag tells no commit time: lead time needs the CLI's record.
        committed_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config() -> Config {
        let text = r#"
            [app]
            name = "app"
            [image]
            repository = "app"
            [task_definition]
            file = "task-definition.json"
            containers = ["app"]
            [environments.production]
            cluster = "main"
            service = "app"
            tags = ["v*"]
            [environments.staging]
            cluster = "staging"
            service = "app"
            image_tags = ["*"]
        "#;
        match Config::parse(Path::new("tugboat.toml"), text, &|_| None) {
            Ok(config) => config,
            Err(err) => panic!("{err}"),
        }
    }

    fn git(sha: &str, git_ref: &str) -> GitInfo {
        GitInfo {
            sha: sha.into(),
            git_ref: git_ref.into(),
            committed_at: None,
        }
    }

    #[test]
    fn image_tags_become_git_facts() {
        let config = config();
        assert_eq!(git_of_tag(&config, "v1.2.0"), git("", "refs/tags/v1.2.0"));
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(git_of_tag(&config, sha), git(sha, sha));
        assert_eq!(git_of_tag(&config, "0123abc"), git("0123abc", "0123abc"));
        assert_eq!(git_of_tag(&config, "latest"), git("", "latest"));
        assert_eq!(git_of_tag(&config, "abc12"), git("", "abc12"));
    }
}
