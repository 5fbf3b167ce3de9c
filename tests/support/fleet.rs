//! A fleet on moto: the app `shop`, one image, and services in two regions (cluster
//! `shop-us-east-1` and `shop-eu-west-1`), each with its own task definition file and a
//! running service on revision 1; a service named as crashing gets a sidecar whose image
//! crash-loops in the release (the emulator judges a task definition by its images).
//!
//! ```ignore
//! let fleet = Fleet::setup(AwsFixture::start().await?, &FleetSpec::new(20, 5)).await?;
//! let run = fleet.deploy("v2", 8).await;
//! ```

use crate::aws::{counted, AwsFixture, REGION};
use anyhow::{ensure, Context};
use aws_adapters::{AwsClients, HostStages, ServicePoller};
use aws_config::Region;
use aws_sdk_ecs::types::{
    ContainerDefinition, DeploymentCircuitBreaker, DeploymentConfiguration, LaunchType,
};
use pipeline_core::{
    CancellationToken, EventSubscriber, Events, FleetReport, FleetRequest, GitInfo, ImageReference,
    Orchestrator, PipelineEvent, Project, ReleaseSource,
};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wiring::FleetStages;

/// The second region of the fleet.
pub const SECOND_REGION: &str = "eu-west-1";
pub const REPOSITORY: &str = "shop";
pub const BUCKET: &str = "shop-releases";
pub const ENVIRONMENT: &str = "production";
/// The image every service runs before a test releases.
pub const INITIAL_TAG: &str = "v1";

/// What to seed.
#[derive(Clone, Debug)]
pub struct FleetSpec {
    /// Services in us-east-1 (`s00`, `s01`, …).
    pub primary: usize,
    /// Services in eu-west-1 (`e00`, …).
    pub second: usize,
    /// Services whose release crash-loops.
    pub crashing: Vec<String>,
    /// `rollback_all` or `rollback_failed`.
    pub on_failure: &'static str,
    pub poll_seconds: f64,
}

impl FleetSpec {
    pub fn new(primary: usize, second: usize) -> Self {
        Self {
            primary,
            second,
            crashing: Vec::new(),
            on_failure: "rollback_all",
            poll_seconds: 0.2,
        }
    }
}

/// One service of the fleet: its `[services]` name and region.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seeded {
    pub name: String,
    pub region: String,
    /// The task definition ARN it runs before any release.
    pub initial_revision: String,
}

/// Every event of a fleet run, with the service it was about.
#[derive(Debug, Default)]
pub struct FleetEvents {
    pub events: Mutex<Vec<(Option<String>, PipelineEvent)>>,
    /// When each event came, in the same order.
    pub times: Mutex<Vec<Instant>>,
}

impl EventSubscriber for FleetEvents {
    fn on_event(&self, event: &PipelineEvent) {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((None, event.clone()));
        self.times
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Instant::now());
    }

    fn on_service_event(&self, service: &str, event: &PipelineEvent) {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((Some(service.to_string()), event.clone()));
        self.times
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Instant::now());
    }
}

/// What a fleet run returned.
#[derive(Debug)]
pub struct FleetRun {
    pub report: FleetReport,
    pub events: Vec<(Option<String>, PipelineEvent)>,
    /// When each event came, since the run started.
    pub times: Vec<Duration>,
    pub wall: Duration,
    /// When the run started (the emulator's logs are in epoch seconds).
    pub started_at: std::time::SystemTime,
}

/// The fleet on moto.
#[derive(Debug)]
pub struct Fleet {
    pub aws: AwsFixture,
    /// Clients of the second region (same moto, same call counter).
    pub second: AwsClients,
    pub dir: PathBuf,
    pub project: Project,
    pub services: Vec<Seeded>,
    pub spec: FleetSpec,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn cluster(region: &str) -> String {
    format!("shop-{region}")
}

pub fn service_name(service: &str) -> String {
    format!("shop-{service}")
}

fn task_definition_json(service: &str, crashing: bool) -> String {
    let mut containers = vec![serde_json::json!({
        "name": "app",
        "image": "shop:placeholder",
        "essential": true,
        "portMappings": [{"containerPort": 8000}],
    })];
    if crashing {
        containers.push(serde_json::json!({
            "name": "sidecar",
            "image": "public.ecr.aws/example/sidecar:crashloop",
            "essential": true,
        }));
    }
    serde_json::json!({
        "family": format!("shop-{service}"),
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "256",
        "memory": "512",
        "containerDefinitions": containers,
    })
    .to_string()
}

fn config_text(spec: &FleetSpec, primary: &[String], second: &[String]) -> String {
    let quoted = |names: &[String]| {
        names
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut text = format!(
        r#"[app]
name = "shop"

[image]
repository = "{REPOSITORY}"

[task_definition]
file = "task-definitions/{first}.json"
containers = ["app"]
"#,
        first = primary
            .first()
            .or(second.first())
            .map_or("none", |s| s.as_str())
    );
    for name in primary.iter().chain(second) {
        text.push_str(&format!(
            "\n[services.{name}]\ntask_definition = \"task-definitions/{name}.json\"\n"
        ));
    }
    let mut regions = Vec::new();
    if !primary.is_empty() {
        regions.push(format!(
            "{{ name = \"{REGION}\", services = [{}] }}",
            quoted(primary)
        ));
    }
    if !second.is_empty() {
        regions.push(format!(
            "{{ name = \"{SECOND_REGION}\", services = [{}] }}",
            quoted(second)
        ));
    }
    text.push_str(&format!(
        r#"
[environments.{ENVIRONMENT}]
cluster = "shop-{{region}}"
service = "{{app}}-{{service}}"
on_failure = "{on_failure}"
regions = [{regions}]
desired_count = 2

[environments.{ENVIRONMENT}.deploy]
poll_interval_seconds = {poll}

[environments.{ENVIRONMENT}.verify]
target_health = false

[environments.{ENVIRONMENT}.records]
bucket = "{BUCKET}"
lock_lease_seconds = 30
"#,
        on_failure = spec.on_failure,
        regions = regions.join(", "),
        poll = spec.poll_seconds,
    ));
    text
}

impl Fleet {
    /// Seeds both regions (clusters, the repository with [`INITIAL_TAG`], each
    /// service on revision 1 with 2 tasks) and writes the fleet's tugboat.toml and task
    /// definition files.
    pub async fn setup(aws: AwsFixture, spec: &FleetSpec) -> anyhow::Result<Self> {
        let second_config = aws
            .sdk_config
            .to_builder()
            .region(Region::new(SECOND_REGION))
            .build();
        let second = counted(AwsClients::from_sdk_config(&second_config), &aws.calls);
        let primary: Vec<String> = (0..spec.primary).map(|i| format!("s{i:02}")).collect();
        let secondary: Vec<String> = (0..spec.second).map(|i| format!("e{i:02}")).collect();

        let dir = std::env::temp_dir().join(format!(
            "tugboat-fleet-{}-{}",
            std::process::id(),
            aws.moto.endpoint.rsplit(':').next().unwrap_or("0")
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("task-definitions"))?;
        for name in primary.iter().chain(&secondary) {
            let crashing = spec.crashing.contains(name);
            std::fs::write(
                dir.join(format!("task-definitions/{name}.json")),
                task_definition_json(name, crashing),
            )?;
        }
        let config_file = dir.join("tugboat.toml");
        std::fs::write(&config_file, config_text(spec, &primary, &secondary))?;
        let mut project = Project::load_with(&config_file, &|_| None)
            .map_err(|err| anyhow::anyhow!("loading the fleet config: {err}"))?;
        if let Some(env) = project.config.environments.get_mut(ENVIRONMENT) {
            env.deploy.timeout_seconds = 60;
        }

        aws.clients
            .s3
            .create_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .context("CreateBucket")?;
        let mut services = Vec::new();
        for (clients, region, names) in [
            (&aws.clients, REGION, &primary),
            (&second, SECOND_REGION, &secondary),
        ] {
            if names.is_empty() {
                continue;
            }
            clients
                .ecs
                .create_cluster()
                .cluster_name(cluster(region))
                .send()
                .await
                .context("CreateCluster")?;
            let image = put_image(clients, INITIAL_TAG).await?;
            for name in names {
                let registered = clients
                    .ecs
                    .register_task_definition()
                    .family(format!("shop-{name}"))
                    .network_mode(aws_sdk_ecs::types::NetworkMode::Awsvpc)
                    .requires_compatibilities(aws_sdk_ecs::types::Compatibility::Fargate)
                    .cpu("256")
                    .memory("512")
                    .container_definitions(
                        ContainerDefinition::builder()
                            .name("app")
                            .image(&image)
                            .essential(true)
                            .build(),
                    )
                    .send()
                    .await
                    .context("RegisterTaskDefinition")?;
                let revision = registered
                    .task_definition()
                    .and_then(|t| t.task_definition_arn())
                    .context("no ARN")?
                    .to_string();
                clients
                    .ecs
                    .create_service()
                    .cluster(cluster(region))
                    .service_name(service_name(name))
                    .task_definition(&revision)
                    .desired_count(2)
                    .launch_type(LaunchType::Fargate)
                    .deployment_configuration(
                        DeploymentConfiguration::builder()
                            .deployment_circuit_breaker(
                                DeploymentCircuitBreaker::builder()
                                    .enable(true)
                                    .rollback(true)
                                    .build(),
                            )
                            .maximum_percent(200)
                            .minimum_healthy_percent(100)
                            .build(),
                    )
                    .send()
                    .await
                    .context("CreateService")?;
                services.push(Seeded {
                    name: name.clone(),
                    region: region.to_string(),
                    initial_revision: revision,
                });
            }
        }
        Ok(Self {
            aws,
            second,
            dir,
            project,
            services,
            spec: spec.clone(),
        })
    }

    pub fn clients(&self, region: &str) -> &AwsClients {
        if region == SECOND_REGION {
            &self.second
        } else {
            &self.aws.clients
        }
    }

    /// Puts `tag` in the repository of both regions (the same digest, as ECR
    /// replication would).
    pub async fn put_image_everywhere(&self, tag: &str) -> anyhow::Result<String> {
        let first = put_image(&self.aws.clients, tag).await?;
        let second = put_image(&self.second, tag).await?;
        let digest = |r: &str| r.rsplit('@').next().unwrap_or_default().to_string();
        ensure!(digest(&first) == digest(&second), "{first} vs {second}");
        Ok(digest(&first))
    }

    /// The task definition ARN a service runs now.
    pub async fn running_revision(&self, service: &Seeded) -> anyhow::Result<String> {
        let output = self
            .clients(&service.region)
            .ecs
            .describe_services()
            .cluster(cluster(&service.region))
            .services(service_name(&service.name))
            .send()
            .await
            .context("DescribeServices")?;
        output
            .services()
            .first()
            .and_then(|s| s.task_definition())
            .map(str::to_string)
            .context("no service")
    }

    /// Releases the pushed image `tag` to every service (or `only`), `parallel` at once,
    /// through the one wiring (`aws_adapters::environment_stages`), one poller per region.
    pub async fn deploy(&self, tag: &str, parallel: usize, only: &[String]) -> FleetRun {
        let interval = Duration::from_secs_f64(self.spec.poll_seconds);
        let wiring = FleetStages {
            primary: (
                self.aws.clients.clone(),
                ServicePoller::new(self.aws.clients.ecs.clone(), interval),
            ),
            second: (
                self.second.clone(),
                ServicePoller::new(self.second.ecs.clone(), interval),
            ),
        };
        let recorder = Arc::new(FleetEvents::default());
        let events = Events::new().with(recorder.clone());
        let started = Instant::now();
        let started_at = std::time::SystemTime::now();
        let report = Orchestrator::deploy_fleet(
            &self.project,
            &wiring,
            &events,
            FleetRequest {
                environment: ENVIRONMENT.to_string(),
                services: only.to_vec(),
                source: ReleaseSource::Image(ImageReference::Tag(tag.to_string())),
                git: GitInfo {
                    sha: std::iter::repeat_n('b', 40).collect(),
                    git_ref: format!("refs/tags/{tag}"),
                    committed_at: None,
                },
                actor: "tugboat-tests".into(),
                parallel,
                scan_override: None,
                cancel: CancellationToken::new(),
            },
        )
        .await;
        let wall = started.elapsed();
        let events =
            std::mem::take(&mut *recorder.events.lock().unwrap_or_else(|p| p.into_inner()));
        let times = std::mem::take(&mut *recorder.times.lock().unwrap_or_else(|p| p.into_inner()))
            .into_iter()
            .map(|t| t.saturating_duration_since(started))
            .collect();
        FleetRun {
            report,
            events,
            times,
            wall,
            started_at,
        }
    }
}

mod wiring {
    use super::*;
    use pipeline_core::config::FleetUnit;
    use pipeline_core::{FleetWiring, StageError, Stages};

    /// The tests' front end: the one wiring, each region's clients and poller.
    pub struct FleetStages {
        pub primary: (AwsClients, ServicePoller),
        pub second: (AwsClients, ServicePoller),
    }

    #[async_trait::async_trait]
    impl FleetWiring for FleetStages {
        async fn stages(&self, unit: &FleetUnit, _build: bool) -> Result<Stages, StageError> {
            let env = unit
                .project
                .environment(&unit.environment)
                .map_err(|err| StageError::bad_input(err.to_string()))?;
            let (clients, poller) = if unit.region.as_deref() == Some(SECOND_REGION) {
                &self.second
            } else {
                &self.primary
            };
            aws_adapters::environment_stages(
                &unit.environment,
                env,
                clients,
                HostStages {
                    ecs_poller: Some(poller.clone()),
                    ..HostStages::default()
                },
            )
        }
    }
}

/// Puts `repository:tag` with a manifest unique to the tag (the same in every region:
/// ECR's digest is the manifest's sha256), creating the repository; returns
/// `uri@digest`.
async fn put_image(clients: &AwsClients, tag: &str) -> anyhow::Result<String> {
    let ecr = &clients.ecr;
    let created = ecr
        .create_repository()
        .repository_name(REPOSITORY)
        .send()
        .await;
    if let Err(err) = created {
        let code = aws_sdk_ecr::error::ProvideErrorMetadata::code(&err);
        ensure!(
            code == Some("RepositoryAlreadyExistsException"),
            "CreateRepository: {err:?}"
        );
    }
    let layer = hex::encode(Sha256::digest(format!("layer of shop:{tag}")));
    let config = hex::encode(Sha256::digest(format!("config of shop:{tag}")));
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1469, "digest": format!("sha256:{config}")},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 2811478, "digest": format!("sha256:{layer}")}],
    })
    .to_string();
    let digest = format!(
        "sha256:{}",
        hex::encode(Sha256::digest(manifest.as_bytes()))
    );
    ecr.put_image()
        .repository_name(REPOSITORY)
        .image_manifest(&manifest)
        .image_tag(tag)
        .image_digest(&digest)
        .send()
        .await
        .with_context(|| format!("PutImage shop:{tag}"))?;
    let uri = ecr
        .describe_repositories()
        .repository_names(REPOSITORY)
        .send()
        .await
        .context("DescribeRepositories")?
        .repositories()
        .first()
        .and_then(|r| r.repository_uri())
        .context("no repository URI")?
        .to_string();
    Ok(format!("{uri}@{digest}"))
}

/// The services of a fleet by state, as the record says.
pub fn states(report: &FleetReport) -> BTreeMap<String, pipeline_core::ServiceState> {
    report
        .record
        .as_ref()
        .map(|r| {
            r.services
                .iter()
                .map(|s| (s.service.clone(), s.state))
                .collect()
        })
        .unwrap_or_default()
}

/// `DescribeServices` while every service of a run rolls out: from the last
/// `UpdateService` to the first deployment COMPLETED after it (the emulator's logs).
#[derive(Clone, Debug)]
pub struct Polling {
    pub window: Duration,
    /// `DescribeServices` calls inside the window.
    pub calls: usize,
    /// `DescribeServices` calls of the whole run.
    pub total_calls: usize,
    /// The most services one call named.
    pub largest_call: usize,
    /// The last `UpdateService` and the last rollout's completion (epoch seconds).
    pub last_update: f64,
    pub last_completed: f64,
}

impl Polling {
    /// The rounds that can start inside the window: one, then one per poll interval
    /// (a window of 2.7 s at 1 s holds at most 3).
    pub fn rounds(&self, interval: Duration) -> usize {
        (self.window.as_secs_f64() / interval.as_secs_f64()).floor() as usize + 1
    }

    /// Calls per poll interval inside the window: the calls over the rounds it can hold.
    pub fn per_interval(&self, interval: Duration) -> f64 {
        self.calls as f64 / self.rounds(interval) as f64
    }
}

impl Fleet {
    /// How the run polled (call after [`Fleet::deploy`]).
    pub async fn polling(&self) -> anyhow::Result<Polling> {
        let log = self.aws.moto.describe_services_calls().await?;
        let at = |c: &serde_json::Value| c["at"].as_f64().unwrap_or_default();
        let op = |c: &serde_json::Value, name: &str| c["op"].as_str() == Some(name);
        let last_update = log
            .iter()
            .filter(|c| op(c, "UpdateService"))
            .map(at)
            .fold(0.0, f64::max);
        let completions: Vec<f64> = self
            .aws
            .moto
            .transitions()
            .await?
            .iter()
            .filter(|t| t["state"].as_str() == Some("COMPLETED"))
            .map(at)
            .collect();
        let first_completed = completions
            .iter()
            .copied()
            .filter(|t| *t > last_update)
            .fold(f64::INFINITY, f64::min);
        let last_completed = completions.iter().copied().fold(0.0, f64::max);
        ensure!(
            first_completed.is_finite(),
            "no rollout completed after the last UpdateService"
        );
        let describes: Vec<&serde_json::Value> =
            log.iter().filter(|c| op(c, "DescribeServices")).collect();
        Ok(Polling {
            window: Duration::from_secs_f64((first_completed - last_update).max(0.0)),
            calls: describes
                .iter()
                .filter(|c| at(c) > last_update && at(c) < first_completed)
                .count(),
            total_calls: describes.len(),
            largest_call: describes
                .iter()
                .filter_map(|c| c["services"].as_u64())
                .max()
                .unwrap_or(0) as usize,
            last_update,
            last_completed,
        })
    }
}
