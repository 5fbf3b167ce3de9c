//! The change model: what differs between what tugboat wants ([`super::DesiredInfra`])
//! and what AWS holds, field by field, as the lines `tugboat infra plan` prints.

use super::desired::{render_list, sorted, MetricSpec, EXPRESSION_ID};
use aws_sdk_cloudwatch::types::{Metric, MetricAlarm};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

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
    pub(super) fn create(resource: InfraResource, name: &str, summary: String) -> Self {
        Self {
            action: ChangeAction::Create,
            resource,
            name: name.to_string(),
            summary,
            fields: Vec::new(),
        }
    }

    /// An update of the fields that differ, or `None` when none does.
    pub(super) fn update(
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

/// The same fields of an alarm as `DescribeAlarms` returns it.
pub(super) fn observed_alarm_fields(alarm: &MetricAlarm) -> Vec<(&'static str, String)> {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::infra::desired::{tests::production, AlarmDefinition, AlarmMetric};
    use crate::infra::reconcile::sdk_dimensions;
    use aws_sdk_cloudwatch::types::{ComparisonOperator, MetricDataQuery, MetricStat, Statistic};

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
