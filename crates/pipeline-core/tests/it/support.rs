//! Shared fixtures: paths to the example project and test data, temp folders, a pinned
//! clock, and the revisions and images the orchestration tests use.

use chrono::{DateTime, TimeZone, Utc};
use pipeline_core::{Clock, GitInfo, PinnedImage, Project, Revision};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The workspace's `examples/cv-matcher/tugboat.toml`.
pub fn cv_matcher_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cv-matcher/tugboat.toml")
}

/// A file under `tests/data/`.
pub fn data_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

pub fn read_data(name: &str) -> String {
    let path = data_file(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

/// The CV Matcher project with every `${VAR:-default}` at its default, whatever the
/// machine's environment holds.
pub fn cv_matcher() -> Project {
    let path = cv_matcher_config();
    Project::load_with(&path, &|_| None)
        .unwrap_or_else(|err| panic!("the cv-matcher example must load: {err}"))
}

/// A folder under the system temp dir, unique per test, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let safe: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let path =
            std::env::temp_dir().join(format!("tugboat-core-it-{}-{n}-{safe}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|err| panic!("cannot create {}: {err}", path.display()));
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text)
            .unwrap_or_else(|err| panic!("cannot write {}: {err}", path.display()));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// 2026-11-26T14:15:00Z, always.
pub struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        pinned_time()
    }
}

pub fn pinned_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 14, 15, 0)
        .single()
        .unwrap_or_default()
}

pub const ACCOUNT_REPOSITORY: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/cv_matcher";
pub const DIGEST: &str = "sha256:4f2a8c0e9d7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a10";

pub fn revision(number: u32) -> Revision {
    Revision::new(
        format!("arn:aws:ecs:us-east-1:123456789012:task-definition/cv-matcher:{number}"),
        format!("cv-matcher:{number}"),
    )
}

pub fn pinned_image() -> PinnedImage {
    PinnedImage {
        repository_uri: ACCOUNT_REPOSITORY.to_string(),
        digest: DIGEST.to_string(),
        tags: vec!["abc1234def5678".to_string()],
    }
}

pub fn develop_commit() -> GitInfo {
    GitInfo {
        sha: "abc1234def5678".to_string(),
        git_ref: "refs/heads/develop".to_string(),
        committed_at: None,
    }
}

/// The service as `ServiceReader::status` shows it when `serving` completed and nothing
/// else is rolling out (`None`: no deployment at all).
pub fn serving_status(serving: Option<Revision>, desired: u32) -> pipeline_core::ServiceStatus {
    pipeline_core::ServiceStatus {
        target: pipeline_core::DeployTarget {
            app: "cv-matcher".into(),
            environment: "staging".into(),
            cluster: "cv-matcher-staging-cluster".into(),
            service: "cv-matcher-service".into(),
            region: Some("us-east-1".into()),
        },
        revision: serving.clone(),
        running: desired,
        pending: 0,
        desired,
        deployments: serving
            .into_iter()
            .map(|revision| pipeline_core::DeploymentStatus {
                id: "ecs-svc/serving".into(),
                status: "PRIMARY".into(),
                rollout_state: Some("COMPLETED".into()),
                rollout_state_reason: None,
                revision,
                running: desired,
                pending: 0,
                desired,
                failed_tasks: 0,
            })
            .collect(),
        events: Vec::new(),
        autoscaled: Some(false),
    }
}

/// The record a run left when it died after changing the service: still in progress,
/// from cv-matcher:5 to cv-matcher:6.
pub fn unfinished_record(app: &str, environment: &str) -> pipeline_core::DeployRecord {
    pipeline_core::DeployRecord {
        release_id: pipeline_core::ReleaseId("r20261126-130000-dead123".into()),
        app: app.into(),
        environment: environment.into(),
        git: GitInfo::default(),
        image: None,
        revision: Some(revision(6)),
        previous_revision: Some(revision(5)),
        outcome: pipeline_core::RecordOutcome::InProgress,
        reason: None,
        stages: Vec::new(),
        actor: "bob".into(),
        started_at: pinned_time(),
        finished_at: None,
        rollback_of: None,
        deployment_id: Some("ecs-svc/dead".into()),
        trigger: None,
        scan_override: None,
        task_definition: None,
        warnings: Vec::new(),
        rollback_deployment_id: None,
        rollback_started_at: None,
        concluding: None,
        one_off_tasks: Vec::new(),
    }
}
