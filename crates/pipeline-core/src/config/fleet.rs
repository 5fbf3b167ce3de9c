//! A fleet: `[services.NAME]` entries that share the app's image build, each with its own
//! task definition, and each environment's view of them (`services`, `regions`,
//! `on_failure`). [`Project::fleet_units`] derives, for every service and region of an
//! environment, the single-service project the orchestrator already knows how to release:
//! its own environment name (so its own lock and records), cluster, service and task
//! definition.

use super::environment::{EnvironmentConfig, TargetKind, VerifySettings};
use super::errors::ConfigError;
use super::validate::valid_name;
use super::{Config, Project, TaskDefinitionConfig};
use crate::task_definition::TaskDefinition;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One service of a fleet (`[services.web]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The task definition file, relative to tugboat.toml's folder; the app's
    /// `[task_definition] file` when absent.
    #[serde(default)]
    pub task_definition: Option<PathBuf>,
    /// The containers that get the release's image; the app's `[task_definition]
    /// containers` when absent.
    #[serde(default)]
    pub containers: Option<Vec<String>>,
    /// The ECS service name, a pattern like the environment's `service` (which it replaces).
    #[serde(default)]
    pub service: Option<String>,
    /// Replaces the environment's `desired_count` for this service.
    #[serde(default)]
    pub desired_count: Option<u32>,
    /// Replaces the environment's `[verify]` for this service.
    #[serde(default)]
    pub verify: Option<VerifySettings>,
    /// This service's one-off tasks (`[[services.NAME.before_deploy]]`), run before its
    /// service moves in each environment (and region) it is released to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub before_deploy: Vec<super::one_off::OneOffTaskConfig>,
}

/// A region an environment releases to: its name (the environment's cluster and service
/// patterns apply), or a table with its own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RegionEntry {
    Name(String),
    Table(RegionTable),
}

/// `{ name = "eu-west-1", cluster = "web-eu" }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionTable {
    pub name: String,
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub service: Option<String>,
    /// The environment's services this region runs; all of them when absent.
    #[serde(default)]
    pub services: Option<Vec<String>>,
}

impl RegionEntry {
    pub fn name(&self) -> &str {
        match self {
            Self::Name(name) => name,
            Self::Table(table) => &table.name,
        }
    }

    fn cluster(&self) -> Option<&str> {
        match self {
            Self::Name(_) => None,
            Self::Table(table) => table.cluster.as_deref(),
        }
    }

    fn service(&self) -> Option<&str> {
        match self {
            Self::Name(_) => None,
            Self::Table(table) => table.service.as_deref(),
        }
    }

    /// Whether this region runs `service`.
    fn runs(&self, service: &str) -> bool {
        match self {
            Self::Name(_) => true,
            Self::Table(table) => table
                .services
                .as_ref()
                .is_none_or(|names| names.iter().any(|n| n == service)),
        }
    }
}

/// What a fleet release does when a service of it fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Every service already released in the run is rolled back too, newest first.
    #[default]
    RollbackAll,
    /// Only the services that failed are rolled back; the others stay on the release.
    RollbackFailed,
}

/// A service's task definition as loaded.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceDefinition {
    pub file: PathBuf,
    pub definition: TaskDefinition,
}

/// One service of a fleet in one region: what one orchestrator run releases.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetUnit {
    /// The `[services]` name (`web`).
    pub service: String,
    pub region: Option<String>,
    /// The environment of [`FleetUnit::project`] this unit is, which names its lock and
    /// records: `production.web`, or `production.web.eu-west-1` for an environment with
    /// `regions`.
    pub environment: String,
    /// The single-service project (no `[services]`) whose environment
    /// [`FleetUnit::environment`] is this unit.
    pub project: Project,
}

impl FleetUnit {
    /// `web`, or `web@eu-west-1` in an environment with regions: how people see it.
    pub fn label(&self) -> String {
        match &self.region {
            Some(region) => format!("{}@{region}", self.service),
            None => self.service.clone(),
        }
    }
}

/// The environment name a service's releases are kept under (its lock and records).
pub fn unit_environment(environment: &str, service: &str, region: Option<&str>) -> String {
    match region {
        Some(region) => format!("{environment}.{service}.{region}"),
        None => format!("{environment}.{service}"),
    }
}

const PLACEHOLDERS: &str = "{app}, {service}, {region}, {environment}";

fn expand(pattern: &str, app: &str, service: &str, region: &str, environment: &str) -> String {
    pattern
        .replace("{app}", app)
        .replace("{service}", service)
        .replace("{region}", region)
        .replace("{environment}", environment)
}

impl Project {
    /// Whether the config has `[services]`.
    pub fn is_fleet(&self) -> bool {
        !self.config.services.is_empty()
    }

    /// The failure policy of a fleet environment.
    pub fn failure_policy(&self, environment: &str) -> Result<FailurePolicy, ConfigError> {
        Ok(self
            .environment(environment)?
            .on_failure
            .unwrap_or_default())
    }

    /// Every service of `environment` in every region, in `[services]` order then region
    /// order; only the services named in `only` when it is not empty (an unknown name is
    /// bad input naming the ones there are).
    pub fn fleet_units(
        &self,
        environment: &str,
        only: &[String],
    ) -> Result<Vec<FleetUnit>, ConfigError> {
        let env = self.environment(environment)?;
        let services = self.config.services_of(env);
        for name in only {
            if !services.contains(&name.as_str()) {
                return Err(ConfigError::invalid(
                    &self.config_file,
                    format!("environments.{environment}.services"),
                    "has no such service (--service)",
                )
                .with_value(format!("{name:?}"))
                .with_help(format!("--service takes one of: {}", services.join(", "))));
            }
        }
        let mut units = Vec::new();
        for service in services {
            if !only.is_empty() && !only.iter().any(|o| o == service) {
                continue;
            }
            let project = self.service_project(service)?;
            for region in self.config.regions_of(env, service) {
                let key = unit_environment(environment, service, region);
                units.push(FleetUnit {
                    service: service.to_string(),
                    region: region.map(str::to_string),
                    environment: key,
                    project: project.clone(),
                });
            }
        }
        Ok(units)
    }

    /// The single-service project of one `[services]` entry: its task definition, and one
    /// environment per (environment, region) that releases it, or any service sharing its
    /// task definition family, so that pruning spares what every one of them needs.
    fn service_project(&self, service: &str) -> Result<Project, ConfigError> {
        let definition = self.services.get(service).ok_or_else(|| {
            ConfigError::invalid(
                &self.config_file,
                format!("services.{service}"),
                "has no loaded task definition",
            )
            .with_help("load the project with Project::load")
        })?;
        let family = &definition.definition.family;
        let config = self.config.service_config(service, &|other| {
            self.services
                .get(other)
                .is_some_and(|d| &d.definition.family == family)
        });
        Ok(Project {
            config,
            config_file: self.config_file.clone(),
            root: self.root.clone(),
            task_definition: definition.definition.clone(),
            task_definition_file: definition.file.clone(),
            services: BTreeMap::new(),
        })
    }
}

/// One service of a fleet in one region as the config alone names it (no task
/// definition loaded): what the Lambda routes events to.
#[derive(Clone, Debug, PartialEq)]
pub struct UnitTarget {
    /// The fleet environment (`production`).
    pub fleet_environment: String,
    /// The `[services]` name (`web`).
    pub service: String,
    pub region: Option<String>,
    /// The environment its lock and records are under (`production.web`).
    pub environment: String,
    /// What it is released with: the fleet environment's settings for this service.
    pub config: EnvironmentConfig,
}

impl Config {
    /// Every service of every fleet environment in every region (empty without
    /// `[services]`), in environment, `[services]` then region order.
    pub fn fleet_targets(&self) -> Vec<UnitTarget> {
        let mut targets = Vec::new();
        if self.services.is_empty() {
            return targets;
        }
        for (env_name, env) in &self.environments {
            for service in self.services_of(env) {
                for region in self.regions_of(env, service) {
                    targets.push(UnitTarget {
                        fleet_environment: env_name.clone(),
                        service: service.to_string(),
                        region: region.map(str::to_string),
                        environment: unit_environment(env_name, service, region),
                        config: self.unit_config(env_name, env, service, region),
                    });
                }
            }
        }
        targets
    }

    /// The single-service config one `[services]` entry is released with: no
    /// `[services]`, the service's task definition and containers, and as environments
    /// the units (environment × region) of the service and of every service that
    /// `shares_family` with it, so that pruning spares what any of them needs.
    pub fn service_config(&self, service: &str, shares_family: &dyn Fn(&str) -> bool) -> Config {
        let mut config = self.clone();
        config.services = BTreeMap::new();
        config.task_definition = self.task_definition_of(service);
        config.environments = self
            .fleet_targets()
            .into_iter()
            .filter(|unit| unit.service == service || shares_family(&unit.service))
            .map(|unit| (unit.environment, unit.config))
            .collect();
        config
    }
}

impl Config {
    /// The services an environment releases: its `services`, else all of them.
    pub fn services_of<'a>(&'a self, env: &'a EnvironmentConfig) -> Vec<&'a str> {
        match &env.services {
            Some(names) => names.iter().map(String::as_str).collect(),
            None => self.services.keys().map(String::as_str).collect(),
        }
    }

    /// The regions an environment releases `service` to: those of its `regions` that
    /// run it, else its one region.
    fn regions_of<'a>(&'a self, env: &'a EnvironmentConfig, service: &str) -> Vec<Option<&'a str>> {
        if env.regions.is_empty() {
            vec![None]
        } else {
            env.regions
                .iter()
                .filter(|r| r.runs(service))
                .map(|r| Some(r.name()))
                .collect()
        }
    }

    fn task_definition_of(&self, service: &str) -> TaskDefinitionConfig {
        let entry = self.services.get(service).cloned().unwrap_or_default();
        TaskDefinitionConfig {
            file: entry
                .task_definition
                .unwrap_or_else(|| self.task_definition.file.clone()),
            containers: entry
                .containers
                .unwrap_or_else(|| self.task_definition.containers.clone()),
        }
    }

    /// The environment one service in one region is released with: the fleet
    /// environment's settings with its cluster and service names expanded and the
    /// service's own desired count and checks.
    fn unit_config(
        &self,
        env_name: &str,
        env: &EnvironmentConfig,
        service: &str,
        region: Option<&str>,
    ) -> EnvironmentConfig {
        let entry = self.services.get(service).cloned().unwrap_or_default();
        let region_entry = region.and_then(|r| env.regions.iter().find(|e| e.name() == r));
        let region_name = region.or(env.region.as_deref()).unwrap_or_default();
        let cluster = region_entry
            .and_then(RegionEntry::cluster)
            .unwrap_or(&env.cluster);
        let service_pattern = entry
            .service
            .as_deref()
            .or(region_entry.and_then(RegionEntry::service))
            .unwrap_or(&env.service);
        let app = &self.app.name;
        let mut unit = env.clone();
        unit.cluster = expand(cluster, app, service, region_name, env_name);
        unit.service = expand(service_pattern, app, service, region_name, env_name);
        if let Some(region) = region {
            unit.region = Some(region.to_string());
        }
        if entry.desired_count.is_some() {
            unit.desired_count = entry.desired_count;
        }
        if let Some(verify) = entry.verify {
            unit.verify = verify;
        }
        unit.before_deploy = entry.before_deploy;
        // The fleet environment routes git refs and image tags; its units only release.
        unit.branches.clear();
        unit.tags.clear();
        unit.image_tags.clear();
        unit.services = None;
        unit.regions = Vec::new();
        unit.on_failure = None;
        unit
    }

    /// The fleet's checks: services named, environments naming known services, the
    /// patterns expanding to one ECS service per service and region.
    pub(super) fn validate_fleet(&self, file: &Path) -> Result<(), ConfigError> {
        for (name, env) in &self.environments {
            let key = |field: &str| format!("environments.{name}.{field}");
            if self.services.is_empty() {
                let fleet_field = [
                    ("services", env.services.is_some()),
                    ("regions", !env.regions.is_empty()),
                    ("on_failure", env.on_failure.is_some()),
                ]
                .into_iter()
                .find(|(_, set)| *set);
                if let Some((field, _)) = fleet_field {
                    return Err(ConfigError::invalid(
                        file,
                        key(field),
                        "is a fleet setting, but tugboat.toml has no [services]",
                    )
                    .with_help(format!(
                        "add a [services.NAME] table for each service, or remove `{field}`"
                    )));
                }
            }
        }
        for (name, service) in &self.services {
            let key = |field: &str| format!("services.{name}.{field}");
            if !valid_name(name) {
                return Err(ConfigError::invalid(
                    file,
                    format!("services.{name}"),
                    "service names must be letters, digits, hyphens or underscores",
                )
                .with_value(format!("{name:?}")));
            }
            super::one_off::validate_one_off_tasks(
                file,
                &format!("services.{name}"),
                &service.before_deploy,
            )?;
            if service.containers.as_ref().is_some_and(Vec::is_empty) {
                return Err(ConfigError::invalid(
                    file,
                    key("containers"),
                    "must name at least one container to receive the image",
                )
                .with_value("[]")
                .with_help(format!("for example containers = [\"{name}\"]")));
            }
            if service.desired_count == Some(0) {
                return Err(ConfigError::invalid(
                    file,
                    key("desired_count"),
                    "must be at least 1 (a release needs a running task to verify)",
                )
                .with_value("0"));
            }
        }
        if self.services.is_empty() {
            return Ok(());
        }
        for (name, env) in &self.environments {
            self.validate_fleet_environment(file, name, env)?;
        }
        Ok(())
    }

    fn validate_fleet_environment(
        &self,
        file: &Path,
        name: &str,
        env: &EnvironmentConfig,
    ) -> Result<(), ConfigError> {
        let key = |field: &str| format!("environments.{name}.{field}");
        let known: Vec<&str> = self.services.keys().map(String::as_str).collect();
        if !env.before_deploy.is_empty() {
            return Err(ConfigError::invalid(
                file,
                key("before_deploy"),
                "in a fleet would run once for every service",
            )
            .with_help(
                "put it under [[services.NAME.before_deploy]] of the service whose release runs it",
            ));
        }
        if env.target == TargetKind::Local {
            return Err(ConfigError::invalid(
                file,
                key("target"),
                "a fleet (tugboat.toml with [services]) releases to ECS only",
            )
            .with_value("\"local\"")
            .with_help("use target = \"aws\" for this environment"));
        }
        if let Some(names) = &env.services {
            if names.is_empty() {
                return Err(ConfigError::invalid(
                    file,
                    key("services"),
                    "must name at least one service",
                )
                .with_value("[]")
                .with_help(format!(
                    "name some of {}, or remove `services` to release all",
                    known.join(", ")
                )));
            }
            let mut seen = BTreeSet::new();
            for (index, service) in names.iter().enumerate() {
                if !self.services.contains_key(service) || !seen.insert(service) {
                    return Err(ConfigError::invalid(
                        file,
                        format!("environments.{name}.services[{index}]"),
                        if seen.contains(service) && self.services.contains_key(service) {
                            "names a service twice"
                        } else {
                            "names no [services] entry"
                        },
                    )
                    .with_value(format!("{service:?}"))
                    .with_help(format!("the services are: {}", known.join(", "))));
                }
            }
        }
        let mut regions = BTreeSet::new();
        for (index, region) in env.regions.iter().enumerate() {
            if !super::validate::is_region(region.name()) || !regions.insert(region.name()) {
                return Err(ConfigError::invalid(
                    file,
                    format!("environments.{name}.regions[{index}]"),
                    "is not an AWS region, or is listed twice",
                )
                .with_value(format!("{:?}", region.name()))
                .with_help("for example regions = [\"us-east-1\", \"eu-west-1\"]"));
            }
            if let RegionEntry::Table(RegionTable {
                services: Some(names),
                ..
            }) = region
            {
                let of_env = self.services_of(env);
                for (i, service) in names.iter().enumerate() {
                    if !of_env.contains(&service.as_str()) {
                        return Err(ConfigError::invalid(
                            file,
                            format!("environments.{name}.regions[{index}].services[{i}]"),
                            "names no service of this environment",
                        )
                        .with_value(format!("{service:?}"))
                        .with_help(format!(
                            "the environment's services are: {}",
                            of_env.join(", ")
                        )));
                    }
                }
            }
        }
        // Every (region, cluster, service) once: two fleet services on one ECS service
        // would release over each other.
        let mut targets: BTreeMap<(String, String, String), &str> = BTreeMap::new();
        for service in self.services_of(env) {
            for region in self.regions_of(env, service) {
                let unit = self.unit_config(name, env, service, region);
                let no_region = unit.region.is_none();
                let patterns = [
                    ("cluster", &unit.cluster, env.cluster.contains("{region}")),
                    ("service", &unit.service, env.service.contains("{region}")),
                ];
                for (field, value, wants_region) in patterns {
                    if value.contains('{') || value.contains('}') || (wants_region && no_region) {
                        return Err(ConfigError::invalid(
                            file,
                            key(field),
                            "has a placeholder it cannot fill",
                        )
                        .with_value(format!("{value:?}"))
                        .with_help(format!(
                            "the placeholders are {PLACEHOLDERS}; {{region}} needs `region` or `regions`"
                        )));
                    }
                }
                let target = (
                    unit.region.clone().unwrap_or_default(),
                    unit.cluster.clone(),
                    unit.service.clone(),
                );
                if let Some(other) = targets.insert(target, service) {
                    return Err(ConfigError::invalid(
                        file,
                        key("service"),
                        format!(
                            "gives services {other} and {service} the same ECS service {}/{}",
                            unit.cluster, unit.service
                        ),
                    )
                    .with_value(format!("{:?}", env.service))
                    .with_help(
                        "put {service} in the pattern, e.g. service = \"{app}-{service}\"",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Loads and checks the task definition of every `[services]` entry.
pub(super) fn load_services(
    config: &Config,
    config_file: &Path,
    root: &Path,
) -> Result<BTreeMap<String, ServiceDefinition>, ConfigError> {
    let mut loaded = BTreeMap::new();
    for (name, service) in &config.services {
        let wanted = config.task_definition_of(name);
        let file = root.join(&wanted.file);
        let definition = TaskDefinition::load(&file)?;
        for (index, container) in wanted.containers.iter().enumerate() {
            if definition.container(container).is_none() {
                let there: Vec<&str> = definition
                    .container_definitions
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                return Err(ConfigError::invalid(
                    config_file,
                    format!("services.{name}.containers[{index}]"),
                    format!("names no container of {}", file.display()),
                )
                .with_value(format!("{container:?}"))
                .with_help(format!("its containers are: {}", there.join(", "))));
            }
        }
        for (index, task) in service.before_deploy.iter().enumerate() {
            let Some(container) = task.container_in(&wanted.containers) else {
                continue;
            };
            if definition.container(container).is_none() {
                let there: Vec<&str> = definition
                    .container_definitions
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                return Err(ConfigError::invalid(
                    config_file,
                    format!("services.{name}.before_deploy[{index}].container"),
                    format!("names no container of {}", file.display()),
                )
                .with_value(format!("{container:?}"))
                .with_help(format!("its containers are: {}", there.join(", "))));
            }
        }
        loaded.insert(name.clone(), ServiceDefinition { file, definition });
    }
    Ok(loaded)
}
