//! Builds the stages an environment runs with, and the read-only commands.

use crate::output::Reporter;
use crate::Exit;
use aws_adapters::{AwsClients, ClientOptions, HostStages};
use host_adapters::{
    DockerEnginePusher, DockerHost, DockerImageBuilder, FileArtifactStore, HttpHealthCheck,
    ShellTestRunner, SlackNotifier,
};
use local_target::{LocalDeployer, LocalRegistry, LocalSecretStore, ProxyCommand};
use pipeline_core::config::TargetKind;
use pipeline_core::{DeployTarget, Events, Project, ReleaseStores, ServiceReader, Stages};
use pipeline_core::{EnvironmentConfig, Notifier, Verifier};
use std::sync::Arc;

/// The values of [`pipeline_core::diagnosis::HELD_SECRET_VARIABLES`] that are set.
pub fn held_secrets() -> Vec<String> {
    pipeline_core::diagnosis::HELD_SECRET_VARIABLES
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .filter(|value| !value.trim().is_empty())
        .collect()
}

pub fn events(reporter: Arc<Reporter>) -> Events {
    Events::new().with(reporter)
}

pub async fn clients(region: Option<String>) -> AwsClients {
    AwsClients::load(&ClientOptions {
        region,
        profile: None,
    })
    .await
}

pub fn target(project: &Project, environment: &str) -> Result<DeployTarget, Exit> {
    Ok(project.target(environment)?)
}

/// The S3 records bucket when the environment names one, else `.tugboat/` here.
fn release_stores(
    project: &Project,
    environment: &str,
    clients: &AwsClients,
) -> Result<ReleaseStores, Exit> {
    let env = project.environment(environment)?;
    Ok(aws_adapters::bucket_stores(env, clients).unwrap_or_else(|| local_stores(project)))
}

fn local_stores(project: &Project) -> ReleaseStores {
    ReleaseStores::all_in(Arc::new(FileArtifactStore::new(
        project.root.join(".tugboat"),
    )))
}

/// Whether an environment runs on this machine's Docker engine (`target = "local"`).
pub fn is_local(project: &Project, environment: &str) -> Result<bool, Exit> {
    Ok(project.environment(environment)?.target == TargetKind::Local)
}

/// The deployer of a local environment: state under `.tugboat/<app>/<env>/`, the proxy
/// started as `tugboat __proxy`, the front door checked at the verify health path.
pub fn local_deployer(project: &Project, environment: &str) -> Result<LocalDeployer, Exit> {
    let env = project.environment(environment)?;
    let state_dir = project
        .root
        .join(".tugboat")
        .join(&project.config.app.name)
        .join(environment);
    Ok(
        LocalDeployer::new(DockerHost::from_env(), state_dir, &env.local)
            .with_secrets_file(
                env.local
                    .secrets_file
                    .as_ref()
                    .map(|f| project.root.join(f)),
            )
            .with_health_path(Some(env.verify.health_path.clone()))
            .with_front_container(project.config.task_definition.containers.first().cloned())
            .with_proxy_command(proxy_command()?),
    )
}

/// The local proxy is this executable with its hidden `__proxy` subcommand.
fn proxy_command() -> Result<ProxyCommand, Exit> {
    let program = std::env::current_exe().map_err(|err| {
        Exit::bad_input(format!(
            "cannot find this program's executable to start the local proxy with: {err}"
        ))
    })?;
    Ok(ProxyCommand {
        program,
        args: vec!["__proxy".into()],
    })
}

/// The URL a local environment serves on.
pub fn local_url(project: &Project, environment: &str) -> Result<Option<String>, Exit> {
    let env = project.environment(environment)?;
    Ok((env.target == TargetKind::Local).then(|| format!("http://127.0.0.1:{}", env.local.port)))
}

/// The stages of a local environment: the host's tests and Docker build, images kept in
/// the engine (or a loopback registry), containers behind a local proxy, secrets from
/// a file, records in `.tugboat/`.
fn local_stages(project: &Project, environment: &str, build: bool) -> Result<Stages, Exit> {
    let env = project.environment(environment)?;
    let deployer = Arc::new(local_deployer(project, environment)?);
    let mut registry = LocalRegistry::from_env();
    if let Some(server) = &env.local.registry {
        registry = registry.with_registry(server.clone());
    }
    let stores = local_stores(project);
    Ok(Stages {
        test_runner: build.then(|| Arc::new(ShellTestRunner::new()) as _),
        image_builder: build.then(|| Arc::new(DockerImageBuilder::from_env()) as _),
        registry: Arc::new(registry),
        deployer: deployer.clone(),
        service_reader: deployer.clone(),
        verifiers: host_checks(env),
        secrets: Arc::new(LocalSecretStore::new(
            env.local
                .secrets_file
                .as_ref()
                .map(|f| project.root.join(f)),
        )),
        locks: stores.locks,
        records: stores.records,
        artifacts: stores.artifacts,
        notifiers: notifiers(env),
        diagnostics: Some(deployer.clone()),
        one_off: Some(deployer.clone()),
    })
}

/// The host's checks of a release (the HTTP health check); the AWS ones come from
/// [`aws_adapters::verifiers`].
fn host_checks(env: &EnvironmentConfig) -> Vec<Arc<dyn Verifier>> {
    HttpHealthCheck::from_settings(&env.verify)
        .map(|http| Arc::new(http) as Arc<dyn Verifier>)
        .into_iter()
        .collect()
}

/// Slack, when `SLACK_BOT_TOKEN` and a channel are set.
pub fn notifiers(env: &EnvironmentConfig) -> Vec<Arc<dyn Notifier>> {
    SlackNotifier::from_env(&env.notify)
        .map(|slack| Arc::new(slack) as Arc<dyn Notifier>)
        .into_iter()
        .collect()
}

/// The AWS stages of one environment (or the local ones, for `target = "local"`); with
/// `build`, also the host's test runner and Docker builder.
pub async fn stages(project: &Project, environment: &str, build: bool) -> Result<Stages, Exit> {
    let env = project.environment(environment)?;
    if env.target == TargetKind::Local {
        return local_stages(project, environment, build);
    }
    let clients = clients(env.region.clone()).await;
    aws_stages(project, environment, build, &clients, None)
}

/// The AWS stages of one environment on clients already made (a fleet's services in one
/// region share them, and so their ECS poller).
pub fn aws_stages(
    project: &Project,
    environment: &str,
    build: bool,
    clients: &AwsClients,
    ecs_poller: Option<aws_adapters::ServicePoller>,
) -> Result<Stages, Exit> {
    let env = project.environment(environment)?;
    // A registry on this machine standing in for ECR's data plane (tests, rehearsals).
    let data_plane = match std::env::var("TUGBOAT_ECR_DATA_PLANE") {
        Ok(server) => {
            host_adapters::check_credential_endpoint("TUGBOAT_ECR_DATA_PLANE", &server)
                .map_err(Exit::bad_input)?;
            Some(server)
        }
        Err(_) => None,
    };
    if let Ok(api) = std::env::var("TUGBOAT_SLACK_API_URL") {
        host_adapters::check_credential_endpoint("TUGBOAT_SLACK_API_URL", &api)
            .map_err(Exit::bad_input)?;
    }
    let host = HostStages {
        test_runner: build.then(|| Arc::new(ShellTestRunner::new()) as _),
        image_builder: build.then(|| Arc::new(DockerImageBuilder::from_env()) as _),
        pusher: Some(Arc::new(DockerEnginePusher::from_env())),
        data_plane,
        checks: host_checks(env),
        notifiers: notifiers(env),
        stores_without_bucket: Some(local_stores(project)),
        bake_alarms: true,
        target_health_cap: None,
        ecs_poller,
    };
    Ok(aws_adapters::environment_stages(
        environment,
        env,
        clients,
        host,
    )?)
}

/// The service reader and record stores of an environment, without AWS for a local one.
pub async fn reader_and_records(
    project: &Project,
    environment: &str,
) -> Result<(Arc<dyn ServiceReader>, ReleaseStores), Exit> {
    if is_local(project, environment)? {
        return Ok((
            Arc::new(local_deployer(project, environment)?),
            local_stores(project),
        ));
    }
    let env = project.environment(environment)?;
    let clients = clients(env.region.clone()).await;
    Ok((
        Arc::new(aws_adapters::ecs_deployer(env, &clients)),
        release_stores(project, environment, &clients)?,
    ))
}

/// The deploy records of an environment (`tugboat report`), without AWS for a local one.
pub async fn record_store(
    project: &Project,
    environment: &str,
) -> Result<Arc<dyn pipeline_core::ReleaseRecords>, Exit> {
    Ok(reader_and_records(project, environment).await?.1.records)
}

/// What `tugboat logs` reads an ECS environment with: its tasks' log streams, and the
/// records that say which deployment a release made.
pub async fn task_logs(
    project: &Project,
    environment: &str,
) -> Result<
    (
        Arc<dyn pipeline_core::logs::TaskLogs>,
        Arc<dyn pipeline_core::ReleaseRecords>,
    ),
    Exit,
> {
    let env = project.environment(environment)?;
    let clients = clients(env.region.clone()).await;
    let logs = aws_adapters::EcsTaskLogs::new(clients.ecs.clone(), clients.logs.clone());
    let records = release_stores(project, environment, &clients)?.records;
    Ok((Arc::new(logs), records))
}
