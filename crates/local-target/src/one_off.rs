//! One-off tasks on the local target (a `before_deploy` migration, `tugboat run`): one
//! container of the revision's definition, its command replaced, on the release's
//! network (`tugboat-<app>-<env>-<n>`, created if missing and removed again if this run
//! created it), with the definition's image, environment and secrets (the secrets
//! file's values, given to the engine only) and no published ports. Its lines are read
//! every 250 ms from where the last read ended (`GET /containers/{id}/logs?since=…`),
//! the secrets file's values redacted, until it exits; its time limit passing stops it
//! (SIGTERM, then SIGKILL after its stop timeout), a cancelled run stops it and returns.
//! The container is removed on every path.

use super::containers::{container_specs, create_body, CreateInputs};
use super::deployer::{
    LocalDeployer, LABEL_APP, LABEL_ENVIRONMENT, LABEL_ONE_OFF, LABEL_RELEASE, LABEL_REVISION,
};
use super::diagnose::log_lines;
use super::engine::Engine;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pipeline_core::diagnosis::{redact_text, LogLine, OneOffTaskRun, DEFAULT_LOG_LINES};
use pipeline_core::{
    CancellationToken, DeployTarget, LineSink, OneOffRequest, OneOffTasks, StageError,
};
use serde_json::json;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use tokio::time::Instant;

/// How often the container and its new lines are looked at.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How long a cancelled run lets the task handle SIGTERM before it is killed: the run
/// returns at once, so not the whole stop timeout.
const CANCEL_GRACE: Duration = Duration::from_secs(2);
/// How long a task stopped for its time limit may take to be seen exited.
const STOP_GRACE: Duration = Duration::from_secs(150);

#[async_trait]
impl OneOffTasks for LocalDeployer {
    async fn run_one_off(
        &self,
        target: &DeployTarget,
        request: &OneOffRequest,
        lines: &LineSink,
        cancel: &CancellationToken,
    ) -> Result<OneOffTaskRun, StageError> {
        if request.command.is_empty() {
            return Err(StageError::bad_input(format!(
                "the one-off task for container {} has an empty command",
                request.container
            )));
        }
        let number = Self::number_of(&request.revision)?;
        let body = self.one_off_body(target, request, number).await?;
        let network = Self::network_name(target, number);
        let network_labels = BTreeMap::from([
            (LABEL_APP.to_string(), target.app.clone()),
            (LABEL_ENVIRONMENT.to_string(), target.environment.clone()),
            (LABEL_ONE_OFF.to_string(), request.name.clone()),
        ]);
        // The release's network: the serving release's own when the revision serves
        // (`tugboat run`), else a new one, gone again afterwards (the release creates
        // its own when it starts; a deploy meanwhile leaves both alone, `tugboat stop`
        // removes them).
        let created_network = self
            .engine()
            .create_network(&network, &network_labels)
            .await?;
        let name = one_off_name(target, number, request);
        let started = Instant::now();
        let result = self
            .run_container(&name, &body, request, lines, cancel, started)
            .await;
        let grace = match &result {
            Ok(run) if run.cancelled => CANCEL_GRACE,
            _ => Duration::ZERO,
        };
        if let Err(err) = self.engine().remove_container(&name, grace).await {
            tracing::warn!("one-off container {name} was not removed: {}", err.message);
        }
        if created_network {
            if let Err(err) = self.engine().remove_network(&network).await {
                tracing::debug!("network {network} was not removed: {}", err.message);
            }
        }
        result
    }
}

impl LocalDeployer {
    /// The create request of the task's container: the named container of the
    /// revision with its command replaced, no ports, no health check, no network alias
    /// (a release's containers reach theirs by name; the task is not one of them).
    async fn one_off_body(
        &self,
        target: &DeployTarget,
        request: &OneOffRequest,
        number: u64,
    ) -> Result<serde_json::Value, StageError> {
        let definition = self.definition(number, &request.revision.label)?;
        let Some(container) = definition.container(&request.container) else {
            let names: Vec<&str> = definition
                .container_definitions
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            return Err(StageError::bad_input(format!(
                "container {} is not in revision {} (it has: {})",
                request.container,
                request.revision.label,
                names.join(", ")
            )));
        };
        let mut spec = container_specs(&definition)?
            .into_iter()
            .find(|spec| spec.name == request.container)
            .ok_or_else(|| {
                StageError::failed(format!(
                    "container {} has no spec in its revision",
                    request.container
                ))
            })?;
        spec.ports.clear();
        let image = self.local_image(&container.name, &container.image).await?;
        let env = self
            .environments(&definition)?
            .remove(&container.name)
            .unwrap_or_default();
        let mut labels = BTreeMap::from([
            (LABEL_APP.to_string(), target.app.clone()),
            (LABEL_ENVIRONMENT.to_string(), target.environment.clone()),
            (LABEL_REVISION.to_string(), number.to_string()),
            (LABEL_ONE_OFF.to_string(), request.name.clone()),
        ]);
        if let Some(release) = self
            .state
            .tags(number)
            .into_iter()
            .find(|tag| tag.key == "tugboat:release")
        {
            labels.insert(LABEL_RELEASE.to_string(), release.value);
        }
        let network = Self::network_name(target, number);
        let mut body = create_body(
            container,
            &spec,
            &CreateInputs {
                image: &image,
                env,
                labels: &labels,
                network: &network,
                host_ports: &[],
            },
        )?;
        body["Cmd"] = json!(request.command);
        body["Healthcheck"] = json!({ "Test": ["NONE"] });
        body["NetworkingConfig"] = json!({ "EndpointsConfig": { network: {} } });
        Ok(body)
    }

    /// Creates and starts the container, and follows it to its end.
    async fn run_container(
        &self,
        name: &str,
        body: &serde_json::Value,
        request: &OneOffRequest,
        lines: &LineSink,
        cancel: &CancellationToken,
        started: Instant,
    ) -> Result<OneOffTaskRun, StageError> {
        let engine = self.engine();
        // A container of this name is what a run of this very step that died left.
        engine.remove_container(name, Duration::ZERO).await?;
        if let Err(message) = engine.create_container(name, body).await? {
            return Err(StageError::failed(format!(
                "the Docker engine at {} did not create one-off container {name}: {message}",
                engine.host().describe()
            )));
        }
        if let Err(message) = engine.start_container(name).await? {
            return Err(StageError::failed(format!(
                "the Docker engine at {} did not start one-off container {name}: {message}",
                engine.host().describe()
            )));
        }
        let mut follower = LogFollower::new(self.secret_values());
        let deadline = started + request.timeout;
        let mut stopped_at: Option<Instant> = None;
        let run = |exit_code, timed_out, cancelled, follower: LogFollower| OneOffTaskRun {
            task_arn: name.to_string(),
            exit_code,
            millis: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            timed_out,
            cancelled,
            stopped_reason: None,
            stop_code: None,
            log_tail: follower.tail.into_iter().collect(),
        };
        loop {
            let info = engine.inspect_container(name).await?.ok_or_else(|| {
                StageError::failed(format!("one-off container {name} was removed while it ran"))
            })?;
            follower.pump(engine, name, lines).await;
            if matches!(info.state.status.as_str(), "exited" | "dead") {
                // Lines written just before the exit may land after the last read.
                follower.pump(engine, name, lines).await;
                let code = i32::try_from(info.state.exit_code).unwrap_or(i32::MAX);
                let mut ran = run(Some(code), stopped_at.is_some(), false, follower);
                if stopped_at.is_some() {
                    ran.stopped_reason = Some(format!(
                        "tugboat: the one-off task ran longer than its {} s timeout",
                        request.timeout.as_secs()
                    ));
                }
                return Ok(ran);
            }
            if cancel.is_cancelled() {
                let mut ran = run(None, false, true, follower);
                ran.stopped_reason = Some("tugboat: the run was cancelled".to_string());
                return Ok(ran);
            }
            let now = Instant::now();
            match stopped_at {
                None if now >= deadline => {
                    // SIGTERM, then SIGKILL after the container's stop timeout; the
                    // exit code is then the engine's (143, 137).
                    let stop = engine.stop_container(name, None);
                    tokio::select! {
                        () = stop => {}
                        () = cancel.cancelled() => {}
                    }
                    stopped_at = Some(Instant::now());
                    continue;
                }
                Some(at) if now.duration_since(at) >= STOP_GRACE => {
                    return Err(StageError::failed(format!(
                        "one-off container {name} did not stop within {} s",
                        STOP_GRACE.as_secs()
                    ))
                    .with_help(format!("check it with `docker inspect {name}`")));
                }
                _ => {}
            }
            let wait = POLL_INTERVAL.min(deadline.saturating_duration_since(now));
            tokio::select! {
                () = tokio::time::sleep(wait.max(Duration::from_millis(10))) => {}
                () = cancel.cancelled() => {}
            }
        }
    }
}

/// `tugboat-<app>-<env>-<n>-oneoff-<name>-<8 hex of the client token>`: one per step of
/// a release (and per `tugboat run`), in the characters a container name may have.
fn one_off_name(target: &DeployTarget, number: u64, request: &OneOffRequest) -> String {
    let name: String = request
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_matches('-');
    // FNV-1a: stable across runs and builds, no dependency.
    let hash = request
        .client_token
        .bytes()
        .fold(0x811c_9dc5_u32, |hash, byte| {
            (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
        });
    format!(
        "tugboat-{}-{}-{number}-oneoff-{name}-{hash:08x}",
        target.app, target.environment
    )
}

/// Reads a container's lines on from the last one handed over (`since` is inclusive,
/// so the lines at that very time already handed over are skipped), redacted, and keeps
/// the last [`DEFAULT_LOG_LINES`].
struct LogFollower {
    since: Option<DateTime<Utc>>,
    /// How many lines stamped exactly `since` were handed over.
    seen_at_since: usize,
    secrets: Vec<String>,
    tail: VecDeque<LogLine>,
    warned: bool,
}

impl LogFollower {
    fn new(secrets: Vec<String>) -> Self {
        Self {
            since: None,
            seen_at_since: 0,
            secrets,
            tail: VecDeque::new(),
            warned: false,
        }
    }

    /// Hands over the lines written since the last read. A read that fails is warned
    /// about once and the task followed on (its exit code decides, not its lines).
    async fn pump(&mut self, engine: &Engine, container: &str, lines: &LineSink) {
        let bytes = match engine.container_logs_since(container, self.since).await {
            Ok(bytes) => bytes,
            Err(err) => {
                if !self.warned {
                    self.warned = true;
                    tracing::warn!(
                        "the lines of one-off container {container} cannot be read: {}",
                        err.message
                    );
                }
                return;
            }
        };
        let mut skip = self.seen_at_since;
        for line in log_lines(&bytes) {
            if let (Some(at), Some(since)) = (line.at, self.since) {
                if at < since {
                    continue;
                }
                if at == since && skip > 0 {
                    skip -= 1;
                    continue;
                }
            }
            match line.at {
                Some(at) if Some(at) == self.since => self.seen_at_since += 1,
                Some(at) => {
                    self.since = Some(at);
                    self.seen_at_since = 1;
                }
                None => {}
            }
            let line = LogLine::new(line.at, redact_text(&line.message, &self.secrets));
            lines.send(&line);
            self.tail.push_back(line);
            if self.tail.len() > DEFAULT_LOG_LINES {
                self.tail.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline_core::Revision;

    #[test]
    fn a_one_off_containers_name_is_valid_and_differs_by_step() {
        let target = DeployTarget {
            app: "cv".into(),
            environment: "local".into(),
            cluster: "local".into(),
            service: "cv-local".into(),
            region: None,
        };
        let request = |name: &str, token: &str| OneOffRequest {
            name: name.into(),
            revision: Revision::new("local:cv-local:7", "cv:7"),
            container: "web".into(),
            command: vec!["true".into()],
            started_by: "tugboat/r1".into(),
            client_token: token.into(),
            timeout: Duration::from_secs(1),
        };
        let first = one_off_name(
            &target,
            7,
            &request("before_deploy[0]", "r1-before-deploy-0"),
        );
        assert!(
            first.starts_with("tugboat-cv-local-7-oneoff-before_deploy-0-"),
            "{first}"
        );
        assert!(first
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')));
        let second = one_off_name(
            &target,
            7,
            &request("before_deploy[0]", "r1-before-deploy-1"),
        );
        assert_ne!(first, second);
        assert_eq!(
            first,
            one_off_name(
                &target,
                7,
                &request("before_deploy[0]", "r1-before-deploy-0")
            )
        );
    }
}
