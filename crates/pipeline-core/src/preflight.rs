//! Preflight: what a first deploy of an environment needs, checked without changing
//! anything (the service, the image, the parameters, the execution role, the records,
//! the log group). Each check is ok with what it saw, or says what to fix.

use crate::config::{ConfigError, Project, TargetKind};
use crate::model::ImageReference;
use crate::orchestrator::Stages;
use crate::stages::{SecretsSpec, StageError};

/// One preflight check: its name and what it found (`Err`: what is wrong and the fix).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PreflightCheck {
    pub name: String,
    pub result: Result<String, String>,
}

fn check(name: &str, result: Result<String, String>) -> PreflightCheck {
    PreflightCheck {
        name: name.to_string(),
        result,
    }
}

/// Runs every preflight check of `environment` with its stages; `image` (a tag or
/// digest) is resolved when given.
pub async fn preflight(
    project: &Project,
    environment: &str,
    stages: &Stages,
    image: Option<&str>,
) -> Result<Vec<PreflightCheck>, ConfigError> {
    let env = project.environment(environment)?;
    let target = project.target(environment)?;
    let mut checks: Vec<PreflightCheck> = Vec::new();
    let fix = |e: StageError| match e.help {
        Some(help) => format!("{} (fix: {help})", e.message),
        None => e.message,
    };
    checks.push(check(
        "service",
        stages
            .service_reader
            .status(&target)
            .await
            .map(|s| format!("{target} exists, running {}/{}", s.running, s.desired))
            .map_err(fix),
    ));
    checks.push(check(
        "image",
        match image {
            Some(image) => stages
                .registry
                .resolve(
                    &project.config.image.repository,
                    &ImageReference::parse(image),
                )
                .await
                .map(|p| p.reference())
                .map_err(fix),
            None => Ok("not checked (pass --image TAG to check one)".into()),
        },
    ));
    let secrets = match &env.secrets_path {
        Some(path) => stages
            .secrets
            .resolve(&SecretsSpec {
                path: path.clone(),
                names: env.secrets.clone(),
            })
            .await
            .map(|refs| format!("{} parameter(s) under {path} exist", refs.len()))
            .map_err(fix),
        None => Ok("no secrets_path configured".into()),
    };
    checks.push(check("parameters", secrets));
    let sources = project.task_definition.secret_sources();
    if !sources.is_empty() {
        checks.push(check(
            "task definition secrets",
            stages
                .secrets
                .ensure_exist(&sources)
                .await
                .map(|unchecked| {
                    let checked = sources.len() - unchecked.len();
                    if unchecked.is_empty() {
                        format!("{checked} exist")
                    } else {
                        format!(
                            "{checked} exist; warning: {}",
                            crate::stages::unchecked_secrets(&unchecked)
                        )
                    }
                })
                .map_err(fix),
        ));
    }
    let has_role = project
        .task_definition
        .extra
        .contains_key("executionRoleArn")
        || env.execution_role_arn.is_some();
    // Local environments have no IAM: the engine gets the secrets' values itself.
    let needs_role = env.target == TargetKind::Aws
        && (env.secrets_path.is_some()
            || !sources.is_empty()
            || project.task_definition.to_json_pretty().contains("awslogs"));
    checks.push(check(
        "execution role",
        if has_role || !needs_role {
            Ok("set".into())
        } else {
            Err(format!(
                "the task needs an execution role (it reads secrets or writes awslogs) (fix: set environments.{environment}.execution_role_arn or \"executionRoleArn\" in the task definition)"
            ))
        },
    ));
    checks.push(check(
        "records",
        stages
            .records
            .history(&target.app, environment, 1)
            .await
            .map(|r| format!("readable ({} record(s) seen)", r.len()))
            .map_err(fix),
    ));
    let log_group = project
        .task_definition
        .container_definitions
        .iter()
        .find_map(|c| {
            c.extra
                .get("logConfiguration")?
                .get("options")?
                .get("awslogs-group")?
                .as_str()
                .map(str::to_string)
        });
    checks.push(check(
        "log group",
        Ok(match log_group {
            Some(group) => {
                format!("{group} is named; its existence is not checked by this version")
            }
            None => "no awslogs group configured".into(),
        }),
    ));
    Ok(checks)
}
