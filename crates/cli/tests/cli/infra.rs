//! `tugboat infra plan|apply` against moto: the design's alarms, log group and auto
//! scaling, checked through the SDK; a second apply changes nothing.

use crate::common::{Seeded, CLUSTER, SERVICE};

fn result(output: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(last)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))["result"]
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn infra_plan_apply_then_nothing_left_to_change() {
    let seeded = Seeded::start().await;
    let plan = seeded
        .run(&["infra", "plan", "--env", "production", "--output", "json"])
        .await;
    assert_eq!(
        plan.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let planned = result(&plan)["changes"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    assert!(
        planned >= 7,
        "log group, 5 alarms and scaling differ from the seed: {planned}"
    );
    let clients = &seeded.fixture.clients;
    let groups = clients
        .logs
        .describe_log_groups()
        .log_group_name_prefix("/ecs/cv-matcher")
        .send()
        .await
        .expect("logs");
    assert!(groups.log_groups().is_empty(), "plan changed nothing");

    let apply = seeded.run(&["infra", "apply", "--env", "production"]).await;
    assert_eq!(
        apply.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&apply.stderr)
    );
    assert!(String::from_utf8_lossy(&apply.stdout).contains("alarm cv-matcher-cpu-high"));
    let groups = clients
        .logs
        .describe_log_groups()
        .log_group_name_prefix("/ecs/cv-matcher")
        .send()
        .await
        .expect("logs");
    assert_eq!(groups.log_groups()[0].retention_in_days(), Some(30));
    let cpu = clients
        .cloudwatch
        .describe_alarms()
        .alarm_names("cv-matcher-cpu-high")
        .send()
        .await
        .expect("alarms");
    assert_eq!(cpu.metric_alarms()[0].threshold(), Some(80.0));
    let targets = clients
        .autoscaling
        .describe_scalable_targets()
        .service_namespace(aws_sdk_applicationautoscaling::types::ServiceNamespace::Ecs)
        .resource_ids(format!("service/{CLUSTER}/{SERVICE}"))
        .send()
        .await
        .expect("scalable targets");
    let target = &targets.scalable_targets()[0];
    assert_eq!((target.min_capacity(), target.max_capacity()), (2, 10));

    let again = seeded
        .run(&["infra", "plan", "--env", "production", "--output", "json"])
        .await;
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(
        result(&again)["changes"],
        serde_json::json!([]),
        "a second plan finds nothing to change"
    );
}
