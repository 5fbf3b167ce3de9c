//! The S3 deploy lock as a lease, on a versioned bucket: a run finds its own lock after a
//! lost answer, a lock whose lease ran out is taken over by exactly one run, a fresh one
//! is refused, and a run never renews or removes a lock it no longer owns.

use anyhow::Context;
use aws_adapters::S3ArtifactStore;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use pipeline_core::{DeployLock, DeployLocks, LockHolder, ReleaseId, StageErrorKind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tugboat_tests::aws::AwsFixture;

const BUCKET: &str = "cv-matcher-deployments";
const KEY: &str = "tugboat/cv-matcher/production/lock.json";

fn holder(who: &str, lease_seconds: u64) -> LockHolder {
    LockHolder {
        who: who.to_string(),
        release_id: ReleaseId(format!("r20261126-000000-{who}")),
        since: chrono::Utc::now(),
        run_token: format!("token-of-{who}"),
        renewed_at: None,
        lease_seconds: Some(lease_seconds),
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

async fn who_holds(aws: &AwsFixture) -> anyhow::Result<Option<String>> {
    Ok(stored(aws).await?.map(|holder| holder.who))
}

fn stage(err: pipeline_core::StageError) -> anyhow::Error {
    anyhow::anyhow!("{err}")
}

async fn versioned_bucket(aws: &AwsFixture) -> anyhow::Result<()> {
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
    Ok(())
}

/// A lock object as tugboat wrote it before leases: who, release, since; no token.
async fn put_old_lock(aws: &AwsFixture, who: &str, age: chrono::Duration) -> anyhow::Result<()> {
    let since = (chrono::Utc::now() - age).to_rfc3339();
    let body =
        format!(r#"{{"who":"{who}","release_id":"r20261126-000000-{who}","since":"{since}"}}"#);
    aws.clients
        .s3
        .put_object()
        .bucket(BUCKET)
        .key(KEY)
        .body(body.into_bytes().into())
        .send()
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_lock_is_taken_over_and_only_the_owner_releases() -> anyhow::Result<()> {
    let aws = AwsFixture::start().await?;
    versioned_bucket(&aws).await?;
    let store = S3ArtifactStore::new(aws.clients.s3.clone(), BUCKET, "tugboat");

    // A run that died two hours ago left a lock of the old format behind: it parses, and
    // its lease ran out `lease` after `since`.
    put_old_lock(&aws, "bob", chrono::Duration::hours(2)).await?;
    let bobs = store
        .read_lock("cv-matcher", "production")
        .await
        .map_err(stage)?
        .context("no lock")?;
    assert_eq!(bobs.holder.who, "bob");
    assert_eq!(bobs.holder.run_token, "");

    // The next run takes it over.
    let carol = holder("carol", 120);
    let carols_lock = store
        .acquire_lock("cv-matcher", "production", &carol)
        .await
        .map_err(stage)?;
    let now = stored(&aws).await?.context("no lock")?;
    assert_eq!(now.who, "carol", "the stale lock was not replaced");
    assert_eq!(now.run_token, "token-of-carol");
    assert_eq!(now.lease_seconds, Some(120));
    assert!(now.renewed_at.is_some());

    // A fresh lock is not taken over: the error names its holder, the lease's end and
    // the way out.
    let dave = holder("dave", 120);
    let refused = store
        .acquire_lock("cv-matcher", "production", &dave)
        .await
        .err()
        .context("dave took carol's fresh lock")?;
    assert_eq!(refused.kind, StageErrorKind::LockHeld);
    assert!(refused.message.contains("carol"), "{}", refused.message);
    assert!(
        refused.message.contains("lease runs out at"),
        "{}",
        refused.message
    );
    let help = refused.help.clone().unwrap_or_default();
    assert!(help.contains("tugboat unlock --env production"), "{help}");

    // Bob's run wakes up: it can neither renew nor give back "its" lock; carol's stays.
    let renewed = store.renew_lock(&bobs).await;
    assert_eq!(
        renewed.err().map(|e| e.kind),
        Some(StageErrorKind::LockHeld)
    );
    store.release_lock(&bobs).await.map_err(stage)?;
    assert_eq!(
        who_holds(&aws).await?.as_deref(),
        Some("carol"),
        "bob removed carol's lock"
    );

    // Carol renews (a new version) and gives it back with the renewed version; the lock
    // is free again (on a versioned bucket the delete marker must not block the create).
    let carols_lock = store.renew_lock(&carols_lock).await.map_err(stage)?;
    store.release_lock(&carols_lock).await.map_err(stage)?;
    assert_eq!(stored(&aws).await?, None);
    let again = store
        .acquire_lock("cv-matcher", "production", &dave)
        .await
        .map_err(stage)?;
    assert_eq!(who_holds(&aws).await?.as_deref(), Some("dave"));
    store.release_lock(&again).await.map_err(stage)?;
    assert_eq!(stored(&aws).await?, None);
    Ok(())
}

/// Lets the first `lose` PUTs of the lock through to S3 and answers them 503, as if the
/// answer was lost on the way back: the SDK retries a write that was made.
#[derive(Debug)]
struct LoseLockPutAnswers {
    lose: AtomicUsize,
    /// The attempt on the wire is a PUT of the lock (the test makes one call at a time).
    lock_put: AtomicBool,
}

impl Intercept for LoseLockPutAnswers {
    fn name(&self) -> &'static str {
        "tugboat-tests::LoseLockPutAnswers"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        self.lock_put.store(
            request.method() == "PUT" && request.uri().contains("lock.json"),
            Ordering::SeqCst,
        );
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let is_lock_put = self.lock_put.load(Ordering::SeqCst);
        let answered = context.response().status().is_success();
        if is_lock_put
            && answered
            && self
                .lose
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            let response = context.response_mut();
            *response.status_mut() = 503.try_into()?;
            *response.body_mut() = SdkBody::from(
                "<Error><Code>SlowDown</Code><Message>the answer was lost</Message></Error>",
            );
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_of_the_locks_own_write_still_takes_and_renews_it() -> anyhow::Result<()> {
    let aws = AwsFixture::start().await?;
    versioned_bucket(&aws).await?;
    let losing = Arc::new(LoseLockPutAnswers {
        lose: AtomicUsize::new(1),
        lock_put: AtomicBool::new(false),
    });
    let config = aws
        .clients
        .s3
        .config()
        .to_builder()
        .interceptor(SharedLoser(losing.clone()))
        .build();
    let store = S3ArtifactStore::new(aws_sdk_s3::Client::from_conf(config), BUCKET, "tugboat");

    // The create (If-None-Match: *) is written, its answer lost, the SDK's retry gets 412:
    // the lock read back carries this run's token, so it is this run's.
    let alice = holder("alice", 120);
    let lock = store
        .acquire_lock("cv-matcher", "production", &alice)
        .await
        .map_err(stage)?;
    assert_eq!(losing.lose.load(Ordering::SeqCst), 0, "no answer was lost");
    assert_eq!(lock.holder.run_token, "token-of-alice");
    assert_eq!(who_holds(&aws).await?.as_deref(), Some("alice"));

    // The same for a renewal (If-Match: the old ETag, which its own write changed).
    losing.lose.store(1, Ordering::SeqCst);
    let renewed = store.renew_lock(&lock).await.map_err(stage)?;
    assert_eq!(losing.lose.load(Ordering::SeqCst), 0, "no answer was lost");
    assert_ne!(
        renewed.token, lock.token,
        "the renewal kept the old version"
    );
    let now = stored(&aws).await?.context("no lock")?;
    assert_eq!(now.renewed_at, renewed.holder.renewed_at);

    // And the run's own second try at taking it (a retry at the orchestrator's level).
    let again = store
        .acquire_lock("cv-matcher", "production", &alice)
        .await
        .map_err(stage)?;
    assert_eq!(again.token, renewed.token);
    store.release_lock(&again).await.map_err(stage)?;
    assert_eq!(stored(&aws).await?, None);
    Ok(())
}

#[derive(Debug, Clone)]
struct SharedLoser(Arc<LoseLockPutAnswers>);

impl Intercept for SharedLoser {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0
            .read_before_transmit(context, runtime_components, cfg)
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0
            .modify_before_deserialization(context, runtime_components, cfg)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_racing_for_a_stale_lock_one_takes_it() -> anyhow::Result<()> {
    let aws = AwsFixture::start().await?;
    versioned_bucket(&aws).await?;
    let store = S3ArtifactStore::new(aws.clients.s3.clone(), BUCKET, "tugboat");
    for round in 0..5 {
        put_old_lock(&aws, "bob", chrono::Duration::hours(2)).await?;
        let (erin, frank) = (holder("erin", 120), holder("frank", 120));
        let (a, b) = (store.clone(), store.clone());
        let (erins, franks) = tokio::join!(
            tokio::spawn(async move { a.acquire_lock("cv-matcher", "production", &erin).await }),
            tokio::spawn(async move { b.acquire_lock("cv-matcher", "production", &frank).await }),
        );
        let (erins, franks) = (erins?, franks?);
        let (winner, loser): (DeployLock, _) = match (erins, franks) {
            (Ok(won), Err(lost)) | (Err(lost), Ok(won)) => (won, lost),
            (Ok(_), Ok(_)) => anyhow::bail!("round {round}: both runs took the lock"),
            (Err(a), Err(b)) => anyhow::bail!("round {round}: neither took it: {a}; {b}"),
        };
        assert_eq!(
            loser.kind,
            StageErrorKind::LockHeld,
            "round {round}: {loser}"
        );
        assert_eq!(
            who_holds(&aws).await?.as_deref(),
            Some(winner.holder.who.as_str()),
            "round {round}"
        );
        store.release_lock(&winner).await.map_err(stage)?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_runs_lock_is_taken_over_once_its_lease_ran_out() -> anyhow::Result<()> {
    let aws = AwsFixture::start().await?;
    versioned_bucket(&aws).await?;
    let store = S3ArtifactStore::new(aws.clients.s3.clone(), BUCKET, "tugboat");

    // Grace takes the lock with a 2 s lease, renews it once, and is killed (kill -9: no
    // release, no more renewals).
    let lease = 2;
    let grace = store
        .acquire_lock("cv-matcher", "production", &holder("grace", lease))
        .await
        .map_err(stage)?;
    let grace = store.renew_lock(&grace).await.map_err(stage)?;
    let last_renewal = grace.holder.renewed_at.context("no renewed_at")?;

    // The next run tries every 100 ms, as a retrying CI job would.
    let heidi = holder("heidi", 120);
    let started = Instant::now();
    let mut refusals = 0;
    let heidis = loop {
        match store.acquire_lock("cv-matcher", "production", &heidi).await {
            Ok(lock) => break lock,
            Err(err) if err.kind == StageErrorKind::LockHeld => refusals += 1,
            Err(err) => return Err(stage(err)),
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(10),
            "never taken over"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let proceeded = chrono::Utc::now();
    let waited = (proceeded - last_renewal).to_std()?;
    println!(
        "lease {lease}s: from the dead run's last renewal to the next run holding the lock: {:.2}s ({refusals} refusals first)",
        waited.as_secs_f64()
    );
    assert!(
        refusals > 0,
        "the lock was taken over before its lease ran out"
    );
    assert!(waited >= Duration::from_secs(lease), "{waited:?}");
    assert!(
        waited < Duration::from_secs(lease) + Duration::from_secs(1),
        "{waited:?}"
    );
    assert_eq!(who_holds(&aws).await?.as_deref(), Some("heidi"));

    // Were grace's run only frozen, it now learns the lock was taken over.
    let late = store
        .renew_lock(&grace)
        .await
        .err()
        .context("grace renewed heidi's lock")?;
    assert_eq!(late.kind, StageErrorKind::LockHeld);
    assert!(late.message.contains("heidi"), "{}", late.message);
    store.release_lock(&grace).await.map_err(stage)?;
    assert_eq!(who_holds(&aws).await?.as_deref(), Some("heidi"));
    store.release_lock(&heidis).await.map_err(stage)?;
    Ok(())
}
