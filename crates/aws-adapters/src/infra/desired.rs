//! What an environment's `monitoring` and `scaling` settings say should exist: the log
//! group, the CloudWatch alarms and the target-tracking scaling ([`desired_infra`]), each
//! with the managed fields rendered so that they compare with what AWS holds.

use aws_sdk_applicationautoscaling::types::{MetricType, PolicyType};
use pipeline_core::config::{AlarmKind, AlarmSpec, EnvironmentConfig};
use pipeline_core::DeployTarget;
use serde::Serialize;

/// The only comparison tugboat's alarms use: they fire above their threshold.
pub(super) const GREATER_THAN: &str = "GreaterThanThreshold";
/// No data (no traffic, no 5xx responses) is not a reason to fire.
pub(super) const NOT_BREACHING: &str = "notBreaching";

/// The id of the expression query of a metric-math alarm.
pub(super) const EXPRESSION_ID: &str = "e1";

/// Everything `tugboat infra apply` makes true for one environment.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DesiredInfra {
    pub log_group: Option<LogGroupSpec>,
    pub alarms: Vec<AlarmDefinition>,
    pub scaling: Option<ScalingDefinition>,
}

/// The awslogs group and how long it keeps logs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogGroupSpec {
    pub name: String,
    pub retention_days: u32,
}

/// One metric with its dimensions, statistic and period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MetricSpec {
    pub namespace: String,
    pub metric_name: String,
    /// `(name, value)` pairs, sorted by name.
    pub dimensions: Vec<(String, String)>,
    /// `Average`, `Sum`, ...
    pub statistic: String,
    pub period_seconds: u32,
}

impl MetricSpec {
    pub(super) fn render(&self) -> String {
        format!(
            "{} {} {} {}s {}",
            self.namespace,
            self.metric_name,
            self.statistic,
            self.period_seconds,
            render_dimensions(&self.dimensions)
        )
    }
}

/// What an alarm evaluates: one metric, or metric math over several.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AlarmMetric {
    Single(MetricSpec),
    /// `expression` (id `e1`) over `metrics` (ids `m1`, `m2`, ...).
    Math {
        expression: String,
        label: String,
        metrics: Vec<(String, MetricSpec)>,
    },
}

impl AlarmMetric {
    /// One line that is equal for equal metrics, whatever order AWS lists things in.
    pub(super) fn render(&self) -> String {
        match self {
            Self::Single(metric) => metric.render(),
            Self::Math {
                expression,
                metrics,
                ..
            } => {
                let mut parts = vec![format!("{EXPRESSION_ID}={expression}")];
                let mut queries: Vec<String> = metrics
                    .iter()
                    .map(|(id, metric)| format!("{id}={}", metric.render()))
                    .collect();
                queries.sort();
                parts.extend(queries);
                parts.join("; ")
            }
        }
    }

    /// What is compared with the threshold, for people: `CPUUtilization`,
    /// `100*HTTPCode_Target_5XX_Count/RequestCount`.
    fn what(&self) -> String {
        match self {
            Self::Single(metric) => metric.metric_name.clone(),
            Self::Math {
                expression,
                metrics,
                ..
            } => {
                let mut text = expression.clone();
                let mut by_length: Vec<&(String, MetricSpec)> = metrics.iter().collect();
                by_length.sort_by_key(|(id, _)| std::cmp::Reverse(id.len()));
                for (id, metric) in by_length {
                    text = text.replace(id.as_str(), &metric.metric_name);
                }
                text
            }
        }
    }
}

/// One CloudWatch alarm as tugboat wants it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AlarmDefinition {
    pub name: String,
    pub kind: AlarmKind,
    pub description: String,
    pub metric: AlarmMetric,
    pub threshold: f64,
    pub evaluation_periods: u32,
    /// SNS topic ARNs notified when the alarm fires, sorted.
    pub actions: Vec<String>,
}

impl AlarmDefinition {
    /// `CPUUtilization > 80`.
    pub fn summary(&self) -> String {
        format!("{} > {}", self.metric.what(), self.threshold)
    }

    /// The managed fields, rendered for comparison and display.
    pub(super) fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("metric", self.metric.render()),
            ("threshold", self.threshold.to_string()),
            ("comparison", GREATER_THAN.to_string()),
            ("evaluation_periods", self.evaluation_periods.to_string()),
            ("treat_missing_data", NOT_BREACHING.to_string()),
            ("actions", render_list(&self.actions)),
            ("description", self.description.clone()),
        ]
    }
}

/// Target-tracking scaling of the service's desired count on its average CPU.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScalingDefinition {
    /// `service/<cluster>/<service>`.
    pub resource_id: String,
    pub min_tasks: u32,
    pub max_tasks: u32,
    /// `<app>-<env>-cpu`.
    pub policy_name: String,
    /// Percent of ECSServiceAverageCPUUtilization.
    pub cpu_target: f64,
    pub scale_out_cooldown_seconds: u32,
    pub scale_in_cooldown_seconds: u32,
}

impl ScalingDefinition {
    pub(super) fn target_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("min_tasks", self.min_tasks.to_string()),
            ("max_tasks", self.max_tasks.to_string()),
        ]
    }

    pub(super) fn policy_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "policy_type",
                PolicyType::TargetTrackingScaling.as_str().to_string(),
            ),
            (
                "metric",
                MetricType::EcsServiceAverageCpuUtilization
                    .as_str()
                    .to_string(),
            ),
            ("cpu_target", self.cpu_target.to_string()),
            (
                "scale_out_cooldown",
                self.scale_out_cooldown_seconds.to_string(),
            ),
            (
                "scale_in_cooldown",
                self.scale_in_cooldown_seconds.to_string(),
            ),
        ]
    }
}

/// The infrastructure an environment's `monitoring` and `scaling` settings describe.
///
/// ```
/// # fn example(project: &pipeline_core::Project) -> Result<(), pipeline_core::ConfigError> {
/// let env = project.environment("production")?;
/// let target = project.target("production")?;
/// let desired = aws_adapters::desired_infra(&project.config.app.name, &target, env);
/// for alarm in &desired.alarms {
///     println!("{}: {}", alarm.name, alarm.summary());
/// }
/// # Ok(())
/// # }
/// ```
pub fn desired_infra(app: &str, target: &DeployTarget, env: &EnvironmentConfig) -> DesiredInfra {
    let monitoring = env.monitoring.as_ref();
    let log_group = monitoring.and_then(|m| {
        m.log_group.as_ref().map(|name| LogGroupSpec {
            name: name.clone(),
            retention_days: m.log_retention_days,
        })
    });
    let alarms = monitoring
        .map(|m| {
            m.alarms
                .iter()
                .map(|spec| alarm_definition(app, target, spec))
                .collect()
        })
        .unwrap_or_default();
    let scaling = env.scaling.as_ref().map(|s| ScalingDefinition {
        resource_id: format!("service/{}/{}", target.cluster, target.service),
        min_tasks: s.min_tasks,
        max_tasks: s.max_tasks,
        policy_name: format!("{app}-{}-cpu", target.environment),
        cpu_target: s.cpu_target,
        scale_out_cooldown_seconds: s.scale_out_cooldown_seconds,
        scale_in_cooldown_seconds: s.scale_in_cooldown_seconds,
    });
    DesiredInfra {
        log_group,
        alarms,
        scaling,
    }
}

fn alarm_definition(app: &str, target: &DeployTarget, spec: &AlarmSpec) -> AlarmDefinition {
    let service_dimensions = sorted(vec![
        ("ClusterName".to_string(), target.cluster.clone()),
        ("ServiceName".to_string(), target.service.clone()),
    ]);
    // Config validation requires a load balancer for the HTTP kinds.
    let balancer_dimensions = vec![(
        "LoadBalancer".to_string(),
        spec.load_balancer.clone().unwrap_or_default(),
    )];
    let period_seconds = spec.period_seconds;
    let metric = |namespace: &str, name: &str, statistic: &str, dimensions: &[(String, String)]| {
        MetricSpec {
            namespace: namespace.to_string(),
            metric_name: name.to_string(),
            dimensions: dimensions.to_vec(),
            statistic: statistic.to_string(),
            period_seconds,
        }
    };
    let (metric, what) = match spec.kind {
        AlarmKind::CpuHigh => (
            AlarmMetric::Single(metric(
                "AWS/ECS",
                "CPUUtilization",
                "Average",
                &service_dimensions,
            )),
            "service CPU above the threshold (percent)",
        ),
        AlarmKind::MemoryHigh => (
            AlarmMetric::Single(metric(
                "AWS/ECS",
                "MemoryUtilization",
                "Average",
                &service_dimensions,
            )),
            "service memory above the threshold (percent)",
        ),
        AlarmKind::Http5xxRate => (
            AlarmMetric::Math {
                expression: "100*m1/m2".to_string(),
                label: "target 5xx responses (% of requests)".to_string(),
                metrics: vec![
                    (
                        "m1".to_string(),
                        metric(
                            "AWS/ApplicationELB",
                            "HTTPCode_Target_5XX_Count",
                            "Sum",
                            &balancer_dimensions,
                        ),
                    ),
                    (
                        "m2".to_string(),
                        metric(
                            "AWS/ApplicationELB",
                            "RequestCount",
                            "Sum",
                            &balancer_dimensions,
                        ),
                    ),
                ],
            },
            "target 5xx responses above the threshold (percent of requests)",
        ),
        AlarmKind::ResponseTime => (
            AlarmMetric::Single(metric(
                "AWS/ApplicationELB",
                "TargetResponseTime",
                "Average",
                &balancer_dimensions,
            )),
            "average target response time above the threshold (seconds)",
        ),
        AlarmKind::FailedTasks => (
            AlarmMetric::Math {
                expression: "m1-m2".to_string(),
                label: "tasks not running (desired - running)".to_string(),
                metrics: vec![
                    (
                        "m1".to_string(),
                        metric(
                            "ECS/ContainerInsights",
                            "DesiredTaskCount",
                            "Average",
                            &service_dimensions,
                        ),
                    ),
                    (
                        "m2".to_string(),
                        metric(
                            "ECS/ContainerInsights",
                            "RunningTaskCount",
                            "Average",
                            &service_dimensions,
                        ),
                    ),
                ],
            },
            "tasks that should run but do not (needs Container Insights)",
        ),
    };
    let mut actions = spec.actions.clone();
    actions.sort();
    actions.dedup();
    AlarmDefinition {
        name: spec.name.clone(),
        kind: spec.kind,
        description: format!("{app} {}: {what}; managed by tugboat", target.environment),
        metric,
        threshold: spec.threshold,
        evaluation_periods: spec.evaluation_periods,
        actions,
    }
}

pub(super) fn sorted(mut dimensions: Vec<(String, String)>) -> Vec<(String, String)> {
    dimensions.sort();
    dimensions
}

fn render_dimensions(dimensions: &[(String, String)]) -> String {
    let mut parts: Vec<String> = dimensions.iter().map(|(n, v)| format!("{n}={v}")).collect();
    parts.sort();
    parts.join(",")
}

pub(super) fn render_list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(",")
    }
}

#[cfg(test)]
pub(super) mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use pipeline_core::Project;
    use std::path::Path;

    /// The cv-matcher example's production environment and what it wants.
    pub(in crate::infra) fn production() -> (Project, DesiredInfra) {
        let file =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cv-matcher/tugboat.toml");
        let project = Project::load_with(&file, &|_| None).unwrap();
        let target = project.target("production").unwrap();
        let env = project.environment("production").unwrap();
        let desired = desired_infra(&project.config.app.name, &target, env);
        (project, desired)
    }

    #[test]
    fn cv_matcher_production_wants_the_designs_alarms_and_scaling() {
        let (_, desired) = production();
        assert_eq!(
            desired.log_group,
            Some(LogGroupSpec {
                name: "/ecs/cv-matcher".into(),
                retention_days: 30
            })
        );
        let summaries: Vec<(String, String)> = desired
            .alarms
            .iter()
            .map(|a| (a.name.clone(), a.summary()))
            .collect();
        assert_eq!(
            summaries,
            [
                ("cv-matcher-cpu-high", "CPUUtilization > 80"),
                ("cv-matcher-memory-high", "MemoryUtilization > 80"),
                (
                    "cv-matcher-5xx-rate",
                    "100*HTTPCode_Target_5XX_Count/RequestCount > 1"
                ),
                ("cv-matcher-response-time", "TargetResponseTime > 1"),
                (
                    "cv-matcher-failed-tasks",
                    "DesiredTaskCount-RunningTaskCount > 0"
                ),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        assert_eq!(
            desired.alarms[0].metric.render(),
            "AWS/ECS CPUUtilization Average 60s ClusterName=cv-matcher-cluster,ServiceName=cv-matcher-service"
        );
        assert_eq!(
            desired.alarms[2].metric.render(),
            "e1=100*m1/m2; \
             m1=AWS/ApplicationELB HTTPCode_Target_5XX_Count Sum 60s LoadBalancer=app/cv-matcher-alb/50dc6c495c0c9188; \
             m2=AWS/ApplicationELB RequestCount Sum 60s LoadBalancer=app/cv-matcher-alb/50dc6c495c0c9188"
        );
        assert_eq!(
            desired.scaling,
            Some(ScalingDefinition {
                resource_id: "service/cv-matcher-cluster/cv-matcher-service".into(),
                min_tasks: 2,
                max_tasks: 10,
                policy_name: "cv-matcher-production-cpu".into(),
                cpu_target: 75.0,
                scale_out_cooldown_seconds: 300,
                scale_in_cooldown_seconds: 300,
            })
        );
    }
}
