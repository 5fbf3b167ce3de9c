//! The CV Matcher example deployed on moto: its `tugboat.toml` and task definition
//! from `examples/cv-matcher`, its production environment's cluster, service,
//! Parameter Store secrets, records bucket and ECR repository.
//!
//! ```ignore
//! let cv = CvMatcher::setup(AwsFixture::start().await?).await?;
//! cv.put_image(cv::REPOSITORY, "v1.1.0").await?;
//! let run = cv.deploy(&cv.project, "v1.1.0", SHA_B).await;
//! ```

use crate::aws::{AwsFixture, ACCOUNT, REGION};
use anyhow::{bail, ensure, Context};
use aws_adapters::{EcrRegistry, EcsDeployer, ParameterStore, S3ArtifactStore};
use aws_sdk_ecs::types::{
    ContainerDefinition, DeploymentCircuitBreaker, DeploymentConfiguration, LaunchType,
    PortMapping, Service, TransportProtocol,
};
use pipeline_core::{
    CancellationToken, DeployRecord, DeployReport, DeployRequest, DeployTarget, EventSubscriber,
    Events, GitInfo, ImageReference, LockHolder, Orchestrator, PinnedImage, PipelineEvent, Project,
    Registry, ReleaseSource, RollbackRequest, RollbackTo, Stages,
};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The environment the scenarios deploy to.
pub const ENVIRONMENT: &str = "production";
/// The example's ECR repository.
pub const REPOSITORY: &str = "cv_matcher";
/// The image container of the task definition.
pub const CONTAINER: &str = "cv-matcher";
/// The parameters of `secrets_path = "/cv-matcher/prod/"`.
pub const SECRET_NAMES: [&str; 3] = ["DATABASE_URL", "JWT_SECRET_KEY", "S3_BUCKET_NAME"];
pub const SECRETS_PATH: &str = "/cv-matcher/prod/";
/// The tag of the image the service runs before any test deploys.
pub const INITIAL_TAG: &str = "v1.0.0";
/// How often the scenarios poll (the example says 5 s).
pub const POLL_SECONDS: f64 = 0.2;
/// A safety net: a scenario that waits this long has failed anyway.
pub const TIMEOUT_SECONDS: u64 = 60;

/// `examples/cv-matcher/tugboat.toml`.
pub fn config_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/cv-matcher/tugboat.toml")
}

/// The example project with every `${VAR}` at its default, polling every
/// [`POLL_SECONDS`] with a [`TIMEOUT_SECONDS`] timeout in production.
pub fn load_project() -> anyhow::Result<Project> {
    let mut project = Project::load_with(&config_file(), &|_| None)
        .map_err(|err| anyhow::anyhow!("loading the CV Matcher example: {err}"))?;
    let env = project
        .config
        .environments
        .get_mut(ENVIRONMENT)
        .context("the example has no production environment")?;
    env.deploy.poll_interval_seconds = POLL_SECONDS;
    env.deploy.timeout_seconds = TIMEOUT_SECONDS;
    Ok(project)
}

/// A 40-hex git sha made of one repeated character (`sha('a')`).
pub fn sha(c: char) -> String {
    std::iter::repeat_n(c, 40).collect()
}

/// The URI moto gives a repository.
pub fn repository_uri(repository: &str) -> String {
    format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{repository}")
}

/// Every event of a run with the wall-clock moment it was emitted.
#[derive(Debug, Default)]
pub struct TimedEvents {
    events: Mutex<Vec<(SystemTime, PipelineEvent)>>,
}

impl TimedEvents {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn take(&self) -> Vec<(SystemTime, PipelineEvent)> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The events so far, kept.
    pub fn snapshot(&self) -> Vec<(SystemTime, PipelineEvent)> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl EventSubscriber for TimedEvents {
    fn on_event(&self, event: &PipelineEvent) {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((SystemTime::now(), event.clone()));
    }
}

/// What one orchestrator run returned and emitted.
#[derive(Debug)]
pub struct Run {
    pub report: DeployReport,
    pub events: Vec<(SystemTime, PipelineEvent)>,
    /// When `deploy`/`rollback` returned.
    pub returned_at: SystemTime,
}

impl Run {
    pub fn infos(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                PipelineEvent::Info { message } => Some(message.as_str()),
                _ => None,
            })
            .collect()
    }

    pub fn warnings(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                PipelineEvent::Warning { message } => Some(message.as_str()),
                _ => None,
            })
            .collect()
    }

    pub fn service_events(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                PipelineEvent::ServiceEvent { message, .. } => Some(message.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The record the run wrote, as the report has it.
    pub fn record(&self) -> anyhow::Result<&DeployRecord> {
        self.report
            .record
            .as_ref()
            .with_context(|| format!("the run returned no record: {}", self.report.message))
    }
}

/// CV Matcher's production environment on moto.
#[derive(Debug)]
pub struct CvMatcher {
    pub aws: AwsFixture,
    /// The example project (see [`load_project`]); scenarios clone and change it.
    pub project: Project,
    pub target: DeployTarget,
    pub bucket: String,
    pub prefix: String,
    /// The image the service runs before any test deploys.
    pub initial_image: PinnedImage,
    /// The task definition ARN the service was created with (`cv-matcher:1`).
    pub initial_revision: String,
}

impl CvMatcher {
    /// Creates everything production needs: cluster, the three SecureString
    /// parameters, the versioned records bucket, the repository with [`INITIAL_TAG`],
    /// revision 1 of the example's task definition on that image, and the service
    /// (2 tasks, Fargate, circuit breaker with rollback) running it.
    pub async fn setup(aws: AwsFixture) -> anyhow::Result<Self> {
        let project = load_project()?;
        let env = project.environment(ENVIRONMENT)?.clone();
        let records = env
            .records
            .clone()
            .context("production has no records bucket")?;
        let target = DeployTarget {
            app: project.config.app.name.clone(),
            environment: ENVIRONMENT.to_string(),
            cluster: env.cluster.clone(),
            service: env.service.clone(),
            region: env.region.clone(),
        };
        let clients = &aws.clients;

        clients
            .ecs
            .create_cluster()
            .cluster_name(&target.cluster)
            .send()
            .await
            .context("CreateCluster")?;
        for name in SECRET_NAMES {
            clients
                .ssm
                .put_parameter()
                .name(format!("{SECRETS_PATH}{name}"))
                .value(format!("secret value of {name}"))
                .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
                .send()
                .await
                .with_context(|| format!("PutParameter {name}"))?;
        }
        clients
            .s3
            .create_bucket()
            .bucket(&records.bucket)
            .send()
            .await
            .context("CreateBucket")?;
        clients
            .s3
            .put_bucket_versioning()
            .bucket(&records.bucket)
            .versioning_configuration(
                aws_sdk_s3::types::VersioningConfiguration::builder()
                    .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .context("PutBucketVersioning")?;

        let mut fixture = Self {
            aws,
            project,
            target,
            bucket: records.bucket.clone(),
            prefix: records.prefix.clone(),
            initial_image: PinnedImage {
                repository_uri: String::new(),
                digest: String::new(),
                tags: Vec::new(),
            },
            initial_revision: String::new(),
        };
        fixture.initial_image = fixture.put_image(REPOSITORY, INITIAL_TAG).await?;
        fixture.initial_revision = fixture
            .register_plain(&fixture.initial_image.reference())
            .await?;
        // ECS: a service of an awsvpc task definition has a network configuration (a
        // one-off task of a release takes it).
        let network = fixture.aws.moto.default_network().await?;
        let awsvpc = aws_sdk_ecs::types::AwsVpcConfiguration::builder()
            .set_subnets(Some(network.subnet_ids.iter().take(2).cloned().collect()))
            .set_security_groups(Some(network.security_group_ids.clone()))
            .build()
            .context("awsvpc configuration")?;
        let service = fixture
            .aws
            .clients
            .ecs
            .create_service()
            .network_configuration(
                aws_sdk_ecs::types::NetworkConfiguration::builder()
                    .awsvpc_configuration(awsvpc)
                    .build(),
            )
            .cluster(&fixture.target.cluster)
            .service_name(&fixture.target.service)
            .task_definition(&fixture.initial_revision)
            .desired_count(i32::try_from(env.desired_count.unwrap_or(1)).unwrap_or(1))
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
        ensure!(
            service.service().and_then(|s| s.task_definition()) == Some(&fixture.initial_revision),
            "CreateService did not take revision 1: {service:?}"
        );
        Ok(fixture)
    }

    /// Puts an image under `repository:tag` (creating the repository) with a manifest
    /// unique to the pair and ECR's digest rule (sha256 of the manifest bytes), then
    /// resolves it through [`EcrRegistry`] and checks the digest it reports.
    pub async fn put_image(&self, repository: &str, tag: &str) -> anyhow::Result<PinnedImage> {
        let ecr = &self.aws.clients.ecr;
        let created = ecr
            .create_repository()
            .repository_name(repository)
            .image_tag_mutability(aws_sdk_ecr::types::ImageTagMutability::Immutable)
            .send()
            .await;
        if let Err(err) = created {
            let code = aws_sdk_ecr::error::ProvideErrorMetadata::code(&err);
            if code != Some("RepositoryAlreadyExistsException") {
                bail!("CreateRepository {repository}: {err:?}");
            }
        }
        let layer = hex::encode(Sha256::digest(format!("layer of {repository}:{tag}")));
        let config = hex::encode(Sha256::digest(format!("config of {repository}:{tag}")));
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": 1469,
                "digest": format!("sha256:{config}"),
            },
            "layers": [{
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "size": 2811478,
                "digest": format!("sha256:{layer}"),
            }],
        })
        .to_string();
        let digest = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(manifest.as_bytes()))
        );
        ecr.put_image()
            .repository_name(repository)
            .image_manifest(&manifest)
            .image_tag(tag)
            .image_digest(&digest)
            .send()
            .await
            .with_context(|| format!("PutImage {repository}:{tag}"))?;
        // As ECR's scan on push would: production's scan gate needs a scan (moto's
        // default answer has one HIGH finding, below the example's CRITICAL gate).
        ecr.start_image_scan()
            .repository_name(repository)
            .image_id(
                aws_sdk_ecr::types::ImageIdentifier::builder()
                    .image_digest(&digest)
                    .build(),
            )
            .send()
            .await
            .with_context(|| format!("StartImageScan {repository}:{tag}"))?;
        let pinned = EcrRegistry::new(ecr.clone())
            .resolve(repository, &ImageReference::Tag(tag.to_string()))
            .await
            .map_err(|err| anyhow::anyhow!("resolving {repository}:{tag}: {err}"))?;
        ensure!(
            pinned.digest == digest,
            "EcrRegistry resolved {repository}:{tag} to {} instead of {digest}",
            pinned.digest
        );
        ensure!(
            pinned.repository_uri == repository_uri(repository),
            "EcrRegistry gave the repository URI {}",
            pinned.repository_uri
        );
        Ok(pinned)
    }

    /// Registers the example's task definition with `image` through the SDK's typed
    /// shapes (not through tugboat), and returns the revision's ARN.
    pub async fn register_plain(&self, image: &str) -> anyhow::Result<String> {
        self.register_tagged(image, &[]).await
    }

    /// Like [`CvMatcher::register_plain`], with resource tags (`tugboat:app` makes it
    /// one tugboat registered).
    pub async fn register_tagged(
        &self,
        image: &str,
        tags: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        let td = &self.project.task_definition;
        let env = self.project.environment(ENVIRONMENT)?;
        let mut call = self
            .aws
            .clients
            .ecs
            .register_task_definition()
            .family(&td.family)
            .set_network_mode(td.network_mode.as_deref().map(Into::into))
            .set_cpu(td.cpu.clone())
            .set_memory(td.memory.clone())
            .set_execution_role_arn(env.execution_role_arn.clone());
        for compatibility in &td.requires_compatibilities {
            call = call.requires_compatibilities(compatibility.as_str().into());
        }
        for container in &td.container_definitions {
            call = call.container_definitions(
                ContainerDefinition::builder()
                    .name(&container.name)
                    .image(if container.name == CONTAINER {
                        image
                    } else {
                        &container.image
                    })
                    .essential(true)
                    .port_mappings(
                        PortMapping::builder()
                            .container_port(8000)
                            .protocol(TransportProtocol::Tcp)
                            .build(),
                    )
                    .build(),
            );
        }
        for (key, value) in tags {
            call = call.tags(
                aws_sdk_ecs::types::Tag::builder()
                    .key(*key)
                    .value(*value)
                    .build(),
            );
        }
        let output = call.send().await.context("RegisterTaskDefinition")?;
        output
            .task_definition()
            .and_then(|t| t.task_definition_arn())
            .map(str::to_string)
            .context("RegisterTaskDefinition returned no ARN")
    }

    /// tugboat's stages on the fixture's clients: ECR, ECS, Parameter Store and the
    /// records bucket and the failure diagnosis; no test runner, builder, verifier or
    /// notifier.
    pub fn stages(&self) -> Stages {
        let clients = &self.aws.clients;
        let deployer = Arc::new(
            EcsDeployer::new(clients.ecs.clone()).with_autoscaling(clients.autoscaling.clone()),
        );
        let store = Arc::new(self.artifact_store());
        Stages {
            test_runner: None,
            image_builder: None,
            registry: Arc::new(EcrRegistry::new(clients.ecr.clone())),
            deployer: deployer.clone(),
            service_reader: deployer,
            verifiers: Vec::new(),
            secrets: Arc::new(ParameterStore::new(
                clients.ssm.clone(),
                clients.sts.clone(),
            )),
            locks: store.clone(),
            records: store.clone(),
            artifacts: store,
            notifiers: Vec::new(),
            diagnostics: Some(Arc::new(aws_adapters::TaskDiagnoser::new(
                clients.ecs.clone(),
                clients.logs.clone(),
            ))),
            one_off: Some(Arc::new(
                aws_adapters::TaskRunner::new(clients.ecs.clone(), clients.logs.clone())
                    .with_poll_interval(std::time::Duration::from_millis(200)),
            )),
        }
    }

    pub fn artifact_store(&self) -> S3ArtifactStore {
        S3ArtifactStore::new(self.aws.clients.s3.clone(), &self.bucket, &self.prefix)
    }

    fn orchestrator(&self, project: &Project) -> (Orchestrator, Arc<TimedEvents>) {
        self.orchestrator_with(project, self.stages(), None)
    }

    fn orchestrator_with(
        &self,
        project: &Project,
        stages: Stages,
        subscriber: Option<Arc<dyn EventSubscriber>>,
    ) -> (Orchestrator, Arc<TimedEvents>) {
        let recorder = TimedEvents::new();
        let mut events = Events::new().with(recorder.clone());
        if let Some(subscriber) = subscriber {
            events.subscribe(subscriber);
        }
        (Orchestrator::new(project.clone(), stages, events), recorder)
    }

    /// Runs the real orchestrator: deploy the pushed image `tag` to production.
    pub async fn deploy(&self, project: &Project, tag: &str, git_sha: &str) -> Run {
        let (orchestrator, recorder) = self.orchestrator(project);
        Self::run_deploy(orchestrator, recorder, tag, git_sha).await
    }

    /// Like [`CvMatcher::deploy`], with other stages (verifiers, say; start from
    /// [`CvMatcher::stages`]) and one more event subscriber, to react to the run's
    /// events while it goes on.
    pub async fn deploy_with(
        &self,
        project: &Project,
        stages: Stages,
        subscriber: Option<Arc<dyn EventSubscriber>>,
        tag: &str,
        git_sha: &str,
    ) -> Run {
        let (orchestrator, recorder) = self.orchestrator_with(project, stages, subscriber);
        Self::run_deploy(orchestrator, recorder, tag, git_sha).await
    }

    /// Like [`CvMatcher::deploy`], to another environment of `project`.
    pub async fn deploy_to(
        &self,
        project: &Project,
        environment: &str,
        tag: &str,
        git_sha: &str,
    ) -> Run {
        let (orchestrator, recorder) = self.orchestrator(project);
        Self::run_deploy_to(
            orchestrator,
            recorder,
            environment,
            tag,
            git_sha,
            CancellationToken::new(),
        )
        .await
    }

    /// The orchestrator [`CvMatcher::deploy`] uses, with `stages`, to adjust (say,
    /// `with_redaction`) before [`CvMatcher::deploy_using`].
    pub fn orchestrator_for(
        &self,
        project: &Project,
        stages: Stages,
    ) -> (Orchestrator, Arc<TimedEvents>) {
        self.orchestrator_with(project, stages, None)
    }

    /// Deploys the pushed image `tag` to production with `orchestrator`, cancelled by
    /// `cancel` (a signal, in the CLI).
    pub async fn deploy_using(
        orchestrator: Orchestrator,
        recorder: Arc<TimedEvents>,
        tag: &str,
        git_sha: &str,
        cancel: CancellationToken,
    ) -> Run {
        Self::run_deploy_to(orchestrator, recorder, ENVIRONMENT, tag, git_sha, cancel).await
    }

    async fn run_deploy(
        orchestrator: Orchestrator,
        recorder: Arc<TimedEvents>,
        tag: &str,
        git_sha: &str,
    ) -> Run {
        Self::run_deploy_to(
            orchestrator,
            recorder,
            ENVIRONMENT,
            tag,
            git_sha,
            CancellationToken::new(),
        )
        .await
    }

    async fn run_deploy_to(
        orchestrator: Orchestrator,
        recorder: Arc<TimedEvents>,
        environment: &str,
        tag: &str,
        git_sha: &str,
        cancel: CancellationToken,
    ) -> Run {
        let report = orchestrator
            .deploy(DeployRequest {
                environment: environment.to_string(),
                source: ReleaseSource::Image(ImageReference::Tag(tag.to_string())),
                git: GitInfo {
                    sha: git_sha.to_string(),
                    git_ref: format!("refs/tags/{tag}"),
                    committed_at: None,
                },
                actor: "tugboat-tests".to_string(),
                cancel,
            })
            .await;
        let returned_at = SystemTime::now();
        Run {
            report,
            events: recorder.take(),
            returned_at,
        }
    }

    /// Runs the real orchestrator's manual rollback.
    pub async fn rollback(&self, project: &Project, to: Option<RollbackTo>) -> Run {
        self.rollback_in(project, ENVIRONMENT, to).await
    }

    /// Like [`CvMatcher::rollback`], in another environment of `project`.
    pub async fn rollback_in(
        &self,
        project: &Project,
        environment: &str,
        to: Option<RollbackTo>,
    ) -> Run {
        let (orchestrator, recorder) = self.orchestrator(project);
        let report = orchestrator
            .rollback(RollbackRequest {
                environment: environment.to_string(),
                to,
                actor: "tugboat-tests".to_string(),
                reason: None,
                cancel: CancellationToken::new(),
            })
            .await;
        let returned_at = SystemTime::now();
        Run {
            report,
            events: recorder.take(),
            returned_at,
        }
    }

    /// The service as ECS describes it now.
    pub async fn service(&self) -> anyhow::Result<Service> {
        let output = self
            .aws
            .clients
            .ecs
            .describe_services()
            .cluster(&self.target.cluster)
            .services(&self.target.service)
            .send()
            .await
            .context("DescribeServices")?;
        output
            .services()
            .first()
            .cloned()
            .context("the service is gone")
    }

    /// The project with staging as a second environment of the same app and family:
    /// its own cluster and service (`develop` releases it), running revision 1 like
    /// production, keeping 2 revisions.
    pub async fn with_staging(&self) -> anyhow::Result<Project> {
        let mut project = self.project.clone();
        let mut staging = project
            .environment(ENVIRONMENT)
            .context("no production")?
            .clone();
        staging.cluster = "cv-matcher-staging-cluster".into();
        staging.tags = Vec::new();
        staging.branches = vec!["develop".into()];
        staging.rollback.keep_revisions = 2;
        project
            .config
            .environments
            .insert("staging".into(), staging.clone());
        let ecs = &self.aws.clients.ecs;
        ecs.create_cluster()
            .cluster_name(&staging.cluster)
            .send()
            .await
            .context("CreateCluster staging")?;
        ecs.create_service()
            .cluster(&staging.cluster)
            .service_name(&staging.service)
            .task_definition(&self.initial_revision)
            .desired_count(1)
            .launch_type(aws_sdk_ecs::types::LaunchType::Fargate)
            .send()
            .await
            .context("CreateService staging")?;
        Ok(project)
    }

    /// ACTIVE revisions of the family, oldest first.
    pub async fn active_revisions(&self) -> anyhow::Result<Vec<String>> {
        let arns: Vec<String> = self
            .aws
            .clients
            .ecs
            .list_task_definitions()
            .family_prefix(&self.project.task_definition.family)
            .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .context("ListTaskDefinitions")?;
        Ok(arns)
    }

    /// `tugboat/cv-matcher/production/`.
    pub fn key_prefix(&self) -> String {
        format!(
            "{}/{}/{}/",
            self.prefix.trim_matches('/'),
            self.target.app,
            self.target.environment
        )
    }

    /// A deploy record read straight from the bucket.
    pub async fn stored_record(&self, release_id: &str) -> anyhow::Result<DeployRecord> {
        self.stored_record_of(&self.target.environment, release_id)
            .await
    }

    /// The stored record of a release of `environment`.
    pub async fn stored_record_of(
        &self,
        environment: &str,
        release_id: &str,
    ) -> anyhow::Result<DeployRecord> {
        let key = format!(
            "{}/{}/{environment}/records/{release_id}.json",
            self.prefix.trim_matches('/'),
            self.target.app
        );
        let bytes = self
            .object(&key)
            .await?
            .with_context(|| format!("no object s3://{}/{key}", self.bucket))?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("s3://{}/{key} is not a deploy record", self.bucket))
    }

    /// The deploy lock as stored, `None` when there is none.
    pub async fn stored_lock(&self) -> anyhow::Result<Option<LockHolder>> {
        let key = format!("{}lock.json", self.key_prefix());
        match self.object(&key).await? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes).context("lock.json")?)),
            None => Ok(None),
        }
    }

    /// An object's bytes, `None` when it does not exist.
    pub async fn object(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let result = self
            .aws
            .clients
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        match result {
            Ok(output) => Ok(Some(
                output
                    .body
                    .collect()
                    .await
                    .context("reading an object")?
                    .into_bytes()
                    .to_vec(),
            )),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(None),
            Err(err) => Err(anyhow::anyhow!("GetObject {key}: {err:?}")),
        }
    }
}

/// The revision label (`cv-matcher:3`) of a task definition ARN.
pub fn label(arn: &str) -> &str {
    arn.rsplit_once('/').map_or(arn, |(_, label)| label)
}

/// Waits until `check` holds, polling every 100 ms, for at most `limit`.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await? {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("condition not met within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
