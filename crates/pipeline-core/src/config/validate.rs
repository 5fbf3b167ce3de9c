//! The checks a config passes after it is deserialized, one function per section. They
//! run in the order the sections are listed here, and the first problem found is the one
//! reported, so that order is part of the behaviour.

use super::environment::{
    DeploySettings, EnvironmentConfig, RecordsSettings, ScalingSettings, TargetKind, VerifySettings,
};
use super::monitoring::{AlarmKind, MonitoringSettings, LOG_RETENTION_DAYS};
use super::strategy::{validate_strategy, validate_timing};
use super::{AppConfig, Config, ConfigError, ImageConfig, TaskDefinitionConfig, TestConfig};
use std::collections::BTreeMap;
use std::path::Path;

/// The most seconds any duration in the config may be: 30 days. Far beyond any real
/// deploy, and far from overflowing a deadline (`Instant` + `Duration`).
pub const MAX_SECONDS: u64 = 30 * 24 * 3600;

impl Config {
    pub(super) fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        validate_app(file, &self.app)?;
        validate_image(file, &self.image)?;
        validate_test(file, &self.test)?;
        validate_task_definition(file, &self.task_definition)?;
        if self.environments.is_empty() {
            return Err(ConfigError::invalid(
                file,
                "environments",
                "must define at least one environment",
            )
            .with_help("add a table such as [environments.staging]"));
        }
        // Each branch or tag rule (`branch develop`) → the environment that claimed it.
        let mut claimed: BTreeMap<String, &str> = BTreeMap::new();
        for (name, env) in &self.environments {
            validate_environment(file, name, env)?;
            claim_deploy_rules(file, name, env, &mut claimed)?;
        }
        self.validate_fleet(file)
    }
}

fn validate_app(file: &Path, app: &AppConfig) -> Result<(), ConfigError> {
    if !valid_name(&app.name) {
        return Err(ConfigError::invalid(
            file,
            "app.name",
            "must be letters, digits, hyphens or underscores",
        )
        .with_value(format!("{:?}", app.name))
        .with_help("for example name = \"cv-matcher\""));
    }
    Ok(())
}

fn validate_image(file: &Path, image: &ImageConfig) -> Result<(), ConfigError> {
    let repo = &image.repository;
    let repo_ok = !repo.is_empty()
        && repo.len() <= 256
        && repo
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c));
    if !repo_ok {
        return Err(ConfigError::invalid(
            file,
            "image.repository",
            "is not an ECR repository name (lowercase letters, digits, . _ - /)",
        )
        .with_value(format!("{repo:?}"))
        .with_help("for example repository = \"cv_matcher\""));
    }
    if let Some(platform) = &image.platform {
        if !matches!(platform.as_str(), "linux/amd64" | "linux/arm64") {
            return Err(
                ConfigError::invalid(file, "image.platform", "is not a Fargate platform")
                    .with_value(format!("{platform:?}"))
                    .with_help("use \"linux/amd64\" or \"linux/arm64\" (Graviton)"),
            );
        }
    }
    for (index, secret) in image.secrets.iter().enumerate() {
        let valid = secret
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && secret
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(ConfigError::invalid(
                file,
                format!("image.secrets[{index}]"),
                "must be the name of an environment variable (letters, digits, _)",
            )
            .with_value(format!("{secret:?}"))
            .with_help("name the variable that holds the secret, e.g. \"NPM_TOKEN\""));
        }
    }
    Ok(())
}

fn validate_test(file: &Path, test: &TestConfig) -> Result<(), ConfigError> {
    for (index, artifact) in test.artifacts.iter().enumerate() {
        let path = Path::new(artifact);
        let escapes = path.is_absolute()
            || path.components().any(|c| {
                !matches!(
                    c,
                    std::path::Component::Normal(_) | std::path::Component::CurDir
                )
            });
        if escapes || artifact.is_empty() {
            return Err(ConfigError::invalid(
                file,
                format!("test.artifacts[{index}]"),
                "must be a path inside the test folder (relative, without `..`)",
            )
            .with_value(format!("{artifact:?}"))
            .with_help(
                "name the file the tests write, relative to [test] workdir, e.g. \"coverage.xml\"",
            ));
        }
    }
    check_seconds(file, "test.timeout_seconds", test.timeout_seconds)?;
    if test.timeout_seconds == 0 {
        return Err(
            ConfigError::invalid(file, "test.timeout_seconds", "must be more than 0")
                .with_value("0"),
        );
    }
    Ok(())
}

fn validate_task_definition(
    file: &Path,
    task_definition: &TaskDefinitionConfig,
) -> Result<(), ConfigError> {
    if task_definition.containers.is_empty() {
        return Err(ConfigError::invalid(
            file,
            "task_definition.containers",
            "must name at least one container to receive the image",
        )
        .with_value("[]")
        .with_help("for example containers = [\"cv-matcher\"]"));
    }
    Ok(())
}

/// `environments.{name}.{field}`.
fn env_key(name: &str, field: &str) -> String {
    format!("environments.{name}.{field}")
}

/// One environment, section by section.
fn validate_environment(
    file: &Path,
    name: &str,
    env: &EnvironmentConfig,
) -> Result<(), ConfigError> {
    if !valid_name(name) {
        return Err(ConfigError::invalid(
            file,
            format!("environments.{name}"),
            "environment names must be letters, digits, hyphens or underscores",
        )
        .with_value(format!("{name:?}")));
    }
    validate_target(file, name, env)?;
    validate_secrets(file, name, env)?;
    if env.desired_count == Some(0) {
        return Err(ConfigError::invalid(
            file,
            env_key(name, "desired_count"),
            "must be at least 1 (a release needs a running task to verify)",
        )
        .with_value("0"));
    }
    validate_deploy(file, name, &env.deploy)?;
    validate_verify(file, name, &env.verify)?;
    validate_roles(file, name, env)?;
    if let Some(monitoring) = &env.monitoring {
        validate_monitoring(file, name, monitoring)?;
    }
    if let Some(scaling) = &env.scaling {
        validate_scaling(file, name, scaling)?;
    }
    validate_strategy(file, name, &env.strategy)?;
    env.scan.validate(file, &env_key(name, "scan"))?;
    validate_timing(file, name, env)?;
    if let Some(records) = &env.records {
        validate_records(file, name, records)?;
    }
    super::one_off::validate_one_off_tasks(
        file,
        &format!("environments.{name}"),
        &env.before_deploy,
    )?;
    Ok(())
}

/// Where the releases run: the local port, or the ECS cluster, service and region.
fn validate_target(file: &Path, name: &str, env: &EnvironmentConfig) -> Result<(), ConfigError> {
    let key = |field: &str| env_key(name, field);
    let aws_fields = if env.target == TargetKind::Aws {
        vec![("cluster", &env.cluster), ("service", &env.service)]
    } else {
        Vec::new()
    };
    if env.target == TargetKind::Local && env.local.port == 0 {
        return Err(
            ConfigError::invalid(file, key("local.port"), "must be a port above 0").with_value("0"),
        );
    }
    for (field, text) in aws_fields {
        if text.trim().is_empty() {
            return Err(
                ConfigError::invalid(file, key(field), "must not be empty").with_value("\"\"")
            );
        }
    }
    if let Some(region) = &env.region {
        let parts: Vec<&str> = region.split('-').collect();
        let region_ok = parts.len() >= 3
            && parts.iter().all(|p| !p.is_empty())
            && parts
                .last()
                .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()));
        if !region_ok {
            return Err(
                ConfigError::invalid(file, key("region"), "is not an AWS region")
                    .with_value(format!("{region:?}"))
                    .with_help("for example region = \"us-east-1\""),
            );
        }
    }
    Ok(())
}

fn validate_secrets(file: &Path, name: &str, env: &EnvironmentConfig) -> Result<(), ConfigError> {
    let key = |field: &str| env_key(name, field);
    if let Some(path) = &env.secrets_path {
        if !path.starts_with('/') || !path.ends_with('/') {
            return Err(ConfigError::invalid(
                file,
                key("secrets_path"),
                "must start and end with '/'",
            )
            .with_value(format!("{path:?}"))
            .with_help("for example secrets_path = \"/cv-matcher/prod/\""));
        }
    }
    if env.secrets.is_some() && env.secrets_path.is_none() {
        return Err(ConfigError::invalid(
            file,
            key("secrets"),
            "needs secrets_path to say where the parameters live",
        )
        .with_help("add secrets_path = \"/<app>/<env>/\""));
    }
    Ok(())
}

fn validate_deploy(file: &Path, name: &str, deploy: &DeploySettings) -> Result<(), ConfigError> {
    let key = |field: &str| env_key(name, field);
    if deploy.timeout_seconds == 0 {
        return Err(ConfigError::invalid(
            file,
            key("deploy.timeout_seconds"),
            "must be more than 0",
        )
        .with_value("0"));
    }
    let poll = deploy.poll_interval_seconds;
    if !(poll > 0.0 && poll <= 60.0) {
        return Err(ConfigError::invalid(
            file,
            key("deploy.poll_interval_seconds"),
            "must be more than 0 and at most 60",
        )
        .with_value(poll.to_string())
        .with_help("the default, 5, notices a finished rollout within 5 seconds"));
    }
    Ok(())
}

fn validate_verify(file: &Path, name: &str, verify: &VerifySettings) -> Result<(), ConfigError> {
    let key = |field: &str| env_key(name, field);
    if !(100..=599).contains(&verify.expected_status) {
        return Err(ConfigError::invalid(
            file,
            key("verify.expected_status"),
            "is not an HTTP status",
        )
        .with_value(verify.expected_status.to_string())
        .with_help("for example expected_status = 200"));
    }
    if let Some(url) = &verify.url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::invalid(
                file,
                key("verify.url"),
                "must be an http:// or https:// URL",
            )
            .with_value(format!("{url:?}")));
        }
    }
    if !verify.health_path.starts_with('/') {
        return Err(
            ConfigError::invalid(file, key("verify.health_path"), "must start with '/'")
                .with_value(format!("{:?}", verify.health_path)),
        );
    }
    Ok(())
}

/// The task execution role and the task role.
fn validate_roles(file: &Path, name: &str, env: &EnvironmentConfig) -> Result<(), ConfigError> {
    for (field, role) in [
        ("execution_role_arn", &env.execution_role_arn),
        ("task_role_arn", &env.task_role_arn),
    ] {
        if let Some(role) = role {
            if !is_role_arn(role) {
                return Err(ConfigError::invalid(
                    file,
                    env_key(name, field),
                    "is not an IAM role ARN",
                )
                .with_value(format!("{role:?}"))
                .with_help(
                    "for example arn:aws:iam::123456789012:role/cv-matcher-task-execution",
                ));
            }
        }
    }
    Ok(())
}

fn validate_monitoring(
    file: &Path,
    name: &str,
    monitoring: &MonitoringSettings,
) -> Result<(), ConfigError> {
    let key = |field: &str| env_key(name, field);
    if !LOG_RETENTION_DAYS.contains(&monitoring.log_retention_days) {
        return Err(ConfigError::invalid(
            file,
            key("monitoring.log_retention_days"),
            "is not a retention CloudWatch Logs accepts",
        )
        .with_value(monitoring.log_retention_days.to_string())
        .with_help("use one of 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653"));
    }
    let mut names = std::collections::BTreeSet::new();
    for (index, alarm) in monitoring.alarms.iter().enumerate() {
        let alarm_key = |field: &str| key(&format!("monitoring.alarms[{index}].{field}"));
        if alarm.name.trim().is_empty() || !names.insert(alarm.name.as_str()) {
            return Err(ConfigError::invalid(
                file,
                alarm_key("name"),
                "must be a non-empty name used by one alarm only",
            )
            .with_value(format!("{:?}", alarm.name)));
        }
        let http = matches!(alarm.kind, AlarmKind::Http5xxRate | AlarmKind::ResponseTime);
        if http && alarm.load_balancer.is_none() {
            return Err(ConfigError::invalid(
                file,
                alarm_key("load_balancer"),
                "is required for HTTP alarms (the ALB's metric dimension)",
            )
            .with_help("for example load_balancer = \"app/cv-matcher-alb/50dc6c495c0c9188\""));
        }
        if !(alarm.threshold.is_finite() && alarm.threshold >= 0.0) {
            return Err(ConfigError::invalid(
                file,
                alarm_key("threshold"),
                "must be a number >= 0",
            )
            .with_value(alarm.threshold.to_string()));
        }
        if alarm.period_seconds < 10 || alarm.evaluation_periods == 0 {
            return Err(ConfigError::invalid(
                file,
                alarm_key("period_seconds"),
                "must be at least 10, with evaluation_periods at least 1",
            )
            .with_value(format!(
                "{}s x {}",
                alarm.period_seconds, alarm.evaluation_periods
            )));
        }
    }
    Ok(())
}

fn validate_scaling(file: &Path, name: &str, scaling: &ScalingSettings) -> Result<(), ConfigError> {
    let key = |field: &str| env_key(name, field);
    if scaling.min_tasks == 0 || scaling.min_tasks > scaling.max_tasks {
        return Err(ConfigError::invalid(
            file,
            key("scaling.min_tasks"),
            "must be at least 1 and at most max_tasks",
        )
        .with_value(format!(
            "min {} max {}",
            scaling.min_tasks, scaling.max_tasks
        )));
    }
    if !(scaling.cpu_target > 0.0 && scaling.cpu_target <= 100.0) {
        return Err(ConfigError::invalid(
            file,
            key("scaling.cpu_target"),
            "must be a CPU percentage above 0 and at most 100",
        )
        .with_value(scaling.cpu_target.to_string())
        .with_help("the design uses cpu_target = 75"));
    }
    Ok(())
}

fn validate_records(file: &Path, name: &str, records: &RecordsSettings) -> Result<(), ConfigError> {
    if records.bucket.trim().is_empty() {
        return Err(ConfigError::invalid(
            file,
            env_key(name, "records.bucket"),
            "must not be empty",
        )
        .with_value("\"\""));
    }
    Ok(())
}

/// Records in `claimed` the branch and tag rules of environment `name`; a rule another
/// environment claimed already is an error (a ref must deploy to one environment only).
fn claim_deploy_rules<'a>(
    file: &Path,
    name: &'a str,
    env: &EnvironmentConfig,
    claimed: &mut BTreeMap<String, &'a str>,
) -> Result<(), ConfigError> {
    let rules = env
        .branches
        .iter()
        .map(|b| (format!("branch {b}"), "branches"))
        .chain(env.tags.iter().map(|t| (format!("tag {t}"), "tags")));
    for (rule, field) in rules {
        if let Some(other) = claimed.insert(rule.clone(), name) {
            return Err(ConfigError::invalid(
                file,
                env_key(name, field),
                format!("{rule} already deploys to environment {other:?}"),
            )
            .with_value(format!(
                "{:?}",
                rule.split_once(' ').map(|r| r.1).unwrap_or("")
            ))
            .with_help("each branch or tag pattern may deploy to one environment only"));
        }
    }
    Ok(())
}

/// A duration of at most [`MAX_SECONDS`].
pub(super) fn check_seconds(file: &Path, key: &str, seconds: u64) -> Result<(), ConfigError> {
    if seconds > MAX_SECONDS {
        return Err(ConfigError::invalid(
            file,
            key,
            format!("must be at most {MAX_SECONDS} seconds (30 days)"),
        )
        .with_value(seconds.to_string())
        .with_help("give it in seconds, for example 900 for 15 minutes"));
    }
    Ok(())
}

/// An AWS region name (`us-east-1`).
pub(super) fn is_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| !p.is_empty())
        && parts
            .last()
            .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()))
}

/// An app, environment or service name: letters, digits, hyphens and underscores.
pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// An IAM role ARN (`arn:aws:iam::123456789012:role/NAME`, any partition).
pub(super) fn is_role_arn(text: &str) -> bool {
    text.starts_with("arn:aws") && text.contains(":role/")
}
