//! S3 as the [`ArtifactStore`]: deploy records, test artifacts and the deploy lock.
//!
//! Layout under `<prefix>/<app>/<env>/`: `records/<release id>.json`,
//! `artifacts/<release id>/<name>`, `lock.json`. The lock is a lease: created with a
//! conditional put (`If-None-Match: *`), so two runs cannot both take it (on versioned
//! buckets too); renewed, taken over once its lease ran out, and removed, each
//! conditional on the ETag this run saw (`If-Match`), so a run never overwrites or
//! removes a lock another run holds.

use crate::errors::stage_error;
use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use chrono::{DateTime, Utc};
use pipeline_core::{
    Artifact, ArtifactStore, DeployLock, DeployLocks, DeployRecord, InProgressPointer, LockHolder,
    ReleaseId, ReleaseRecords, StageError, StageErrorKind, VersionedRecord,
};
use std::time::Duration;

/// [`ArtifactStore`] on an S3 bucket.
#[derive(Clone, Debug)]
pub struct S3ArtifactStore {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

/// What a conditional write of the lock met.
enum Condition<'a> {
    /// `If-None-Match: *`: only if there is no lock.
    Absent,
    /// `If-Match: <etag>`: only if the lock is still this version.
    Version(&'a str),
}

impl S3ArtifactStore {
    pub fn new(
        client: aws_sdk_s3::Client,
        bucket: impl Into<String>,
        prefix: impl Into<String>,
    ) -> Self {
        Self {
            client,
            bucket: bucket.into(),
            prefix: prefix.into().trim_matches('/').to_string(),
        }
    }

    fn base(&self, app: &str, environment: &str) -> String {
        if self.prefix.is_empty() {
            format!("{app}/{environment}")
        } else {
            format!("{}/{app}/{environment}", self.prefix)
        }
    }

    /// The keys of an environment's records, newest first: release ids start with their
    /// UTC start time, so that is reverse key order.
    async fn record_keys(&self, app: &str, environment: &str) -> Result<Vec<String>, StageError> {
        let prefix = format!("{}/records/", self.base(app, environment));
        let pages: Vec<_> = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&prefix)
            .into_paginator()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|err| stage_error("ListObjectsV2", &err))?;
        let mut keys: Vec<String> = pages
            .iter()
            .flat_map(|page| page.contents())
            .filter_map(|o| o.key().map(str::to_string))
            .filter(|key| key.ends_with(".json"))
            .collect();
        keys.sort_by(|a, b| b.cmp(a));
        Ok(keys)
    }

    /// Reads records, [`CONCURRENT_READS`] `GetObject`s at a time; one tugboat cannot
    /// parse is skipped with a warning, a failed read fails them all. Newest first.
    async fn read_records(&self, keys: Vec<String>) -> Result<Vec<DeployRecord>, StageError> {
        let mut pending = keys.into_iter();
        let mut reads = tokio::task::JoinSet::new();
        let mut records = Vec::new();
        loop {
            while reads.len() < CONCURRENT_READS {
                let Some(key) = pending.next() else { break };
                let client = self.client.clone();
                let bucket = self.bucket.clone();
                reads.spawn(async move {
                    let bytes = read_bytes(&client, &bucket, &key).await;
                    (key, bytes)
                });
            }
            let Some(joined) = reads.join_next().await else {
                break;
            };
            let (key, bytes) =
                joined.map_err(|e| StageError::failed(format!("reading a record: {e}")))?;
            match serde_json::from_slice::<DeployRecord>(&bytes?) {
                Ok(record) => records.push(record),
                Err(err) => tracing::warn!(key, %err, "skipping a record tugboat cannot read"),
            }
        }
        pipeline_core::sort_newest_first(&mut records);
        Ok(records)
    }

    fn record_key(&self, app: &str, environment: &str, release_id: &ReleaseId) -> String {
        format!("{}/records/{release_id}.json", self.base(app, environment))
    }

    /// The pointer at the release in progress: overwritten, never deleted (the
    /// function may delete only locks).
    fn in_progress_key(&self, app: &str, environment: &str) -> String {
        format!("{}/in-progress.json", self.base(app, environment))
    }

    fn lock_key(&self, app: &str, environment: &str) -> String {
        format!("{}/lock.json", self.base(app, environment))
    }

    /// Writes the lock if `condition` holds: `Ok(Some(etag))` written, `Ok(None)` the
    /// condition failed (412, 409 for a concurrent write, 404 when the lock is gone).
    async fn put_lock(
        &self,
        key: &str,
        holder: &LockHolder,
        condition: Condition<'_>,
    ) -> Result<Option<String>, StageError> {
        let body = serde_json::to_vec(holder).map_err(|e| StageError::failed(e.to_string()))?;
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(body));
        let request = match condition {
            Condition::Absent => request.if_none_match("*"),
            Condition::Version(etag) => request.if_match(etag),
        };
        match request.send().await {
            Ok(output) => Ok(Some(output.e_tag().unwrap_or_default().to_string())),
            Err(err) if matches!(http_status(&err), Some(404 | 409 | 412)) => Ok(None),
            Err(err) => Err(stage_error("PutObject (deploy lock)", &err)),
        }
    }

    /// An object's bytes and ETag; `None` when the key does not exist. `what` names the
    /// object in errors (`deploy lock`, `deploy record`).
    async fn read_object(
        &self,
        key: &str,
        what: &str,
    ) -> Result<Option<(Vec<u8>, String)>, StageError> {
        let result = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        let output = match result {
            Ok(output) => output,
            Err(err) if http_status(&err) == Some(404) => return Ok(None),
            Err(err) => return Err(stage_error(&format!("GetObject ({what})"), &err)),
        };
        let etag = output.e_tag().unwrap_or_default().to_string();
        let bytes = output
            .body
            .collect()
            .await
            .map_err(|e| StageError::failed(format!("reading s3://{}/{key}: {e}", self.bucket)))?
            .into_bytes();
        Ok(Some((bytes.to_vec(), etag)))
    }

    /// The stored lock and its ETag.
    async fn stored_lock(&self, key: &str) -> Result<Option<(LockHolder, String)>, StageError> {
        let Some((bytes, etag)) = self.read_object(key, "deploy lock").await? else {
            return Ok(None);
        };
        let holder: LockHolder = serde_json::from_slice(&bytes).map_err(|e| {
            StageError::failed(format!(
                "the deploy lock s3://{}/{key} is not a tugboat lock: {e}",
                self.bucket
            ))
            .with_help(format!("delete it: aws s3 rm s3://{}/{key}", self.bucket))
        })?;
        Ok(Some((holder, etag)))
    }

    /// Removes the lock if it is still `etag`: `Ok(true)` removed or already gone.
    async fn delete_lock(&self, key: &str, etag: &str) -> Result<bool, StageError> {
        let result = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .if_match(etag)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) if http_status(&err) == Some(404) => Ok(true),
            Err(err) if matches!(http_status(&err), Some(409 | 412)) => Ok(false),
            Err(err) => Err(stage_error("DeleteObject (deploy lock)", &err)),
        }
    }

    async fn put_json(&self, key: &str, body: Vec<u8>) -> Result<(), StageError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|err| stage_error("PutObject", &err))?;
        Ok(())
    }
}

/// `in-progress.json`: the release the event-driven front end has not concluded.
#[derive(serde::Serialize, serde::Deserialize)]
struct InProgress {
    release_id: Option<ReleaseId>,
}

/// The lease that applies to a lock recording none (written before leases): the one
/// this run asks for.
/// `GetObject`s in flight at once when reading many records: enough to hide S3's latency,
/// few enough to stay clear of its request rate limits and the client's connection pool.
const CONCURRENT_READS: usize = 16;

/// The release id a record's key names (`…/records/<release id>.json`).
fn release_of_key(key: &str) -> ReleaseId {
    let name = key.rsplit('/').next().unwrap_or(key);
    ReleaseId(name.strip_suffix(".json").unwrap_or(name).to_string())
}

async fn read_bytes(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<Vec<u8>, StageError> {
    let output = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|err| stage_error("GetObject", &err))?;
    let bytes = output
        .body
        .collect()
        .await
        .map_err(|e| StageError::failed(format!("reading s3://{bucket}/{key}: {e}")))?;
    Ok(bytes.into_bytes().to_vec())
}

fn fallback_lease(holder: &LockHolder) -> Duration {
    Duration::from_secs(
        holder
            .lease_seconds
            .unwrap_or(LockHolder::DEFAULT_LEASE_SECONDS),
    )
}

fn http_status<E, R: HasStatus>(error: &aws_sdk_s3::error::SdkError<E, R>) -> Option<u16> {
    error.raw_response().map(HasStatus::status_code)
}

trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_smithy_runtime_api::http::Response {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

#[async_trait]
impl DeployLocks for S3ArtifactStore {
    async fn acquire_lock(
        &self,
        app: &str,
        environment: &str,
        holder: &LockHolder,
    ) -> Result<DeployLock, StageError> {
        let key = self.lock_key(app, environment);
        let lock = |holder: LockHolder, token: String| DeployLock {
            app: app.to_string(),
            environment: environment.to_string(),
            holder,
            token,
        };
        let fallback = fallback_lease(holder);
        let mut mine = holder.clone();
        let mut failure = None;
        // A few rounds: a lock released or taken over meanwhile is looked at again.
        for _ in 0..3 {
            mine.renewed_at = Some(Utc::now());
            let created = self.put_lock(&key, &mine, Condition::Absent).await;
            if let Ok(Some(etag)) = created {
                return Ok(lock(mine, etag));
            }
            // Refused, or failed after the SDK's retries: the first try may have written
            // it (its answer lost), so the lock read back may be this run's own.
            let Some((current, etag)) = self.stored_lock(&key).await? else {
                failure = created.err();
                continue;
            };
            if current.same_run(&mine) {
                return Ok(lock(current, etag));
            }
            if !current.lease_ran_out(Utc::now(), fallback) {
                return Err(current.held_error(app, environment, fallback));
            }
            tracing::warn!(holder = %current.who, "taking over a deploy lock whose lease ran out");
            mine.renewed_at = Some(Utc::now());
            // Conditional on the stale version: of two runs taking it over, one wins.
            match self.put_lock(&key, &mine, Condition::Version(&etag)).await {
                Ok(Some(etag)) => return Ok(lock(mine, etag)),
                // Another run was first, or the answer was lost: the next round reads it.
                Ok(None) => failure = None,
                Err(err) => failure = Some(err),
            }
        }
        Err(failure.unwrap_or_else(|| {
            StageError::new(
                StageErrorKind::LockHeld,
                format!("{app}/{environment}: other runs took the deploy lock at the same moment; nothing was changed"),
            )
        }))
    }

    async fn renew_lock(&self, lock: &DeployLock) -> Result<DeployLock, StageError> {
        let key = self.lock_key(&lock.app, &lock.environment);
        let mut mine = lock.holder.clone();
        let mut version = lock.token.clone();
        let mut failure = None;
        for _ in 0..2 {
            mine.renewed_at = Some(Utc::now());
            let written = self
                .put_lock(&key, &mine, Condition::Version(&version))
                .await;
            if let Ok(Some(etag)) = written {
                return Ok(DeployLock {
                    holder: mine,
                    token: etag,
                    ..lock.clone()
                });
            }
            // Refused or failed: still ours under another version (a renewal whose answer
            // was lost), someone else's, or gone.
            let stored = match self.stored_lock(&key).await {
                Ok(stored) => stored,
                Err(err) => return Err(written.err().unwrap_or(err)),
            };
            match stored {
                Some((current, etag)) if current.same_run(&mine) => {
                    if current.renewed_at == mine.renewed_at {
                        return Ok(DeployLock {
                            holder: current,
                            token: etag,
                            ..lock.clone()
                        });
                    }
                    version = etag;
                    failure = written.err();
                }
                Some((current, _)) => {
                    return Err(StageError::new(
                        StageErrorKind::LockHeld,
                        format!(
                            "the deploy lock of {}/{} was taken over by {} (release {})",
                            lock.app, lock.environment, current.who, current.release_id
                        ),
                    ))
                }
                None => {
                    return Err(StageError::new(
                        StageErrorKind::LockHeld,
                        format!(
                            "the deploy lock of {}/{} was removed (tugboat unlock?)",
                            lock.app, lock.environment
                        ),
                    ))
                }
            }
        }
        Err(failure.unwrap_or_else(|| {
            StageError::failed(format!(
                "the deploy lock of {}/{} changed while it was renewed",
                lock.app, lock.environment
            ))
        }))
    }

    async fn release_lock(&self, lock: &DeployLock) -> Result<(), StageError> {
        let key = self.lock_key(&lock.app, &lock.environment);
        let mut version = lock.token.clone();
        let mut failure = None;
        for _ in 0..3 {
            if version.is_empty() {
                match self.stored_lock(&key).await? {
                    Some((current, etag)) if current.same_run(&lock.holder) => version = etag,
                    // Taken over, or already gone: not ours to remove.
                    _ => return Ok(()),
                }
            }
            match self.delete_lock(&key, &version).await {
                Ok(true) => return Ok(()),
                Ok(false) => failure = None,
                Err(err) => failure = Some(err),
            }
            // Another version: look who has it now.
            version.clear();
        }
        Err(failure.unwrap_or_else(|| {
            StageError::failed(format!(
                "the deploy lock of {}/{} kept changing while it was released",
                lock.app, lock.environment
            ))
        }))
    }

    async fn read_lock(
        &self,
        app: &str,
        environment: &str,
    ) -> Result<Option<DeployLock>, StageError> {
        let key = self.lock_key(app, environment);
        Ok(self
            .stored_lock(&key)
            .await?
            .map(|(holder, token)| DeployLock {
                app: app.to_string(),
                environment: environment.to_string(),
                holder,
                token,
            }))
    }
}

#[async_trait]
impl ReleaseRecords for S3ArtifactStore {
    async fn put_record(&self, record: &DeployRecord) -> Result<(), StageError> {
        let key = self.record_key(&record.app, &record.environment, &record.release_id);
        let body =
            serde_json::to_vec_pretty(record).map_err(|e| StageError::failed(e.to_string()))?;
        self.put_json(&key, body).await
    }

    async fn read_record(
        &self,
        app: &str,
        environment: &str,
        release_id: &ReleaseId,
    ) -> Result<Option<VersionedRecord>, StageError> {
        let key = self.record_key(app, environment, release_id);
        let Some((bytes, version)) = self.read_object(&key, "deploy record").await? else {
            return Ok(None);
        };
        let record = serde_json::from_slice::<DeployRecord>(&bytes).map_err(|e| {
            StageError::failed(format!(
                "s3://{}/{key} is not a tugboat deploy record: {e}",
                self.bucket
            ))
        })?;
        Ok(Some(VersionedRecord { record, version }))
    }

    async fn put_record_if(
        &self,
        record: &DeployRecord,
        version: &str,
    ) -> Result<Option<String>, StageError> {
        let key = self.record_key(&record.app, &record.environment, &record.release_id);
        let body =
            serde_json::to_vec_pretty(record).map_err(|e| StageError::failed(e.to_string()))?;
        let result = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("application/json")
            .if_match(version)
            .body(ByteStream::from(body))
            .send()
            .await;
        match result {
            Ok(output) => Ok(Some(output.e_tag().unwrap_or_default().to_string())),
            // 412: another write came first; 409: one is going on right now.
            Err(err) if matches!(http_status(&err), Some(404 | 409 | 412)) => Ok(None),
            Err(err) => Err(stage_error("PutObject (deploy record)", &err)),
        }
    }

    async fn in_progress(
        &self,
        app: &str,
        environment: &str,
    ) -> Result<InProgressPointer, StageError> {
        let key = self.in_progress_key(app, environment);
        let Some((bytes, _)) = self.read_object(&key, "release in progress").await? else {
            return Ok(InProgressPointer::Unknown);
        };
        let pointer: InProgress = serde_json::from_slice(&bytes).map_err(|e| {
            StageError::failed(format!(
                "s3://{}/{key} is not a tugboat release pointer: {e}",
                self.bucket
            ))
        })?;
        Ok(pointer
            .release_id
            .map_or(InProgressPointer::Nothing, InProgressPointer::Release))
    }

    async fn set_in_progress(
        &self,
        app: &str,
        environment: &str,
        release_id: Option<ReleaseId>,
    ) -> Result<(), StageError> {
        let key = self.in_progress_key(app, environment);
        let body = serde_json::to_vec(&InProgress { release_id })
            .map_err(|e| StageError::failed(e.to_string()))?;
        self.put_json(&key, body).await
    }

    async fn history(
        &self,
        app: &str,
        environment: &str,
        limit: usize,
    ) -> Result<Vec<DeployRecord>, StageError> {
        let mut keys = self.record_keys(app, environment).await?;
        keys.truncate(limit);
        self.read_records(keys).await
    }

    async fn records_since(
        &self,
        app: &str,
        environment: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<DeployRecord>, StageError> {
        let keys: Vec<String> = self
            .record_keys(app, environment)
            .await?
            .into_iter()
            .filter(|key| !release_of_key(key).started_before(since))
            .collect();
        let mut records = self.read_records(keys).await?;
        records.retain(|record| record.started_at >= since);
        Ok(records)
    }
}

#[async_trait]
impl ArtifactStore for S3ArtifactStore {
    async fn put_artifact(
        &self,
        app: &str,
        environment: &str,
        release_id: &ReleaseId,
        artifact: &Artifact,
    ) -> Result<String, StageError> {
        let name = artifact.name.trim_start_matches("./");
        let key = format!(
            "{}/artifacts/{release_id}/{name}",
            self.base(app, environment)
        );
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .body(ByteStream::from(artifact.bytes.clone()))
            .send()
            .await
            .map_err(|err| stage_error("PutObject (artifact)", &err))?;
        Ok(format!("s3://{}/{key}", self.bucket))
    }
}
