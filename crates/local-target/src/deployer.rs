//! [`LocalDeployer`]: releases as Docker containers behind a local proxy.
//!
//! Why one file of ~1,560 lines: the `Deployer` and `ServiceReader` of the local target
//! (register, start, health-gate, switch, drain, stop, status) over one state folder;
//! containers, engine calls, observation, proxy and state are already their own files.
//! Splitting the switch-and-drain half out is the next step.

use super::containers::{container_specs, create_body, Condition, ContainerSpec, CreateInputs};
use super::engine::{ContainerInfo, Engine};
use super::observe::LocalRolloutWatch;
use super::proxy::{control_path, ProxyClient, ProxyCommand, ProxyOptions, ProxyRecord};
use super::secrets::SecretValues;
use super::state::{
    revision, revision_number, DeployedContainer, DeploymentState, LocalDeployment, Serving,
    StateDir,
};
use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use host_adapters::docker_host::DockerHost;
use host_adapters::http::{self, Request};
use pipeline_core::config::LocalSettings;
use pipeline_core::diagnosis::FailureDiagnosis;
use pipeline_core::task_definition::RenderedTaskDefinition;
use pipeline_core::{
    DeployTarget, Deployer, DeploymentHandle, DeploymentStatus, Events, RestoreRequest, Revision,
    RolloutWatch, ServiceEventLine, ServiceReader, ServiceStatus, StageError, StageErrorKind,
    TaskDefinition, UpdateRequest,
};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

pub(super) const LABEL_APP: &str = "tugboat.app";
pub(super) const LABEL_ENVIRONMENT: &str = "tugboat.environment";
pub(super) const LABEL_REVISION: &str = "tugboat.revision";
const LABEL_DEPLOYMENT: &str = "tugboat.deployment";
const LABEL_CONTAINER: &str = "tugboat.container";
pub(super) const LABEL_RELEASE: &str = "tugboat.release";
/// A one-off task's container (and the network it made), with the task's name.
pub(super) const LABEL_ONE_OFF: &str = "tugboat.one-off";

/// How long a started proxy may take to answer.
const PROXY_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the target health request may take.
const TARGET_HEALTH_TIMEOUT: Duration = Duration::from_secs(3);
/// How often to try again when a host port was taken between choosing and starting.
const PORT_RETRIES: usize = 5;

/// [`Deployer`] and [`ServiceReader`] of one local environment: each release runs as
/// Docker containers on this machine, behind a proxy on `127.0.0.1:<port>`.
///
/// - [`Deployer::register`] writes the rendered task definition to
///   `.tugboat/<app>/<env>/revisions/<n>.json`: revision `local:<app>-<env>:<n>`,
///   label `<family>:<n>`.
/// - [`Deployer::update_service`] starts the release next to the serving one: each
///   container `tugboat-<app>-<env>-<n>-<container>` on a network of the release (the
///   containers reach each other by name), with the definition's environment and
///   secrets (values from the secrets file, given to the engine only), its port mappings
///   on loopback host ports from `release_ports_from` up, its `healthCheck` as the
///   Docker health check, started in `dependsOn` order.
/// - [`Deployer::watch_rollout`] (`observe.rs`) is looked at until every essential container runs and is
///   healthy and the front container answers `GET <health path>` on its host port (like
///   an ALB target group), then switches the proxy to it, waits for connections to the
///   previous release to finish, and removes the previous release's containers. An
///   essential container that exits or turns unhealthy, or a release not ready within
///   the timeout, is [`RolloutOutcome::Failed`]: its containers are removed and the
///   previous release keeps serving.
/// - [`Deployer::roll_back`] to the serving release only checks it; to another
///   revision, it starts that revision the same way.
///
/// The proxy is a separate process ([`ProxyCommand`], `tugboat __proxy` by default):
/// see [`super::proxy`]. [`LocalDeployer::stop`] removes the containers and stops it.
#[derive(Clone, Debug)]
pub struct LocalDeployer {
    engine: Engine,
    pub(super) state: StateDir,
    port: u16,
    release_ports_from: u16,
    secrets_file: Option<PathBuf>,
    health_path: Option<String>,
    front_container: Option<String>,
    proxy: Option<ProxyCommand>,
    drain_timeout: Duration,
    pub(super) stop_grace: Duration,
    /// Failed deployments' diagnoses, read before their containers were removed.
    diagnoses: std::sync::Arc<std::sync::Mutex<BTreeMap<String, FailureDiagnosis>>>,
}

/// What [`LocalDeployer::stop`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StopSummary {
    pub containers_removed: usize,
    pub proxy_stopped: bool,
}

/// One container of a deployment as the engine sees it now.
#[derive(Clone, Debug)]
enum Observed {
    Missing,
    Created,
    Running { health: Option<String> },
    Exited { code: i64, oom: bool },
}

impl Observed {
    fn from_info(info: Option<&ContainerInfo>) -> Self {
        let Some(info) = info else {
            return Self::Missing;
        };
        let state = &info.state;
        match state.status.as_str() {
            "created" => Self::Created,
            "running" | "restarting" | "paused" => Self::Running {
                health: state.health.as_ref().map(|h| h.status.clone()),
            },
            _ => Self::Exited {
                code: state.exit_code,
                oom: state.oom_killed,
            },
        }
    }

    fn started(&self) -> bool {
        matches!(self, Self::Running { .. } | Self::Exited { .. })
    }

    fn healthy(&self) -> bool {
        matches!(self, Self::Running { health: Some(h) } if h == "healthy")
    }
}

/// Whether a `dependsOn` condition holds, can still come, or never will.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dependency {
    Met,
    Waiting,
    Impossible,
}

fn dependency(condition: Condition, observed: &Observed, has_health_check: bool) -> Dependency {
    match (condition, observed) {
        (_, Observed::Missing) => Dependency::Impossible,
        (Condition::Start, o) if o.started() => Dependency::Met,
        (Condition::Complete, Observed::Exited { .. }) => Dependency::Met,
        (Condition::Success, Observed::Exited { code: 0, .. }) => Dependency::Met,
        (Condition::Success, Observed::Exited { .. }) => Dependency::Impossible,
        (Condition::Healthy, _) if !has_health_check => Dependency::Impossible,
        (Condition::Healthy, o) if o.healthy() => Dependency::Met,
        (Condition::Healthy, Observed::Exited { .. }) => Dependency::Impossible,
        (Condition::Healthy, Observed::Running { health: Some(h) }) if h == "unhealthy" => {
            Dependency::Impossible
        }
        _ => Dependency::Waiting,
    }
}

/// Where a deployment stands after one look.
pub(super) enum Progress {
    Ready,
    Waiting(String),
    Failed(String),
}

impl LocalDeployer {
    /// A deployer for the environment whose files live in `state_dir`
    /// (`<project>/.tugboat/<app>/<env>`), with the environment's local settings. The
    /// front end says how to start the proxy ([`LocalDeployer::with_proxy_command`]);
    /// `secrets_file` must be resolved against the project folder by the caller.
    pub fn new(host: DockerHost, state_dir: impl Into<PathBuf>, settings: &LocalSettings) -> Self {
        // Absolute, so that the proxy (started from here, living on) and later runs
        // from other folders agree on its files.
        let state_dir = state_dir.into();
        let state_dir = std::path::absolute(&state_dir).unwrap_or(state_dir);
        Self {
            engine: Engine::new(host),
            state: StateDir::new(state_dir),
            port: settings.port,
            release_ports_from: settings.release_ports_from,
            secrets_file: settings.secrets_file.clone(),
            health_path: Some("/health".to_string()),
            front_container: None,
            proxy: None,
            drain_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_secs(10),
            diagnoses: std::sync::Arc::default(),
        }
    }

    pub(super) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The diagnosis read when `deployment` failed, once.
    pub(super) fn take_diagnosis(&self, deployment: &str) -> Option<FailureDiagnosis> {
        self.diagnoses.lock().ok()?.remove(deployment)
    }

    /// The values of the secrets file (none when there is none or it cannot be read):
    /// never repeated in a diagnosis.
    pub(super) fn secret_values(&self) -> Vec<String> {
        self.secrets_file
            .as_deref()
            .filter(|file| file.exists())
            .and_then(|file| SecretValues::load(file).ok())
            .map(|values| values.all_values())
            .unwrap_or_default()
    }

    pub fn with_secrets_file(mut self, file: Option<PathBuf>) -> Self {
        self.secrets_file = file;
        self
    }

    /// The path the front container must answer (2xx or 3xx) before it gets traffic;
    /// `None` to only require that it runs (and is healthy, with a health check).
    pub fn with_health_path(mut self, path: Option<String>) -> Self {
        self.health_path = path;
        self
    }

    /// The container the proxy forwards to (its first port mapping); by default the
    /// first container with a port mapping.
    pub fn with_front_container(mut self, name: Option<String>) -> Self {
        self.front_container = name;
        self
    }

    pub fn with_proxy_command(mut self, command: ProxyCommand) -> Self {
        self.proxy = Some(command);
        self
    }

    /// How long a switch waits for connections to the previous release to finish
    /// before its containers are stopped (like a target group's deregistration delay).
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// The URL the environment serves on, whichever release serves.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn listen(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    fn control(&self) -> PathBuf {
        control_path(self.state.root())
    }

    fn proxy_file(&self) -> PathBuf {
        self.state.root().join("proxy.json")
    }

    fn labels(target: &DeployTarget) -> [(&'static str, &str); 2] {
        [
            (LABEL_APP, &target.app),
            (LABEL_ENVIRONMENT, &target.environment),
        ]
    }

    fn docker_name(target: &DeployTarget, number: u64, container: &str) -> String {
        format!(
            "tugboat-{}-{}-{number}-{container}",
            target.app, target.environment
        )
    }

    pub(super) fn network_name(target: &DeployTarget, number: u64) -> String {
        format!("tugboat-{}-{}-{number}", target.app, target.environment)
    }

    fn family_label(&self, target: &DeployTarget, number: u64) -> Revision {
        let family = self
            .state
            .definition(number)
            .ok()
            .flatten()
            .map(|d| d.family)
            .unwrap_or_else(|| target.app.clone());
        revision(&target.service, &family, number)
    }

    pub(super) fn number_of(revision: &Revision) -> Result<u64, StageError> {
        revision_number(&revision.id)
            .or_else(|| revision_number(&revision.label))
            .ok_or_else(|| {
                StageError::bad_input(format!(
                    "{} is not a local revision (expected <family>:<number>)",
                    revision.label
                ))
            })
    }

    pub(super) fn definition(
        &self,
        number: u64,
        label: &str,
    ) -> Result<TaskDefinition, StageError> {
        self.state.definition(number)?.ok_or_else(|| {
            StageError::bad_input(format!(
                "revision {label} is not registered in {}",
                self.state.root().join("revisions").display()
            ))
            .with_help(
                "run `tugboat history` to see the releases; pruned revisions cannot be restored",
            )
        })
    }

    /// The image a container definition names, as the engine knows it: a
    /// `repository@sha256:<image id>` from the local registry runs by image id.
    pub(super) async fn local_image(
        &self,
        container: &str,
        image: &str,
    ) -> Result<String, StageError> {
        if image.is_empty() {
            return Err(StageError::bad_input(format!(
                "container {container:?} has no image"
            )));
        }
        if let Some((_, digest)) = image.split_once('@') {
            if let Some(info) = self.engine.image(digest).await? {
                return Ok(info.id);
            }
        }
        if self.engine.image(image).await?.is_some() {
            return Ok(image.to_string());
        }
        self.engine.pull(image).await?;
        Ok(image.to_string())
    }

    /// Chooses a free loopback port from `release_ports_from` up.
    fn free_port(&self, taken: &mut BTreeSet<u16>) -> Result<u16, StageError> {
        for port in self.release_ports_from..=u16::MAX {
            if port == self.port || taken.contains(&port) {
                continue;
            }
            if std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                taken.insert(port);
                return Ok(port);
            }
        }
        Err(StageError::failed(format!(
            "no free port on 127.0.0.1 from {} up for the release",
            self.release_ports_from
        ))
        .with_help("set local.release_ports_from to a free range"))
    }

    /// Every container's `NAME=value` environment, secrets included (values in memory
    /// only; an error names what is missing, never a value).
    pub(super) fn environments(
        &self,
        definition: &TaskDefinition,
    ) -> Result<BTreeMap<String, Vec<String>>, StageError> {
        let needs_secrets = definition
            .container_definitions
            .iter()
            .any(|c| !c.secrets.is_empty());
        let values = match (&self.secrets_file, needs_secrets) {
            (_, false) => SecretValues::default(),
            (Some(file), true) => SecretValues::load(file)?,
            (None, true) => return Err(StageError::bad_input(
                "the task definition has secrets, but this local environment has no secrets file",
            )
            .with_help("set local.secrets_file = \"local-secrets.env\" (NAME=value lines)")),
        };
        let mut all = BTreeMap::new();
        for container in &definition.container_definitions {
            let mut env: Vec<String> = container
                .environment
                .iter()
                .map(|kv| format!("{}={}", kv.name, kv.value))
                .collect();
            let mut missing = Vec::new();
            for secret in &container.secrets {
                match values.value_from(&secret.value_from) {
                    Some(value) => env.push(format!("{}={value}", secret.name)),
                    None => missing.push(format!("{} ({})", secret.name, secret.value_from)),
                }
            }
            if !missing.is_empty() {
                return Err(StageError::bad_input(format!(
                    "container {:?}: the secrets {} are not in the local secrets file {}",
                    container.name,
                    missing.join(", "),
                    self.secrets_file
                        .as_deref()
                        .map(Path::display)
                        .map(|d| d.to_string())
                        .unwrap_or_default()
                ))
                .with_help(
                    "the local target reads every secret from that file: add NAME=value lines",
                ));
            }
            all.insert(container.name.clone(), env);
        }
        Ok(all)
    }

    /// Creates one container of a deployment (choosing new host ports when `taken`
    /// says the old ones are in use) and returns its host ports.
    #[allow(clippy::too_many_arguments)]
    async fn create_container(
        &self,
        target: &DeployTarget,
        deployment: &LocalDeployment,
        definition: &TaskDefinition,
        spec: &ContainerSpec,
        image: &str,
        env: Vec<String>,
        taken: &mut BTreeSet<u16>,
    ) -> Result<Vec<u16>, StageError> {
        let container = definition.container(&spec.name).ok_or_else(|| {
            StageError::failed(format!(
                "container {:?} vanished from its revision",
                spec.name
            ))
        })?;
        let mut host_ports = Vec::new();
        for _ in &spec.ports {
            host_ports.push(self.free_port(taken)?);
        }
        let mut labels = BTreeMap::from([
            (LABEL_APP.to_string(), target.app.clone()),
            (LABEL_ENVIRONMENT.to_string(), target.environment.clone()),
            (LABEL_REVISION.to_string(), deployment.revision.to_string()),
            (LABEL_DEPLOYMENT.to_string(), deployment.id.clone()),
            (LABEL_CONTAINER.to_string(), spec.name.clone()),
        ]);
        if let Some(release) = self
            .state
            .tags(deployment.revision)
            .into_iter()
            .find(|tag| tag.key == "tugboat:release")
        {
            labels.insert(LABEL_RELEASE.to_string(), release.value);
        }
        let body = create_body(
            container,
            spec,
            &CreateInputs {
                image,
                env,
                labels: &labels,
                network: &deployment.network,
                host_ports: &host_ports,
            },
        )?;
        let name = Self::docker_name(target, deployment.revision, &spec.name);
        match self.engine.create_container(&name, &body).await? {
            Ok(_) => Ok(host_ports),
            Err(message) => Err(StageError::failed(format!(
                "the Docker engine at {} did not create container {name}: {message}",
                self.engine.host().describe()
            ))),
        }
    }

    /// Starts a created container; a host port taken meanwhile gets the container
    /// created again on other ports.
    async fn start_container(
        &self,
        target: &DeployTarget,
        deployment: &mut LocalDeployment,
        index: usize,
    ) -> Result<(), StageError> {
        let mut taken: BTreeSet<u16> = deployment
            .containers
            .iter()
            .flat_map(|c| c.host_ports.iter().copied())
            .collect();
        for attempt in 0..=PORT_RETRIES {
            let name = deployment.containers[index].docker_name.clone();
            match self.engine.start_container(&name).await? {
                Ok(()) => return Ok(()),
                Err(message)
                    if attempt < PORT_RETRIES
                        && (message.contains("port is already allocated")
                            || message.contains("address already in use")) =>
                {
                    tracing::debug!("{name}: {message}; choosing other ports");
                    self.engine.remove_container(&name, Duration::ZERO).await?;
                    let label = self.family_label(target, deployment.revision).label;
                    let definition = self.definition(deployment.revision, &label)?;
                    let mut envs = self.environments(&definition)?;
                    let spec = deployment.containers[index].spec.clone();
                    let container = definition.container(&spec.name).ok_or_else(|| {
                        StageError::failed(format!(
                            "container {:?} vanished from its revision",
                            spec.name
                        ))
                    })?;
                    let image = self.local_image(&spec.name, &container.image).await?;
                    let env = envs.remove(&spec.name).unwrap_or_default();
                    let ports = self
                        .create_container(
                            target,
                            deployment,
                            &definition,
                            &spec,
                            &image,
                            env,
                            &mut taken,
                        )
                        .await?;
                    deployment.containers[index].host_ports = ports;
                    deployment.front =
                        front_of(&deployment.containers, self.front_container.as_deref());
                }
                Err(message) => {
                    return Err(StageError::failed(format!(
                        "the Docker engine at {} did not start container {name}: {message}",
                        self.engine.host().describe()
                    )))
                }
            }
        }
        Err(StageError::failed(
            "no free host port could be bound for the release",
        ))
    }

    /// Removes the containers and networks of this environment that `keep` does not name;
    /// one-off tasks' (`tugboat run` may run next to a deploy) only with `one_offs`.
    async fn remove_other_releases(
        &self,
        target: &DeployTarget,
        keep: Option<&str>,
        one_offs: bool,
    ) -> Result<Vec<u64>, StageError> {
        let containers = self.engine.containers(&Self::labels(target)).await?;
        let mut removed = BTreeSet::new();
        for container in &containers {
            let deployment = container.labels.get(LABEL_DEPLOYMENT).map(String::as_str);
            if deployment.is_some() && deployment == keep {
                continue;
            }
            if !one_offs && container.labels.contains_key(LABEL_ONE_OFF) {
                continue;
            }
            self.engine
                .remove_container(&container.id, self.stop_grace)
                .await?;
            if let Some(number) = container
                .labels
                .get(LABEL_REVISION)
                .and_then(|n| n.parse::<u64>().ok())
            {
                removed.insert(number);
            }
        }
        for network in self.engine.networks(&Self::labels(target)).await? {
            let deployment = network.labels.get(LABEL_DEPLOYMENT).map(String::as_str);
            if !one_offs && network.labels.contains_key(LABEL_ONE_OFF) {
                continue;
            }
            if deployment.is_none() || deployment != keep {
                self.engine.remove_network(&network.name).await?;
            }
        }
        Ok(removed.into_iter().collect())
    }

    async fn remove_deployment(&self, deployment: &LocalDeployment) -> Result<(), StageError> {
        for container in &deployment.containers {
            self.engine
                .remove_container(&container.docker_name, self.stop_grace)
                .await?;
        }
        self.engine.remove_network(&deployment.network).await
    }

    /// Starts revision `number` next to whatever serves now.
    async fn start_release(
        &self,
        target: &DeployTarget,
        number: u64,
        label: &str,
    ) -> Result<DeploymentHandle, StageError> {
        let definition = self.definition(number, label)?;
        let specs = container_specs(&definition)?;
        let mut envs = self.environments(&definition)?;
        let mut images = BTreeMap::new();
        for container in &definition.container_definitions {
            let image = self.local_image(&container.name, &container.image).await?;
            images.insert(container.name.clone(), image);
        }

        let mut state = self.state.load()?;
        // What an earlier run left half started; and the serving release's containers
        // when this is that very revision again (they are not running, or it would be
        // a restore in place).
        let serving = state
            .serving
            .as_ref()
            .filter(|s| s.revision != number)
            .map(|s| s.deployment.clone());
        self.remove_other_releases(target, serving.as_deref(), false)
            .await?;
        for deployment in &mut state.deployments {
            if deployment.state == DeploymentState::InProgress {
                deployment.state = DeploymentState::Replaced;
            }
        }

        let now = Utc::now();
        let mut deployment = LocalDeployment {
            id: format!(
                "{}-{number}-{}",
                target.service,
                now.format("%Y%m%d%H%M%S%3f")
            ),
            revision: number,
            state: DeploymentState::InProgress,
            reason: None,
            restores: None,
            network: Self::network_name(target, number),
            containers: Vec::new(),
            front: None,
            created_at: now,
        };
        let network_labels = BTreeMap::from([
            (LABEL_APP.to_string(), target.app.clone()),
            (LABEL_ENVIRONMENT.to_string(), target.environment.clone()),
            (LABEL_DEPLOYMENT.to_string(), deployment.id.clone()),
        ]);
        self.engine
            .create_network(&deployment.network, &network_labels)
            .await?;
        let created = self
            .create_and_start(
                target,
                &mut deployment,
                &definition,
                &specs,
                &mut envs,
                &images,
            )
            .await;
        if let Err(err) = created {
            let _ = self.remove_deployment(&deployment).await;
            return Err(err);
        }
        state.event(format!(
            "deployment {} started {label} ({} containers)",
            deployment.id,
            deployment.containers.len()
        ));
        let handle = DeploymentHandle {
            id: deployment.id.clone(),
            revision: revision(&target.service, &definition.family, number),
        };
        state.push_deployment(deployment);
        self.state.save(&state)?;
        Ok(handle)
    }

    async fn create_and_start(
        &self,
        target: &DeployTarget,
        deployment: &mut LocalDeployment,
        definition: &TaskDefinition,
        specs: &[ContainerSpec],
        envs: &mut BTreeMap<String, Vec<String>>,
        images: &BTreeMap<String, String>,
    ) -> Result<(), StageError> {
        let mut taken = BTreeSet::new();
        for spec in specs {
            let image = images.get(&spec.name).cloned().unwrap_or_default();
            let env = envs.remove(&spec.name).unwrap_or_default();
            let host_ports = self
                .create_container(
                    target, deployment, definition, spec, &image, env, &mut taken,
                )
                .await?;
            deployment.containers.push(DeployedContainer {
                spec: spec.clone(),
                docker_name: Self::docker_name(target, deployment.revision, &spec.name),
                host_ports,
            });
        }
        deployment.front = front_of(&deployment.containers, self.front_container.as_deref());
        for index in 0..deployment.containers.len() {
            if deployment.containers[index].spec.depends_on.is_empty() {
                self.start_container(target, deployment, index).await?;
            }
        }
        Ok(())
    }

    /// Looks at a deployment once: starts containers whose dependencies are met and
    /// says whether it is ready, still coming, or failed.
    pub(super) async fn look(
        &self,
        target: &DeployTarget,
        deployment: &mut LocalDeployment,
    ) -> Result<(Progress, (u32, u32, u32)), StageError> {
        let mut observed = BTreeMap::new();
        for container in &deployment.containers {
            let info = self
                .engine
                .inspect_container(&container.docker_name)
                .await?;
            observed.insert(
                container.spec.name.clone(),
                (Observed::from_info(info.as_ref()), info),
            );
        }
        let checks: BTreeMap<String, bool> = deployment
            .containers
            .iter()
            .map(|c| (c.spec.name.clone(), c.spec.has_health_check))
            .collect();
        let running = observed
            .values()
            .filter(|(o, _)| matches!(o, Observed::Running { .. }))
            .count();
        let pending = observed
            .values()
            .filter(|(o, _)| matches!(o, Observed::Created))
            .count();
        let counts = (
            u32::try_from(running).unwrap_or(u32::MAX),
            u32::try_from(pending).unwrap_or(u32::MAX),
            u32::try_from(deployment.containers.len()).unwrap_or(u32::MAX),
        );

        let mut waiting = Vec::new();
        for index in 0..deployment.containers.len() {
            let spec = deployment.containers[index].spec.clone();
            let docker_name = deployment.containers[index].docker_name.clone();
            let Some((state, info)) = observed.get(&spec.name).cloned() else {
                continue;
            };
            match &state {
                Observed::Missing => {
                    return Ok((
                        Progress::Failed(format!("container {docker_name} was removed")),
                        counts,
                    ))
                }
                Observed::Exited { code, oom } if spec.essential => {
                    let why = if *oom { " (out of memory)" } else { "" };
                    let error = info
                        .as_ref()
                        .map(|i| i.state.error.trim().to_string())
                        .filter(|e| !e.is_empty())
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default();
                    return Ok((
                        Progress::Failed(format!(
                            "essential container {} exited with code {code}{why}{error}",
                            spec.name
                        )),
                        counts,
                    ));
                }
                Observed::Running { health: Some(h) } if h == "unhealthy" && spec.essential => {
                    let last = info
                        .as_ref()
                        .and_then(|i| i.state.health.as_ref())
                        .and_then(|h| h.log.as_ref())
                        .and_then(|log| log.last())
                        .map(|log| {
                            let output: String = log.output.trim().chars().take(200).collect();
                            if output.is_empty() {
                                format!(" (the check exited {})", log.exit_code)
                            } else {
                                format!(" (the check exited {}: {output})", log.exit_code)
                            }
                        })
                        .unwrap_or_default();
                    return Ok((
                        Progress::Failed(format!(
                            "essential container {} is unhealthy{last}",
                            spec.name
                        )),
                        counts,
                    ));
                }
                Observed::Created => {
                    let mut verdict = Dependency::Met;
                    for (dep, condition) in &spec.depends_on {
                        let dep_state = observed
                            .get(dep)
                            .map(|(o, _)| o.clone())
                            .unwrap_or(Observed::Missing);
                        let has_check = checks.get(dep).copied().unwrap_or(false);
                        match dependency(*condition, &dep_state, has_check) {
                            Dependency::Met => {}
                            Dependency::Waiting => {
                                verdict = Dependency::Waiting;
                                waiting
                                    .push(format!("{} waits for {dep} ({condition:?})", spec.name));
                            }
                            Dependency::Impossible => {
                                verdict = Dependency::Impossible;
                                if spec.essential {
                                    return Ok((
                                        Progress::Failed(format!(
                                            "essential container {} can never start: its dependency {dep} will not reach {condition:?}",
                                            spec.name
                                        )),
                                        counts,
                                    ));
                                }
                                break;
                            }
                        }
                    }
                    if verdict == Dependency::Met {
                        // An engine that refuses to start a container (no such executable)
                        // fails the release; one that cannot be reached is an error.
                        match self.start_container(target, deployment, index).await {
                            Ok(()) => waiting.push(format!("{} is starting", spec.name)),
                            Err(err) if err.kind == StageErrorKind::Unavailable => return Err(err),
                            Err(err) => return Ok((Progress::Failed(err.message), counts)),
                        }
                    }
                }
                Observed::Running { health }
                    if spec.essential
                        && spec.has_health_check
                        && health.as_deref() != Some("healthy") =>
                {
                    waiting.push(format!(
                        "{} is {}",
                        spec.name,
                        health.as_deref().unwrap_or("without health status")
                    ));
                }
                _ => {}
            }
        }
        if !waiting.is_empty() {
            return Ok((Progress::Waiting(waiting.join(", ")), counts));
        }
        if let Some((container, port)) = &deployment.front {
            if let Err(why) = self.target_health(*port).await {
                return Ok((
                    Progress::Waiting(format!("{container} does not answer yet: {why}")),
                    counts,
                ));
            }
        }
        Ok((Progress::Ready, counts))
    }

    /// `GET <health path>` on a host port, like a load balancer's target health check.
    async fn target_health(&self, port: u16) -> Result<(), String> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let check = async {
            let stream = tokio::net::TcpStream::connect(address)
                .await
                .map_err(|err| format!("connecting to {address}: {err}"))?;
            let Some(path) = &self.health_path else {
                return Ok(());
            };
            let host = address.to_string();
            let request = Request {
                method: "GET",
                target: path,
                host: &host,
                headers: Vec::new(),
            };
            let mut response = http::send(stream, &request)
                .await
                .map_err(|err| format!("GET {path} on {address}: {err}"))?;
            let _ = response.body.read_to_end(64 * 1024).await;
            if (200..400).contains(&response.status) {
                Ok(())
            } else {
                Err(format!(
                    "GET {path} on {address} answered {}",
                    response.status
                ))
            }
        };
        tokio::time::timeout(TARGET_HEALTH_TIMEOUT, check)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no answer on {address} within {}s",
                    TARGET_HEALTH_TIMEOUT.as_secs()
                ))
            })
    }

    /// The proxy of this environment, started if it is not running.
    async fn ensure_proxy(&self) -> Result<ProxyClient, StageError> {
        let control = self.control();
        let client = ProxyClient::new(control.clone());
        let listen = self.listen().to_string();
        if let Some(info) = client.ping().await {
            if info.listen == listen {
                return Ok(client);
            }
            // The port changed in tugboat.toml: start over on the new one, once the old
            // proxy has let go of its files.
            client.stop().await;
            self.wait_for_proxy_exit().await;
        }
        let command = match &self.proxy {
            Some(command) => command.clone(),
            None => {
                return Err(StageError::failed(
                    "no command to start the local proxy with: the front end gives one (LocalDeployer::with_proxy_command)",
                ))
            }
        };
        let options = ProxyOptions {
            listen: self.listen(),
            control: control.clone(),
            state_file: self.proxy_file(),
        };
        std::fs::create_dir_all(self.state.root()).map_err(|err| {
            StageError::failed(format!(
                "cannot create {}: {err}",
                self.state.root().display()
            ))
        })?;
        let log_path = self.state.root().join("proxy.log");
        let log = std::fs::File::create(&log_path).map_err(|err| {
            StageError::failed(format!("cannot create {}: {err}", log_path.display()))
        })?;
        let log_err = log.try_clone().map_err(|err| {
            StageError::failed(format!("cannot open {}: {err}", log_path.display()))
        })?;
        let mut process = std::process::Command::new(&command.program);
        process
            .args(&command.args)
            .args(options.to_args())
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        // Its own process group: Ctrl-C in the terminal of this run does not reach it.
        std::os::unix::process::CommandExt::process_group(&mut process, 0);
        let mut child = process.spawn().map_err(|err| {
            StageError::failed(format!(
                "cannot start the local proxy ({}): {err}",
                command.program.display()
            ))
        })?;
        let started = Instant::now();
        loop {
            if client.ping().await.is_some() {
                return Ok(client);
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || started.elapsed() > PROXY_START_TIMEOUT {
                if exited.is_none() {
                    let _ = child.kill();
                }
                let _ = child.wait();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(StageError::failed(format!(
                    "the local proxy on {listen} did not start: {}",
                    if tail.is_empty() { "it printed nothing".to_string() } else { tail.join(" / ") }
                ))
                .with_help(format!(
                    "is port {} in use by another program? set local.port in tugboat.toml, or see {}",
                    self.port,
                    log_path.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Puts `deployment` behind the proxy and removes every other release.
    pub(super) async fn switch_to(
        &self,
        target: &DeployTarget,
        deployment: &LocalDeployment,
        events: &Events,
    ) -> Result<(), StageError> {
        let label = self.family_label(target, deployment.revision).label;
        let upstream = deployment
            .front
            .as_ref()
            .map(|(_, port)| format!("127.0.0.1:{port}"));
        let mut state = self.state.load()?;
        let previous = state.serving.as_ref().map(|s| s.revision);
        if let Some(upstream) = &upstream {
            let proxy = self.ensure_proxy().await?;
            let started = Instant::now();
            let (_, still_open) = proxy.switch(upstream, self.drain_timeout).await?;
            let millis = started.elapsed().as_millis();
            let switched = match previous {
                Some(n) if n != deployment.revision => format!(
                    "switched from {} in {millis} ms",
                    self.family_label(target, n).label
                ),
                Some(_) => format!("proxy checked in {millis} ms"),
                None => format!("proxy started, switched in {millis} ms"),
            };
            let cut = if still_open > 0 {
                format!(", {still_open} connections to the old release cut")
            } else {
                String::new()
            };
            events.info(format!(
                "{label} is serving on {} ({switched}{cut})",
                self.url()
            ));
        } else {
            events.info(format!(
                "{label} is running (no container maps a port, so nothing is served on {})",
                self.url()
            ));
        }
        // A restore in place leaves the containers with the deployment that started them.
        let owner = deployment
            .restores
            .clone()
            .unwrap_or_else(|| deployment.id.clone());
        let since = match &state.serving {
            Some(serving) if serving.deployment == owner => serving.since,
            _ => Utc::now(),
        };
        state.serving = Some(Serving {
            revision: deployment.revision,
            deployment: owner.clone(),
            upstream,
            since,
        });
        for stored in &mut state.deployments {
            if stored.id == deployment.id || stored.id == owner {
                stored.state = DeploymentState::Completed;
            } else if stored.state == DeploymentState::Completed {
                stored.state = DeploymentState::Replaced;
            }
        }
        state.event(format!("{label} serves on {}", self.url()));
        self.state.save(&state)?;
        // The switch is done: a container that will not go is a warning, not a failed release.
        let removed = match self
            .remove_other_releases(target, Some(&owner), false)
            .await
        {
            Ok(removed) => removed,
            Err(err) => {
                events.warn(format!(
                    "{label} serves, but the previous release was not cleaned up: {}; `tugboat stop` and a new deploy remove what is left",
                    err.message
                ));
                Vec::new()
            }
        };
        if !removed.is_empty() {
            let labels: Vec<String> = removed
                .iter()
                .map(|n| self.family_label(target, *n).label)
                .collect();
            events.info(format!(
                "stopped and removed the containers of {}",
                labels.join(", ")
            ));
        }
        Ok(())
    }

    pub(super) async fn fail(
        &self,
        target: &DeployTarget,
        deployment: &LocalDeployment,
        reason: String,
        events: &Events,
    ) -> Result<(), StageError> {
        let label = self.family_label(target, deployment.revision).label;
        if deployment.restores.is_none() {
            let diagnosis = self.diagnosis_of(deployment, &label, Some(&reason)).await;
            if let Ok(mut diagnoses) = self.diagnoses.lock() {
                diagnoses.insert(deployment.id.clone(), diagnosis);
            }
            if let Err(err) = self.remove_deployment(deployment).await {
                events.warn(format!(
                    "the containers of the failed {label} were not all removed: {}",
                    err.message
                ));
            }
        }
        let mut state = self.state.load()?;
        if let Some(stored) = state.deployment_mut(&deployment.id) {
            stored.state = DeploymentState::Failed;
            stored.reason = Some(reason.clone());
        }
        state.event(format!("{label} failed: {reason}"));
        let serving = state
            .serving
            .as_ref()
            .map(|s| self.family_label(target, s.revision).label);
        self.state.save(&state)?;
        if deployment.restores.is_none() {
            events.warn(format!(
                "{label} failed and its containers were removed; {}",
                match serving {
                    Some(serving) => format!("{serving} keeps serving on {}", self.url()),
                    None => "nothing serves yet".to_string(),
                }
            ));
        }
        Ok(())
    }

    /// Stops the environment: removes every container and network of it and stops its
    /// proxy. Revisions and records stay; the next deploy starts from nothing serving.
    pub async fn stop(&self, target: &DeployTarget) -> Result<StopSummary, StageError> {
        let client = ProxyClient::new(self.control());
        let proxy_stopped = client.stop().await;
        if proxy_stopped {
            self.wait_for_proxy_exit().await;
        }
        let _ = std::fs::remove_file(self.control());
        let _ = std::fs::remove_file(self.proxy_file());
        let containers = self.engine.containers(&Self::labels(target)).await?;
        let count = containers.len();
        self.remove_other_releases(target, None, true).await?;
        let mut state = self.state.load()?;
        if state.serving.take().is_some() || count > 0 {
            for deployment in &mut state.deployments {
                if matches!(
                    deployment.state,
                    DeploymentState::InProgress | DeploymentState::Completed
                ) {
                    deployment.state = DeploymentState::Stopped;
                }
            }
            state.event("stopped: containers removed, proxy stopped");
            self.state.save(&state)?;
        }
        Ok(StopSummary {
            containers_removed: count,
            proxy_stopped,
        })
    }

    /// Checks the serving release when `to` is it and it runs; else starts `to`.
    async fn restore_or_start(
        &self,
        target: &DeployTarget,
        to: &Revision,
    ) -> Result<DeploymentHandle, StageError> {
        let number = Self::number_of(to)?;
        let mut state = self.state.load()?;
        let serving = state
            .serving
            .clone()
            .filter(|s| s.revision == number)
            .and_then(|s| state.deployment(&s.deployment).cloned());
        if let Some(serving) = serving {
            // Still serving (the new release failed before the switch): check it and
            // make sure the proxy points at it, without starting anything.
            let mut running = true;
            for container in serving.containers.iter().filter(|c| c.spec.essential) {
                let info = self
                    .engine
                    .inspect_container(&container.docker_name)
                    .await?;
                running &= matches!(Observed::from_info(info.as_ref()), Observed::Running { .. });
            }
            if running {
                let now = Utc::now();
                let restore = LocalDeployment {
                    id: format!(
                        "{}-{number}-{}-restore",
                        target.service,
                        now.format("%Y%m%d%H%M%S%3f")
                    ),
                    revision: number,
                    state: DeploymentState::InProgress,
                    reason: None,
                    restores: Some(serving.id.clone()),
                    network: serving.network.clone(),
                    containers: serving.containers.clone(),
                    front: serving.front.clone(),
                    created_at: now,
                };
                let handle = DeploymentHandle {
                    id: restore.id.clone(),
                    revision: self.family_label(target, number),
                };
                state.push_deployment(restore);
                self.state.save(&state)?;
                return Ok(handle);
            }
        }
        self.start_release(target, number, &to.label).await
    }

    /// Gives a stopped proxy a moment to close its port and remove its files.
    async fn wait_for_proxy_exit(&self) {
        for _ in 0..60 {
            if !self.control().exists() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The pid and upstream of the running proxy, if one answers.
    async fn proxy_line(&self) -> String {
        match ProxyClient::new(self.control()).ping().await {
            Some(info) => format!(
                "proxy on {} (pid {}) forwards to {}",
                self.url(),
                info.pid,
                info.upstream.as_deref().unwrap_or("nothing yet")
            ),
            None => {
                let stale = std::fs::read(self.proxy_file())
                    .ok()
                    .and_then(|b| serde_json::from_slice::<ProxyRecord>(&b).ok());
                match stale {
                    Some(record) => format!(
                        "proxy on {} is not answering (pid {} recorded); the next deploy or rollback starts it again",
                        self.url(),
                        record.pid
                    ),
                    None => format!("no proxy runs on {}", self.url()),
                }
            }
        }
    }
}

/// The container and host port the proxy forwards to.
fn front_of(containers: &[DeployedContainer], preferred: Option<&str>) -> Option<(String, u16)> {
    let with_port = |c: &&DeployedContainer| !c.host_ports.is_empty();
    let chosen = preferred
        .and_then(|name| {
            containers
                .iter()
                .filter(with_port)
                .find(|c| c.spec.name == name)
        })
        .or_else(|| containers.iter().find(with_port))?;
    Some((chosen.spec.name.clone(), chosen.host_ports[0]))
}

#[async_trait]
impl Deployer for LocalDeployer {
    async fn current_revision(
        &self,
        target: &DeployTarget,
    ) -> Result<Option<Revision>, StageError> {
        let state = self.state.load()?;
        Ok(state
            .serving
            .map(|serving| self.family_label(target, serving.revision)))
    }

    async fn register(
        &self,
        target: &DeployTarget,
        rendered: &RenderedTaskDefinition,
    ) -> Result<Revision, StageError> {
        container_specs(&rendered.definition)?;
        let mut state = self.state.load()?;
        let number = self
            .state
            .register(&mut state, &rendered.definition, &rendered.tags)?;
        self.state.save(&state)?;
        Ok(revision(
            &target.service,
            &rendered.definition.family,
            number,
        ))
    }

    async fn update_service(
        &self,
        target: &DeployTarget,
        request: &UpdateRequest,
    ) -> Result<DeploymentHandle, StageError> {
        // The orchestrator registers a new revision for every release; the serving one
        // again is only checked, like a rollback to it.
        self.restore_or_start(target, &request.revision).await
    }

    fn watch_rollout(
        &self,
        target: &DeployTarget,
        handle: &DeploymentHandle,
    ) -> Box<dyn RolloutWatch> {
        Box::new(LocalRolloutWatch::new(
            self.clone(),
            target.clone(),
            handle.clone(),
        ))
    }

    async fn roll_back(
        &self,
        target: &DeployTarget,
        request: &RestoreRequest,
    ) -> Result<DeploymentHandle, StageError> {
        self.restore_or_start(target, &request.to).await
    }

    async fn revision_active(&self, revision: &Revision) -> Result<bool, StageError> {
        let Ok(number) = Self::number_of(revision) else {
            return Ok(false);
        };
        Ok(self.state.definition(number)?.is_some())
    }

    async fn prune_revisions(
        &self,
        target: &DeployTarget,
        family: &str,
        keep: usize,
        needed: &[Revision],
    ) -> Result<Vec<Revision>, StageError> {
        let state = self.state.load()?;
        let mut protected: BTreeSet<u64> = state
            .deployments
            .iter()
            .filter(|d| d.state == DeploymentState::InProgress)
            .map(|d| d.revision)
            .collect();
        protected.extend(state.serving.as_ref().map(|s| s.revision));
        protected.extend(needed.iter().filter_map(|r| Self::number_of(r).ok()));
        for container in self.engine.containers(&Self::labels(target)).await? {
            if let Some(number) = container
                .labels
                .get(LABEL_REVISION)
                .and_then(|n| n.parse().ok())
            {
                protected.insert(number);
            }
        }
        let mut of_family = Vec::new();
        for number in self.state.numbers()? {
            if let Some(definition) = self.state.definition(number)? {
                if definition.family == family {
                    of_family.push(number);
                }
            }
        }
        of_family.sort_unstable_by(|a, b| b.cmp(a));
        let mut removed = Vec::new();
        for number in of_family.into_iter().skip(keep) {
            if protected.contains(&number) {
                continue;
            }
            self.state.remove_revision(number)?;
            removed.push(revision(&target.service, family, number));
        }
        Ok(removed)
    }
}

#[async_trait]
impl ServiceReader for LocalDeployer {
    async fn status(&self, target: &DeployTarget) -> Result<ServiceStatus, StageError> {
        let state = self.state.load()?;
        let containers = self.engine.containers(&Self::labels(target)).await?;
        let now = Utc::now();
        let mut lines: Vec<ServiceEventLine> = Vec::new();
        let mut deployments = Vec::new();
        let (mut running, mut pending, mut desired) = (0, 0, 0);
        for deployment in state.deployments.iter().rev() {
            let mine: Vec<_> = containers
                .iter()
                .filter(|c| c.labels.get(LABEL_DEPLOYMENT) == Some(&deployment.id))
                .collect();
            let primary = state
                .serving
                .as_ref()
                .is_some_and(|s| s.deployment == deployment.id);
            if mine.is_empty() && !primary && deployment.state != DeploymentState::InProgress {
                continue;
            }
            let count = |state: &str| {
                u32::try_from(mine.iter().filter(|c| c.state == state).count()).unwrap_or(0)
            };
            let failed = u32::try_from(
                mine.iter()
                    .filter(|c| c.state == "exited" || c.state == "dead")
                    .count(),
            )
            .unwrap_or(0);
            let status = DeploymentStatus {
                id: deployment.id.clone(),
                status: if primary { "PRIMARY" } else { "ACTIVE" }.to_string(),
                rollout_state: Some(
                    match deployment.state {
                        DeploymentState::InProgress => "IN_PROGRESS",
                        DeploymentState::Completed => "COMPLETED",
                        DeploymentState::Failed => "FAILED",
                        DeploymentState::Replaced => "REPLACED",
                        DeploymentState::Stopped => "STOPPED",
                    }
                    .to_string(),
                ),
                rollout_state_reason: deployment.reason.clone(),
                revision: self.family_label(target, deployment.revision),
                running: count("running"),
                pending: count("created"),
                desired: u32::try_from(deployment.containers.len()).unwrap_or(0),
                failed_tasks: failed,
            };
            if primary {
                running = status.running;
                pending = status.pending;
                desired = status.desired;
            }
            deployments.push(status);
        }
        for container in &containers {
            let ports: Vec<String> = container
                .ports
                .iter()
                .filter_map(|p| {
                    p.public_port.map(|public| {
                        format!(
                            "{}:{public}->{}/{}",
                            p.ip.as_deref().unwrap_or("127.0.0.1"),
                            p.private_port,
                            p.kind
                        )
                    })
                })
                .collect();
            lines.push(ServiceEventLine {
                id: format!("container-{}", container.id),
                at: now,
                message: format!(
                    "container {}: {}{}",
                    container.name(),
                    container.status,
                    if ports.is_empty() {
                        String::new()
                    } else {
                        format!(", {}", ports.join(", "))
                    }
                ),
            });
        }
        lines.push(ServiceEventLine {
            id: "proxy".into(),
            at: now,
            message: self.proxy_line().await,
        });
        let since = (now - chrono::Duration::hours(24)).timestamp();
        for (index, event) in self
            .engine
            .events(since, now.timestamp(), &Self::labels(target))
            .await?
            .into_iter()
            .enumerate()
        {
            let name = event
                .actor
                .attributes
                .get("name")
                .cloned()
                .unwrap_or_default();
            let exit = event
                .actor
                .attributes
                .get("exitCode")
                .map(|code| format!(" (exit code {code})"))
                .unwrap_or_default();
            if event.action.starts_with("exec_") {
                continue;
            }
            lines.push(ServiceEventLine {
                id: format!("engine-{index}-{}", event.time_nano),
                at: Utc.timestamp_nanos(event.time_nano),
                message: format!("{} {name}{exit}", event.action),
            });
        }
        for (index, event) in state.events.iter().enumerate() {
            lines.push(ServiceEventLine {
                id: format!("tugboat-{index}"),
                at: event.at,
                message: event.message.clone(),
            });
        }
        lines.sort_by_key(|line| std::cmp::Reverse(line.at));
        Ok(ServiceStatus {
            target: target.clone(),
            revision: state
                .serving
                .as_ref()
                .map(|s| self.family_label(target, s.revision)),
            running,
            pending,
            desired,
            deployments,
            events: lines,
            // Nothing scales a local release: the config's count is the count.
            autoscaled: Some(false),
        })
    }

    async fn registered_definition(
        &self,
        revision: &Revision,
    ) -> Result<TaskDefinition, StageError> {
        let number = Self::number_of(revision)?;
        self.definition(number, &revision.label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependency_conditions_follow_ecs() {
        let running = Observed::Running { health: None };
        let healthy = Observed::Running {
            health: Some("healthy".into()),
        };
        let unhealthy = Observed::Running {
            health: Some("unhealthy".into()),
        };
        let ok = Observed::Exited {
            code: 0,
            oom: false,
        };
        let failed = Observed::Exited {
            code: 2,
            oom: false,
        };
        assert_eq!(
            dependency(Condition::Start, &running, false),
            Dependency::Met
        );
        assert_eq!(
            dependency(Condition::Start, &Observed::Created, false),
            Dependency::Waiting
        );
        assert_eq!(
            dependency(Condition::Complete, &running, false),
            Dependency::Waiting
        );
        assert_eq!(
            dependency(Condition::Complete, &failed, false),
            Dependency::Met
        );
        assert_eq!(dependency(Condition::Success, &ok, false), Dependency::Met);
        assert_eq!(
            dependency(Condition::Success, &failed, false),
            Dependency::Impossible
        );
        assert_eq!(
            dependency(Condition::Healthy, &healthy, true),
            Dependency::Met
        );
        assert_eq!(
            dependency(Condition::Healthy, &running, true),
            Dependency::Waiting
        );
        assert_eq!(
            dependency(Condition::Healthy, &unhealthy, true),
            Dependency::Impossible
        );
        assert_eq!(
            dependency(Condition::Healthy, &running, false),
            Dependency::Impossible
        );
        assert_eq!(
            dependency(Condition::Start, &Observed::Missing, false),
            Dependency::Impossible
        );
    }

    #[test]
    fn the_front_is_the_preferred_container_with_a_port() {
        let container = |name: &str, ports: Vec<u16>| DeployedContainer {
            spec: ContainerSpec {
                name: name.into(),
                essential: true,
                depends_on: Vec::new(),
                has_health_check: false,
                ports: ports.iter().map(|p| (*p, "tcp".to_string())).collect(),
            },
            docker_name: format!("tugboat-a-e-1-{name}"),
            host_ports: ports,
        };
        let containers = vec![
            container("sidecar", vec![]),
            container("envoy", vec![18000]),
            container("app", vec![18001]),
        ];
        assert_eq!(
            front_of(&containers, Some("app")),
            Some(("app".into(), 18001))
        );
        assert_eq!(front_of(&containers, None), Some(("envoy".into(), 18000)));
        assert_eq!(
            front_of(&containers, Some("sidecar")),
            Some(("envoy".into(), 18000))
        );
        assert_eq!(front_of(&containers[..1], None), None);
    }
}
