//! Deploy records, test artifacts and the deploy lock in a local folder (`.tugboat/`),
//! for projects without a records bucket.
//!
//! Layout under `<root>/<app>/<env>/`: `records/<release id>.json`,
//! `artifacts/<release id>/<name>`, `lock.json`. The lock is a lease with the same rules
//! as the S3 one: every change to it (take, take over, renew, remove) checks the version
//! this run saw, under an exclusive file lock on `lock.json.guard`, so only one run can
//! hold it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pipeline_core::{
    Artifact, ArtifactStore, DeployLock, DeployLocks, DeployRecord, InProgressPointer, LockHolder,
    ReleaseId, ReleaseRecords, StageError, StageErrorKind, VersionedRecord,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// [`ArtifactStore`] in a folder on this machine.
#[derive(Clone, Debug)]
pub struct FileArtifactStore {
    root: PathBuf,
}

impl FileArtifactStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn base(&self, app: &str, environment: &str) -> PathBuf {
        self.root.join(app).join(environment)
    }

    fn lock_path(&self, app: &str, environment: &str) -> PathBuf {
        self.base(app, environment).join("lock.json")
    }

    /// The records of an environment, newest first; unreadable ones skipped, and with
    /// `since`, those whose file name says they started earlier are not read.
    fn read_records(
        &self,
        app: &str,
        environment: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<DeployRecord>, StageError> {
        let dir = self.base(app, environment).join("records");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(Self::io_error("read", &dir, &err)),
        };
        let mut records: Vec<DeployRecord> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|path| path.extension().is_some_and(|x| x == "json"))
            .filter(|path| {
                let release = path
                    .file_stem()
                    .map(|s| ReleaseId(s.to_string_lossy().into()));
                match (since, release) {
                    (Some(since), Some(release)) => !release.started_before(since),
                    _ => true,
                }
            })
            .filter_map(|path| std::fs::read(path).ok())
            .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
            .collect();
        pipeline_core::sort_newest_first(&mut records);
        Ok(records)
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

    fn record_path(&self, app: &str, environment: &str, release_id: &ReleaseId) -> PathBuf {
        self.base(app, environment)
            .join("records")
            .join(format!("{release_id}.json"))
    }

    /// Holds `<path>.guard` exclusively while `work` runs (released when closed, also
    /// when the process dies).
    fn guarded<T>(
        path: &Path,
        work: impl FnOnce() -> Result<T, StageError>,
    ) -> Result<T, StageError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Self::io_error("create", parent, &e))?;
        }
        let guard_path = path.with_extension("json.guard");
        let guard = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&guard_path)
            .map_err(|e| Self::io_error("open", &guard_path, &e))?;
        rustix::fs::flock(&guard, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| Self::io_error("lock", &guard_path, &e.into()))?;
        work()
    }

    /// Runs `change` on the stored lock (and its version) while holding the guard file
    /// exclusively: no other run reads or writes the lock in between.
    fn with_guard<T>(
        path: &Path,
        change: impl FnOnce(Option<(LockHolder, String)>) -> Result<T, StageError>,
    ) -> Result<T, StageError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Self::io_error("create", parent, &e))?;
        }
        let guard_path = path.with_extension("json.guard");
        let guard = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&guard_path)
            .map_err(|e| Self::io_error("open", &guard_path, &e))?;
        // Released when `guard` is closed (dropped), also when the process dies.
        rustix::fs::flock(&guard, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| Self::io_error("lock", &guard_path, &e.into()))?;
        // An unreadable lock is one no run can hold: treated as none.
        let stored = read_holder(path).map(|holder| {
            let version = version_of(&holder);
            (holder, version)
        });
        change(stored)
    }

    fn write_lock(path: &Path, holder: &LockHolder) -> Result<String, StageError> {
        let body = serde_json::to_vec(holder).map_err(|e| StageError::failed(e.to_string()))?;
        Self::write(path, &body)?;
        Ok(version_of(holder))
    }
}

/// A record's version: a digest of its bytes as stored.
fn content_version(bytes: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    format!("{:016x}-{}", hasher.finish(), bytes.len())
}

/// `in-progress.json`: the release the event-driven front end has not concluded.
#[derive(serde::Serialize, serde::Deserialize)]
struct InProgress {
    release_id: Option<ReleaseId>,
}

/// A lock's version: every write sets a new `renewed_at`.
fn version_of(holder: &LockHolder) -> String {
    let at = holder.renewed_at.unwrap_or(holder.since);
    format!(
        "{}/{}",
        at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        holder.run_token
    )
}

fn read_holder(path: &Path) -> Option<LockHolder> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

#[async_trait]
impl DeployLocks for FileArtifactStore {
    async fn acquire_lock(
        &self,
        app: &str,
        environment: &str,
        holder: &LockHolder,
    ) -> Result<DeployLock, StageError> {
        let path = self.lock_path(app, environment);
        let fallback = Duration::from_secs(
            holder
                .lease_seconds
                .unwrap_or(LockHolder::DEFAULT_LEASE_SECONDS),
        );
        Self::with_guard(&path, |stored| {
            let mut mine = holder.clone();
            match stored {
                Some((current, version)) if current.same_run(holder) => {
                    return Ok(DeployLock {
                        app: app.to_string(),
                        environment: environment.to_string(),
                        holder: current,
                        token: version,
                    })
                }
                Some((current, _)) if !current.lease_ran_out(Utc::now(), fallback) => {
                    return Err(current.held_error(app, environment, fallback));
                }
                Some((current, _)) => {
                    tracing::warn!(holder = %current.who, "taking over a deploy lock whose lease ran out");
                }
                None => {}
            }
            mine.renewed_at = Some(Utc::now());
            let version = Self::write_lock(&path, &mine)?;
            Ok(DeployLock {
                app: app.to_string(),
                environment: environment.to_string(),
                holder: mine,
                token: version,
            })
        })
    }

    async fn renew_lock(&self, lock: &DeployLock) -> Result<DeployLock, StageError> {
        let path = self.lock_path(&lock.app, &lock.environment);
        Self::with_guard(&path, |stored| match stored {
            Some((current, version))
                if current.same_run(&lock.holder)
                    && (lock.token.is_empty() || version == lock.token) =>
            {
                let mut mine = current;
                mine.renewed_at = Some(Utc::now());
                let token = Self::write_lock(&path, &mine)?;
                Ok(DeployLock {
                    holder: mine,
                    token,
                    ..lock.clone()
                })
            }
            Some((current, _)) => Err(StageError::new(
                StageErrorKind::LockHeld,
                format!(
                    "the deploy lock of {}/{} was taken over by {} (release {})",
                    lock.app, lock.environment, current.who, current.release_id
                ),
            )),
            None => Err(StageError::new(
                StageErrorKind::LockHeld,
                format!(
                    "the deploy lock of {}/{} was removed (tugboat unlock?)",
                    lock.app, lock.environment
                ),
            )),
        })
    }

    async fn release_lock(&self, lock: &DeployLock) -> Result<(), StageError> {
        let path = self.lock_path(&lock.app, &lock.environment);
        Self::with_guard(&path, |stored| match stored {
            Some((current, _)) if current.same_run(&lock.holder) => {
                std::fs::remove_file(&path).map_err(|e| Self::io_error("remove", &path, &e))
            }
            // Taken over, or already gone: not ours to remove.
            _ => Ok(()),
        })
    }

    async fn read_lock(
        &self,
        app: &str,
        environment: &str,
    ) -> Result<Option<DeployLock>, StageError> {
        let path = self.lock_path(app, environment);
        Ok(read_holder(&path).map(|holder| DeployLock {
            app: app.to_string(),
            environment: environment.to_string(),
            token: version_of(&holder),
            holder,
        }))
    }
}

#[async_trait]
impl ReleaseRecords for FileArtifactStore {
    async fn put_record(&self, record: &DeployRecord) -> Result<(), StageError> {
        let path = self
            .base(&record.app, &record.environment)
            .join("records")
            .join(format!("{}.json", record.release_id));
        let body =
            serde_json::to_vec_pretty(record).map_err(|e| StageError::failed(e.to_string()))?;
        Self::write(&path, &body)
    }

    async fn read_record(
        &self,
        app: &str,
        environment: &str,
        release_id: &ReleaseId,
    ) -> Result<Option<VersionedRecord>, StageError> {
        let path = self.record_path(app, environment, release_id);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(Self::io_error("read", &path, &err)),
        };
        let record = serde_json::from_slice(&bytes).map_err(|e| {
            StageError::failed(format!(
                "{} is not a tugboat deploy record: {e}",
                path.display()
            ))
        })?;
        Ok(Some(VersionedRecord {
            record,
            version: content_version(&bytes),
        }))
    }

    async fn put_record_if(
        &self,
        record: &DeployRecord,
        version: &str,
    ) -> Result<Option<String>, StageError> {
        let path = self.record_path(&record.app, &record.environment, &record.release_id);
        let body =
            serde_json::to_vec_pretty(record).map_err(|e| StageError::failed(e.to_string()))?;
        Self::guarded(&path, || {
            let current = std::fs::read(&path).ok().map(|b| content_version(&b));
            if current.as_deref() != Some(version) {
                return Ok(None);
            }
            Self::write(&path, &body)?;
            Ok(Some(content_version(&body)))
        })
    }

    async fn in_progress(
        &self,
        app: &str,
        environment: &str,
    ) -> Result<InProgressPointer, StageError> {
        let path = self.base(app, environment).join("in-progress.json");
        match std::fs::read(&path) {
            Ok(bytes) => Ok(serde_json::from_slice::<InProgress>(&bytes).ok().map_or(
                InProgressPointer::Unknown,
                |p| {
                    p.release_id
                        .map_or(InProgressPointer::Nothing, InProgressPointer::Release)
                },
            )),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                Ok(InProgressPointer::Unknown)
            }
            Err(err) => Err(Self::io_error("read", &path, &err)),
        }
    }

    async fn set_in_progress(
        &self,
        app: &str,
        environment: &str,
        release_id: Option<ReleaseId>,
    ) -> Result<(), StageError> {
        let path = self.base(app, environment).join("in-progress.json");
        let body = serde_json::to_vec(&InProgress { release_id })
            .map_err(|e| StageError::failed(e.to_string()))?;
        Self::write(&path, &body)
    }

    async fn history(
        &self,
        app: &str,
        environment: &str,
        limit: usize,
    ) -> Result<Vec<DeployRecord>, StageError> {
        let mut records = self.read_records(app, environment, None)?;
        records.truncate(limit);
        Ok(records)
    }

    async fn records_since(
        &self,
        app: &str,
        environment: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<DeployRecord>, StageError> {
        let mut records = self.read_records(app, environment, Some(since))?;
        records.retain(|record| record.started_at >= since);
        Ok(records)
    }
}

#[async_trait]
impl ArtifactStore for FileArtifactStore {
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
