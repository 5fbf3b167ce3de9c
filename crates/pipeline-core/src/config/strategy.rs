//! `[environments.X.strategy]` and `[environments.X.scan]`: how ECS rolls a release out
//! (rolling, blue/green, canary, linear; the lifecycle hook), the security-scan gate, and
//! their validation, with the deploy timings the strategy's bake times constrain.

use super::environment::{default_lock_lease, EnvironmentConfig, MIN_LOCK_LEASE_SECONDS};
use super::errors::ConfigError;
use super::validate::{check_seconds, is_role_arn};
use serde::{Deserialize, Serialize};
use std::path::Path;

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
    pub(super) fn validate(&self, file: &Path, prefix: &str) -> Result<(), ConfigError> {
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

/// What a deploy timeout must cover beyond the strategy's bake times: starting the new
/// tasks, health checks and the traffic shifts themselves.
pub const BAKE_MARGIN_SECONDS: u64 = 300;

/// The durations of one environment: each in range, the deploy timeout longer than the
/// strategy's bakes, the lock's lease long enough to be renewed. (A run renews its lease
/// for as long as it holds the lock, so the lease need not cover a release.)
pub(super) fn validate_timing(
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

/// `[environments.{env}.strategy]`: the numbers in range, each setting used only by the
/// kind it belongs to, and what a blue/green, canary or linear deployment needs.
pub(super) fn validate_strategy(
    file: &Path,
    env: &str,
    strategy: &StrategySettings,
) -> Result<(), ConfigError> {
    let key = |field: &str| format!("environments.{env}.strategy.{field}");
    validate_strategy_ranges(file, &key, strategy)?;
    validate_kind_specific_settings(file, &key, strategy)?;
    if strategy.kind == StrategyKind::Rolling {
        return validate_rolling(file, &key, strategy);
    }
    validate_load_balancer_settings(file, &key, strategy)?;
    if let Some(hook) = &strategy.lifecycle_hook {
        validate_lifecycle_hook(file, &key, hook)?;
    }
    Ok(())
}

/// The bake minutes (0 to a day) and the traffic percentages (0.1 to 100).
fn validate_strategy_ranges(
    file: &Path,
    key: &dyn Fn(&str) -> String,
    strategy: &StrategySettings,
) -> Result<(), ConfigError> {
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
    Ok(())
}

/// The canary settings only with `kind = "canary"`, the linear ones only with `"linear"`.
fn validate_kind_specific_settings(
    file: &Path,
    key: &dyn Fn(&str) -> String,
    strategy: &StrategySettings,
) -> Result<(), ConfigError> {
    let kind = strategy.kind;
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
    Ok(())
}

/// A rolling deployment has no lifecycle hook and no bake time.
fn validate_rolling(
    file: &Path,
    key: &dyn Fn(&str) -> String,
    strategy: &StrategySettings,
) -> Result<(), ConfigError> {
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
        .with_help("set kind = \"blue_green\" (with the load balancer settings) or remove it"));
    }
    Ok(())
}

/// The load balancer's `advancedConfiguration`: the green target group, the production
/// listener rule and the role ECS changes them with.
fn validate_load_balancer_settings(
    file: &Path,
    key: &dyn Fn(&str) -> String,
    strategy: &StrategySettings,
) -> Result<(), ConfigError> {
    let kind = strategy.kind;
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
    Ok(())
}

fn validate_lifecycle_hook(
    file: &Path,
    key: &dyn Fn(&str) -> String,
    hook: &LifecycleHookSettings,
) -> Result<(), ConfigError> {
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
        .with_help(
            "for example stages = [\"POST_TEST_TRAFFIC_SHIFT\", \"POST_PRODUCTION_TRAFFIC_SHIFT\"]",
        ));
    }
    Ok(())
}
