//! Test commands never see deploy credentials: `tugboat deploy` with AWS keys and a Slack
//! token in its environment runs a test command that prints its whole environment.

use crate::common::{text, Seeded};

#[tokio::test(flavor = "multi_thread")]
async fn test_commands_never_see_the_deploy_credentials() {
    let seeded = Seeded::start().await;
    // Print the environment, then fail: nothing is built or deployed.
    let dir = crate::common::example_with_tests(r#"["env; echo END-OF-ENV", "false"]"#);

    let secrets = [
        ("AWS_ACCESS_KEY_ID", "AKIATUGBOATTESTKEY01"),
        (
            "AWS_SECRET_ACCESS_KEY",
            "tugboat-secret-access-key-do-not-print",
        ),
        ("AWS_SESSION_TOKEN", "tugboat-session-token-do-not-print"),
        ("SLACK_BOT_TOKEN", "xoxb-tugboat-slack-token-do-not-print"),
    ];
    let output = seeded
        .run_in(
            dir.path(),
            &secrets,
            &["deploy", "--env", "production", "-v"],
        )
        .await;
    let all = text(&output);

    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains("END-OF-ENV"),
        "the test command did not run: {all}"
    );
    assert!(all.contains("PATH="), "the test command sees PATH: {all}");
    for (name, value) in secrets {
        assert!(
            !all.contains(value),
            "{name}'s value reached the output:\n{all}"
        );
        assert!(
            !all.contains(&format!("{name}=")),
            "{name} reached the test command:\n{all}"
        );
    }
    // Nor the record.
    for key in seeded.record_keys().await {
        let body = seeded
            .fixture
            .clients
            .s3
            .get_object()
            .bucket(crate::common::BUCKET)
            .key(&key)
            .send()
            .await
            .expect("get object")
            .body
            .collect()
            .await
            .expect("read object")
            .into_bytes();
        let body = String::from_utf8_lossy(&body);
        for (name, value) in secrets {
            assert!(!body.contains(value), "{name}'s value is in {key}");
        }
    }
}
