//! `tugboat.toml`: the app, its image, its tests, its task definition and its named
//! environments. `${VAR}` and `${VAR:-default}` in any string are read from the process
//! environment; `$${` writes a literal `${`.

use crate::task_definition::{TaskDefinition, TaskDefinitionError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The default config file name.
pub const DEFAULT_CONFIG_FILE: &str = "tugboat.toml";

/// The configuration (or the task definition it names) is wrong. Always names the file,
/// the key and, where there is one, the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: `{key}`: {problem}{}{}", value.as_ref().map(|v| format!(" (found {v})")).unwrap_or_default(), help.as_ref().map(|h| format!("\n  help: {h}")).unwrap_or_default())]
    Invalid {
        file: PathBuf,
        key: String,
        value: Option<String>,
        problem: String,
        help: Option<String>,
    },
    #[error(transparent)]
    TaskDefinition(#[from] TaskDefinitionError),
}

impl ConfigError {
    fn invalid(file: &Path, key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Invalid {
            file: file.to_path_buf(),
            key: key.into(),
            value: None,
            problem: problem.into(),
            help: None,
        }
    }

    fn with_value(mut self, found: impl Into<String>) -> Self {
        if let Self::Invalid { value, .. } = &mut self {
            *value = Some(found.into());
        }
        self
    }

    fn with_help(mut self, fix: impl Into<String>) -> Self {
        if let Self::Invalid { help, .. } = &mut self {
            *help = Some(fix.into());
        }
        self
    }

    /// The same error with the value replaced by where it came from when a `${VAR}` of
    /// `from_variables` (key → the text in the file) filled the key or a part of it.
    fn hiding(mut self, from_variables: &BTreeMap<String, String>) -> Self {
        if let Self::Invalid { key, value, .. } = &mut self {
            let source = from_variables.iter().find(|(filled, _)| {
                *filled == key
                    || key.starts_with(&format!("{filled}."))
                    || key.starts_with(&format!("{filled}["))
                    || filled.starts_with(&format!("{key}."))
                    || filled.starts_with(&format!("{key}["))
            });
            if let (Some((_, text)), Some(shown)) = (source, value.as_mut()) {
                *shown = format!("the value of {text}");
            }
        }
        self
    }

    /// The key the error is about (`environments.staging.cluster`).
    pub fn key(&self) -> &str {
        match self {
            Self::Invalid { key, .. } => key,
            Self::TaskDefinition(err) => &err.key,
        }
    }
}

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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentConfig {
    /// Where releases run: ECS (the default) or this machine's Docker engine.
    #[serde(default)]
    pub target: TargetKind,
    /// The ECS cluster (required for `target = "aws"`).
    #[serde(default)]
    pub cluster: String,
    /// The ECS service (required for `target = "aws"`).
    #[serde(default)]
    pub service: String,
    /// Settings of the local Docker target.
    #[serde(default)]
    pub local: LocalSettings,
    #[serde(default)]
    pub region: Option<String>,
    /// Branches that deploy here (`develop`).
    #[serde(default)]
    pub branches: Vec<String>,
    /// Tag patterns that deploy here (`v*`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Patterns of image tags that, pushed to the repository, deploy here (the Lambda
    /// front end's ECR push rule); an environment whose `tags` match the image tag wins.
    #[serde(default)]
    pub image_tags: Vec<String>,
    /// Parameter Store path whose parameters become `secrets` (`/cv-matcher/prod/`).
    #[serde(default)]
    pub secrets_path: Option<String>,
    /// The parameter names under `secrets_path` to expose; all of them when absent.
    #[serde(default)]
    pub secrets: Option<Vec<String>>,
    /// Variables added to the image containers' `environment`.
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// The task execution role (pulls the image, reads the secrets, writes logs), set
    /// on the task definition when its file has none.
    #[serde(default)]
    pub execution_role_arn: Option<String>,
    /// The role the app's code runs with, set when the file has none.
    #[serde(default)]
    pub task_role_arn: Option<String>,
    #[serde(default)]
    pub desired_count: Option<u32>,
    #[serde(default)]
    pub deploy: DeploySettings,
    #[serde(default)]
    pub verify: VerifySettings,
    #[serde(default)]
    pub rollback: RollbackPolicy,
    #[serde(default)]
    pub notify: NotifySettings,
    #[serde(default)]
    pub records: Option<RecordsSettings>,
    /// CloudWatch alarms and the log group, reconciled by `tugboat infra apply`.
    #[serde(default)]
    pub monitoring: Option<MonitoringSettings>,
    /// Target-tracking auto scaling, reconciled by `tugboat infra apply`.
    #[serde(default)]
    pub scaling: Option<ScalingSettings>,
    /// The security-scan gate: images with findings at or above a severity are refused.
    #[serde(default)]
    pub scan: ScanSettings,
    /// How ECS rolls a release out: rolling (the default), blue/green, canary or linear.
    #[serde(default)]
    pub strategy: StrategySettings,
}

/// ECS's deployment strategy (`deploymentConfiguration.strategy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StrategyKind {
    /// Replace tasks in place (today's behaviour; nothing about the service is changed).
    #[default]
    Rolling,
    /// Start the new revision beside the old one, shift all traffic at once.
    BlueGreen,
    /// Shift `canary_percent` of the traffic, bake, then the rest.
    Canary,
    /// Shift `linear_step_percent` at a time, baking after each step.
    Linear,
}

impl StrategyKind {
    /// The name ECS uses (`BLUE_GREEN`).
    pub fn ecs_name(self) -> &'static str {
        match self {
            Self::Rolling => "ROLLING",
            Self::BlueGreen => "BLUE_GREEN",
            Self::Canary => "CANARY",
            Self::Linear => "LINEAR",
        }
    }
}

/// `[environments.X.strategy]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StrategySettings {
    #[serde(default)]
    pub kind: StrategyKind,
    /// How long ECS keeps the old revision after all traffic moved (0..=1440).
    #[serde(default)]
    pub bake_minutes: Option<u32>,
    #[serde(default)]
    pub canary_percent: Option<f64>,
    #[serde(default)]
    pub canary_bake_minutes: Option<u32>,
    #[serde(default)]
    pub linear_step_percent: Option<f64>,
    #[serde(default)]
    pub linear_step_bake_minutes: Option<u32>,
    /// The second target group of the load balancer (`advancedConfiguration`).
    #[serde(default)]
    pub alternate_target_group_arn: Option<String>,
    /// The listener rule that carries production traffic.
    #[serde(default)]
    pub production_listener_rule: Option<String>,
    /// The listener rule that carries test traffic.
    #[serde(default)]
    pub test_listener_rule: Option<String>,
    /// The role ECS uses to change the load balancer (`advancedConfiguration.roleArn`).
    #[serde(default)]
    pub role_arn: Option<String>,
    /// A Lambda ECS calls at lifecycle stages of the deployment.
    #[serde(default)]
    pub lifecycle_hook: Option<LifecycleHookSettings>,
}

/// `[environments.X.strategy.lifecycle_hook]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleHookSettings {
    pub function_arn: String,
    /// The role ECS assumes to invoke the function.
    pub role_arn: String,
    pub stages: Vec<LifecycleStage>,
}

/// A stage of an ECS service deployment at which a hook may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LifecycleStage {
    ReconcileService,
    PreScaleUp,
    PostScaleUp,
    TestTrafficShift,
    PostTestTrafficShift,
    PreProductionTrafficShift,
    ProductionTrafficShift,
    PostProductionTrafficShift,
}

impl LifecycleStage {
    /// The name ECS uses (`POST_TEST_TRAFFIC_SHIFT`).
    pub fn ecs_name(self) -> &'static str {
        match self {
            Self::ReconcileService => "RECONCILE_SERVICE",
            Self::PreScaleUp => "PRE_SCALE_UP",
            Self::PostScaleUp => "POST_SCALE_UP",
            Self::TestTrafficShift => "TEST_TRAFFIC_SHIFT",
            Self::PostTestTrafficShift => "POST_TEST_TRAFFIC_SHIFT",
            Self::PreProductionTrafficShift => "PRE_PRODUCTION_TRAFFIC_SHIFT",
            Self::ProductionTrafficShift => "PRODUCTION_TRAFFIC_SHIFT",
            Self::PostProductionTrafficShift => "POST_PRODUCTION_TRAFFIC_SHIFT",
        }
    }
}

/// The security-scan gate of an environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanSettings {
    /// Refuse images with a finding at or above this severity; no gate when absent.
    #[serde(default)]
    pub block_at: Option<crate::stages::Severity>,
    /// How long to wait for a scan that is still running.
    #[serde(default = "default_scan_wait")]
    pub wait_seconds: u64,
    /// How often to look while it runs.
    #[serde(default = "default_scan_poll")]
    pub poll_seconds: f64,
}

impl Default for ScanSettings {
    fn default() -> Self {
        Self {
            block_at: None,
            wait_seconds: default_scan_wait(),
            poll_seconds: default_scan_poll(),
        }
    }
}

impl ScanSettings {
    /// `prefix` is the table's key (`environments.production.scan`).
    fn validate(&self, file: &Path, prefix: &str) -> Result<(), ConfigError> {
        check_seconds(file, &format!("{prefix}.wait_seconds"), self.wait_seconds)?;
        let poll = self.poll_seconds;
        if !(poll > 0.0 && poll <= 60.0) {
            return Err(ConfigError::invalid(
                file,
                format!("{prefix}.poll_seconds"),
                "must be more than 0 and at most 60",
            )
            .with_value(poll.to_string())
            .with_help("the default, 5, looks at a running scan every 5 seconds"));
        }
        Ok(())
    }
}

fn default_scan_wait() -> u64 {
    300
}

fn default_scan_poll() -> f64 {
    5.0
}

/// Where an environment's releases run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// An ECS service.
    #[default]
    Aws,
    /// Containers on this machine's Docker engine.
    Local,
}

/// The local Docker target: a stable port in front of the release's containers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSettings {
    /// The port the service answers on, whichever release serves (127.0.0.1).
    #[serde(default = "default_local_port")]
    pub port: u16,
    /// Releases get host ports from here up, so two releases can overlap.
    #[serde(default = "default_local_release_ports")]
    pub release_ports_from: u16,
    /// `NAME=value` lines that `secrets` entries resolve to instead of Parameter Store.
    #[serde(default)]
    pub secrets_file: Option<PathBuf>,
    /// A registry on loopback to push to (`127.0.0.1:5000`); images stay in the engine without one.
    #[serde(default)]
    pub registry: Option<String>,
}

impl Default for LocalSettings {
    fn default() -> Self {
        Self {
            port: default_local_port(),
            release_ports_from: default_local_release_ports(),
            secrets_file: None,
            registry: None,
        }
    }
}

fn default_local_port() -> u16 {
    8080
}

fn default_local_release_ports() -> u16 {
    18000
}

/// What a monitoring alarm watches; tugboat knows each one's metric and dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmKind {
    /// Service CPUUtilization (AWS/ECS), percent.
    CpuHigh,
    /// Service MemoryUtilization (AWS/ECS), percent.
    MemoryHigh,
    /// Target 5xx responses as a percentage of requests (AWS/ApplicationELB); needs `load_balancer`.
    #[serde(rename = "http_5xx_rate")]
    Http5xxRate,
    /// Average TargetResponseTime (AWS/ApplicationELB), seconds; needs `load_balancer`.
    ResponseTime,
    /// Tasks that should run but do not: Container Insights `DesiredTaskCount` minus
    /// `RunningTaskCount` (ECS/ContainerInsights, metric math), count.
    FailedTasks,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmSpec {
    pub name: String,
    pub kind: AlarmKind,
    /// Fires above this (percent, seconds or count, by kind).
    pub threshold: f64,
    #[serde(default = "default_alarm_period")]
    pub period_seconds: u32,
    #[serde(default = "default_evaluation_periods")]
    pub evaluation_periods: u32,
    /// The ALB's metric dimension (`app/cv-matcher-alb/50dc6c495c0c9188`), for HTTP kinds.
    #[serde(default)]
    pub load_balancer: Option<String>,
    /// SNS topic ARNs to notify when the alarm fires.
    #[serde(default)]
    pub actions: Vec<String>,
}

fn default_alarm_period() -> u32 {
    60
}

fn default_evaluation_periods() -> u32 {
    3
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitoringSettings {
    /// The awslogs group (`/ecs/cv-matcher`); created with the retention below.
    #[serde(default)]
    pub log_group: Option<String>,
    #[serde(default = "default_log_retention")]
    pub log_retention_days: u32,
    #[serde(default)]
    pub alarms: Vec<AlarmSpec>,
}

fn default_log_retention() -> u32 {
    30
}

/// CloudWatch Logs accepts only these retention periods.
pub const LOG_RETENTION_DAYS: &[u32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalingSettings {
    pub min_tasks: u32,
    pub max_tasks: u32,
    /// Target tracking on ECSServiceAverageCPUUtilization, percent.
    #[serde(default = "default_cpu_target")]
    pub cpu_target: f64,
    #[serde(default = "default_cooldown")]
    pub scale_out_cooldown_seconds: u32,
    #[serde(default = "default_cooldown")]
    pub scale_in_cooldown_seconds: u32,
}

fn default_cpu_target() -> f64 {
    75.0
}

fn default_cooldown() -> u32 {
    300
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploySettings {
    /// How long a rollout may take before tugboat rolls it back.
    #[serde(default = "default_rollout_timeout")]
    pub timeout_seconds: u64,
    /// How often the rollout is looked at.
    #[serde(default = "default_poll_interval")]
    pub poll_interval_seconds: f64,
    #[serde(default)]
    pub force_new_deployment: bool,
    /// A deployment of the service that is still rolling out when a release starts (not
    /// tugboat's: it holds no lock) is waited for instead of refused (`--wait-for-deployment`).
    #[serde(default)]
    pub wait_for_other_deployments: bool,
    /// After a cancellation (SIGINT, SIGTERM, SIGHUP), how long the rollback it issued is
    /// followed before the run ends (GitHub Actions kills a cancelled step 10 s after SIGINT).
    #[serde(default = "default_cancel_grace")]
    pub cancel_grace_seconds: f64,
}

fn default_cancel_grace() -> f64 {
    5.0
}

impl Default for DeploySettings {
    fn default() -> Self {
        Self {
            timeout_seconds: default_rollout_timeout(),
            poll_interval_seconds: default_poll_interval(),
            force_new_deployment: false,
            wait_for_other_deployments: false,
            cancel_grace_seconds: default_cancel_grace(),
        }
    }
}

fn default_rollout_timeout() -> u64 {
    900
}

fn default_poll_interval() -> f64 {
    5.0
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySettings {
    /// The release's URL (`${APP_URL}`); no HTTP check without it.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default = "default_health_path")]
    pub health_path: String,
    #[serde(default = "default_expected_status")]
    pub expected_status: u16,
    /// Text the health response body must contain.
    #[serde(default)]
    pub body_contains: Option<String>,
    /// How long the HTTP check keeps retrying.
    #[serde(default = "default_verify_timeout")]
    pub timeout_seconds: u64,
    /// CloudWatch alarms that fail the release if they enter ALARM during the bake time.
    #[serde(default)]
    pub alarms: Vec<String>,
    /// How long the release is watched after it rolled out.
    #[serde(default)]
    pub bake_seconds: u64,
    /// Check that the targets of the service's load balancer target groups are healthy.
    #[serde(default = "yes")]
    pub target_health: bool,
    /// Fail the release on an alarm that is in ALARM already when it starts (by default
    /// only an alarm that goes into ALARM after the start fails it; one already firing
    /// is a warning).
    #[serde(default)]
    pub fail_on_firing_alarms: bool,
}

impl Default for VerifySettings {
    fn default() -> Self {
        Self {
            url: None,
            health_path: default_health_path(),
            expected_status: default_expected_status(),
            body_contains: None,
            timeout_seconds: default_verify_timeout(),
            alarms: Vec::new(),
            bake_seconds: 0,
            target_health: true,
            fail_on_firing_alarms: false,
        }
    }
}

fn default_health_path() -> String {
    "/health".to_string()
}

fn default_expected_status() -> u16 {
    200
}

fn default_verify_timeout() -> u64 {
    120
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackPolicy {
    /// Roll back automatically when a rollout or verification fails.
    #[serde(default = "yes")]
    pub automatic: bool,
    /// Task definition revisions kept after a successful release.
    #[serde(default = "default_keep_revisions")]
    pub keep_revisions: usize,
}

impl Default for RollbackPolicy {
    fn default() -> Self {
        Self {
            automatic: true,
            keep_revisions: default_keep_revisions(),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_keep_revisions() -> usize {
    10
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NotifySettings {
    /// Slack channel id (`${SLACK_CHANNEL_ID}`); the bot token comes from `SLACK_BOT_TOKEN`.
    #[serde(default)]
    pub slack_channel: Option<String>,
    /// Which events are sent; all of them when empty.
    #[serde(default)]
    pub on: Vec<crate::stages::NotificationKind>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordsSettings {
    /// S3 bucket for deploy records, test artifacts and the deploy lock.
    pub bucket: String,
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The deploy lock's lease: a run renews it every third of this while it holds the
    /// lock; a lock not renewed for this long (its run died) is taken over.
    #[serde(default = "default_lock_lease")]
    pub lock_lease_seconds: u64,
    /// Before leases, how old a lock had to be to be taken over. Still accepted so old
    /// configs load; a renewed lease replaces it and it is not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_expiry_seconds: Option<u64>,
}

/// The shortest deploy lock lease: renewed every third of it, at least once a second.
pub const MIN_LOCK_LEASE_SECONDS: u64 = 3;

fn default_prefix() -> String {
    "tugboat".to_string()
}

fn default_lock_lease() -> u64 {
    crate::model::LockHolder::DEFAULT_LEASE_SECONDS
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
        Ok(Self {
            config,
            config_file: config_file.to_path_buf(),
            root,
            task_definition,
            task_definition_file,
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
        Ok(Self {
            config,
            config_file,
            root,
            task_definition,
            task_definition_file,
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

impl EnvironmentConfig {
    /// The deploy lock's lease (`records.lock_lease_seconds`, or the default without a
    /// records bucket).
    pub fn lock_lease(&self) -> std::time::Duration {
        std::time::Duration::from_secs(
            self.records
                .as_ref()
                .map_or_else(default_lock_lease, |records| records.lock_lease_seconds),
        )
    }

    /// The service this environment (named `name`, of app `app`) deploys to.
    pub fn target(&self, app: &str, name: &str) -> crate::model::DeployTarget {
        crate::model::DeployTarget {
            app: app.to_string(),
            environment: name.to_string(),
            cluster: match (self.target, self.cluster.is_empty()) {
                (TargetKind::Local, true) => "local".to_string(),
                _ => self.cluster.clone(),
            },
            service: match (self.target, self.service.is_empty()) {
                (TargetKind::Local, true) => format!("{app}-{name}"),
                _ => self.service.clone(),
            },
            region: self.region.clone(),
        }
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

    fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        if !valid_name(&self.app.name) {
            return Err(ConfigError::invalid(
                file,
                "app.name",
                "must be letters, digits, hyphens or underscores",
            )
            .with_value(format!("{:?}", self.app.name))
            .with_help("for example name = \"cv-matcher\""));
        }
        let repo = &self.image.repository;
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
        if let Some(platform) = &self.image.platform {
            if !matches!(platform.as_str(), "linux/amd64" | "linux/arm64") {
                return Err(ConfigError::invalid(
                    file,
                    "image.platform",
                    "is not a Fargate platform",
                )
                .with_value(format!("{platform:?}"))
                .with_help("use \"linux/amd64\" or \"linux/arm64\" (Graviton)"));
            }
        }
        for (index, secret) in self.image.secrets.iter().enumerate() {
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
        for (index, artifact) in self.test.artifacts.iter().enumerate() {
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
                .with_help("name the file the tests write, relative to [test] workdir, e.g. \"coverage.xml\""));
            }
        }
        check_seconds(file, "test.timeout_seconds", self.test.timeout_seconds)?;
        if self.test.timeout_seconds == 0 {
            return Err(
                ConfigError::invalid(file, "test.timeout_seconds", "must be more than 0")
                    .with_value("0"),
            );
        }
        if self.task_definition.containers.is_empty() {
            return Err(ConfigError::invalid(
                file,
                "task_definition.containers",
                "must name at least one container to receive the image",
            )
            .with_value("[]")
            .with_help("for example containers = [\"cv-matcher\"]"));
        }
        if self.environments.is_empty() {
            return Err(ConfigError::invalid(
                file,
                "environments",
                "must define at least one environment",
            )
            .with_help("add a table such as [environments.staging]"));
        }
        let mut claimed: BTreeMap<String, &str> = BTreeMap::new();
        for (name, env) in &self.environments {
            let key = |field: &str| format!("environments.{name}.{field}");
            if !valid_name(name) {
                return Err(ConfigError::invalid(
                    file,
                    format!("environments.{name}"),
                    "environment names must be letters, digits, hyphens or underscores",
                )
                .with_value(format!("{name:?}")));
            }
            let aws_fields = if env.target == TargetKind::Aws {
                vec![("cluster", &env.cluster), ("service", &env.service)]
            } else {
                Vec::new()
            };
            if env.target == TargetKind::Local && env.local.port == 0 {
                return Err(ConfigError::invalid(
                    file,
                    key("local.port"),
                    "must be a port above 0",
                )
                .with_value("0"));
            }
            for (field, text) in aws_fields {
                if text.trim().is_empty() {
                    return Err(ConfigError::invalid(file, key(field), "must not be empty")
                        .with_value("\"\""));
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
            if env.desired_count == Some(0) {
                return Err(ConfigError::invalid(
                    file,
                    key("desired_count"),
                    "must be at least 1 (a release needs a running task to verify)",
                )
                .with_value("0"));
            }
            if env.deploy.timeout_seconds == 0 {
                return Err(ConfigError::invalid(
                    file,
                    key("deploy.timeout_seconds"),
                    "must be more than 0",
                )
                .with_value("0"));
            }
            let poll = env.deploy.poll_interval_seconds;
            if !(poll > 0.0 && poll <= 60.0) {
                return Err(ConfigError::invalid(
                    file,
                    key("deploy.poll_interval_seconds"),
                    "must be more than 0 and at most 60",
                )
                .with_value(poll.to_string())
                .with_help("the default, 5, notices a finished rollout within 5 seconds"));
            }
            if !(100..=599).contains(&env.verify.expected_status) {
                return Err(ConfigError::invalid(
                    file,
                    key("verify.expected_status"),
                    "is not an HTTP status",
                )
                .with_value(env.verify.expected_status.to_string())
                .with_help("for example expected_status = 200"));
            }
            if let Some(url) = &env.verify.url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(ConfigError::invalid(
                        file,
                        key("verify.url"),
                        "must be an http:// or https:// URL",
                    )
                    .with_value(format!("{url:?}")));
                }
            }
            if !env.verify.health_path.starts_with('/') {
                return Err(ConfigError::invalid(
                    file,
                    key("verify.health_path"),
                    "must start with '/'",
                )
                .with_value(format!("{:?}", env.verify.health_path)));
            }
            for (field, role) in [
                ("execution_role_arn", &env.execution_role_arn),
                ("task_role_arn", &env.task_role_arn),
            ] {
                if let Some(role) = role {
                    if !(role.starts_with("arn:aws") && role.contains(":role/")) {
                        return Err(ConfigError::invalid(
                            file,
                            key(field),
                            "is not an IAM role ARN",
                        )
                        .with_value(format!("{role:?}"))
                        .with_help(
                            "for example arn:aws:iam::123456789012:role/cv-matcher-task-execution",
                        ));
                    }
                }
            }
            if let Some(monitoring) = &env.monitoring {
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
                    let alarm_key =
                        |field: &str| key(&format!("monitoring.alarms[{index}].{field}"));
                    if alarm.name.trim().is_empty() || !names.insert(alarm.name.as_str()) {
                        return Err(ConfigError::invalid(
                            file,
                            alarm_key("name"),
                            "must be a non-empty name used by one alarm only",
                        )
                        .with_value(format!("{:?}", alarm.name)));
                    }
                    let http =
                        matches!(alarm.kind, AlarmKind::Http5xxRate | AlarmKind::ResponseTime);
                    if http && alarm.load_balancer.is_none() {
                        return Err(ConfigError::invalid(
                            file,
                            alarm_key("load_balancer"),
                            "is required for HTTP alarms (the ALB's metric dimension)",
                        )
                        .with_help(
                            "for example load_balancer = \"app/cv-matcher-alb/50dc6c495c0c9188\"",
                        ));
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
            }
            if let Some(scaling) = &env.scaling {
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
            }
            validate_strategy(file, name, &env.strategy)?;
            env.scan.validate(file, &key("scan"))?;
            validate_timing(file, name, env)?;
            if let Some(records) = &env.records {
                if records.bucket.trim().is_empty() {
                    return Err(ConfigError::invalid(
                        file,
                        key("records.bucket"),
                        "must not be empty",
                    )
                    .with_value("\"\""));
                }
            }
            let rules = env
                .branches
                .iter()
                .map(|b| (format!("branch {b}"), "branches"))
                .chain(env.tags.iter().map(|t| (format!("tag {t}"), "tags")));
            for (rule, field) in rules {
                if let Some(other) = claimed.insert(rule.clone(), name) {
                    return Err(ConfigError::invalid(
                        file,
                        key(field),
                        format!("{rule} already deploys to environment {other:?}"),
                    )
                    .with_value(format!(
                        "{:?}",
                        rule.split_once(' ').map(|r| r.1).unwrap_or("")
                    ))
                    .with_help("each branch or tag pattern may deploy to one environment only"));
                }
            }
        }
        Ok(())
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

    /// The environment a git ref deploys to under the branch and tag rules
    /// (`refs/heads/develop` → staging, `refs/tags/v1.0.0` → production).
    pub fn environment_for_ref(&self, git_ref: &str) -> Option<&str> {
        let (kind, name) = if let Some(tag) = git_ref.strip_prefix("refs/tags/") {
            ("tag", tag)
        } else if let Some(branch) = git_ref.strip_prefix("refs/heads/") {
            ("branch", branch)
        } else {
            ("either", git_ref)
        };
        self.environments.iter().find_map(|(env_name, env)| {
            let by_branch = kind != "tag" && env.branches.iter().any(|b| glob_match(b, name));
            let by_tag = kind != "branch" && env.tags.iter().any(|t| glob_match(t, name));
            (by_branch || by_tag).then_some(env_name.as_str())
        })
    }
}

impl Config {
    /// The environment an image tag pushed to the repository deploys to: first one whose
    /// git `tags` rules match it (`v1.2.0` → production), else one whose `image_tags` do
    /// (a commit sha → staging).
    pub fn environment_for_image_tag(&self, tag: &str) -> Option<&str> {
        let by = |rules: fn(&EnvironmentConfig) -> &Vec<String>| {
            self.environments
                .iter()
                .find(|(_, env)| rules(env).iter().any(|p| glob_match(p, tag)))
                .map(|(name, _)| name.as_str())
        };
        by(|env| &env.tags).or_else(|| by(|env| &env.image_tags))
    }

    /// The environment that deploys to this cluster and service.
    /// The environment deploying `service` in `cluster`; clusters match by name, whether
    /// the config or the caller gives a name or an ARN.
    pub fn environment_for_service(&self, cluster: &str, service: &str) -> Option<&str> {
        let cluster = cluster_name(cluster);
        self.environments
            .iter()
            .find(|(_, env)| cluster_name(&env.cluster) == cluster && env.service == service)
            .map(|(name, _)| name.as_str())
    }
}

/// A cluster's name from its name or ARN (`arn:aws:ecs:REGION:ACCOUNT:cluster/NAME`).
pub fn cluster_name(cluster: &str) -> &str {
    match cluster.strip_prefix("arn:") {
        Some(_) => cluster
            .rsplit_once(":cluster/")
            .map_or(cluster, |(_, name)| name),
        None => cluster,
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((prefix, rest)) => {
            let Some(after_prefix) = text.strip_prefix(prefix) else {
                return false;
            };
            if rest.is_empty() {
                return true;
            }
            (0..=after_prefix.len())
                .filter(|i| after_prefix.is_char_boundary(*i))
                .any(|i| glob_match(rest, &after_prefix[i..]))
        }
    }
}

/// The keys whose value in the file holds a `${…}`, with that text.
fn variable_keys(value: &toml::Value, key: &str, found: &mut BTreeMap<String, String>) {
    let child_key = |child: &str| {
        if key.is_empty() {
            child.to_string()
        } else {
            format!("{key}.{child}")
        }
    };
    match value {
        toml::Value::String(text) if text.contains("${") => {
            found.insert(key.to_string(), text.clone());
        }
        toml::Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                variable_keys(item, &format!("{key}[{index}]"), found);
            }
        }
        toml::Value::Table(table) => {
            for (name, child) in table {
                variable_keys(child, &child_key(name), found);
            }
        }
        _ => {}
    }
}

fn interpolate(
    file: &Path,
    value: &mut toml::Value,
    key: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    let child_key = |child: &str| {
        if key.is_empty() {
            child.to_string()
        } else {
            format!("{key}.{child}")
        }
    };
    match value {
        toml::Value::String(text) => {
            let whole_variable =
                text.starts_with("${") && text.ends_with('}') && text.matches("${").count() == 1;
            let expanded = expand(file, text, key, lookup)?;
            // `"${BAKE_SECONDS:-300}"` may fill a number or a boolean field.
            *value = match (whole_variable, expanded.as_str()) {
                (true, "true") => toml::Value::Boolean(true),
                (true, "false") => toml::Value::Boolean(false),
                (true, number) if number.parse::<i64>().is_ok() => {
                    toml::Value::Integer(number.parse().unwrap_or_default())
                }
                (true, number)
                    if number.parse::<f64>().is_ok_and(f64::is_finite) && !number.is_empty() =>
                {
                    toml::Value::Float(number.parse().unwrap_or_default())
                }
                _ => toml::Value::String(expanded),
            };
        }
        toml::Value::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                interpolate(file, item, &format!("{key}[{index}]"), lookup)?;
            }
        }
        toml::Value::Table(table) => {
            for (name, child) in table.iter_mut() {
                interpolate(file, child, &child_key(name), lookup)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Expands `${VAR}` and `${VAR:-default}` in one string.
pub fn expand(
    file: &Path,
    text: &str,
    key: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        if let Some(escaped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = escaped;
            continue;
        }
        let Some(body_and_rest) = after.strip_prefix("${") else {
            out.push('$');
            rest = &after[1..];
            continue;
        };
        let Some(end) = body_and_rest.find('}') else {
            return Err(ConfigError::invalid(file, key, "has an unclosed `${`")
                .with_value(format!("{text:?}"))
                .with_help("write ${NAME} or ${NAME:-default}, or $${ for a literal ${"));
        };
        let body = &body_and_rest[..end];
        let (name, default) = match body.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (body, None),
        };
        let name_ok = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !name_ok {
            return Err(ConfigError::invalid(file, key, "has a bad variable name")
                .with_value(format!("${{{body}}}"))
                .with_help("variable names are letters, digits and underscores"));
        }
        match (lookup(name), default) {
            (Some(found), _) => out.push_str(&found),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(ConfigError::invalid(
                    file,
                    key,
                    format!("uses the environment variable {name}, which is not set"),
                )
                .with_value(format!("${{{name}}}"))
                .with_help(format!(
                    "export {name}=..., or write ${{{name}:-default}} to give a default"
                )))
            }
        }
        rest = &body_and_rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The full key of a TOML duplicate-key error: "duplicate key `staging` in table
/// `environments`" → `environments.staging`.
fn duplicate_key(message: &str) -> Option<String> {
    let rest = message.split("duplicate key `").nth(1)?;
    let (key, rest) = rest.split_once('`')?;
    let table = rest
        .strip_prefix(" in table `")
        .and_then(|table| table.split('`').next())
        .filter(|table| !table.is_empty());
    Some(match table {
        Some(table) => format!("{table}.{key}"),
        None => key.to_string(),
    })
}

/// Turns a serde error into one that names the full key, the value and a fix.
fn is_role_arn(text: &str) -> bool {
    text.starts_with("arn:aws") && text.contains(":role/")
}

/// The most seconds any duration in the config may be: 30 days. Far beyond any real
/// deploy, and far from overflowing a deadline (`Instant` + `Duration`).
pub const MAX_SECONDS: u64 = 30 * 24 * 3600;

/// What a deploy timeout must cover beyond the strategy's bake times: starting the new
/// tasks, health checks and the traffic shifts themselves.
pub const BAKE_MARGIN_SECONDS: u64 = 300;

fn check_seconds(file: &Path, key: &str, seconds: u64) -> Result<(), ConfigError> {
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

impl StrategySettings {
    /// The bake times ECS waits through during one deployment, in seconds, with the
    /// keys that make them up (`bake_minutes = 15`), for messages. Unset ones count 0.
    pub fn bake_seconds(&self) -> (u64, Vec<String>) {
        let mut parts = Vec::new();
        let mut total = 0u64;
        if let Some(minutes) = self.bake_minutes.filter(|m| *m > 0) {
            total += u64::from(minutes) * 60;
            parts.push(format!("strategy.bake_minutes = {minutes}"));
        }
        if self.kind == StrategyKind::Canary {
            if let Some(minutes) = self.canary_bake_minutes.filter(|m| *m > 0) {
                total += u64::from(minutes) * 60;
                parts.push(format!("strategy.canary_bake_minutes = {minutes}"));
            }
        }
        if self.kind == StrategyKind::Linear {
            if let (Some(minutes), Some(percent)) = (
                self.linear_step_bake_minutes.filter(|m| *m > 0),
                self.linear_step_percent,
            ) {
                // Validated to 0.1..=100 first: at most 1000 steps.
                let steps = (100.0 / percent).ceil().clamp(1.0, 1000.0) as u64;
                total += u64::from(minutes) * 60 * steps;
                parts.push(format!(
                    "strategy.linear_step_bake_minutes = {minutes} x {steps} steps (linear_step_percent = {percent})"
                ));
            }
        }
        (total, parts)
    }
}

/// The durations of one environment: each in range, the deploy timeout longer than the
/// strategy's bakes, the lock's lease long enough to be renewed. (A run renews its lease
/// for as long as it holds the lock, so the lease need not cover a release.)
fn validate_timing(
    file: &Path,
    env_name: &str,
    env: &EnvironmentConfig,
) -> Result<(), ConfigError> {
    let key = |field: &str| format!("environments.{env_name}.{field}");
    check_seconds(
        file,
        &key("deploy.timeout_seconds"),
        env.deploy.timeout_seconds,
    )?;
    check_seconds(
        file,
        &key("verify.timeout_seconds"),
        env.verify.timeout_seconds,
    )?;
    check_seconds(file, &key("verify.bake_seconds"), env.verify.bake_seconds)?;
    if let Some(records) = &env.records {
        let lease = records.lock_lease_seconds;
        check_seconds(file, &key("records.lock_lease_seconds"), lease)?;
        if lease < MIN_LOCK_LEASE_SECONDS {
            return Err(ConfigError::invalid(
                file,
                key("records.lock_lease_seconds"),
                format!("must be at least {MIN_LOCK_LEASE_SECONDS} seconds: a run renews the lease every third of it"),
            )
            .with_value(lease.to_string())
            .with_help(format!(
                "leave it out for the default of {}, or give at least {MIN_LOCK_LEASE_SECONDS}",
                default_lock_lease()
            )));
        }
    }
    let timeout = env.deploy.timeout_seconds;
    let (bakes, parts) = env.strategy.bake_seconds();
    if bakes > 0 && timeout < bakes + BAKE_MARGIN_SECONDS {
        let needed = bakes + BAKE_MARGIN_SECONDS;
        return Err(ConfigError::invalid(
            file,
            key("deploy.timeout_seconds"),
            format!(
                "is shorter than the strategy's bake time plus a {BAKE_MARGIN_SECONDS}s margin: {} = {bakes}s, + {BAKE_MARGIN_SECONDS}s = {needed}s; the rollout would time out and roll back while ECS still bakes",
                parts.join(" + ")
            ),
        )
        .with_value(timeout.to_string())
        .with_help(format!(
            "set environments.{env_name}.deploy.timeout_seconds to at least {needed}, or shorten the bakes"
        )));
    }
    Ok(())
}

fn validate_strategy(
    file: &Path,
    env: &str,
    strategy: &StrategySettings,
) -> Result<(), ConfigError> {
    let key = |field: &str| format!("environments.{env}.strategy.{field}");
    let kind = strategy.kind;
    if let Some(bake) = strategy.bake_minutes {
        if bake > 1440 {
            return Err(ConfigError::invalid(
                file,
                key("bake_minutes"),
                "must be 0 to 1440 (a day)",
            )
            .with_value(bake.to_string()));
        }
    }
    for (field, minutes) in [
        ("canary_bake_minutes", strategy.canary_bake_minutes),
        (
            "linear_step_bake_minutes",
            strategy.linear_step_bake_minutes,
        ),
    ] {
        if let Some(minutes) = minutes {
            if minutes > 1440 {
                return Err(
                    ConfigError::invalid(file, key(field), "must be 0 to 1440 (a day)")
                        .with_value(minutes.to_string()),
                );
            }
        }
    }
    for (field, percent) in [
        ("canary_percent", strategy.canary_percent),
        ("linear_step_percent", strategy.linear_step_percent),
    ] {
        if let Some(percent) = percent {
            if !(0.1..=100.0).contains(&percent) {
                return Err(ConfigError::invalid(
                    file,
                    key(field),
                    "must be a percentage from 0.1 to 100",
                )
                .with_value(percent.to_string()));
            }
        }
    }
    let wrong_kind = [
        (
            "canary_percent",
            strategy.canary_percent.is_some(),
            StrategyKind::Canary,
        ),
        (
            "canary_bake_minutes",
            strategy.canary_bake_minutes.is_some(),
            StrategyKind::Canary,
        ),
        (
            "linear_step_percent",
            strategy.linear_step_percent.is_some(),
            StrategyKind::Linear,
        ),
        (
            "linear_step_bake_minutes",
            strategy.linear_step_bake_minutes.is_some(),
            StrategyKind::Linear,
        ),
    ];
    for (field, set, needs) in wrong_kind {
        if set && kind != needs {
            return Err(ConfigError::invalid(
                file,
                key(field),
                format!(
                    "only applies to kind = {:?}",
                    needs.ecs_name().to_lowercase()
                ),
            )
            .with_value(format!("kind = {:?}", kind.ecs_name().to_lowercase()))
            .with_help(format!(
                "set kind = {:?} or remove {field}",
                needs.ecs_name().to_lowercase()
            )));
        }
    }
    if kind == StrategyKind::Rolling {
        if strategy.lifecycle_hook.is_some() || strategy.bake_minutes.is_some() {
            let field = if strategy.lifecycle_hook.is_some() {
                "lifecycle_hook"
            } else {
                "bake_minutes"
            };
            return Err(ConfigError::invalid(
                file,
                key(field),
                "needs a blue_green, canary or linear strategy",
            )
            .with_value("kind = \"rolling\"")
            .with_help(
                "set kind = \"blue_green\" (with the load balancer settings) or remove it",
            ));
        }
        return Ok(());
    }
    for (field, value) in [
        (
            "alternate_target_group_arn",
            &strategy.alternate_target_group_arn,
        ),
        (
            "production_listener_rule",
            &strategy.production_listener_rule,
        ),
        ("role_arn", &strategy.role_arn),
    ] {
        if value.as_deref().is_none_or(|v| v.trim().is_empty()) {
            return Err(ConfigError::invalid(
                file,
                key(field),
                format!(
                    "is required for kind = {:?} (the load balancer's advancedConfiguration)",
                    kind.ecs_name().to_lowercase()
                ),
            )
            .with_help(match field {
                "alternate_target_group_arn" => "the green target group: arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/cv-matcher-green/0123456789abcdef",
                "production_listener_rule" => "the listener rule ARN that carries production traffic (arn:aws:elasticloadbalancing:...:listener-rule/app/...)",
                _ => "the role ECS uses to change the listener rules, for example arn:aws:iam::123456789012:role/ecs-infrastructure-load-balancers",
            }));
        }
    }
    if let Some(role) = &strategy.role_arn {
        if !is_role_arn(role) {
            return Err(ConfigError::invalid(file, key("role_arn"), "is not an IAM role ARN")
                .with_value(format!("{role:?}"))
                .with_help("for example arn:aws:iam::123456789012:role/ecs-infrastructure-load-balancers"));
        }
    }
    if let Some(hook) = &strategy.lifecycle_hook {
        if !(hook.function_arn.starts_with("arn:aws") && hook.function_arn.contains(":lambda:")) {
            return Err(ConfigError::invalid(
                file,
                key("lifecycle_hook.function_arn"),
                "is not a Lambda function ARN",
            )
            .with_value(format!("{:?}", hook.function_arn))
            .with_help("for example arn:aws:lambda:us-east-1:123456789012:function:tugboat"));
        }
        if !is_role_arn(&hook.role_arn) {
            return Err(ConfigError::invalid(
                file,
                key("lifecycle_hook.role_arn"),
                "is not an IAM role ARN",
            )
            .with_value(format!("{:?}", hook.role_arn))
            .with_help("the role ECS assumes to invoke the function (lambda:InvokeFunction, trusted by ecs.amazonaws.com)"));
        }
        if hook.stages.is_empty() {
            return Err(ConfigError::invalid(
                file,
                key("lifecycle_hook.stages"),
                "must name at least one lifecycle stage",
            )
            .with_value("[]")
            .with_help("for example stages = [\"POST_TEST_TRAFFIC_SHIFT\", \"POST_PRODUCTION_TRAFFIC_SHIFT\"]"));
        }
    }
    Ok(())
}

fn serde_error(file: &Path, path: &str, message: &str) -> ConfigError {
    let path = if path == "." { "" } else { path };
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        let key = if path.is_empty() || path.ends_with(field) {
            if path.is_empty() {
                field.to_string()
            } else {
                path.to_string()
            }
        } else {
            format!("{path}.{field}")
        };
        let nearest = candidates
            .iter()
            .map(|c| (strsim::damerau_levenshtein(field, c), *c))
            .min();
        let help = match nearest {
            Some((distance, candidate))
                if distance <= 3 || candidate.contains(field) || field.contains(candidate) =>
            {
                let parent = key
                    .rsplit_once('.')
                    .map(|(p, _)| format!("{p}."))
                    .unwrap_or_default();
                format!(
                    "did you mean `{parent}{candidate}`? valid keys here: {}",
                    candidates.join(", ")
                )
            }
            _ => format!("valid keys here: {}", candidates.join(", ")),
        };
        return ConfigError::invalid(file, key, "is not a known key")
            .with_value(format!("{field:?}"))
            .with_help(help);
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or(rest);
        let key = if path.is_empty() {
            field.to_string()
        } else {
            format!("{path}.{field}")
        };
        return ConfigError::invalid(file, key, "is required but missing")
            .with_help("see examples/cv-matcher/tugboat.toml for a complete file");
    }
    let (problem, value) = match message.split_once(", expected ") {
        Some((found, expected)) => (
            format!("expected {expected}"),
            Some(
                found
                    .trim_start_matches("invalid type: ")
                    .trim_start_matches("invalid value: ")
                    .to_string(),
            ),
        ),
        None => (message.to_string(), None),
    };
    let mut error = ConfigError::invalid(file, if path.is_empty() { "$" } else { path }, problem)
        .with_help("fix the value's type; see examples/cv-matcher/tugboat.toml");
    if let Some(value) = value {
        error = error.with_value(value);
    }
    error
}
