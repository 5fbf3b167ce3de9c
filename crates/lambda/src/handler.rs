//! The function's handler: the config (read once per warm container), the clients, and
//! each invocation: an ECS lifecycle hook is answered here; an EventBridge event is
//! parsed and acted on by [`crate::invocation`], which then finishes every environment's
//! overdue releases.

use crate::config_source::{self, ConfigSource, LoadedConfig};
use crate::events::{self, ServiceArn};
use crate::invocation::Invocation;
use crate::{hook, HandlerError};
use aws_adapters::{AwsClients, ClientOptions};
use pipeline_core::{EventOutcome, Notifier, RecordOutcome, ReleaseRecords};
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
    pub(crate) fn ignored(message: impl Into<String>) -> Self {
        Self {
            action: Action::Ignored,
            environment: None,
            outcome: "ignored".into(),
            message: message.into(),
            release_id: None,
            overdue: Vec::new(),
        }
    }

    pub(crate) fn of(action: Action, environment: &str, outcome: &EventOutcome) -> Self {
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
pub(crate) fn describe(outcome: &EventOutcome) -> (String, Option<String>) {
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
pub(crate) fn severity(outcome: &str) -> u8 {
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
    /// Given by the embedding program (tests): by region, and the default (`None`) for
    /// every other region.
    Fixed(BTreeMap<Option<String>, AwsClients>),
}

/// Handles the function's invocations. Build it once per container: the config is read
/// and parsed at the first invocation and kept while the container stays warm.
pub struct Handler {
    source: Result<ConfigSource, HandlerError>,
    clients: Clients,
    loaded: OnceCell<Arc<LoadedConfig>>,
    /// The function's own account (STS), asked once per container; `None` if unknown.
    account: OnceCell<Option<String>>,
    pub(crate) notifiers: Vec<Arc<dyn Notifier>>,
    /// The function's own region (`AWS_REGION`): the overdue sweep finishes only the
    /// releases of environments in it (or with no region of their own); a fleet in two
    /// regions has a function in each. `None`: every environment's.
    pub(crate) home_region: Option<String>,
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
            home_region: None,
        }
    }

    /// The function's handler: the config named by `TUGBOAT_CONFIG`. A bad variable is
    /// reported by every invocation (an init failure would only say the runtime exited).
    pub fn from_env() -> Self {
        Self {
            source: ConfigSource::from_env(),
            home_region: std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty()),
            ..Self::new(ConfigSource::File(Default::default()))
        }
    }

    /// Uses these clients for every environment instead of building them.
    pub fn with_clients(mut self, clients: AwsClients) -> Self {
        self.clients = Clients::Fixed(BTreeMap::from([(None, clients)]));
        self
    }

    /// Uses these clients for the environments in `region` (after
    /// [`Handler::with_clients`], which gives the others').
    pub fn with_region_clients(mut self, region: &str, clients: AwsClients) -> Self {
        match &mut self.clients {
            Clients::Fixed(fixed) => {
                fixed.insert(Some(region.to_string()), clients);
            }
            Clients::Load(_) => {
                self.clients =
                    Clients::Fixed(BTreeMap::from([(Some(region.to_string()), clients)]));
            }
        }
        self
    }

    /// Uses this config instead of reading one from the source (embedding programs, tests).
    pub fn with_config(mut self, loaded: LoadedConfig) -> Self {
        self.loaded = OnceCell::new_with(Some(Arc::new(loaded)));
        self
    }

    /// The function's own region: the overdue sweep looks only at its environments.
    pub fn with_home_region(mut self, region: &str) -> Self {
        self.home_region = Some(region.to_string());
        self
    }

    /// Adds a notifier to every environment's (besides [`wiring::notifiers`]).
    pub fn with_notifier(mut self, notifier: Arc<dyn Notifier>) -> Self {
        self.notifiers.push(notifier);
        self
    }

    pub(crate) async fn clients(&self, region: Option<&str>) -> AwsClients {
        match &self.clients {
            Clients::Fixed(fixed) => {
                let by_region = region.and_then(|r| fixed.get(&Some(r.to_string())));
                match by_region.or_else(|| fixed.get(&None)) {
                    Some(clients) => clients.clone(),
                    None => {
                        AwsClients::load(&ClientOptions {
                            region: region.map(str::to_string),
                            profile: None,
                        })
                        .await
                    }
                }
            }
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
    pub(crate) async fn foreign(&self, account: &str) -> Option<String> {
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
        // config) and service; a fleet's services each by their own.
        let found = loaded.routes.for_service(&arn).and_then(|name| {
            let env = loaded.routes.get(&name)?.config.clone();
            Some((name, env))
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
                        release_in_progress_started(&clients, &loaded.config.app.name, &name, &env)
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
            routes: &loaded.routes,
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

#[cfg(test)]
mod tests {
    use super::*;

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
