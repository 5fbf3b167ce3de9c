//! The SDK side of `tugboat infra plan|apply`: [`InfraReconciler`] reads what AWS holds
//! (`DescribeLogGroups`, `DescribeAlarms`, `DescribeScalableTargets`,
//! `DescribeScalingPolicies`) and writes the changes (`CreateLogGroup`,
//! `PutRetentionPolicy`, `PutMetricAlarm`, `RegisterScalableTarget`, `PutScalingPolicy`).

use super::change::{observed_alarm_fields, ChangeAction, InfraChange, InfraResource};
use super::desired::{
    AlarmDefinition, AlarmMetric, DesiredInfra, LogGroupSpec, MetricSpec, ScalingDefinition,
    EXPRESSION_ID, GREATER_THAN, NOT_BREACHING,
};
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
use pipeline_core::StageError;
use std::collections::BTreeMap;

/// `DescribeAlarms` takes at most this many names in one call.
const NAMES_PER_CALL: usize = 100;
/// What ECS services scale.
const DESIRED_COUNT: &str = "ecs:service:DesiredCount";

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

impl MetricSpec {
    /// The metric as the SDK takes it.
    pub(super) fn sdk_metric(&self) -> Metric {
        Metric::builder()
            .namespace(&self.namespace)
            .metric_name(&self.metric_name)
            .set_dimensions(Some(sdk_dimensions(&self.dimensions)))
            .build()
    }
}

/// `(name, value)` pairs as the SDK's dimensions.
pub(super) fn sdk_dimensions(dimensions: &[(String, String)]) -> Vec<Dimension> {
    dimensions
        .iter()
        .map(|(name, value)| Dimension::builder().name(name).value(value).build())
        .collect()
}
