//! One invocation: parse the event, act on it through the event-driven orchestrator,
//! then finish every environment's overdue releases.
//!
//! Why one file of ~960 lines: the dispatch of each event kind and the overdue sweep
//! share one invocation state (`Invocation`); splitting them is planned with the
//! fleets issue, which changes that state.

use crate::config_source::{self, ConfigSource, LoadedConfig};
use crate::events::{
    self, AlarmStateChange, EcrImageAction, EcsDeploymentStateChange, Event, EventBridgeEvent,
    ServiceArn,
};
use crate::logging::LogEvents;
use crate::{hook, wiring, HandlerError};
use aws_adapters::{AwsClients, ClientOptions};
use pipeline_core::config::glob_match;
use pipeline_core::{
    CancellationToken, Config, DeployRequest, DeploymentResult, EventOutcome, Events, GitInfo,
    ImageReference, Notifier, Orchestrator, Project, RecordOutcome, ReleaseRecords, ReleaseSource,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use tokio::sync::{Mutex, OnceCell};

/// What the function did with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// An image push started a release.
    StartRelease,
    /// ECS reported the end of a release's deployment.
    FinishRelease,
    /// A watched alarm entered ALARM.
    AlarmFired,
    /// Not an event tugboat acts on.
    Ignored,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::StartRelease => "start_release",
            Self::FinishRelease => "finish_release",
            Self::AlarmFired => "alarm_fired",
            Self::Ignored => "ignored",
        })
    }
}

/// The function's response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationResult {
    pub action: Action,
    /// The environment acted on (`a,b` when an alarm concerns several).
    pub environment: Option<String>,
    /// `in_progress`, `succeeded`, `rolled_back`, `failed_unchanged`, `not_restored`,
    /// `refused` (a deploy record's outcome), or `ignored`, `notified`.
    pub outcome: String,
    pub message: String,
    /// The release started, finished or rolled back, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_id: Option<String>,
    /// Overdue releases this invocation finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overdue: Vec<OverdueResult>,
}

/// An in-progress release past its rollout timeout that an invocation finished.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverdueResult {
    pub environment: String,
    pub outcome: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_id: Option<String>,
}

impl InvocationResult {
    fn ignored(message: impl Into<String>) -> Self {
        Self {
            action: Action::Ignored,
            environment: None,
            outcome: "ignored".into(),
            message: message.into(),
            release_id: None,
            overdue: Vec::new(),
        }
    }

    fn of(action: Action, environment: &str, outcome: &EventOutcome) -> Self {
        let (name, release_id) = describe(outcome);
        Self {
            action,
            environment: Some(environment.to_string()),
            outcome: name,
            message: outcome.message().to_string(),
            release_id,
            overdue: Vec::new(),
        }
    }
}

/// The outcome's name and the release it concerns.
fn describe(outcome: &EventOutcome) -> (String, Option<String>) {
    match outcome {
        EventOutcome::Ignored(_) => ("ignored".into(), None),
        EventOutcome::Notified(_) => ("notified".into(), None),
        EventOutcome::Retry(_) => ("retry".into(), None),
        EventOutcome::Report(report) => match &report.record {
            Some(record) => (
                serde_json::to_value(record.outcome)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_else(|| format!("{:?}", record.outcome)),
                Some(record.release_id.0.clone()),
            ),
            None => ("refused".into(), None),
        },
    }
}

/// How much an outcome matters when several environments answer one alarm.
fn severity(outcome: &str) -> u8 {
    match outcome {
        "not_restored" => 7,
        "rolled_back" => 6,
        "failed_unchanged" => 5,
        "refused" => 4,
        "succeeded" => 3,
        "in_progress" => 2,
        "notified" => 1,
        _ => 0,
    }
}

enum Clients {
    /// Built from the function's environment (role credentials, region,
    /// `AWS_ENDPOINT_URL*`), one set per region, kept for the container's life.
    Load(Mutex<BTreeMap<Option<String>, AwsClients>>),
    /// Given by the embedding program (tests): used for every region.
    Fixed(AwsClients),
}

/// Handles the function's invocations. Build it once per container: the config is read
/// and parsed at the first invocation and kept while the container stays warm.
pub struct Handler {
    source: Result<ConfigSource, HandlerError>,
    clients: Clients,
    loaded: OnceCell<Arc<LoadedConfig>>,
    /// The function's own account (STS), asked once per container; `None` if unknown.
    account: OnceCell<Option<String>>,
    notifiers: Vec<Arc<dyn Notifier>>,
}

impl fmt::Debug for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handler")
            .field("source", &self.source)
            .field("loaded", &self.loaded.initialized())
            .field("notifiers", &self.notifiers.len())
            .finish()
    }
}

impl Handler {
    /// A handler reading its config from `source`, with clients from the environment.
    pub fn new(source: ConfigSource) -> Self {
        Self {
            source: Ok(source),
            clients: Clients::Load(Mutex::new(BTreeMap::new())),
            loaded: OnceCell::new(),
            account: OnceCell::new(),
            notifiers: Vec::new(),
        }
    }

    /// The function's handler: the config named by `TUGBOAT_CONFIG`. A bad variable is
    /// reported by every invocation (an init failure would only say the runtime exited).
    pub fn from_env() -> Self {
        Self {
            source: ConfigSource::from_env(),
            ..Self::new(ConfigSource::File(Default::default()))
        }
    }

    /// Uses these clients for every environment instead of building them.
    pub fn with_clients(mut self, clients: AwsClients) -> Self {
        self.clients = Clients::Fixed(clients);
        self
    }

    /// Uses this config instead of reading one from the source (embedding programs, tests).
    pub fn with_config(mut self, loaded: LoadedConfig) -> Self {
        self.loaded = OnceCell::new_with(Some(Arc::new(loaded)));
        self
    }

    /// Adds a notifier to every environment's (besides [`wiring::notifiers`]).
    pub fn with_notifier(mut self, notifier: Arc<dyn Notifier>) -> Self {
        self.notifiers.push(notifier);
        self
    }

    async fn clients(&self, region: Option<&str>) -> AwsClients {
        match &self.clients {
            Clients::Fixed(clients) => clients.clone(),
            Clients::Load(cache) => {
                let key = region.map(str::to_string);
                let mut cache = cache.lock().await;
                if let Some(clients) = cache.get(&key) {
                    return clients.clone();
                }
                let clients = AwsClients::load(&ClientOptions {
                    region: key.clone(),
                    profile: None,
                })
                .await;
                cache.insert(key, clients.clone());
                clients
            }
        }
    }

    /// The account the function runs in; events and services of another are refused.
    async fn own_account(&self) -> Option<String> {
        self.account
            .get_or_init(|| async {
                let sts = self.clients(None).await.sts;
                match sts.get_caller_identity().send().await {
                    Ok(identity) => identity.account().map(str::to_string),
                    Err(err) => {
                        tracing::warn!("cannot tell the function's account (STS): {err}");
                        None
                    }
                }
            })
            .await
            .clone()
    }

    /// Whether `account` (of an event or a service ARN) is another than the function's.
    async fn foreign(&self, account: &str) -> Option<String> {
        let own = self.own_account().await?;
        (!account.is_empty() && account != own)
            .then(|| format!("account {account} is not the function's account {own}"))
    }

    /// The config, read and parsed at the first call; a failure is retried next time.
    pub async fn config(&self) -> Result<Arc<LoadedConfig>, HandlerError> {
        let source = self.source.as_ref().map_err(Clone::clone)?;
        self.loaded
            .get_or_try_init(|| async {
                let text = match source {
                    ConfigSource::File(path) => config_source::read_file(path)?,
                    ConfigSource::S3 { bucket, key } => {
                        let s3 = self.clients(None).await.s3;
                        config_source::read_s3(&s3, bucket, key).await?
                    }
                };
                let loaded = LoadedConfig::from_text(source, &text)?;
                tracing::info!(
                    config = %source,
                    environments = loaded.config.environments.len(),
                    task_definition = if loaded.task_definition.is_some() { "from the package" } else { "from each service" },
                    "config loaded"
                );
                Ok(Arc::new(loaded))
            })
            .await
            .cloned()
    }

    /// Handles any payload the function receives: an ECS lifecycle hook invocation is
    /// answered with `{hookStatus, …}` ([`Handler::lifecycle_hook`]), anything else is an
    /// EventBridge event ([`Handler::handle`]).
    pub async fn handle_value(
        &self,
        payload: serde_json::Value,
    ) -> Result<serde_json::Value, HandlerError> {
        self.handle_value_by(payload, None).await
    }

    /// [`Handler::handle_value`] for an invocation killed at `deadline` (the Lambda
    /// context's): no wait lasts past it, less a margin for the record.
    pub async fn handle_value_by(
        &self,
        payload: serde_json::Value,
        deadline: Option<std::time::SystemTime>,
    ) -> Result<serde_json::Value, HandlerError> {
        let json = |value: Result<serde_json::Value, serde_json::Error>| {
            value.map_err(|err| HandlerError::Setup {
                problem: format!("the answer could not be written as JSON: {err}"),
                help: None,
            })
        };
        if hook::is_hook_invocation(&payload) {
            let answer = Box::pin(self.lifecycle_hook(payload)).await?;
            return json(serde_json::to_value(answer));
        }
        let result = Box::pin(self.handle_by(payload, deadline)).await?;
        json(serde_json::to_value(result))
    }

    /// Answers an ECS deployment lifecycle hook (see [`crate::hook`]).
    pub async fn lifecycle_hook(
        &self,
        payload: serde_json::Value,
    ) -> Result<hook::HookAnswer, HandlerError> {
        let invocation: hook::HookInvocation =
            serde_path_to_error::deserialize(payload).map_err(|err| {
                HandlerError::MalformedEvent {
                    what: "ECS lifecycle hook".into(),
                    field: err.path().to_string(),
                    problem: err.inner().to_string(),
                }
            })?;
        let loaded = self.config().await?;
        let stage = invocation.lifecycle_stage.clone();
        let service_arn = &invocation.execution_details.service_arn;
        let Some(arn) = ServiceArn::parse(service_arn) else {
            return Err(HandlerError::MalformedEvent {
                what: "ECS lifecycle hook".into(),
                field: "executionDetails.serviceArn".into(),
                problem: format!("{service_arn:?} is not an ECS service ARN"),
            });
        };
        if let Some(why) = self.foreign(&arn.account).await {
            tracing::warn!("lifecycle hook refused: {why}");
            return Ok(hook::HookAnswer::failed(format!(
                "{service_arn}: {why}; tugboat checks only its own services"
            )));
        }
        // By the whole service ARN: account, region, cluster (a name or an ARN in the
        // config) and service.
        let found = loaded.config.environments.iter().find(|(_, env)| {
            env.service == arn.service
                && arn
                    .cluster
                    .as_ref()
                    .is_none_or(|c| c == pipeline_core::config::cluster_name(&env.cluster))
                && env.region.as_deref().is_none_or(|r| r == arn.region)
        });
        let answer = match found {
            None => hook::HookAnswer::failed(format!(
                "no environment in tugboat.toml deploys service {service_arn}"
            )),
            Some((name, env)) => {
                let configured = env
                    .strategy
                    .lifecycle_hook
                    .as_ref()
                    .is_some_and(|h| h.stages.iter().any(|s| s.ecs_name() == stage));
                if !configured {
                    hook::HookAnswer::succeeded(format!(
                        "{stage}: not a stage environments.{name}.strategy.lifecycle_hook checks"
                    ))
                } else if invocation.is_rollback() {
                    hook::HookAnswer::succeeded(format!(
                        "{stage}: traffic going back to the previous revision, no checks"
                    ))
                } else {
                    let clients = self.clients(Some(&arn.region)).await;
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    let recorded =
                        release_in_progress_started(&clients, &loaded.config.app.name, name, env)
                            .await;
                    let release_started = hook::release_started(&invocation, recorded, now);
                    let findings = match aws_adapters::AlarmWatch::for_settings(
                        clients.cloudwatch.clone(),
                        &env.verify,
                    ) {
                        None => pipeline_core::AlarmFindings::default(),
                        Some(watch) => {
                            let states = match watch.current_states().await {
                                Ok(states) => states,
                                // No verdict yet: a Lambda error would be a failed hook,
                                // and ECS would roll a healthy release back.
                                Err(err) => {
                                    tracing::warn!(stage = %stage, "cannot read the alarms: {err}");
                                    return Ok(hook::HookAnswer::look_again(
                                        &invocation,
                                        format!("{stage}: cannot read the alarms ({err}); looking again"),
                                    ));
                                }
                            };
                            pipeline_core::judge_alarms(
                                watch.names(),
                                &states,
                                release_started,
                                env.verify.fail_on_firing_alarms,
                            )
                        }
                    };
                    for warning in &findings.warnings {
                        tracing::warn!(stage = %stage, "{warning}");
                    }
                    if findings.failures.is_empty() {
                        hook::bake_verdict(&invocation, env.verify.bake_seconds, now)
                    } else {
                        hook::HookAnswer::failed(format!(
                            "{stage}: {}",
                            findings.failures.join("; ")
                        ))
                    }
                    .carrying(release_started, &findings.warnings)
                }
            }
        };
        tracing::info!(
            execution_id = %invocation.execution_id,
            stage = %stage,
            service = %service_arn,
            status = ?answer.hook_status,
            "lifecycle hook"
        );
        Ok(answer)
    }

    /// Handles one event, then finishes overdue releases in every environment. An
    /// event tugboat does not act on is `Ok` with [`Action::Ignored`]; a malformed one
    /// is an error naming the field.
    pub async fn handle(
        &self,
        payload: serde_json::Value,
    ) -> Result<InvocationResult, HandlerError> {
        self.handle_by(payload, None).await
    }

    /// [`Handler::handle`] for an invocation killed at `deadline`: a rollback is issued
    /// and recorded, never waited for, and verification stops 10 s before it.
    pub async fn handle_by(
        &self,
        payload: serde_json::Value,
        deadline: Option<std::time::SystemTime>,
    ) -> Result<InvocationResult, HandlerError> {
        let deadline = deadline.map(|at| {
            let left = at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            tokio::time::Instant::now() + left
        });
        let parsed = events::parse(payload);
        let loaded = match self.config().await {
            Ok(loaded) => loaded,
            Err(err) => return Err(parsed.err().unwrap_or(err)),
        };
        let mut invocation = Invocation {
            handler: self,
            config: &loaded.config,
            loaded: &loaded,
            built: BTreeMap::new(),
            deadline,
        };
        // Overdue releases first: a release whose event was lost still holds the lock, and
        // would refuse the push this event may bring.
        let overdue = invocation.finish_overdue().await;
        let handled = match parsed {
            Ok(parsed) => {
                let envelope = &parsed.envelope;
                tracing::info!(
                    id = %envelope.id,
                    source = %envelope.source,
                    detail_type = %envelope.detail_type,
                    "event"
                );
                invocation.dispatch(&parsed.envelope, parsed.event).await
            }
            Err(err) => Err(err),
        };
        match handled {
            Ok(mut result) => {
                tracing::info!(
                    action = %result.action,
                    environment = result.environment.as_deref().unwrap_or("-"),
                    outcome = %result.outcome,
                    "{}",
                    result.message
                );
                result.overdue = overdue;
                Ok(result)
            }
            Err(err) => {
                tracing::error!(error_type = err.error_type(), "{err}");
                Err(err)
            }
        }
    }
}

/// When the environment's release in progress (the one this deployment belongs to, under
/// the deploy lock) started, in seconds since the epoch; `None` without a records bucket,
/// without such a release (a deployment not started by the function), or when the
/// records cannot be read (the hook then goes by its own first look).
async fn release_in_progress_started(
    clients: &AwsClients,
    app: &str,
    environment: &str,
    env: &pipeline_core::EnvironmentConfig,
) -> Option<u64> {
    let records = env.records.as_ref()?;
    let store =
        aws_adapters::S3ArtifactStore::new(clients.s3.clone(), &records.bucket, &records.prefix);
    match store.history(app, environment, 5).await {
        Ok(history) => history
            .iter()
            .find(|r| r.outcome == RecordOutcome::InProgress)
            .and_then(|r| u64::try_from(r.started_at.timestamp()).ok()),
        Err(err) => {
            tracing::warn!("could not read the deploy history of {environment}: {err}");
            None
        }
    }
}

/// The state of one invocation: the orchestrators built so far, one per environment.
struct Invocation<'a> {
    handler: &'a Handler,
    config: &'a Config,
    loaded: &'a LoadedConfig,
    built: BTreeMap<String, Arc<Orchestrator>>,
    deadline: Option<tokio::time::Instant>,
}

impl Invocation<'_> {
    /// An orchestrator for one environment only (its project holds that environment
    /// alone, so `alarm_fired` cannot reach another environment's service with these
    /// stages), with the task definition from the package or the service.
    async fn orchestrator(&mut self, environment: &str) -> Result<Arc<Orchestrator>, HandlerError> {
        if let Some(built) = self.built.get(environment) {
            return Ok(built.clone());
        }
        let env = self
            .config
            .environments
            .get(environment)
            .ok_or_else(|| HandlerError::Setup {
                problem: format!("the config has no environment {environment:?}"),
                help: None,
            })?;
        let clients = self.handler.clients(env.region.as_deref()).await;
        let stages = wiring::stages(environment, env, &clients, &self.handler.notifiers)?;
        let mut config = self.config.clone();
        config.environments.retain(|name, _| name == environment);
        let task_definition = match &self.loaded.task_definition {
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

    async fn dispatch(
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
        let Some(environment) = self
            .config
            .environment_for_image_tag(tag)
            .map(str::to_string)
        else {
            return Ok(InvocationResult::ignored(format!(
                "no environment deploys image tag {tag} (no `tags` or `image_tags` rule matches it)"
            )));
        };
        // Trust nothing in the event: anyone allowed to invoke the function can send one.
        if let Some(why) = self.handler.foreign(&envelope.account).await {
            tracing::warn!("push event refused: {why}");
            return Ok(InvocationResult::ignored(format!(
                "a push to {repository}: {why}; nothing deployed"
            )));
        }
        let env = &self.config.environments[&environment];
        if let Some(region) = env.region.as_deref() {
            if region != envelope.region {
                return Ok(InvocationResult::ignored(format!(
                    "a push in {}, but {environment} deploys from {region}: not this app's repository",
                    envelope.region
                )));
            }
        }
        let clients = self.handler.clients(env.region.as_deref()).await;
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
        let request = DeployRequest {
            environment: environment.clone(),
            source: ReleaseSource::Image(ImageReference::Digest(digest)),
            git: git_of_tag(self.config, tag),
            actor: format!("lambda:{}", envelope.id),
            cancel: CancellationToken::new(),
        };
        let orchestrator = self.orchestrator(&environment).await?;
        let outcome = orchestrator
            .start_release(request, Some(envelope.id.clone()))
            .await;
        // Returned as an error, so that Lambda delivers the push again (and then the
        // dead-letter queue keeps it): a success would drop it for good.
        if let EventOutcome::Retry(problem) = outcome {
            return Err(HandlerError::Retry { problem });
        }
        Ok(InvocationResult::of(
            Action::StartRelease,
            &environment,
            &outcome,
        ))
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
        let environment = match &service.cluster {
            Some(cluster) => self
                .config
                .environment_for_service(cluster, &service.service)
                .map(str::to_string),
            // The old ARN format has no cluster: match on the service name if only one
            // environment has it.
            None => {
                let mut matching = self
                    .config
                    .environments
                    .iter()
                    .filter(|(_, env)| env.service == service.service);
                match (matching.next(), matching.next()) {
                    (Some((name, _)), None) => Some(name.clone()),
                    _ => None,
                }
            }
        };
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
        Ok(InvocationResult::of(
            Action::FinishRelease,
            &environment,
            &outcome,
        ))
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
        let watching: Vec<String> = self
            .config
            .environments
            .iter()
            .filter(|(_, env)| env.verify.alarms.iter().any(|a| a == alarm))
            .map(|(name, _)| name.clone())
            .collect();
        if watching.is_empty() {
            return Ok(InvocationResult::ignored(format!(
                "no environment watches alarm {alarm} (verify.alarms)"
            )));
        }
        let mut results = Vec::new();
        for environment in &watching {
            let orchestrator = self.orchestrator(environment).await?;
            for (name, outcome) in orchestrator
                .alarm_fired(alarm, &detail.state.reason, Some(envelope.id.clone()))
                .await
            {
                if let EventOutcome::Retry(problem) = outcome {
                    return Err(HandlerError::Retry { problem });
                }
                results.push(InvocationResult::of(Action::AlarmFired, &name, &outcome));
            }
        }
        let Some(worst) = results.iter().max_by_key(|r| severity(&r.outcome)).cloned() else {
            return Ok(InvocationResult::ignored(format!(
                "no environment acted on alarm {alarm}"
            )));
        };
        if results.len() == 1 {
            return Ok(worst);
        }
        Ok(InvocationResult {
            environment: Some(watching.join(",")),
            message: results
                .iter()
                .map(|r| format!("{}: {}", r.environment.as_deref().unwrap_or("?"), r.message))
                .collect::<Vec<_>>()
                .join("; "),
            ..worst
        })
    }

    /// Finishes every environment's releases past their rollout timeout. An
    /// environment that cannot be wired is skipped with a warning.
    async fn finish_overdue(&mut self) -> Vec<OverdueResult> {
        let mut finished = Vec::new();
        let names: Vec<String> = self.config.environments.keys().cloned().collect();
        for environment in names {
            let orchestrator = match self.orchestrator(&environment).await {
                Ok(orchestrator) => orchestrator,
                Err(err) => {
                    tracing::warn!("overdue releases of {environment} not checked: {err}");
                    continue;
                }
            };
            for outcome in orchestrator.finish_overdue(&environment).await {
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

    #[test]
    fn results_serialise_as_documented() {
        let result = InvocationResult::ignored("not ours");
        assert_eq!(
            serde_json::to_value(&result).ok(),
            Some(serde_json::json!({
                "action": "ignored", "environment": null, "outcome": "ignored", "message": "not ours"
            }))
        );
    }
}
