//! S3 as the [`ArtifactStore`]: deploy records, test artifacts and the deploy lock.
//!
//! Layout under `<prefix>/<app>/<env>/`: `records/<release id>.json`,
//! `artifacts/<release id>/<name>`, `lock.json`. The lock is created with a conditional
//! put (`If-None-Match: *`), so two runs cannot both take it, on versioned buckets too.

use crate::errors::stage_error;
use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use chrono::Utc;
use pipeline_core::{
    Artifact, ArtifactStore, DeployLock, DeployRecord, LockHolder, ReleaseId, StageError,
    StageErrorKind,
};
use std::time::Duration;

/// [`ArtifactStore`] on an S3 bucket.
#[derive(Clone, Debug)]
pub struct S3ArtifactStore {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    lock_expiry: Duration,
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
            lock_expiry: Duration::from_secs(3600),
        }
    }

    /// A lock older than this is stale and may be taken over.
    pub fn with_lock_expiry(mut self, expiry: Duration) -> Self {
        self.lock_expiry = expiry;
        self
    }

    fn base(&self, app: &str, environment: &str) -> String {
        if self.prefix.is_empty() {
            format!("{app}/{environment}")
        } else {
            format!("{}/{app}/{environment}", self.prefix)
        }
    }

    fn lock_key(&self, app: &str, environment: &str) -> String {
        format!("{}/lock.json", self.base(app, environment))
    }

    async fn put_lock(&self, key: &str, holder: &LockHolder) -> Result<Option<String>, StageError> {
        let body = serde_json::to_vec(holder).map_err(|e| StageError::failed(e.to_string()))?;
        let result = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .if_none_match("*")
            .content_type("application/json")
            .body(ByteStream::from(body))
            .send()
            .await;
        match result {
            Ok(output) => Ok(Some(output.e_tag().unwrap_or_default().to_string())),
            Err(err) if http_status(&err) == Some(412) || http_status(&err) == Some(409) => {
                Ok(None)
            }
            Err(err) => Err(stage_error("PutObject (deploy lock)", &err)),
        }
    }

    async fn read_lock(&self, key: &str) -> Result<Option<(LockHolder, String)>, StageError> {
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
            Err(err) => return Err(stage_error("GetObject (deploy lock)", &err)),
        };
        let etag = output.e_tag().unwrap_or_default().to_string();
        let bytes = output
            .body
            .collect()
            .await
            .map_err(|e| StageError::failed(format!("reading the deploy lock: {e}")))?
            .into_bytes();
        let holder: LockHolder = serde_json::from_slice(&bytes).map_err(|e| {
            StageError::failed(format!(
                "the deploy lock s3://{}/{key} is not a tugboat lock: {e}",
                self.bucket
            ))
            .with_help(format!("delete it: aws s3 rm s3://{}/{key}", self.bucket))
        })?;
        Ok(Some((holder, etag)))
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
impl ArtifactStore for S3ArtifactStore {
    async fn acquire_lock(
        &self,
        app: &str,
        environment: &str,
        holder: &LockHolder,
    ) -> Result<DeployLock, StageError> {
        let key = self.lock_key(app, environment);
        let lock = |token: String| DeployLock {
            app: app.to_string(),
            environment: environment.to_string(),
            holder: holder.clone(),
            token,
        };
        // Two tries: the second only after a stale lock was removed.
        for _ in 0..2 {
            if let Some(token) = self.put_lock(&key, holder).await? {
                return Ok(lock(token));
            }
            let Some((current, etag)) = self.read_lock(&key).await? else {
                continue;
            };
            let age = Utc::now().signed_duration_since(current.since);
            let expired = age.to_std().map(|a| a > self.lock_expiry).unwrap_or(false);
            if !expired {
                let remove = format!("aws s3 rm s3://{}/{key}", self.bucket);
                return Err(current.held_error(app, environment, &remove));
            }
            tracing::warn!(holder = %current.who, "taking over a stale deploy lock");
            let deleted = self
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(&key)
                .if_match(etag)
                .send()
                .await;
            if let Err(err) = deleted {
                if http_status(&err) != Some(412) {
                    return Err(stage_error("DeleteObject (stale deploy lock)", &err));
                }
            }
        }
        Err(StageError::new(
            StageErrorKind::LockHeld,
            format!("{app}/{environment}: another run took the deploy lock at the same moment; nothing was changed"),
        ))
    }

    async fn release_lock(&self, lock: &DeployLock) -> Result<(), StageError> {
        let key = self.lock_key(&lock.app, &lock.environment);
        match self.read_lock(&key).await? {
            Some((holder, _)) if holder == lock.holder => {
                self.client
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .send()
                    .await
                    .map_err(|err| stage_error("DeleteObject (deploy lock)", &err))?;
                Ok(())
            }
            // Taken over as stale, or already gone: not ours to remove.
            _ => Ok(()),
        }
    }

    async fn put_record(&self, record: &DeployRecord) -> Result<(), StageError> {
        let key = format!(
            "{}/records/{}.json",
            self.base(&record.app, &record.environment),
            record.release_id
        );
        let body =
            serde_json::to_vec_pretty(record).map_err(|e| StageError::failed(e.to_string()))?;
        self.put_json(&key, body).await
    }

    async fn history(
        &self,
        app: &str,
        environment: &str,
        limit: usize,
    ) -> Result<Vec<DeployRecord>, StageError> {
        let prefix = format!("{}/records/", self.base(app, environment));
        let objects: Vec<_> = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&prefix)
            .into_paginator()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|err| stage_error("ListObjectsV2", &err))?;
        let mut keys: Vec<String> = objects
            .iter()
            .flat_map(|page| page.contents())
            .filter_map(|o| o.key().map(str::to_string))
            .collect();
        // Release ids start with their UTC start time: newest first is reverse key order.
        keys.sort_by(|a, b| b.cmp(a));
        let mut records = Vec::new();
        for key in keys.into_iter().take(limit) {
            let output = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&key)
                .send()
                .await
                .map_err(|err| stage_error("GetObject", &err))?;
            let bytes = output
                .body
                .collect()
                .await
                .map_err(|e| {
                    StageError::failed(format!("reading s3://{}/{key}: {e}", self.bucket))
                })?
                .into_bytes();
            match serde_json::from_slice::<DeployRecord>(&bytes) {
                Ok(record) => records.push(record),
                Err(err) => tracing::warn!(key, %err, "skipping a record tugboat cannot read"),
            }
        }
        pipeline_core::sort_newest_first(&mut records);
        Ok(records)
    }

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
