//! Monitoring and scaling as code: the log group, the CloudWatch alarms and the
//! target-tracking auto scaling an environment's `monitoring` and `scaling` settings
//! describe ([`desired_infra`]), compared with what AWS holds and made true
//! ([`InfraReconciler`], behind `tugboat infra plan|apply`).
//!
//! Only the fields tugboat manages are compared (alarm metric, threshold, comparison,
//! evaluation periods, missing-data treatment, actions and description; retention;
//! capacity; the policy's metric, target and cooldowns), so fields AWS fills in (ARNs,
//! state, timestamps, the scaling policy's own alarms) never show up as changes.
//! tugboat creates and updates; it never deletes anything.

use crate::errors::stage_error;
use crate::AwsClients;
use aws_sdk_applicationautoscaling::types::{
    MetricType, PolicyType, PredefinedMetricSpecification, ScalableDimension, ServiceNamespace,
    TargetTrackingScalingPolicyConfiguration,
};
use aws_sdk_cloudwatch::types::{
    AlarmType, ComparisonOperator, Dimension, Metric, MetricAlarm, MetricDataQuery, MetricStat,
    Statistic,
};
use pipeline_core::config::{AlarmKind, AlarmSpec, EnvironmentConfig};
use pipeline_core::{DeployTarget, StageError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// `DescribeAlarms` takes at most this many names in one call.
const NAMES_PER_CALL: usize = 100;
/// The only comparison tugboat's alarms use: they fire above their threshold.
const GREATER_THAN: &str = "GreaterThanThreshold";
/// No data (no traffic, no 5xx responses) is not a reason to fire.
const NOT_BREACHING: &str = "notBreaching";
/// What ECS services scale.
const DESIRED_COUNT: &str = "ecs:service:DesiredCount";

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
    fn render(&self) -> String {
        format!(
            "{} {} {} {}s {}",
            self.namespace,
            self.metric_name,
            self.statistic,
            self.period_seconds,
            render_dimensions(&self.dimensions)
        )
    }

    fn sdk_metric(&self) -> Metric {
        Metric::builder()
            .namespace(&self.namespace)
            .metric_name(&self.metric_name)
            .set_dimensions(Some(sdk_dimensions(&self.dimensions)))
            .build()
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

/// The id of the expression query of a metric-math alarm.
const EXPRESSION_ID: &str = "e1";

impl AlarmMetric {
    /// One line that is equal for equal metrics, whatever order AWS lists things in.
    fn render(&self) -> String {
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
    fn fields(&self) -> Vec<(&'static str, String)> {
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

/// The same fields of an alarm as `DescribeAlarms` returns it.
fn observed_alarm_fields(alarm: &MetricAlarm) -> Vec<(&'static str, String)> {
    let metric = if alarm.metrics().is_empty() {
        let dimensions = alarm
            .dimensions()
            .iter()
            .map(|d| {
                (
                    d.name().unwrap_or_default().to_string(),
                    d.value().unwrap_or_default().to_string(),
                )
            })
            .collect();
        MetricSpec {
            namespace: alarm.namespace().unwrap_or_default().to_string(),
            metric_name: alarm.metric_name().unwrap_or_default().to_string(),
            dimensions: sorted(dimensions),
            statistic: alarm
                .statistic()
                .map(|s| s.as_str().to_string())
                .or_else(|| alarm.extended_statistic().map(str::to_string))
                .unwrap_or_default(),
            period_seconds: u32::try_from(alarm.period().unwrap_or(0)).unwrap_or(0),
        }
        .render()
    } else {
        let mut parts: Vec<String> = alarm
            .metrics()
            .iter()
            .map(|query| {
                let id = query.id().unwrap_or_default();
                match (query.expression(), query.metric_stat()) {
                    (Some(expression), _) => format!("{id}={expression}"),
                    (None, Some(stat)) => {
                        let metric = stat.metric();
                        let dimensions = metric
                            .map(|m| {
                                m.dimensions()
                                    .iter()
                                    .map(|d| {
                                        (
                                            d.name().unwrap_or_default().to_string(),
                                            d.value().unwrap_or_default().to_string(),
                                        )
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        let spec = MetricSpec {
                            namespace: metric
                                .and_then(Metric::namespace)
                                .unwrap_or_default()
                                .to_string(),
                            metric_name: metric
                                .and_then(Metric::metric_name)
                                .unwrap_or_default()
                                .to_string(),
                            dimensions: sorted(dimensions),
                            statistic: stat.stat().unwrap_or_default().to_string(),
                            period_seconds: u32::try_from(stat.period().unwrap_or(0)).unwrap_or(0),
                        };
                        format!("{id}={}", spec.render())
                    }
                    (None, None) => format!("{id}=?"),
                }
            })
            .collect();
        // The expression first, the metrics by id, as `AlarmMetric::render` does.
        parts.sort_by_key(|part| {
            (
                !part.starts_with(&format!("{EXPRESSION_ID}=")),
                part.clone(),
            )
        });
        parts.join("; ")
    };
    let mut actions: Vec<String> = alarm.alarm_actions().to_vec();
    actions.sort();
    vec![
        ("metric", metric),
        (
            "threshold",
            alarm
                .threshold()
                .map(|t| t.to_string())
                .unwrap_or_else(|| "none".into()),
        ),
        (
            "comparison",
            alarm
                .comparison_operator()
                .map(|c| c.as_str().to_string())
                .unwrap_or_else(|| "none".into()),
        ),
        (
            "evaluation_periods",
            alarm
                .evaluation_periods()
                .map(|e| e.to_string())
                .unwrap_or_else(|| "none".into()),
        ),
        (
            "treat_missing_data",
            // AWS's default when the field is absent.
            alarm.treat_missing_data().unwrap_or("missing").to_string(),
        ),
        ("actions", render_list(&actions)),
        (
            "description",
            alarm.alarm_description().unwrap_or_default().to_string(),
        ),
    ]
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
    fn target_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("min_tasks", self.min_tasks.to_string()),
            ("max_tasks", self.max_tasks.to_string()),
        ]
    }

    fn policy_fields(&self) -> Vec<(&'static str, String)> {
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

fn sorted(mut dimensions: Vec<(String, String)>) -> Vec<(String, String)> {
    dimensions.sort();
    dimensions
}

fn render_dimensions(dimensions: &[(String, String)]) -> String {
    let mut parts: Vec<String> = dimensions.iter().map(|(n, v)| format!("{n}={v}")).collect();
    parts.sort();
    parts.join(",")
}

fn render_list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(",")
    }
}

fn sdk_dimensions(dimensions: &[(String, String)]) -> Vec<Dimension> {
    dimensions
        .iter()
        .map(|(name, value)| Dimension::builder().name(name).value(value).build())
        .collect()
}

/// What a change does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeAction {
    Create,
    Update,
}

/// What a change is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InfraResource {
    LogGroup,
    Alarm,
    ScalableTarget,
    ScalingPolicy,
}

impl fmt::Display for InfraResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::LogGroup => "log group",
            Self::Alarm => "alarm",
            Self::ScalableTarget => "scalable target",
            Self::ScalingPolicy => "scaling policy",
        })
    }
}

/// One managed field that differs: what AWS holds and what tugboat wants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub from: String,
    pub to: String,
}

/// One resource to create or update. `Display` is the `tugboat infra plan` line:
///
/// ```text
/// + alarm cv-matcher-cpu-high (CPUUtilization > 80)
/// ~ log group /ecs/cv-matcher retention 14 → 30
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InfraChange {
    pub action: ChangeAction,
    pub resource: InfraResource,
    pub name: String,
    /// What a created resource will be (`CPUUtilization > 80`).
    pub summary: String,
    /// The managed fields an update changes (empty for a create).
    pub fields: Vec<FieldChange>,
}

impl InfraChange {
    fn create(resource: InfraResource, name: &str, summary: String) -> Self {
        Self {
            action: ChangeAction::Create,
            resource,
            name: name.to_string(),
            summary,
            fields: Vec::new(),
        }
    }

    /// An update of the fields that differ, or `None` when none does.
    fn update(
        resource: InfraResource,
        name: &str,
        summary: String,
        current: &[(&'static str, String)],
        desired: &[(&'static str, String)],
    ) -> Option<Self> {
        let current: BTreeMap<&str, &String> = current.iter().map(|(k, v)| (*k, v)).collect();
        let fields: Vec<FieldChange> = desired
            .iter()
            .filter_map(|(field, to)| {
                let from = current.get(field).map_or("none", |v| v.as_str());
                (from != to).then(|| FieldChange {
                    field: (*field).to_string(),
                    from: from.to_string(),
                    to: to.clone(),
                })
            })
            .collect();
        (!fields.is_empty()).then(|| Self {
            action: ChangeAction::Update,
            resource,
            name: name.to_string(),
            summary,
            fields,
        })
    }
}

impl fmt::Display for InfraChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.action {
            ChangeAction::Create => {
                write!(f, "+ {} {} ({})", self.resource, self.name, self.summary)
            }
            ChangeAction::Update => {
                write!(f, "~ {} {}", self.resource, self.name)?;
                for (index, change) in self.fields.iter().enumerate() {
                    let separator = if index == 0 { " " } else { ", " };
                    write!(
                        f,
                        "{separator}{} {} → {}",
                        change.field, change.from, change.to
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// Compares [`DesiredInfra`] with what AWS holds and makes it true.
///
/// ```no_run
/// # async fn example(clients: &aws_adapters::AwsClients, desired: &aws_adapters::DesiredInfra) -> Result<(), pipeline_core::StageError> {
/// let reconciler = aws_adapters::InfraReconciler::new(clients);
/// for change in reconciler.plan(desired).await? {
///     println!("{change}");
/// }
/// let applied = reconciler.apply(desired).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct InfraReconciler {
    cloudwatch: aws_sdk_cloudwatch::Client,
    autoscaling: aws_sdk_applicationautoscaling::Client,
    logs: aws_sdk_cloudwatchlogs::Client,
}

impl InfraReconciler {
    pub fn new(clients: &AwsClients) -> Self {
        Self {
            cloudwatch: clients.cloudwatch.clone(),
            autoscaling: clients.autoscaling.clone(),
            logs: clients.logs.clone(),
        }
    }

    /// What [`InfraReconciler::apply`] would change, in the order it would: the log
    /// group, the alarms, the scalable target, the scaling policy. Reads only
    /// (`DescribeLogGroups`, `DescribeAlarms`, `DescribeScalableTargets`,
    /// `DescribeScalingPolicies`).
    pub async fn plan(&self, desired: &DesiredInfra) -> Result<Vec<InfraChange>, StageError> {
        let mut changes = Vec::new();
        if let Some(log_group) = &desired.log_group {
            changes.extend(self.plan_log_group(log_group).await?);
        }
        changes.extend(self.plan_alarms(&desired.alarms).await?);
        if let Some(scaling) = &desired.scaling {
            changes.extend(self.plan_scaling(scaling).await?);
        }
        Ok(changes)
    }

    /// Makes exactly the changes [`InfraReconciler::plan`] lists and returns them; when
    /// AWS already matches, nothing is written. On a failure the error says which
    /// changes were made before it.
    pub async fn apply(&self, desired: &DesiredInfra) -> Result<Vec<InfraChange>, StageError> {
        let changes = self.plan(desired).await?;
        for (index, change) in changes.iter().enumerate() {
            if let Err(mut err) = self.make(desired, change).await {
                let done: Vec<String> = changes[..index].iter().map(ToString::to_string).collect();
                err.message = format!(
                    "{} failed: {}{}",
                    change,
                    err.message,
                    if done.is_empty() {
                        String::new()
                    } else {
                        format!(" (already applied: {})", done.join("; "))
                    }
                );
                return Err(err);
            }
        }
        Ok(changes)
    }

    async fn make(&self, desired: &DesiredInfra, change: &InfraChange) -> Result<(), StageError> {
        let missing = || {
            StageError::failed(format!(
                "the change {change} names nothing tugboat wants (a bug in tugboat)"
            ))
        };
        match change.resource {
            InfraResource::LogGroup => {
                let spec = desired.log_group.as_ref().ok_or_else(missing)?;
                if change.action == ChangeAction::Create {
                    let created = self
                        .logs
                        .create_log_group()
                        .log_group_name(&spec.name)
                        .send()
                        .await;
                    // Already there: a retry whose first try created it (answer lost).
                    if let Err(err) = created {
                        if !err
                            .as_service_error()
                            .is_some_and(|e| e.is_resource_already_exists_exception())
                        {
                            return Err(stage_error("CreateLogGroup", &err));
                        }
                    }
                }
                self.logs
                    .put_retention_policy()
                    .log_group_name(&spec.name)
                    .retention_in_days(i32::try_from(spec.retention_days).unwrap_or(i32::MAX))
                    .send()
                    .await
                    .map_err(|err| stage_error("PutRetentionPolicy", &err))?;
            }
            InfraResource::Alarm => {
                let alarm = desired
                    .alarms
                    .iter()
                    .find(|a| a.name == change.name)
                    .ok_or_else(missing)?;
                self.put_alarm(alarm).await?;
            }
            InfraResource::ScalableTarget => {
                let scaling = desired.scaling.as_ref().ok_or_else(missing)?;
                self.autoscaling
                    .register_scalable_target()
                    .service_namespace(ServiceNamespace::Ecs)
                    .resource_id(&scaling.resource_id)
                    .scalable_dimension(ScalableDimension::from(DESIRED_COUNT))
                    .min_capacity(i32::try_from(scaling.min_tasks).unwrap_or(i32::MAX))
                    .max_capacity(i32::try_from(scaling.max_tasks).unwrap_or(i32::MAX))
                    .send()
                    .await
                    .map_err(|err| stage_error("RegisterScalableTarget", &err))?;
            }
            InfraResource::ScalingPolicy => {
                let scaling = desired.scaling.as_ref().ok_or_else(missing)?;
                self.put_policy(scaling).await?;
            }
        }
        Ok(())
    }

    async fn plan_log_group(&self, spec: &LogGroupSpec) -> Result<Vec<InfraChange>, StageError> {
        let groups = self
            .logs
            .describe_log_groups()
            .log_group_name_prefix(&spec.name)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|err| stage_error("DescribeLogGroups", &err))?;
        let current = groups
            .iter()
            .find(|g| g.log_group_name() == Some(spec.name.as_str()));
        let wanted = [("retention", spec.retention_days.to_string())];
        Ok(match current {
            None => vec![InfraChange::create(
                InfraResource::LogGroup,
                &spec.name,
                format!("retention {} days", spec.retention_days),
            )],
            Some(group) => {
                let held = [(
                    "retention",
                    group
                        .retention_in_days()
                        .map(|d| d.to_string())
                        .unwrap_or_else(|| "never expire".into()),
                )];
                InfraChange::update(
                    InfraResource::LogGroup,
                    &spec.name,
                    format!("retention {} days", spec.retention_days),
                    &held,
                    &wanted,
                )
                .into_iter()
                .collect()
            }
        })
    }

    async fn plan_alarms(
        &self,
        alarms: &[AlarmDefinition],
    ) -> Result<Vec<InfraChange>, StageError> {
        let names: Vec<String> = alarms.iter().map(|a| a.name.clone()).collect();
        let mut current: BTreeMap<String, MetricAlarm> = BTreeMap::new();
        for chunk in names.chunks(NAMES_PER_CALL) {
            let pages = self
                .cloudwatch
                .describe_alarms()
                .set_alarm_names(Some(chunk.to_vec()))
                .alarm_types(AlarmType::MetricAlarm)
                .into_paginator()
                .send()
                .collect::<Result<Vec<_>, _>>()
                .await
                .map_err(|err| stage_error("DescribeAlarms", &err))?;
            for alarm in pages.iter().flat_map(|p| p.metric_alarms()) {
                if let Some(name) = alarm.alarm_name() {
                    current.insert(name.to_string(), alarm.clone());
                }
            }
        }
        Ok(alarms
            .iter()
            .filter_map(|alarm| match current.get(&alarm.name) {
                None => Some(InfraChange::create(
                    InfraResource::Alarm,
                    &alarm.name,
                    alarm.summary(),
                )),
                Some(held) => InfraChange::update(
                    InfraResource::Alarm,
                    &alarm.name,
                    alarm.summary(),
                    &observed_alarm_fields(held),
                    &alarm.fields(),
                ),
            })
            .collect())
    }

    async fn plan_scaling(
        &self,
        scaling: &ScalingDefinition,
    ) -> Result<Vec<InfraChange>, StageError> {
        let mut changes = Vec::new();
        let targets = self
            .autoscaling
            .describe_scalable_targets()
            .service_namespace(ServiceNamespace::Ecs)
            .resource_ids(&scaling.resource_id)
            .scalable_dimension(ScalableDimension::from(DESIRED_COUNT))
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|err| stage_error("DescribeScalableTargets", &err))?;
        let target = targets
            .iter()
            .find(|t| t.resource_id() == scaling.resource_id);
        let target_summary = format!("{} to {} tasks", scaling.min_tasks, scaling.max_tasks);
        match target {
            None => changes.push(InfraChange::create(
                InfraResource::ScalableTarget,
                &scaling.resource_id,
                target_summary,
            )),
            Some(held) => changes.extend(InfraChange::update(
                InfraResource::ScalableTarget,
                &scaling.resource_id,
                target_summary,
                &[
                    ("min_tasks", held.min_capacity().to_string()),
                    ("max_tasks", held.max_capacity().to_string()),
                ],
                &scaling.target_fields(),
            )),
        }

        let policies = self
            .autoscaling
            .describe_scaling_policies()
            .service_namespace(ServiceNamespace::Ecs)
            .resource_id(&scaling.resource_id)
            .scalable_dimension(ScalableDimension::from(DESIRED_COUNT))
            .policy_names(&scaling.policy_name)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|err| stage_error("DescribeScalingPolicies", &err))?;
        let policy = policies
            .iter()
            .find(|p| p.policy_name() == scaling.policy_name);
        let policy_summary = format!(
            "{} at {}, cooldowns {}s out / {}s in",
            MetricType::EcsServiceAverageCpuUtilization.as_str(),
            scaling.cpu_target,
            scaling.scale_out_cooldown_seconds,
            scaling.scale_in_cooldown_seconds
        );
        match policy {
            None => changes.push(InfraChange::create(
                InfraResource::ScalingPolicy,
                &scaling.policy_name,
                policy_summary,
            )),
            Some(held) => {
                let config = held.target_tracking_scaling_policy_configuration();
                let or_none = |value: Option<String>| value.unwrap_or_else(|| "none".into());
                let observed = [
                    ("policy_type", held.policy_type().as_str().to_string()),
                    (
                        "metric",
                        or_none(
                            config
                                .and_then(|c| c.predefined_metric_specification())
                                .map(|p| p.predefined_metric_type().as_str().to_string()),
                        ),
                    ),
                    (
                        "cpu_target",
                        or_none(config.map(|c| c.target_value().to_string())),
                    ),
                    (
                        "scale_out_cooldown",
                        or_none(
                            config
                                .and_then(|c| c.scale_out_cooldown())
                                .map(|v| v.to_string()),
                        ),
                    ),
                    (
                        "scale_in_cooldown",
                        or_none(
                            config
                                .and_then(|c| c.scale_in_cooldown())
                                .map(|v| v.to_string()),
                        ),
                    ),
                ];
                changes.extend(InfraChange::update(
                    InfraResource::ScalingPolicy,
                    &scaling.policy_name,
                    policy_summary,
                    &observed,
                    &scaling.policy_fields(),
                ));
            }
        }
        Ok(changes)
    }

    async fn put_alarm(&self, alarm: &AlarmDefinition) -> Result<(), StageError> {
        let mut call = self
            .cloudwatch
            .put_metric_alarm()
            .alarm_name(&alarm.name)
            .alarm_description(&alarm.description)
            .threshold(alarm.threshold)
            .comparison_operator(ComparisonOperator::from(GREATER_THAN))
            .evaluation_periods(i32::try_from(alarm.evaluation_periods).unwrap_or(i32::MAX))
            .treat_missing_data(NOT_BREACHING)
            .set_alarm_actions(Some(alarm.actions.clone()));
        match &alarm.metric {
            AlarmMetric::Single(metric) => {
                call = call
                    .namespace(&metric.namespace)
                    .metric_name(&metric.metric_name)
                    .statistic(Statistic::from(metric.statistic.as_str()))
                    .period(i32::try_from(metric.period_seconds).unwrap_or(i32::MAX))
                    .set_dimensions(Some(sdk_dimensions(&metric.dimensions)));
            }
            AlarmMetric::Math {
                expression,
                label,
                metrics,
            } => {
                call = call.metrics(
                    MetricDataQuery::builder()
                        .id(EXPRESSION_ID)
                        .expression(expression)
                        .label(label)
                        .return_data(true)
                        .build(),
                );
                for (id, metric) in metrics {
                    call = call.metrics(
                        MetricDataQuery::builder()
                            .id(id)
                            .metric_stat(
                                MetricStat::builder()
                                    .metric(metric.sdk_metric())
                                    .period(
                                        i32::try_from(metric.period_seconds).unwrap_or(i32::MAX),
                                    )
                                    .stat(&metric.statistic)
                                    .build(),
                            )
                            .return_data(false)
                            .build(),
                    );
                }
            }
        }
        call.send()
            .await
            .map_err(|err| stage_error("PutMetricAlarm", &err))?;
        Ok(())
    }

    async fn put_policy(&self, scaling: &ScalingDefinition) -> Result<(), StageError> {
        let metric = PredefinedMetricSpecification::builder()
            .predefined_metric_type(MetricType::EcsServiceAverageCpuUtilization)
            .build()
            .map_err(|err| StageError::failed(format!("bad scaling metric: {err}")))?;
        let configuration = TargetTrackingScalingPolicyConfiguration::builder()
            .target_value(scaling.cpu_target)
            .predefined_metric_specification(metric)
            .scale_out_cooldown(
                i32::try_from(scaling.scale_out_cooldown_seconds).unwrap_or(i32::MAX),
            )
            .scale_in_cooldown(i32::try_from(scaling.scale_in_cooldown_seconds).unwrap_or(i32::MAX))
            .build()
            .map_err(|err| StageError::failed(format!("bad scaling policy: {err}")))?;
        self.autoscaling
            .put_scaling_policy()
            .policy_name(&scaling.policy_name)
            .service_namespace(ServiceNamespace::Ecs)
            .resource_id(&scaling.resource_id)
            .scalable_dimension(ScalableDimension::from(DESIRED_COUNT))
            .policy_type(PolicyType::TargetTrackingScaling)
            .target_tracking_scaling_policy_configuration(configuration)
            .send()
            .await
            .map_err(|err| stage_error("PutScalingPolicy", &err))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use pipeline_core::Project;
    use std::path::Path;

    fn production() -> (Project, DesiredInfra) {
        let file =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cv-matcher/tugboat.toml");
        let project = Project::load_with(&file, &|_| None).unwrap();
        let target = project.target("production").unwrap();
        let env = project.environment("production").unwrap();
        let desired = desired_infra(&project.config.app.name, &target, env);
        (project, desired)
    }

    /// The alarm as `DescribeAlarms` returns it after `PutMetricAlarm` with `definition`.
    fn as_aws_holds_it(definition: &AlarmDefinition) -> MetricAlarm {
        let mut alarm = MetricAlarm::builder()
            .alarm_name(&definition.name)
            .alarm_arn(format!(
                "arn:aws:cloudwatch:us-east-1:123456789012:alarm:{}",
                definition.name
            ))
            .alarm_description(&definition.description)
            .threshold(definition.threshold)
            .comparison_operator(ComparisonOperator::GreaterThanThreshold)
            .evaluation_periods(i32::try_from(definition.evaluation_periods).unwrap())
            .treat_missing_data("notBreaching")
            .state_value(aws_sdk_cloudwatch::types::StateValue::Ok)
            .set_alarm_actions(Some(definition.actions.clone()));
        match &definition.metric {
            AlarmMetric::Single(metric) => {
                // AWS lists dimensions in its own order.
                let mut dimensions = sdk_dimensions(&metric.dimensions);
                dimensions.reverse();
                alarm = alarm
                    .namespace(&metric.namespace)
                    .metric_name(&metric.metric_name)
                    .statistic(Statistic::from(metric.statistic.as_str()))
                    .period(i32::try_from(metric.period_seconds).unwrap())
                    .set_dimensions(Some(dimensions));
            }
            AlarmMetric::Math {
                expression,
                label,
                metrics,
            } => {
                for (id, metric) in metrics.iter().rev() {
                    alarm = alarm.metrics(
                        MetricDataQuery::builder()
                            .id(id)
                            .metric_stat(
                                MetricStat::builder()
                                    .metric(metric.sdk_metric())
                                    .period(i32::try_from(metric.period_seconds).unwrap())
                                    .stat(&metric.statistic)
                                    .build(),
                            )
                            .return_data(false)
                            .build(),
                    );
                }
                alarm = alarm.metrics(
                    MetricDataQuery::builder()
                        .id(EXPRESSION_ID)
                        .expression(expression)
                        .label(label)
                        .return_data(true)
                        .build(),
                );
            }
        }
        alarm.build()
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

    #[test]
    fn an_alarm_as_aws_holds_it_is_no_change_whatever_the_order() {
        let (_, desired) = production();
        for definition in &desired.alarms {
            let held = as_aws_holds_it(definition);
            assert_eq!(
                InfraChange::update(
                    InfraResource::Alarm,
                    &definition.name,
                    definition.summary(),
                    &observed_alarm_fields(&held),
                    &definition.fields(),
                ),
                None,
                "{}",
                definition.name
            );
        }
    }

    #[test]
    fn changed_fields_are_listed_with_what_aws_holds_and_what_tugboat_wants() {
        let (_, desired) = production();
        let cpu = &desired.alarms[0];
        let mut held = as_aws_holds_it(cpu);
        held.threshold = Some(90.0);
        held.evaluation_periods = Some(5);
        held.treat_missing_data = None;
        let change = InfraChange::update(
            InfraResource::Alarm,
            &cpu.name,
            cpu.summary(),
            &observed_alarm_fields(&held),
            &cpu.fields(),
        )
        .unwrap();
        assert_eq!(
            change.to_string(),
            "~ alarm cv-matcher-cpu-high threshold 90 → 80, evaluation_periods 5 → 3, \
             treat_missing_data missing → notBreaching"
        );

        // A metric alarm where tugboat wants metric math: the metric differs.
        let rate = &desired.alarms[2];
        let mut held = as_aws_holds_it(&desired.alarms[3]);
        held.alarm_name = Some(rate.name.clone());
        held.threshold = Some(1.0);
        held.alarm_description = Some(rate.description.clone());
        let change = InfraChange::update(
            InfraResource::Alarm,
            &rate.name,
            rate.summary(),
            &observed_alarm_fields(&held),
            &rate.fields(),
        )
        .unwrap();
        assert_eq!(
            change
                .fields
                .iter()
                .map(|f| f.field.as_str())
                .collect::<Vec<_>>(),
            ["metric"]
        );
    }

    #[test]
    fn plan_lines() {
        let create = InfraChange::create(
            InfraResource::Alarm,
            "cv-matcher-cpu-high",
            "CPUUtilization > 80".into(),
        );
        assert_eq!(
            create.to_string(),
            "+ alarm cv-matcher-cpu-high (CPUUtilization > 80)"
        );
        let update = InfraChange::update(
            InfraResource::LogGroup,
            "/ecs/cv-matcher",
            "retention 30 days".into(),
            &[("retention", "14".into())],
            &[("retention", "30".into())],
        )
        .unwrap();
        assert_eq!(
            update.to_string(),
            "~ log group /ecs/cv-matcher retention 14 → 30"
        );
        assert_eq!(
            serde_json::to_value(&update).unwrap(),
            serde_json::json!({
                "action": "update",
                "resource": "log_group",
                "name": "/ecs/cv-matcher",
                "summary": "retention 30 days",
                "fields": [{"field": "retention", "from": "14", "to": "30"}],
            })
        );
    }
}
