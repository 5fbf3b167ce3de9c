//! `tugboat run`: a one-off task with the service's revision, placed as the service, its
//! lines streamed; the binary exits with the task's exit code.

use crate::common::{assert_exit, result, text, Seeded, CLUSTER};

#[tokio::test(flavor = "multi_thread")]
async fn run_passes_the_tasks_exit_code_and_lines_through() {
    let seeded = Seeded::start().await;
    let output = seeded
        .run(&[
            "run",
            "--env",
            "production",
            "--",
            "sh",
            "-c",
            "echo alembic current; echo 0042_add_index (head); exit 7",
        ])
        .await;
    assert_exit(&output, 7);
    let all = text(&output);
    assert!(all.contains("run | alembic current"), "{all}");
    assert!(all.contains("run | 0042_add_index (head)"), "{all}");
    assert!(all.contains("exited with code 7"), "{all}");

    // The task ran the service's revision, as tugboat's, and stopped.
    let tasks = seeded
        .fixture
        .clients
        .ecs
        .list_tasks()
        .cluster(CLUSTER)
        .desired_status(aws_sdk_ecs::types::DesiredStatus::Stopped)
        .send()
        .await
        .expect("list tasks");
    let arns = tasks.task_arns().to_vec();
    assert_eq!(arns.len(), 1, "{arns:?}");
    let described = seeded
        .fixture
        .clients
        .ecs
        .describe_tasks()
        .cluster(CLUSTER)
        .set_tasks(Some(arns))
        .send()
        .await
        .expect("describe tasks");
    let task = &described.tasks()[0];
    assert_eq!(
        task.task_definition_arn(),
        Some(seeded.task_definition(CLUSTER).await.as_str())
    );
    assert!(task
        .started_by()
        .is_some_and(|by| by.starts_with("tugboat/r")));

    // Exit 0 is 0, and JSON says how it ended.
    let ok = seeded
        .run(&[
            "run",
            "--env",
            "production",
            "--output",
            "json",
            "--",
            "sh",
            "-c",
            "echo ok",
        ])
        .await;
    assert_exit(&ok, 0);
    let json = result(&ok);
    assert_eq!(json["exit_code"], 0);
    assert_eq!(json["task"]["exit_code"], 0);
    assert_eq!(json["task"]["log_tail"][0]["message"], "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_without_a_command_exits_2_and_starts_nothing() {
    let seeded = Seeded::start().await;
    let output = seeded.run(&["run", "--env", "production"]).await;
    assert_exit(&output, 2);
    let tasks = seeded
        .fixture
        .clients
        .ecs
        .list_tasks()
        .cluster(CLUSTER)
        .send()
        .await
        .expect("list tasks");
    assert!(tasks.task_arns().is_empty());
}
