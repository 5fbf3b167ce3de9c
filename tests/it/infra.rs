//! Monitoring and scaling as code on moto: CV Matcher's production log group, its five
//! alarms and its auto scaling, planned and applied through the real SDK, and what
//! CloudWatch, CloudWatch Logs and Application Auto Scaling hold afterwards.

use anyhow::Context;
use aws_adapters::{desired_infra, DesiredInfra, InfraReconciler};
use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};
use aws_sdk_cloudwatch::types::MetricAlarm;
use std::collections::BTreeMap;
use tugboat_tests::aws::AwsFixture;
use tugboat_tests::calls::CallCounts;
use tugboat_tests::cv_matcher::{self as cv, CvMatcher};

const RESOURCE_ID: &str = "service/cv-matcher-cluster/cv-matcher-service";
const POLICY: &str = "cv-matcher-production-cpu";
const ALARMS: [&str; 5] = [
    "cv-matcher-cpu-high",
    "cv-matcher-memory-high",
    "cv-matcher-5xx-rate",
    "cv-matcher-response-time",
    "cv-matcher-failed-tasks",
];

async fn cv_matcher() -> anyhow::Result<CvMatcher> {
    CvMatcher::setup(AwsFixture::start().await?).await
}

fn desired(cv: &CvMatcher) -> anyhow::Result<DesiredInfra> {
    let env = cv.project.environment(cv::ENVIRONMENT)?;
    Ok(desired_infra(&cv.project.config.app.name, &cv.target, env))
}

fn lines(changes: &[aws_adapters::InfraChange]) -> Vec<String> {
    changes.iter().map(ToString::to_string).collect()
}

/// Calls of operations that change something: everything but `Describe*`/`List*`/`Get*`.
fn writes(counts: &CallCounts) -> BTreeMap<String, usize> {
    counts
        .calls
        .iter()
        .filter(|(name, _)| {
            let operation = name.split('.').nth(1).unwrap_or(name);
            !["Describe", "List", "Get"]
                .iter()
                .any(|read| operation.starts_with(read))
        })
        .map(|(name, count)| (name.clone(), *count))
        .collect()
}

async fn alarms(cv: &CvMatcher) -> anyhow::Result<BTreeMap<String, MetricAlarm>> {
    let output = cv
        .aws
        .clients
        .cloudwatch
        .describe_alarms()
        .set_alarm_names(Some(ALARMS.iter().map(ToString::to_string).collect()))
        .send()
        .await
        .context("DescribeAlarms")?;
    Ok(output
        .metric_alarms()
        .iter()
        .filter_map(|a| Some((a.alarm_name()?.to_string(), a.clone())))
        .collect())
}

fn dimensions(alarm: &MetricAlarm) -> Vec<(&str, &str)> {
    let mut dims: Vec<(&str, &str)> = alarm
        .dimensions()
        .iter()
        .filter_map(|d| Some((d.name()?, d.value()?)))
        .collect();
    dims.sort();
    dims
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cv_matcher_production_infra_is_created_once_then_left_alone() -> anyhow::Result<()> {
    let cv = cv_matcher().await?;
    let desired = desired(&cv)?;
    let reconciler = InfraReconciler::new(&cv.aws.clients);

    cv.aws.calls.reset();
    let first = reconciler.apply(&desired).await?;
    let first_calls = cv.aws.calls.snapshot();

    assert_eq!(
        lines(&first),
        [
            "+ log group /ecs/cv-matcher (retention 30 days)",
            "+ alarm cv-matcher-cpu-high (CPUUtilization > 80)",
            "+ alarm cv-matcher-memory-high (MemoryUtilization > 80)",
            "+ alarm cv-matcher-5xx-rate (100*HTTPCode_Target_5XX_Count/RequestCount > 1)",
            "+ alarm cv-matcher-response-time (TargetResponseTime > 1)",
            "+ alarm cv-matcher-failed-tasks (DesiredTaskCount-RunningTaskCount > 0)",
            "+ scalable target service/cv-matcher-cluster/cv-matcher-service (2 to 10 tasks)",
            "+ scaling policy cv-matcher-production-cpu (ECSServiceAverageCPUUtilization at 75, cooldowns 300s out / 300s in)",
        ]
    );
    eprintln!("first apply:\n{first_calls}");
    assert_eq!(
        writes(&first_calls),
        BTreeMap::from([
            ("application auto scaling.PutScalingPolicy".to_string(), 1),
            (
                "application auto scaling.RegisterScalableTarget".to_string(),
                1
            ),
            ("cloudwatch.PutMetricAlarm".to_string(), 5),
            ("cloudwatch logs.CreateLogGroup".to_string(), 1),
            ("cloudwatch logs.PutRetentionPolicy".to_string(), 1),
        ]),
        "{first_calls}"
    );

    // What AWS holds, read through the SDK.
    let groups = cv
        .aws
        .clients
        .logs
        .describe_log_groups()
        .log_group_name_prefix("/ecs/cv-matcher")
        .send()
        .await?;
    let group = groups
        .log_groups()
        .iter()
        .find(|g| g.log_group_name() == Some("/ecs/cv-matcher"))
        .context("no log group /ecs/cv-matcher")?;
    assert_eq!(group.retention_in_days(), Some(30));

    let held = alarms(&cv).await?;
    assert_eq!(held.keys().map(String::as_str).collect::<Vec<_>>(), {
        let mut names = ALARMS.to_vec();
        names.sort();
        names
    });
    let service_dims = vec![
        ("ClusterName", "cv-matcher-cluster"),
        ("ServiceName", "cv-matcher-service"),
    ];
    let cpu = &held["cv-matcher-cpu-high"];
    assert_eq!(cpu.namespace(), Some("AWS/ECS"));
    assert_eq!(cpu.metric_name(), Some("CPUUtilization"));
    assert_eq!(cpu.statistic().map(|s| s.as_str()), Some("Average"));
    assert_eq!(cpu.period(), Some(60));
    assert_eq!(cpu.evaluation_periods(), Some(3));
    assert_eq!(cpu.threshold(), Some(80.0));
    assert_eq!(
        cpu.comparison_operator().map(|c| c.as_str()),
        Some("GreaterThanThreshold")
    );
    assert_eq!(cpu.treat_missing_data(), Some("notBreaching"));
    assert_eq!(dimensions(cpu), service_dims);
    assert_eq!(
        held["cv-matcher-memory-high"].metric_name(),
        Some("MemoryUtilization")
    );
    let response = &held["cv-matcher-response-time"];
    assert_eq!(response.namespace(), Some("AWS/ApplicationELB"));
    assert_eq!(response.metric_name(), Some("TargetResponseTime"));
    assert_eq!(response.threshold(), Some(1.0));
    assert_eq!(
        dimensions(response),
        vec![("LoadBalancer", "app/cv-matcher-alb/50dc6c495c0c9188")]
    );

    // The metric-math alarms: moto keeps the queries as given.
    let rate = &held["cv-matcher-5xx-rate"];
    assert_eq!(
        rate.metric_name(),
        None,
        "a metric-math alarm has no metric"
    );
    let queries: BTreeMap<&str, _> = rate
        .metrics()
        .iter()
        .filter_map(|q| Some((q.id()?, q)))
        .collect();
    assert_eq!(
        queries.keys().copied().collect::<Vec<_>>(),
        ["e1", "m1", "m2"]
    );
    assert_eq!(queries["e1"].expression(), Some("100*m1/m2"));
    assert_eq!(queries["e1"].return_data(), Some(true));
    let m1 = queries["m1"].metric_stat().context("m1 has no metric")?;
    assert_eq!(m1.stat(), Some("Sum"));
    assert_eq!(m1.period(), Some(60));
    let m1_metric = m1.metric().context("m1 names no metric")?;
    assert_eq!(m1_metric.namespace(), Some("AWS/ApplicationELB"));
    assert_eq!(m1_metric.metric_name(), Some("HTTPCode_Target_5XX_Count"));
    assert_eq!(
        queries["m2"]
            .metric_stat()
            .and_then(|s| s.metric())
            .and_then(|m| m.metric_name()),
        Some("RequestCount")
    );
    let failed = &held["cv-matcher-failed-tasks"];
    let failed_queries: BTreeMap<&str, _> = failed
        .metrics()
        .iter()
        .filter_map(|q| Some((q.id()?, q)))
        .collect();
    assert_eq!(failed_queries["e1"].expression(), Some("m1-m2"));
    let desired_count = failed_queries["m1"]
        .metric_stat()
        .and_then(|s| s.metric())
        .context("m1 names no metric")?;
    assert_eq!(desired_count.namespace(), Some("ECS/ContainerInsights"));
    assert_eq!(desired_count.metric_name(), Some("DesiredTaskCount"));
    let mut failed_dims: Vec<(&str, &str)> = desired_count
        .dimensions()
        .iter()
        .filter_map(|d| Some((d.name()?, d.value()?)))
        .collect();
    failed_dims.sort();
    assert_eq!(failed_dims, service_dims);

    let targets = cv
        .aws
        .clients
        .autoscaling
        .describe_scalable_targets()
        .service_namespace(ServiceNamespace::Ecs)
        .resource_ids(RESOURCE_ID)
        .send()
        .await?;
    let target = targets
        .scalable_targets()
        .first()
        .context("no scalable target")?;
    assert_eq!(
        target.scalable_dimension(),
        &ScalableDimension::EcsServiceDesiredCount
    );
    assert_eq!((target.min_capacity(), target.max_capacity()), (2, 10));
    let policies = cv
        .aws
        .clients
        .autoscaling
        .describe_scaling_policies()
        .service_namespace(ServiceNamespace::Ecs)
        .resource_id(RESOURCE_ID)
        .send()
        .await?;
    let policy = policies
        .scaling_policies()
        .iter()
        .find(|p| p.policy_name() == POLICY)
        .context("no scaling policy")?;
    let config = policy
        .target_tracking_scaling_policy_configuration()
        .context("not target tracking")?;
    assert_eq!(config.target_value(), 75.0);
    assert_eq!(config.scale_out_cooldown(), Some(300));
    assert_eq!(config.scale_in_cooldown(), Some(300));
    assert_eq!(
        config
            .predefined_metric_specification()
            .map(|p| p.predefined_metric_type().as_str()),
        Some("ECSServiceAverageCPUUtilization")
    );

    // The second apply finds nothing to do and writes nothing.
    cv.aws.calls.reset();
    let second = reconciler.apply(&desired).await?;
    let second_calls = cv.aws.calls.snapshot();
    eprintln!("second apply:\n{second_calls}");
    assert_eq!(lines(&second), Vec::<String>::new());
    assert_eq!(writes(&second_calls), BTreeMap::new(), "{second_calls}");
    assert_eq!(
        second_calls.calls,
        BTreeMap::from([
            (
                "application auto scaling.DescribeScalableTargets".to_string(),
                1
            ),
            (
                "application auto scaling.DescribeScalingPolicies".to_string(),
                1
            ),
            ("cloudwatch.DescribeAlarms".to_string(), 1),
            ("cloudwatch logs.DescribeLogGroups".to_string(), 1),
        ])
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_shows_exactly_the_manual_changes_and_apply_undoes_them() -> anyhow::Result<()> {
    let cv = cv_matcher().await?;
    let desired = desired(&cv)?;
    let reconciler = InfraReconciler::new(&cv.aws.clients);
    reconciler.apply(&desired).await?;

    // Someone raises the CPU alarm's threshold to 90 by hand (every other field as it was),
    // shortens the log retention and raises the minimum task count.
    let cpu = alarms(&cv).await?["cv-matcher-cpu-high"].clone();
    let clients = &cv.aws.clients;
    clients
        .cloudwatch
        .put_metric_alarm()
        .alarm_name("cv-matcher-cpu-high")
        .set_alarm_description(cpu.alarm_description().map(str::to_string))
        .set_namespace(cpu.namespace().map(str::to_string))
        .set_metric_name(cpu.metric_name().map(str::to_string))
        .set_statistic(cpu.statistic().cloned())
        .set_period(cpu.period())
        .set_dimensions(Some(cpu.dimensions().to_vec()))
        .set_evaluation_periods(cpu.evaluation_periods())
        .set_comparison_operator(cpu.comparison_operator().cloned())
        .set_treat_missing_data(cpu.treat_missing_data().map(str::to_string))
        .set_alarm_actions(Some(cpu.alarm_actions().to_vec()))
        .threshold(90.0)
        .send()
        .await?;
    let plan = reconciler.plan(&desired).await?;
    assert_eq!(
        lines(&plan),
        ["~ alarm cv-matcher-cpu-high threshold 90 → 80"]
    );

    clients
        .logs
        .put_retention_policy()
        .log_group_name("/ecs/cv-matcher")
        .retention_in_days(14)
        .send()
        .await?;
    clients
        .autoscaling
        .register_scalable_target()
        .service_namespace(ServiceNamespace::Ecs)
        .resource_id(RESOURCE_ID)
        .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
        .min_capacity(3)
        .max_capacity(10)
        .send()
        .await?;
    let plan = reconciler.plan(&desired).await?;
    assert_eq!(
        lines(&plan),
        [
            "~ log group /ecs/cv-matcher retention 14 → 30",
            "~ alarm cv-matcher-cpu-high threshold 90 → 80",
            "~ scalable target service/cv-matcher-cluster/cv-matcher-service min_tasks 3 → 2",
        ]
    );

    cv.aws.calls.reset();
    let applied = reconciler.apply(&desired).await?;
    assert_eq!(applied, plan);
    let calls = cv.aws.calls.snapshot();
    assert_eq!(
        writes(&calls),
        BTreeMap::from([
            (
                "application auto scaling.RegisterScalableTarget".to_string(),
                1
            ),
            ("cloudwatch.PutMetricAlarm".to_string(), 1),
            ("cloudwatch logs.PutRetentionPolicy".to_string(), 1),
        ]),
        "only what differs is written: {calls}"
    );
    assert_eq!(
        alarms(&cv).await?["cv-matcher-cpu-high"].threshold(),
        Some(80.0)
    );
    assert_eq!(
        lines(&reconciler.plan(&desired).await?),
        Vec::<String>::new()
    );
    Ok(())
}
