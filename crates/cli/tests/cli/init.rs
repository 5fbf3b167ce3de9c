//! `tugboat init` writes a working configuration from a running service.

use crate::common::scratch;
use crate::common::{assert_exit, Seeded};

#[tokio::test(flavor = "multi_thread")]
async fn init_writes_a_config_that_loads_and_plans() {
    let seeded = Seeded::start().await;
    let dir = scratch("init");
    let init_args = [
        "init",
        "--cluster",
        "cv-matcher-cluster",
        "--service",
        "cv-matcher-service",
        "--region",
        "us-east-1",
        "--app",
        "cv-matcher",
        "--repository",
        "cv_matcher",
    ];

    let init = seeded.run_in(&dir, &[], &init_args).await;
    assert_exit(&init, 0);
    let config = dir.join("tugboat.toml");
    let task_file = dir.join(".aws/task-definition.json");
    assert!(config.is_file() && task_file.is_file());

    let project = pipeline_core::Project::load(&config)
        .unwrap_or_else(|e| panic!("the written config loads: {e}"));
    assert_eq!(project.config.app.name, "cv-matcher");
    assert_eq!(project.config.image.repository, "cv_matcher");
    let env = project.environment("production").expect("production");
    assert_eq!(env.cluster, "cv-matcher-cluster");
    assert_eq!(env.service, "cv-matcher-service");
    assert_eq!(project.task_definition.family, "cv-matcher");
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&task_file).expect("read")).expect("JSON");
    assert_eq!(
        written["containerDefinitions"][0]["image"],
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/cv_matcher:v1.0.0",
        "the running revision's image"
    );
    for describe_only in ["taskDefinitionArn", "revision", "status", "registeredAt"] {
        assert!(
            written.get(describe_only).is_none(),
            "{describe_only} is not a RegisterTaskDefinition field: {written:#}"
        );
    }

    let plan = seeded
        .run_in(
            &dir,
            &[],
            &["plan", "--env", "production", "--image", "v1.1.0"],
        )
        .await;
    assert_exit(&plan, 0);
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan.contains("from cv-matcher:1 to the new revision"),
        "{plan}"
    );
    assert!(plan.contains("cv_matcher@sha256:"), "{plan}");

    let again = seeded.run_in(&dir, &[], &init_args).await;
    assert_exit(&again, 2);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("exists already"),
        "init never overwrites"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
