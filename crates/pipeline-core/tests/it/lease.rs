//! The deploy lock's lease through a whole release, with a 3 s lease (renewed every 1 s):
//! renewed while the release runs longer than the lease; a lease taken over stops the
//! run before it changes anything more (no update, no rollback); a lease that cannot be
//! renewed stops the run loudly, and it rolls back while it may still hold the lock.

use crate::support::{cv_matcher, develop_commit, pinned_image, revision, serving_status};
use async_trait::async_trait;
use pipeline_core::{
    Artifact, ArtifactStore, CancellationToken, DeployLock, DeployLocks, DeployRecord,
    DeployReport, DeployRequest, DeploymentHandle, Events, MockDeployer, MockRegistry,
    MockServiceReader, Orchestrator, Outcome, PipelineEvent, RecordOutcome, RecordedEvents,
    ReleaseId, ReleaseRecords, ReleaseSource, ScriptedRollout, SecretRef, SecretStore, SecretsSpec,
    StageError, StageErrorKind, Stages, Verifier, VerifyContext,
};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LEASE_SECONDS: u64 = 3;

/// What renewing the lease answers.
#[derive(Clone, Copy)]
enum Renewals {
    Succeed,
    /// From the first renewal on: another run holds the lock.
    TakenOver,
    /// From the first renewal on: the store cannot be reached.
    Unreachable,
}

struct LeaseStore {
    renewals: Renewals,
    renewed: AtomicUsize,
    released: Mutex<Vec<DeployLock>>,
    records: Mutex<Vec<DeployRecord>>,
}

#[async_trait]
impl DeployLocks for LeaseStore {
    async fn acquire_lock(
        &self,
        app: &str,
        environment: &str,
        holder: &pipeline_core::LockHolder,
    ) -> Result<DeployLock, StageError> {
        let mut holder = holder.clone();
        holder.renewed_at = Some(chrono::Utc::now());
        Ok(DeployLock {
            app: app.into(),
            environment: environment.into(),
            holder,
            token: "v0".into(),
        })
    }

    async fn renew_lock(&self, lock: &DeployLock) -> Result<DeployLock, StageError> {
        let n = self.renewed.fetch_add(1, Ordering::SeqCst) + 1;
        match self.renewals {
            Renewals::Succeed => Ok(DeployLock {
                token: format!("v{n}"),
                ..lock.clone()
            }),
            Renewals::TakenOver => Err(StageError::new(
                StageErrorKind::LockHeld,
                "the deploy lock of cv-matcher/staging was taken over by carol (release r2)",
            )),
            Renewals::Unreachable => Err(StageError::failed("PutObject: dispatch failure")),
        }
    }

    async fn release_lock(&self, lock: &DeployLock) -> Result<(), StageError> {
        crate::harness::lock(&self.released).push(lock.clone());
        Ok(())
    }

    async fn read_lock(&self, _: &str, _: &str) -> Result<Option<DeployLock>, StageError> {
        Ok(None)
    }
}

#[async_trait]
impl ReleaseRecords for LeaseStore {
    async fn put_record(&self, record: &DeployRecord) -> Result<(), StageError> {
        crate::harness::lock(&self.records).push(record.clone());
        Ok(())
    }

    async fn history(&self, _: &str, _: &str, _: usize) -> Result<Vec<DeployRecord>, StageError> {
        Ok(Vec::new())
    }
}

#[async_trait]
impl ArtifactStore for LeaseStore {
    async fn put_artifact(
        &self,
        _: &str,
        _: &str,
        _: &ReleaseId,
        artifact: &Artifact,
    ) -> Result<String, StageError> {
        Ok(artifact.name.clone())
    }
}

/// Secrets that take `delay` to resolve: the run is still preparing when the lease is
/// renewed.
struct SlowSecrets {
    delay: Duration,
}

#[async_trait]
impl SecretStore for SlowSecrets {
    async fn resolve(&self, spec: &SecretsSpec) -> Result<Vec<SecretRef>, StageError> {
        tokio::time::sleep(self.delay).await;
        Ok(["DATABASE_URL", "JWT_SECRET_KEY", "S3_BUCKET_NAME"]
            .iter()
            .map(|name| SecretRef {
                name: (*name).to_string(),
                value_from: format!(
                    "arn:aws:ssm:us-east-1:123456789012:parameter{}{name}",
                    spec.path
                ),
            })
            .collect())
    }

    async fn ensure_exist(&self, _: &[String]) -> Result<Vec<String>, StageError> {
        Ok(Vec::new())
    }
}

/// A health check that takes `takes` (forever: `None`) to pass.
struct SlowVerifier {
    takes: Option<Duration>,
}

#[async_trait]
impl Verifier for SlowVerifier {
    fn name(&self) -> String {
        "http".into()
    }

    async fn verify(&self, _: &VerifyContext, _: &Events) -> Result<(), StageError> {
        match self.takes {
            Some(takes) => tokio::time::sleep(takes).await,
            None => std::future::pending().await,
        }
        Ok(())
    }
}

struct Scenario {
    renewals: Renewals,
    secrets_take: Duration,
    verify_takes: Option<Duration>,
    updates: usize,
    roll_backs: usize,
}

struct Ran {
    report: DeployReport,
    store: Arc<LeaseStore>,
    events: Arc<RecordedEvents>,
    took: Duration,
}

impl Ran {
    fn warnings(&self) -> Vec<String> {
        self.events
            .take()
            .into_iter()
            .filter_map(|event| match event {
                PipelineEvent::Warning { message } => Some(message),
                _ => None,
            })
            .collect()
    }
}

async fn run(scenario: Scenario) -> Ran {
    let store = Arc::new(LeaseStore {
        renewals: scenario.renewals,
        renewed: AtomicUsize::new(0),
        released: Mutex::new(Vec::new()),
        records: Mutex::new(Vec::new()),
    });
    let mut registry = MockRegistry::new();
    registry
        .expect_resolve()
        .returning(|_, _| Ok(pinned_image()));
    registry
        .expect_scan_findings()
        .returning(|_, _| Ok(pipeline_core::ScanReport::Complete(Vec::new())));
    registry.expect_find_tag().returning(|_, _| Ok(None));

    let updated = Arc::new(AtomicBool::new(false));
    let mut deployer = MockDeployer::new();
    let seen = updated.clone();
    deployer.expect_current_revision().returning(move |_| {
        Ok(Some(revision(if seen.load(Ordering::SeqCst) {
            7
        } else {
            6
        })))
    });
    deployer.expect_register().returning(|_, _| Ok(revision(7)));
    let seen = updated.clone();
    deployer
        .expect_update_service()
        .times(scenario.updates)
        .returning(move |_, request| {
            seen.store(true, Ordering::SeqCst);
            Ok(DeploymentHandle {
                id: "ecs-svc/release".into(),
                revision: request.revision.clone(),
            })
        });
    deployer
        .expect_watch_rollout()
        .returning(|_, deployment| ScriptedRollout::completing(&deployment.revision));
    let seen = updated.clone();
    deployer
        .expect_roll_back()
        .times(scenario.roll_backs)
        .returning(move |_, request| {
            seen.store(false, Ordering::SeqCst);
            Ok(DeploymentHandle {
                id: "ecs-svc/rollback".into(),
                revision: request.to.clone(),
            })
        });
    deployer.expect_revision_active().returning(|_| Ok(true));
    deployer
        .expect_prune_revisions()
        .returning(|_, _, _, _| Ok(Vec::new()));
    let mut service_reader = MockServiceReader::new();
    let seen = updated.clone();
    service_reader.expect_status().returning(move |_| {
        let serving = if seen.load(Ordering::SeqCst) { 7 } else { 6 };
        Ok(serving_status(Some(revision(serving)), 1))
    });

    let mut project = cv_matcher();
    for env in project.config.environments.values_mut() {
        env.scan.block_at = Some(pipeline_core::Severity::High);
        if let Some(records) = env.records.as_mut() {
            records.lock_lease_seconds = LEASE_SECONDS;
        }
    }
    let stages = Stages {
        test_runner: None,
        image_builder: None,
        registry: Arc::new(registry),
        deployer: Arc::new(deployer),
        service_reader: Arc::new(service_reader),
        verifiers: vec![Arc::new(SlowVerifier {
            takes: scenario.verify_takes,
        })],
        secrets: Arc::new(SlowSecrets {
            delay: scenario.secrets_take,
        }),
        locks: store.clone(),
        records: store.clone(),
        artifacts: store.clone(),
        notifiers: Vec::new(),
        diagnostics: None,
        one_off: None,
    };
    let events = RecordedEvents::new();
    let orchestrator = Orchestrator::new(project, stages, Events::new().with(events.clone()));
    let started = Instant::now();
    let report = orchestrator
        .deploy(DeployRequest {
            environment: "staging".into(),
            source: ReleaseSource::Image(pipeline_core::ImageReference::Tag("v1.1.0".into())),
            git: develop_commit(),
            actor: "alice".into(),
            cancel: CancellationToken::new(),
        })
        .await;
    Ran {
        report,
        store,
        events,
        took: started.elapsed(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_longer_than_the_lease_renews_it_and_gives_back_the_latest() {
    let ran = run(Scenario {
        renewals: Renewals::Succeed,
        secrets_take: Duration::ZERO,
        verify_takes: Some(Duration::from_millis(3500)),
        updates: 1,
        roll_backs: 0,
    })
    .await;
    assert_eq!(
        ran.report.outcome,
        Outcome::Succeeded,
        "{}",
        ran.report.message
    );
    let renewed = ran.store.renewed.load(Ordering::SeqCst);
    assert!(renewed >= 3, "renewed {renewed} times in {:?}", ran.took);
    let released = crate::harness::lock(&ran.store.released).clone();
    assert_eq!(released.len(), 1);
    assert_eq!(
        released[0].token,
        format!("v{renewed}"),
        "gave back an old version"
    );
    assert!(ran.warnings().is_empty(), "{:?}", ran.warnings());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_taken_over_before_the_update_stops_the_run_unchanged() {
    // The first renewal (after 1 s) finds the lock taken over while secrets resolve.
    let ran = run(Scenario {
        renewals: Renewals::TakenOver,
        secrets_take: Duration::from_millis(1500),
        verify_takes: Some(Duration::ZERO),
        updates: 0,
        roll_backs: 0,
    })
    .await;
    assert_eq!(
        ran.report.outcome,
        Outcome::FailedRestored,
        "{}",
        ran.report.message
    );
    let record = ran.report.record.clone().expect("a record");
    assert_eq!(record.outcome, RecordOutcome::FailedUnchanged);
    assert_eq!(record.revision, None, "registered after the lease was lost");
    assert!(
        ran.report.message.contains("taken over by carol"),
        "{}",
        ran.report.message
    );
    assert!(
        ran.warnings()
            .iter()
            .any(|w| w.contains("taken over by carol") && w.contains("stops")),
        "{:?}",
        ran.warnings()
    );
    assert_eq!(ran.store.renewed.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_taken_over_after_the_update_does_not_roll_back() {
    // Updated at once; the health check never ends; the first renewal finds the lock
    // taken over: the run stops, and leaves the service to the new holder.
    let ran = run(Scenario {
        renewals: Renewals::TakenOver,
        secrets_take: Duration::ZERO,
        verify_takes: None,
        updates: 1,
        roll_backs: 0,
    })
    .await;
    assert_eq!(
        ran.report.outcome,
        Outcome::FailedNotRestored,
        "{}",
        ran.report.message
    );
    assert!(
        ran.report.message.contains("Not rolling back"),
        "{}",
        ran.report.message
    );
    assert!(
        ran.took < Duration::from_secs(3),
        "stopped after {:?}",
        ran.took
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_cannot_be_renewed_stops_the_run_before_it_may_have_run_out() {
    // Renewals fail (warned each time); at 5/6 of the lease the run can no longer be
    // sure it holds the lock: it stops and rolls back (nobody else holds the lock yet).
    let ran = run(Scenario {
        renewals: Renewals::Unreachable,
        secrets_take: Duration::ZERO,
        verify_takes: None,
        updates: 1,
        roll_backs: 1,
    })
    .await;
    assert_eq!(
        ran.report.outcome,
        Outcome::FailedRestored,
        "{}",
        ran.report.message
    );
    let warnings = ran.warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("could not renew the deploy lock's lease")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("was not renewed for")),
        "{warnings:?}"
    );
    let lease = Duration::from_secs(LEASE_SECONDS);
    assert!(
        ran.took >= lease * 5 / 6 - Duration::from_millis(100) && ran.took < lease,
        "stopped after {:?}",
        ran.took
    );
}

#[test]
fn an_old_config_with_a_lock_expiry_still_loads_with_the_default_lease() {
    let records: pipeline_core::config::RecordsSettings =
        toml::from_str("bucket = \"demo-records\"\nlock_expiry_seconds = 3600\n")
            .expect("an old [records] section loads");
    assert_eq!(records.lock_lease_seconds, 120);
    assert_eq!(records.lock_expiry_seconds, Some(3600));
}
