//! `[environments.X.monitoring]`: the log group and the CloudWatch alarms that
//! `tugboat infra apply` reconciles.

use serde::{Deserialize, Serialize};

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
