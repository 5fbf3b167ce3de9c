//! `[environments.X]`: where an environment's releases run, and how they are deployed,
//! verified, rolled back, announced, recorded and scaled.

use super::monitoring::MonitoringSettings;
use super::strategy::{ScanSettings, StrategySettings};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

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
    /// One-off tasks (migrations) run with the new task definition, in order, after it is
    /// registered and before the service moves; one that fails fails the release.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub before_deploy: Vec<super::one_off::OneOffTaskConfig>,
    /// A fleet's environment: the `[services]` it releases (all of them when absent).
    /// `cluster` and `service` are then patterns (`{app}`, `{service}`, `{region}`,
    /// `{environment}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<String>>,
    /// A fleet's environment released to several regions, each with the environment's
    /// cluster and service patterns or its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<super::fleet::RegionEntry>,
    /// What a fleet does when one of its services fails (default `rollback_all`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<super::fleet::FailurePolicy>,
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

pub(super) fn default_lock_lease() -> u64 {
    crate::model::LockHolder::DEFAULT_LEASE_SECONDS
}

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
