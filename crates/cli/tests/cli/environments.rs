//! Which environment a command acts on: `--env`, else the git ref's rules.

use crate::common::{assert_exit, result, Seeded, CLUSTER, STAGING_CLUSTER};
use crate::example;

/// `plan --output json` with `GITHUB_REF=git_ref` and no `--env`.
async fn plan_for_ref(seeded: &Seeded, git_ref: &str) -> std::process::Output {
    seeded
        .run_in(
            &example(),
            &[("GITHUB_REF", git_ref)],
            &["plan", "--image", "v1.1.0", "--output", "json"],
        )
        .await
}

fn steps(plan: &serde_json::Value) -> String {
    plan["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn app_env(plan: &serde_json::Value) -> &serde_json::Value {
    &plan["task_definition"]["containerDefinitions"][0]["environment"][0]["value"]
}

#[tokio::test(flavor = "multi_thread")]
async fn the_git_ref_picks_the_environment() {
    let seeded = Seeded::start().await;
    let production = seeded.task_definition(CLUSTER).await;
    let staging = seeded.task_definition(STAGING_CLUSTER).await;

    let tag = plan_for_ref(&seeded, "refs/tags/v1.2.0").await;
    assert_exit(&tag, 0);
    let plan = result(&tag);
    let text = steps(&plan);
    assert!(
        text.contains("update: service cv-matcher-cluster/cv-matcher-service"),
        "a v* tag deploys to production: {text}"
    );
    assert!(text.contains("/cv-matcher/prod/"), "{text}");
    assert_eq!(app_env(&plan), "production");

    let develop = plan_for_ref(&seeded, "refs/heads/develop").await;
    assert_exit(&develop, 0);
    let plan = result(&develop);
    let text = steps(&plan);
    assert!(
        text.contains("update: service cv-matcher-staging-cluster/cv-matcher-service"),
        "develop deploys to staging: {text}"
    );
    assert!(text.contains("/cv-matcher/staging/"), "{text}");
    assert_eq!(app_env(&plan), "staging");

    let feature = plan_for_ref(&seeded, "refs/heads/feature-x").await;
    assert_exit(&feature, 2);
    let json = result(&feature);
    let message = json["message"].as_str().expect("a message");
    assert!(message.contains("refs/heads/feature-x"), "{message}");
    assert!(
        message.contains("--env local|production|staging"),
        "{message}"
    );
    let human = seeded
        .run_in(
            &example(),
            &[("GITHUB_REF", "refs/heads/feature-x")],
            &["deploy", "--image", "v1.1.0"],
        )
        .await;
    assert_exit(&human, 2);
    let stderr = String::from_utf8_lossy(&human.stderr);
    assert!(
        stderr.contains("no environment deploys git ref \"refs/heads/feature-x\""),
        "{stderr}"
    );
    assert_eq!(seeded.task_definition(CLUSTER).await, production);
    assert_eq!(seeded.task_definition(STAGING_CLUSTER).await, staging);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_env_exits_2_listing_the_environments() {
    // No AWS call is made for bad input, so no emulator is needed: any endpoint will do.
    let mut command = crate::tugboat();
    crate::aws_env(&mut command, "http://127.0.0.1:9");
    let output = command
        .current_dir(example())
        .args(["deploy", "--env", "prod", "--image", "v1.1.0"])
        .output()
        .await
        .expect("run");
    assert_exit(&output, 2);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("\"prod\""), "{stderr}");
    assert!(stderr.contains("production, staging"), "{stderr}");
    assert!(output.stdout.is_empty());
}
