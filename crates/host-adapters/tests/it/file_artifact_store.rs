//! The deploy lock in `.tugboat/` follows the S3 lock's rules: a run finds its own lock,
//! a fresh one is refused, one whose lease ran out is taken over, and a run never renews
//! or removes a lock it no longer owns.

use crate::support::TempDir;
use host_adapters::FileArtifactStore;
use pipeline_core::{DeployLocks, LockHolder, ReleaseId, ReleaseRecords, StageErrorKind};
use std::time::Duration;

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

#[tokio::test]
async fn the_file_lock_is_a_lease_like_the_s3_one() -> Result<(), pipeline_core::StageError> {
    let dir = TempDir::new("file-lock");
    let store = FileArtifactStore::new(dir.path());
    let (app, env) = ("cv-matcher", "local");

    let bob = store.acquire_lock(app, env, &holder("bob", 1)).await?;
    // The same run again (its own retry): its lock.
    let again = store.acquire_lock(app, env, &bob.holder).await?;
    assert_eq!(again.token, bob.token);
    let refused = store.acquire_lock(app, env, &holder("carol", 120)).await;
    let refused = refused.err().map(|e| (e.kind, e.message));
    assert!(
        matches!(&refused, Some((StageErrorKind::LockHeld, m)) if m.contains("bob")),
        "{refused:?}"
    );

    // Bob renews once, then dies; once his 1 s lease ran out, carol takes over.
    let bob = store.renew_lock(&bob).await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let carol = store.acquire_lock(app, env, &holder("carol", 120)).await?;
    let late = store.renew_lock(&bob).await.err().map(|e| e.kind);
    assert_eq!(late, Some(StageErrorKind::LockHeld));
    store.release_lock(&bob).await?;
    let stored = store.read_lock(app, env).await?.map(|l| l.holder.who);
    assert_eq!(stored.as_deref(), Some("carol"), "bob removed carol's lock");

    let carol = store.renew_lock(&carol).await?;
    store.release_lock(&carol).await?;
    assert_eq!(store.read_lock(app, env).await?, None);
    Ok(())
}

fn in_progress_record(release: &str) -> pipeline_core::DeployRecord {
    let record = serde_json::json!({
        "release_id": release, "app": "cv-matcher", "environment": "local",
        "git": {"sha": "", "git_ref": ""}, "image": null, "revision": null,
        "previous_revision": null, "outcome": "in_progress", "reason": null, "stages": [],
        "actor": "lambda:push-1", "started_at": "2026-12-01T10:00:00Z", "finished_at": null
    });
    match serde_json::from_value(record) {
        Ok(record) => record,
        Err(err) => panic!("not a record: {err}"),
    }
}

#[tokio::test]
async fn a_record_is_concluded_by_one_conditional_write() -> Result<(), pipeline_core::StageError> {
    use pipeline_core::InProgressPointer;
    let dir = TempDir::new("file-record");
    let store = FileArtifactStore::new(dir.path());
    let (app, env) = ("cv-matcher", "local");
    let release = ReleaseId("r20261201-100000-abc".into());
    assert_eq!(
        store.in_progress(app, env).await?,
        InProgressPointer::Unknown
    );
    let record = in_progress_record(&release.0);
    store.put_record(&record).await?;
    store
        .set_in_progress(app, env, Some(release.clone()))
        .await?;
    assert_eq!(
        store.in_progress(app, env).await?,
        InProgressPointer::Release(release.clone())
    );

    let seen = store.read_record(app, env, &release).await?;
    let Some(seen) = seen else {
        panic!("the record is not found by its id");
    };
    let mut first = seen.record.clone();
    first.reason = Some("concluded by the first".into());
    let mut second = seen.record.clone();
    second.reason = Some("concluded by the second".into());
    let won = store.put_record_if(&first, &seen.version).await?;
    let lost = store.put_record_if(&second, &seen.version).await?;
    assert!(won.is_some(), "the first write lost");
    assert_eq!(lost, None, "the second write on the same version won too");
    let stored = store
        .read_record(app, env, &release)
        .await?
        .map(|v| v.record.reason);
    assert_eq!(stored, Some(Some("concluded by the first".into())));

    store.set_in_progress(app, env, None).await?;
    assert_eq!(
        store.in_progress(app, env).await?,
        InProgressPointer::Nothing
    );
    Ok(())
}

fn record_started(release: &str, started_at: &str) -> pipeline_core::DeployRecord {
    let mut record = in_progress_record(release);
    record.outcome = pipeline_core::RecordOutcome::Succeeded;
    record.started_at = chrono::DateTime::parse_from_rfc3339(started_at)
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(|err| panic!("{started_at}: {err}"));
    record
}

#[tokio::test]
async fn records_since_reads_the_window_newest_first() -> Result<(), pipeline_core::StageError> {
    let dir = TempDir::new("file-records-since");
    let store = FileArtifactStore::new(dir.path());
    let (app, env) = ("cv-matcher", "local");
    for (id, at) in [
        ("r20261101-100000-aaa", "2026-11-01T10:00:00Z"),
        ("r20261110-100000-bbb", "2026-11-10T10:00:00Z"),
        ("r20261120-100000-ccc", "2026-11-20T10:00:00Z"),
        // An id that tells no time: read, and kept by its start time.
        ("manual-ddd", "2026-11-15T10:00:00Z"),
    ] {
        store.put_record(&record_started(id, at)).await?;
    }
    // Its file name says it started before the window: not even read.
    let mut misnamed = record_started("r20261020-100000-eee", "2026-11-25T10:00:00Z");
    misnamed.release_id = ReleaseId("r20261020-100000-eee".into());
    store.put_record(&misnamed).await?;

    let since = chrono::DateTime::parse_from_rfc3339("2026-11-05T00:00:00Z")
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_default();
    let ids: Vec<String> = store
        .records_since(app, env, since)
        .await?
        .into_iter()
        .map(|r| r.release_id.0)
        .collect();
    assert_eq!(
        ids,
        ["r20261120-100000-ccc", "manual-ddd", "r20261110-100000-bbb"]
    );
    Ok(())
}
