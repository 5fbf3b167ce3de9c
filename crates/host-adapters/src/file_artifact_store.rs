//! Deploy records, test artifacts and the deploy lock in a local folder (`.tugboat/`),
//! for projects without a records bucket.
//!
//! Layout under `<root>/<app>/<env>/`: `records/<release id>.json`,
//! `artifacts/<release id>/<name>`, `lock.json` (created with `create_new`, so only one
//! run can hold it).

use async_trait::async_trait;
use chrono::Utc;
use pipeline_core::{
    Artifact, ArtifactStore, DeployLock, DeployRecord, LockHolder, ReleaseId, StageError,
    StageErrorKind,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// [`ArtifactStore`] in a folder on this machine.
#[derive(Clone, Debug)]
pub struct FileArtifactStore {
    root: PathBuf,
    lock_expiry: Duration,
}

impl FileArtifactStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            lock_expiry: Duration::from_secs(3600),
        }
    }

    pub fn with_lock_expiry(mut self, expiry: Duration) -> Self {
        self.lock_expiry = expiry;
        self
    }

    fn expired(&self, holder: &LockHolder) -> bool {
        Utc::now()
            .signed_duration_since(holder.since)
            .to_std()
            .is_ok_and(|age| age > self.lock_expiry)
    }

    fn base(&self, app: &str, environment: &str) -> PathBuf {
        self.root.join(app).join(environment)
    }

    fn io_error(action: &str, path: &Path, err: &std::io::Error) -> StageError {
        StageError::failed(format!("cannot {action} {}: {err}", path.display()))
    }

    fn write(path: &Path, bytes: &[u8]) -> Result<(), StageError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Self::io_error("create", parent, &e))?;
        }
        // Write then rename, so a reader never sees half a record.
        let partial = path.with_extension("partial");
        std::fs::write(&partial, bytes).map_err(|e| Self::io_error("write", &partial, &e))?;
        std::fs::rename(&partial, path).map_err(|e| Self::io_error("write", path, &e))
    }
}

fn read_holder(path: &Path) -> Option<LockHolder> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

#[async_trait]
impl ArtifactStore for FileArtifactStore {
    async fn acquire_lock(
        &self,
        app: &str,
        environment: &str,
        holder: &LockHolder,
    ) -> Result<DeployLock, StageError> {
        let path = self.base(app, environment).join("lock.json");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Self::io_error("create", parent, &e))?;
        }
        let body = serde_json::to_vec(holder).map_err(|e| StageError::failed(e.to_string()))?;
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    file.write_all(&body)
                        .map_err(|e| Self::io_error("write", &path, &e))?;
                    return Ok(DeployLock {
                        app: app.to_string(),
                        environment: environment.to_string(),
                        holder: holder.clone(),
                        token: path.display().to_string(),
                    });
                }
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                    // Unreadable or expired: the run that wrote it is gone.
                    match read_holder(&path) {
                        Some(holder) if !self.expired(&holder) => {
                            let remove = format!("rm {}", path.display());
                            return Err(holder.held_error(app, environment, &remove));
                        }
                        _ => {
                            let _ = std::fs::remove_file(&path);
                        }
                    }
                }
                Err(err) => return Err(Self::io_error("create", &path, &err)),
            }
        }
        Err(StageError::new(
            StageErrorKind::LockHeld,
            format!("{app}/{environment}: the deploy lock is contended"),
        ))
    }

    async fn release_lock(&self, lock: &DeployLock) -> Result<(), StageError> {
        let path = self.base(&lock.app, &lock.environment).join("lock.json");
        if read_holder(&path).as_ref() == Some(&lock.holder) {
            std::fs::remove_file(&path).map_err(|e| Self::io_error("remove", &path, &e))?;
        }
        Ok(())
    }

    async fn put_record(&self, record: &DeployRecord) -> Result<(), StageError> {
        let path = self
            .base(&record.app, &record.environment)
            .join("records")
            .join(format!("{}.json", record.release_id));
        let body =
            serde_json::to_vec_pretty(record).map_err(|e| StageError::failed(e.to_string()))?;
        Self::write(&path, &body)
    }

    async fn history(
        &self,
        app: &str,
        environment: &str,
        limit: usize,
    ) -> Result<Vec<DeployRecord>, StageError> {
        let dir = self.base(app, environment).join("records");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(Self::io_error("read", &dir, &err)),
        };
        let mut records: Vec<DeployRecord> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
            .collect();
        pipeline_core::sort_newest_first(&mut records);
        records.truncate(limit);
        Ok(records)
    }

    async fn put_artifact(
        &self,
        app: &str,
        environment: &str,
        release_id: &ReleaseId,
        artifact: &Artifact,
    ) -> Result<String, StageError> {
        let name = Path::new(&artifact.name)
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "artifact".to_string());
        let path = self
            .base(app, environment)
            .join("artifacts")
            .join(&release_id.0)
            .join(name);
        Self::write(&path, &artifact.bytes)?;
        Ok(path.display().to_string())
    }
}
