//! The S3 deploy lock on a versioned bucket: stale locks are taken over, fresh ones
//! refused, and a run never removes a lock it no longer owns.

use anyhow::Context;
use aws_adapters::S3ArtifactStore;
use pipeline_core::{ArtifactStore, LockHolder, ReleaseId, StageErrorKind};
use tugboat_tests::aws::AwsFixture;

const BUCKET: &str = "cv-matcher-deployments";
const KEY: &str = "tugboat/cv-matcher/production/lock.json";

fn holder(who: &str, age: chrono::Duration) -> LockHolder {
    LockHolder {
        who: who.to_string(),
        release_id: ReleaseId(format!("r20261126-000000-{who}")),
        since: chrono::Utc::now() - age,
    }
}

async fn stored(aws: &AwsFixture) -> anyhow::Result<Option<LockHolder>> {
    let result = aws
        .clients
        .s3
        .get_object()
        .bucket(BUCKET)
        .key(KEY)
        .send()
        .await;
    match result {
        Ok(output) => {
            let bytes = output.body.collect().await?.into_bytes();
            Ok(Some(serde_json::from_slice(&bytes).context("lock.json")?))
        }
        Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(None),
        Err(err) => Err(anyhow::anyhow!("GetObject: {err:?}")),
    }
}

fn stage(err: pipeline_core::StageError) -> anyhow::Error {
    anyhow::anyhow!("{err}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_lock_is_taken_over_and_only_the_owner_releases() -> anyhow::Result<()> {
    let aws = AwsFixture::start().await?;
    aws.clients.s3.create_bucket().bucket(BUCKET).send().await?;
    aws.clients
        .s3
        .put_bucket_versioning()
        .bucket(BUCKET)
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await?;
    let store = S3ArtifactStore::new(aws.clients.s3.clone(), BUCKET, "tugboat");

    // A run that died two hours ago left its lock behind.
    let bob = holder("bob", chrono::Duration::hours(2));
    let bobs_lock = store
        .acquire_lock("cv-matcher", "production", &bob)
        .await
        .map_err(stage)?;
    assert_eq!(stored(&aws).await?, Some(bob.clone()));

    // The next run takes it over.
    let carol = holder("carol", chrono::Duration::zero());
    let carols_lock = store
        .acquire_lock("cv-matcher", "production", &carol)
        .await
        .map_err(stage)?;
    assert_eq!(carols_lock.holder, carol);
    assert_eq!(
        stored(&aws).await?,
        Some(carol.clone()),
        "the stale lock was not replaced"
    );

    // A fresh lock is not taken over: the error names its holder.
    let dave = holder("dave", chrono::Duration::zero());
    let refused = store
        .acquire_lock("cv-matcher", "production", &dave)
        .await
        .err()
        .context("dave took carol's fresh lock")?;
    assert_eq!(refused.kind, StageErrorKind::LockHeld);
    assert!(refused.message.contains("carol"), "{}", refused.message);

    // Bob's run wakes up and gives back "its" lock: carol's stays.
    store.release_lock(&bobs_lock).await.map_err(stage)?;
    assert_eq!(
        stored(&aws).await?,
        Some(carol.clone()),
        "bob removed carol's lock"
    );

    // Carol gives hers back, and the lock is free again (on a versioned bucket the
    // delete marker must not block the conditional create).
    store.release_lock(&carols_lock).await.map_err(stage)?;
    assert_eq!(stored(&aws).await?, None);
    let again = store
        .acquire_lock("cv-matcher", "production", &dave)
        .await
        .map_err(stage)?;
    assert_eq!(stored(&aws).await?, Some(dave));
    store.release_lock(&again).await.map_err(stage)?;
    Ok(())
}
