//! One wiring: the stages an environment on AWS runs with, for every front end (the
//! CLI, the Lambda, a program that embeds tugboat). The front end adds only what runs
//! on its host ([`HostStages`]: a test runner, an image builder and pusher, host checks,
//! notifiers, a record store for environments without a records bucket), and says where
//! it differs on purpose (the Lambda bakes no alarms and has a time budget).
//!
//! ```no_run
//! # async fn example(project: pipeline_core::Project) -> Result<(), Box<dyn std::error::Error>> {
//! use aws_adapters::{environment_stages, AwsClients, ClientOptions, HostStages};
//! use pipeline_core::{
//!     DeployRequest, Events, GitInfo, ImageReference, Orchestrator, ReleaseSource,
//! };
//!
//! let env = project.environment("staging")?;
//! let options = ClientOptions { region: env.region.clone(), profile: None };
//! let clients = AwsClients::load(&options).await;
//! // An image already pushed: no test runner, builder or pusher needed.
//! let stages = environment_stages("staging", env, &clients, HostStages::default())?;
//! let report = Orchestrator::new(project, stages, Events::new())
//!     .deploy(DeployRequest {
//!         environment: "staging".into(),
//!         source: ReleaseSource::Image(ImageReference::parse("v1.2.0")),
//!         git: GitInfo {
//!             sha: "0123abc".into(),
//!             git_ref: "refs/tags/v1.2.0".into(),
//!             committed_at: None,
//!         },
//!         actor: "release-bot".into(),
//!         cancel: Default::default(),
//!     })
//!     .await;
//! println!("{}", report.message);
//! # Ok(())
//! # }
//! ```

use crate::{
    AlarmWatch, AwsClients, EcrRegistry, EcsDeployer, ParameterStore, S3ArtifactStore,
    TargetHealthCheck, TaskDiagnoser, TaskRunner,
};
use pipeline_core::{
    EnvironmentConfig, ImageBuilder, ImagePusher, Notifier, ReleaseStores, StageError, Stages,
    TestRunner, Verifier,
};
use std::sync::Arc;
use std::time::Duration;

/// What the front end's host adds to an environment's AWS stages.
#[derive(Clone)]
pub struct HostStages {
    /// Runs `[test]` before a build; `None` when the release is an image already pushed.
    pub test_runner: Option<Arc<dyn TestRunner>>,
    /// Builds the image; `None` when the release is an image already pushed.
    pub image_builder: Option<Arc<dyn ImageBuilder>>,
    /// Pushes built images to ECR (the Docker engine here); `None`: resolve only.
    pub pusher: Option<Arc<dyn ImagePusher>>,
    /// A registry standing in for ECR's data plane (rehearsals, tests).
    pub data_plane: Option<String>,
    /// Checks that run on the host, after the load balancer's targets and before the
    /// alarms (the HTTP health check).
    pub checks: Vec<Arc<dyn Verifier>>,
    pub notifiers: Vec<Arc<dyn Notifier>>,
    /// Where the lock and records live when the environment names no records bucket;
    /// `None`: such an environment is refused.
    pub stores_without_bucket: Option<ReleaseStores>,
    /// Watch `verify.alarms` over the bake time. The Lambda does not: an alarm that
    /// fires arrives as its own event and rolls the release back.
    pub bake_alarms: bool,
    /// The longest the load balancer's targets are waited for (the Lambda's invocation
    /// has a time budget); `None`: `verify.timeout_seconds`.
    pub target_health_cap: Option<Duration>,
    /// The `DescribeServices` poller shared by the services of a fleet in this region;
    /// `None`: each rollout looks on its own.
    pub ecs_poller: Option<crate::ServicePoller>,
}

impl Default for HostStages {
    fn default() -> Self {
        Self {
            test_runner: None,
            image_builder: None,
            pusher: None,
            data_plane: None,
            checks: Vec::new(),
            notifiers: Vec::new(),
            stores_without_bucket: None,
            bake_alarms: true,
            target_health_cap: None,
            ecs_poller: None,
        }
    }
}

/// The ECS deployer of an environment: its deployment strategy, and Application Auto
/// Scaling consulted so a release never lowers an autoscaled service's capacity.
pub fn ecs_deployer(env: &EnvironmentConfig, clients: &AwsClients) -> EcsDeployer {
    EcsDeployer::new(clients.ecs.clone())
        .with_strategy(env.strategy.clone())
        .with_autoscaling(clients.autoscaling.clone())
}

/// The records bucket of an environment as its lock, records and artifacts store;
/// `None` when it names none.
pub fn bucket_stores(env: &EnvironmentConfig, clients: &AwsClients) -> Option<ReleaseStores> {
    env.records.as_ref().map(|records| {
        ReleaseStores::all_in(Arc::new(S3ArtifactStore::new(
            clients.s3.clone(),
            &records.bucket,
            &records.prefix,
        )))
    })
}

/// The checks a release of `env` must pass after its rollout, cheapest first: the load
/// balancer's targets, the host's checks, then the alarms over the bake time.
pub fn verifiers(
    env: &EnvironmentConfig,
    clients: &AwsClients,
    host: &HostStages,
) -> Vec<Arc<dyn Verifier>> {
    let mut checks: Vec<Arc<dyn Verifier>> = Vec::new();
    if env.verify.target_health {
        let mut window = Duration::from_secs(env.verify.timeout_seconds);
        if let Some(cap) = host.target_health_cap {
            window = window.min(cap);
        }
        checks.push(Arc::new(TargetHealthCheck::new(
            clients.ecs.clone(),
            clients.elbv2.clone(),
            window,
        )));
    }
    checks.extend(host.checks.iter().cloned());
    if host.bake_alarms {
        if let Some(alarms) = AlarmWatch::for_settings(clients.cloudwatch.clone(), &env.verify) {
            checks.push(Arc::new(alarms));
        }
    }
    checks
}

/// The stages of one AWS environment: ECR, ECS, Parameter Store, the records bucket
/// (or the host's store), the verifiers, and what the host adds. Bad input (no store for
/// the lock) changes nothing.
pub fn environment_stages(
    environment: &str,
    env: &EnvironmentConfig,
    clients: &AwsClients,
    host: HostStages,
) -> Result<Stages, StageError> {
    let stores = bucket_stores(env, clients)
        .or_else(|| host.stores_without_bucket.clone())
        .ok_or_else(|| {
            StageError::bad_input(format!(
                "environments.{environment}.records.bucket is not set; the deploy lock and the releases in progress are kept in S3"
            ))
            .with_help(format!(
                "add [environments.{environment}.records] with bucket = \"…\" to tugboat.toml"
            ))
        })?;
    let mut deployer = ecs_deployer(env, clients);
    if let Some(poller) = &host.ecs_poller {
        deployer = deployer.with_poller(poller.clone());
    }
    let deployer = Arc::new(deployer);
    let mut registry = EcrRegistry::new(clients.ecr.clone());
    if let Some(pusher) = &host.pusher {
        registry = registry.with_pusher(pusher.clone());
    }
    if let Some(server) = &host.data_plane {
        registry = registry.with_data_plane(server.clone());
    }
    Ok(Stages {
        verifiers: verifiers(env, clients, &host),
        test_runner: host.test_runner,
        image_builder: host.image_builder,
        registry: Arc::new(registry),
        deployer: deployer.clone(),
        service_reader: deployer,
        secrets: Arc::new(ParameterStore::new(
            clients.ssm.clone(),
            clients.sts.clone(),
        )),
        locks: stores.locks,
        records: stores.records,
        artifacts: stores.artifacts,
        notifiers: host.notifiers,
        diagnostics: Some(Arc::new(TaskDiagnoser::new(
            clients.ecs.clone(),
            clients.logs.clone(),
        ))),
        one_off: Some(Arc::new(TaskRunner::new(
            clients.ecs.clone(),
            clients.logs.clone(),
        ))),
    })
}
