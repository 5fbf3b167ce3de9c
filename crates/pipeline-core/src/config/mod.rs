//! `tugboat.toml`: the app, its image, its tests, its task definition and its named
//! environments. `${VAR}` and `${VAR:-default}` in any string are read from the process
//! environment; `$${` writes a literal `${`.

mod environment;
mod errors;
mod fleet;
mod interpolate;
mod monitoring;
mod one_off;
mod routing;
mod strategy;
mod validate;

pub use environment::{
    DeploySettings, EnvironmentConfig, LocalSettings, NotifySettings, RecordsSettings,
    RollbackPolicy, ScalingSettings, TargetKind, VerifySettings, MIN_LOCK_LEASE_SECONDS,
};
pub use errors::ConfigError;
pub use fleet::{
    FailurePolicy, FleetUnit, RegionEntry, ServiceConfig, ServiceDefinition, UnitTarget,
};
pub use interpolate::expand;
pub use monitoring::{AlarmKind, AlarmSpec, MonitoringSettings, LOG_RETENTION_DAYS};
pub use one_off::OneOffTaskConfig;
pub use routing::{cluster_name, glob_match};
pub use strategy::{
    LifecycleHookSettings, LifecycleStage, ScanSettings, StrategyKind, StrategySettings,
    BAKE_MARGIN_SECONDS,
};
pub use validate::MAX_SECONDS;

use crate::task_definition::TaskDefinition;
use errors::{duplicate_key, serde_error};
use interpolate::{interpolate, variable_keys};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The default config file name.
pub const DEFAULT_CONFIG_FILE: &str = "tugboat.toml";

/// The whole `tugboat.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub app: AppConfig,
    pub image: ImageConfig,
    #[serde(default)]
    pub test: TestConfig,
    pub task_definition: TaskDefinitionConfig,
    pub environments: BTreeMap<String, EnvironmentConfig>,
    /// A fleet: the services that share the app's image, each with its own task
    /// definition (`[services.web]`). Empty: the app is one service, as `[task_definition]`
    /// and each environment's `cluster` and `service` say.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, ServiceConfig>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// The app's name; records, locks and tags use it.
    pub name: String,
    /// The source repository URL, for the `org.opencontainers.image.source` label.
    #[serde(default)]
    pub source: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// The ECR repository name (`cv_matcher`).
    pub repository: String,
    #[serde(default = "default_dockerfile")]
    pub dockerfile: PathBuf,
    #[serde(default = "default_context")]
    pub context: PathBuf,
    /// `linux/amd64`, or `linux/arm64` for Graviton.
    #[serde(default)]
    pub platform: Option<String>,
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    /// BuildKit build secrets: each name is a secret id whose value is read from the
    /// variable of that name when the image is built (`RUN --mount=type=secret,id=NAME`);
    /// never a build arg, so never in the image or its history.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Tags pushed besides the git sha (and the version of a `v*` release).
    #[serde(default)]
    pub tags: Vec<String>,
}

fn default_dockerfile() -> PathBuf {
    PathBuf::from("Dockerfile")
}

fn default_context() -> PathBuf {
    PathBuf::from(".")
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestConfig {
    /// Shell commands run in order (`make lint`, `make test`).
    #[serde(default)]
    pub commands: Vec<String>,
    /// Files kept with the release after the tests passed (`coverage.xml`).
    #[serde(default)]
    pub artifacts: Vec<String>,
    /// The time limit of each command.
    #[serde(default = "default_test_timeout")]
    pub timeout_seconds: u64,
    /// Where the commands run, relative to tugboat.toml's folder.
    #[serde(default = "default_context")]
    pub workdir: PathBuf,
    /// Variables of tugboat's environment the commands may see, besides the basic ones
    /// (PATH, HOME, the locale, CI, the git variables); names, or prefixes ending in `*`.
    /// Deploy credentials and tugboat's own variables are never passed.
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// Variables set for the commands.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl Default for TestConfig {
    fn default() -> Self {
        Self {
            commands: Vec::new(),
            artifacts: Vec::new(),
            timeout_seconds: default_test_timeout(),
            workdir: default_context(),
            pass_env: Vec::new(),
            env: BTreeMap::new(),
        }
    }
}

fn default_test_timeout() -> u64 {
    1800
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskDefinitionConfig {
    /// The task definition file, relative to tugboat.toml's folder.
    pub file: PathBuf,
    /// The containers that get the release's image.
    pub containers: Vec<String>,
}

/// A loaded project: the config, the task definition it names, and where they live.
#[derive(Clone, Debug, PartialEq)]
pub struct Project {
    pub config: Config,
    pub config_file: PathBuf,
    /// tugboat.toml's folder; relative paths in the config are relative to it.
    pub root: PathBuf,
    pub task_definition: TaskDefinition,
    pub task_definition_file: PathBuf,
    /// The task definition of each `[services.NAME]`, loaded and checked (empty without
    /// `[services]`).
    pub services: BTreeMap<String, ServiceDefinition>,
}

impl Project {
    /// Loads `tugboat.toml` and its task definition, reading `${VAR}` from the process
    /// environment.
    pub fn load(config_file: &Path) -> Result<Self, ConfigError> {
        Self::load_with(config_file, &|name| std::env::var(name).ok())
    }

    /// Like [`Project::load`], with variables from `lookup`.
    pub fn load_with(
        config_file: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(config_file).map_err(|err| {
            ConfigError::invalid(config_file, "$", "cannot read the config file")
                .with_value(err.to_string())
                .with_help("pass --config PATH, or run `tugboat init` to write one")
        })?;
        let config = Config::parse(config_file, &text, lookup)?;
        let root = config_file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let task_definition_file = root.join(&config.task_definition.file);
        let task_definition = TaskDefinition::load(&task_definition_file)?;
        config.check_against(config_file, &task_definition)?;
        let services = fleet::load_services(&config, config_file, &root)?;
        Ok(Self {
            config,
            config_file: config_file.to_path_buf(),
            root,
            task_definition,
            task_definition_file,
            services,
        })
    }

    /// A project whose task definition comes from elsewhere (the service's current
    /// revision, for the Lambda front end packaged without the file).
    pub fn from_parts(
        config: Config,
        config_file: PathBuf,
        task_definition: TaskDefinition,
    ) -> Result<Self, ConfigError> {
        config.check_against(&config_file, &task_definition)?;
        let root = config_file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let task_definition_file = root.join(&config.task_definition.file);
        let services = fleet::load_services(&config, &config_file, &root)?;
        Ok(Self {
            config,
            config_file,
            root,
            task_definition,
            task_definition_file,
            services,
        })
    }

    pub fn environment(&self, name: &str) -> Result<&EnvironmentConfig, ConfigError> {
        self.config.environment(&self.config_file, name)
    }

    /// The service an environment deploys to.
    pub fn target(&self, environment: &str) -> Result<crate::model::DeployTarget, ConfigError> {
        let env = self.environment(environment)?;
        Ok(env.target(&self.config.app.name, environment))
    }
}

impl Config {
    /// Parses and validates a config text; `file` is only used in error messages.
    pub fn parse(
        file: &Path,
        text: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        // An error about a value a `${VAR}` filled names the variable, never the value
        // (it may be a secret).
        let mut from_variables = BTreeMap::new();
        if let Ok(raw) = toml::from_str::<toml::Value>(text) {
            variable_keys(&raw, "", &mut from_variables);
        }
        Self::parse_expanded(file, text, lookup).map_err(|err| err.hiding(&from_variables))
    }

    fn parse_expanded(
        file: &Path,
        text: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut value: toml::Value = toml::from_str(text).map_err(|err| {
            let message = err.message().to_string();
            let line = err
                .span()
                // 1 + the newlines before the error (`lines()` would miss a line that
                // the error starts).
                .map(|span| {
                    let before = &text.as_bytes()[..span.start.min(text.len())];
                    1 + before.iter().filter(|b| **b == b'\n').count()
                });
            let key = duplicate_key(&message)
                .or_else(|| line.map(|l| format!("line {l}")))
                .unwrap_or_else(|| "$".to_string());
            ConfigError::invalid(file, key, "is not valid TOML")
                .with_value(message.trim().to_string())
                .with_help("see examples/cv-matcher/tugboat.toml for a complete file")
        })?;
        interpolate(file, &mut value, "", lookup)?;
        let config: Config = serde_path_to_error::deserialize(value).map_err(|err| {
            let path = err.path().to_string();
            let message = err.into_inner().to_string();
            serde_error(file, &path, &message)
        })?;
        let mut config = config;
        // An empty URL or channel (`${APP_URL:-}` with APP_URL unset) means "none".
        for env in config.environments.values_mut() {
            if env
                .verify
                .url
                .as_deref()
                .is_some_and(|u| u.trim().is_empty())
            {
                env.verify.url = None;
            }
            if env
                .notify
                .slack_channel
                .as_deref()
                .is_some_and(|c| c.trim().is_empty())
            {
                env.notify.slack_channel = None;
            }
        }
        config.validate(file)?;
        Ok(config)
    }

    /// Cross-checks the config with the task definition it names.
    pub fn check_against(
        &self,
        file: &Path,
        definition: &TaskDefinition,
    ) -> Result<(), ConfigError> {
        for (index, name) in self.task_definition.containers.iter().enumerate() {
            if definition.container(name).is_none() {
                let known: Vec<&str> = definition
                    .container_definitions
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                return Err(ConfigError::invalid(
                    file,
                    format!("task_definition.containers[{index}]"),
                    "names no container of the task definition",
                )
                .with_value(format!("{name:?}"))
                .with_help(format!(
                    "the task definition's containers are: {}",
                    known.join(", ")
                )));
            }
        }
        for (env_name, env) in &self.environments {
            for (index, task) in env.before_deploy.iter().enumerate() {
                let Some(container) = task.container_in(&self.task_definition.containers) else {
                    continue;
                };
                if definition.container(container).is_none() {
                    let known: Vec<&str> = definition
                        .container_definitions
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect();
                    return Err(ConfigError::invalid(
                        file,
                        format!("environments.{env_name}.before_deploy[{index}].container"),
                        "names no container of the task definition",
                    )
                    .with_value(format!("{container:?}"))
                    .with_help(format!(
                        "the task definition's containers are: {}",
                        known.join(", ")
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn environment(&self, file: &Path, name: &str) -> Result<&EnvironmentConfig, ConfigError> {
        self.environments.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.environments.keys().map(String::as_str).collect();
            ConfigError::invalid(file, "environments", "has no such environment")
                .with_value(format!("{name:?}"))
                .with_help(format!("--env takes one of: {}", known.join(", ")))
        })
    }
}
