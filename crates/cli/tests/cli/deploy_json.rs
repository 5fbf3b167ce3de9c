//! The `--output json` event stream of a successful deploy, as scripts see it.

use crate::common::{assert_exit, Seeded, CLUSTER};
use crate::example;

/// Blanks what changes from run to run: times, durations, ids and digests.
fn filters() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})",
            "[timestamp]",
        ),
        (r#""(duration_ms|millis)": \d+"#, r#""$1": "[ms]""#),
        (r"\br\d{8}-\d{6}-[0-9a-f]{7}\b", "[release-id]"),
        (r"ecs-svc/\d+", "ecs-svc/[deployment-id]"),
        (r"\(task [0-9a-f]{32}\)", "(task [task-id])"),
        (r"sha256:[0-9a-f]{64}", "sha256:[digest]"),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_successful_deploy_streams_these_events() {
    // The rollout takes 4 s, so the first poll (right after the update) always sees it
    // in progress and the next one (5 s later, the example's interval) sees it done.
    let seeded = Seeded::start_with_env(&[("TUGBOAT_MOTO_ROLLOUT_SECONDS", "4")]).await;
    let deployed = seeded
        .run_in(
            &example(),
            &[
                ("GITHUB_SHA", "8d3c1f0a9b7e6d5c4b3a29180f7e6d5c4b3a2918"),
                ("GITHUB_REF", "refs/tags/v1.1.0"),
                ("GITHUB_ACTOR", "cv-matcher-ci"),
            ],
            &[
                "deploy",
                "--env",
                "production",
                "--image",
                "v1.1.0",
                "--output",
                "json",
            ],
        )
        .await;
    assert_exit(&deployed, 0);
    assert!(
        deployed.stderr.is_empty(),
        "JSON mode writes nothing for people: {}",
        String::from_utf8_lossy(&deployed.stderr)
    );
    assert!(seeded
        .task_definition(CLUSTER)
        .await
        .ends_with("/cv-matcher:2"));

    let events = crate::json_lines(&deployed.stdout);
    let stream = serde_json::to_string_pretty(&events).expect("serialise");
    insta::with_settings!({filters => filters()}, {
        insta::assert_snapshot!("deploy_json_events", stream);
    });
}
