//! The stages one environment runs with inside the function: ECR (resolve only, no
//! pusher), ECS, Parameter Store (described, never read) and the S3 records bucket. No
//! test runner or image builder: the function only deploys images already pushed.

use crate::HandlerError;
use aws_adapters::{AwsClients, EcrRegistry, EcsDeployer, ParameterStore, S3ArtifactStore};
use pipeline_core::{
    DeployTarget, EnvironmentConfig, Notifier, ReleaseStores, Stages, TaskDefinition, Verifier,
};
use std::sync::Arc;
use std::time::Duration;

/// The checks a release of `environment` must pass when ECS reports its deployment
/// complete: the load balancer's targets. Alarms are not baked here: an alarm that fires
/// inside the bake window arrives as its own event and rolls the release back, so no
/// invocation waits out a bake time.
pub fn verifiers(
    _environment: &str,
    env: &EnvironmentConfig,
    clients: &AwsClients,
) -> Vec<Arc<dyn Verifier>> {
    if !env.verify.target_health {
        return Vec::new();
    }
    vec![Arc::new(aws_adapters::TargetHealthCheck::new(
        clients.ecs.clone(),
        clients.elbv2.clone(),
        Duration::from_secs(env.verify.timeout_seconds.min(120)),
    ))]
}

/// Who is told about releases of `environment`. None in the function yet: the Slack
/// notifier lives in `host-adapters`, whose HTTP stack would push the binary past its
/// size budget; the CLI sends Slack messages.
pub fn notifiers(
    _environment: &str,
    _env: &EnvironmentConfig,
    _clients: &AwsClients,
) -> Vec<Arc<dyn Notifier>> {
    Vec::new()
}

/// The stages of one environment. The records bucket is required: it keeps the deploy
/// lock and the releases in progress between invocations.
pub fn stages(
    environment: &str,
    env: &EnvironmentConfig,
    clients: &AwsClients,
    extra_notifiers: &[Arc<dyn Notifier>],
) -> Result<Stages, HandlerError> {
    let Some(records) = &env.records else {
        return Err(HandlerError::Setup {
            problem: format!(
                "environments.{environment}.records.bucket is not set; the Lambda keeps the deploy lock and the releases in progress in S3"
            ),
            help: Some(format!(
                "add [environments.{environment}.records] with bucket = \"…\" to tugboat.toml"
            )),
        });
    };
    let ecs = Arc::new(
        EcsDeployer::new(clients.ecs.clone())
            .with_strategy(env.strategy.clone())
            .with_autoscaling(clients.autoscaling.clone()),
    );
    let stores = ReleaseStores::all_in(Arc::new(S3ArtifactStore::new(
        clients.s3.clone(),
        &records.bucket,
        &records.prefix,
    )));
    let mut notifiers = notifiers(environment, env, clients);
    notifiers.extend(extra_notifiers.iter().cloned());
    Ok(Stages {
        test_runner: None,
        image_builder: None,
        registry: Arc::new(EcrRegistry::new(clients.ecr.clone())),
        deployer: ecs.clone(),
        service_reader: ecs,
        verifiers: verifiers(environment, env, clients),
        secrets: Arc::new(ParameterStore::new(
            clients.ssm.clone(),
            clients.sts.clone(),
        )),
        locks: stores.locks,
        records: stores.records,
        artifacts: stores.artifacts,
        notifiers,
    })
}

/// The task definition a package without the file renders releases from: the one the
/// service runs now (its image is replaced by the release's when rendering).
pub async fn current_task_definition(
    stages: &Stages,
    target: &DeployTarget,
) -> Result<TaskDefinition, HandlerError> {
    let setup = |problem: String| HandlerError::Setup {
        problem,
        help: Some(
            "package the task definition file next to tugboat.toml, or create the service first"
                .into(),
        ),
    };
    let revision = stages
        .deployer
        .current_revision(target)
        .await
        .map_err(|err| {
            setup(format!(
                "cannot read the service {target} for its task definition: {}",
                err.message
            ))
        })?
        .ok_or_else(|| {
            setup(format!(
                "the service {target} does not exist, so it has no task definition to release from"
            ))
        })?;
    stages
        .service_reader
        .registered_definition(&revision)
        .await
        .map_err(|err| {
            setup(format!(
                "cannot read the task definition {revision} of {target}: {}",
                err.message
            ))
        })
}
