//! `tugboat unlock`: a lock held by a run that died refuses deploys until its lease runs
//! out; `unlock --yes` removes it at once (without a terminal, only with `--yes`).

use crate::common::{assert_exit, text, Seeded, BUCKET};
use crate::example;

const LOCK: &str = "tugboat/cv-matcher/production/lock.json";

async fn lock_exists(seeded: &Seeded) -> bool {
    seeded.record_keys().await.iter().any(|key| key == LOCK)
}

async fn deploy(seeded: &Seeded) -> std::process::Output {
    seeded
        .run_in(
            &example(),
            &[
                ("GITHUB_SHA", "8d3c1f0a9b7e6d5c4b3a29180f7e6d5c4b3a2918"),
                ("GITHUB_REF", "refs/tags/v1.1.0"),
                ("GITHUB_ACTOR", "cv-matcher-ci"),
            ],
            &["deploy", "--env", "production", "--image", "v1.1.0"],
        )
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn unlock_yes_removes_a_held_lock_and_the_next_deploy_proceeds() {
    let seeded = Seeded::start_with_env(&[("TUGBOAT_MOTO_ROLLOUT_SECONDS", "1")]).await;
    // A run that was killed a moment ago: its 120 s lease has not run out.
    let now = chrono::Utc::now().to_rfc3339();
    let body = format!(
        r#"{{"who":"mallory@ci-runner-3","release_id":"r20261126-090000-abcdef0","since":"{now}","token":"dead-run","renewed_at":"{now}","lease_seconds":120}}"#
    );
    seeded
        .fixture
        .clients
        .s3
        .put_object()
        .bucket(BUCKET)
        .key(LOCK)
        .body(body.into_bytes().into())
        .send()
        .await
        .expect("put the lock");

    let refused = deploy(&seeded).await;
    assert_exit(&refused, 2);
    let said = text(&refused);
    assert!(
        said.contains("being deployed by mallory@ci-runner-3"),
        "{said}"
    );
    assert!(said.contains("lease runs out at"), "{said}");
    assert!(said.contains("tugboat unlock --env production"), "{said}");

    // No terminal, no --yes: refused, the lock stays.
    let asked = seeded.run(&["unlock", "--env", "production"]).await;
    assert_exit(&asked, 2);
    let said = text(&asked);
    assert!(said.contains("pass --yes"), "{said}");
    assert!(said.contains("mallory@ci-runner-3"), "{said}");
    assert!(lock_exists(&seeded).await, "removed without --yes");

    let unlocked = seeded
        .run(&["unlock", "--env", "production", "--yes"])
        .await;
    assert_exit(&unlocked, 0);
    let said = text(&unlocked);
    for shown in [
        "mallory@ci-runner-3",
        "r20261126-090000-abcdef0",
        "last renewal",
        "runs out at",
        "removed the deploy lock",
    ] {
        assert!(said.contains(shown), "{shown} not in: {said}");
    }
    assert!(!lock_exists(&seeded).await, "the lock is still there");

    let deployed = deploy(&seeded).await;
    assert_exit(&deployed, 0);
    assert!(seeded
        .task_definition(crate::common::CLUSTER)
        .await
        .ends_with("/cv-matcher:2"));
    assert!(!lock_exists(&seeded).await, "the deploy kept its lock");

    let nothing = seeded
        .run(&["unlock", "--env", "production", "--yes"])
        .await;
    assert_exit(&nothing, 0);
    assert!(
        text(&nothing).contains("no deploy lock"),
        "{}",
        text(&nothing)
    );
}
