//! The stages one environment runs with inside the function: ECR (resolve only, no
//! pusher), ECS, Parameter Store (described, never read) and the S3 records bucket. No
//! test runner or image builder: the function only deploys images already pushed.

use crate::HandlerError;
use aws_adapters::{AwsClients, HostStages};
use pipeline_core::{DeployTarget, EnvironmentConfig, Notifier, Stages, TaskDefinition};
use std::sync::Arc;
use std::time::Duration;

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

/// How long the function waits for the load balancer's targets at most: an invocation
/// has a time budget, and a target still draining is looked at again by the next event.
const TARGET_HEALTH_CAP: Duration = Duration::from_secs(120);

/// The stages of one environment: [`aws_adapters::environment_stages`] with no test
/// runner, builder or pusher, no alarm bake (an alarm that fires inside the bake window
/// arrives as its own event and rolls the release back, so no invocation waits out a
/// bake time) and no store but the records bucket, which keeps the deploy lock and the
/// releases in progress between invocations.
pub fn stages(
    environment: &str,
    env: &EnvironmentConfig,
    clients: &AwsClients,
    extra_notifiers: &[Arc<dyn Notifier>],
) -> Result<Stages, HandlerError> {
    let mut notifiers = notifiers(environment, env, clients);
    notifiers.extend(extra_notifiers.iter().cloned());
    let host = HostStages {
        notifiers,
        bake_alarms: false,
        target_health_cap: Some(TARGET_HEALTH_CAP),
        ..HostStages::default()
    };
    aws_adapters::environment_stages(environment, env, clients, host).map_err(|err| {
        HandlerError::Setup {
            problem: err.message,
            help: err.help,
        }
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
