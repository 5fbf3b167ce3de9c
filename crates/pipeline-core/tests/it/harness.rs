//! A scripted world for orchestration tests: every stage is an `automock` mock whose
//! answers come from a [`World`] and whose call counts are enforced by `.times(n)` from
//! [`Calls`], so "nothing was built" fails the test if a build happens.

use crate::support::{cv_matcher, develop_commit, pinned_image, pinned_time, revision, FixedClock};
use async_trait::async_trait;
use pipeline_core::task_definition::RenderedTaskDefinition;
use pipeline_core::{
    BuiltImage, CancellationToken, DeployLock, DeployRecord, DeployReport, DeployRequest,
    DeployTarget, Deployer, DeploymentHandle, Events, MockArtifactStore, MockDeployLocks,
    MockDeployer, MockImageBuilder, MockNotifier, MockRegistry, MockReleaseRecords,
    MockSecretStore, MockServiceReader, MockTestRunner, MockVerifier, NotificationKind,
    ObservedEvent, Orchestrator, PipelineEvent, RecordedEvents, ReleaseSource, RestoreRequest,
    Revision, RolloutObservation, RolloutOutcome, RolloutProgress, RolloutState, RolloutWatch,
    SecretRef, Stage, StageError, StageErrorKind, Stages, TestReport, UpdateRequest,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The deployment `update_service` starts, and the one `roll_back` starts.
pub const RELEASE_DEPLOYMENT: &str = "ecs-svc/release";
pub const ROLLBACK_DEPLOYMENT: &str = "ecs-svc/rollback";

/// How a followed deployment ends.
#[derive(Clone, Debug)]
pub enum Rollout {
    Ends(RolloutOutcome),
    /// The waiter cannot see the service at all.
    Unobservable,
    /// The run is cancelled while the rollout is being followed (the waiter never returns).
    CancelledMidway,
}

/// What each stage answers. `Ok(())` is success; `Err(kind)` a failure of that kind.
#[derive(Clone, Debug)]
pub struct World {
    pub source: ReleaseSource,
    pub lock: Result<(), StageErrorKind>,
    pub tests: Result<(), StageErrorKind>,
    pub build: Result<(), StageErrorKind>,
    pub push: Result<(), StageErrorKind>,
    /// `Registry::resolve`, for [`ReleaseSource::Image`].
    pub resolve: Result<(), StageErrorKind>,
    /// The registry already holds an image tagged with the commit's sha.
    pub commit_already_pushed: bool,
    /// What the image's security scan found.
    pub scan_findings: Vec<pipeline_core::Finding>,
    /// What the registry answers about the scan before that, one per look, in order;
    /// then the scan is complete with `scan_findings`. Empty: complete at once.
    pub scan_reports: Vec<pipeline_core::ScanReport>,
    /// The environment's `scan.wait_seconds` (its `poll_seconds` is 0.05 then).
    pub scan_wait_seconds: Option<u64>,
    pub secrets: Result<(), StageErrorKind>,
    /// What the service runs before the release.
    pub previous: Option<Revision>,
    pub update: Result<(), StageErrorKind>,
    /// A failed `update_service` call that nevertheless changed the service.
    pub update_reached_service: bool,
    pub rollout: Rollout,
    pub verify: Result<(), StageErrorKind>,
    /// The `roll_back` call itself.
    pub roll_back: Result<(), StageErrorKind>,
    /// How the rollback's deployment ends.
    pub rollback_rollout: Rollout,
    pub automatic_rollback: bool,
    pub notifier: Result<(), StageErrorKind>,
    /// The records hold a release still "in progress" whose run died.
    pub unfinished_release: bool,
}

impl Default for World {
    fn default() -> Self {
        Self {
            source: ReleaseSource::Build,
            lock: Ok(()),
            tests: Ok(()),
            build: Ok(()),
            push: Ok(()),
            resolve: Ok(()),
            commit_already_pushed: false,
            scan_findings: Vec::new(),
            scan_reports: Vec::new(),
            scan_wait_seconds: None,
            secrets: Ok(()),
            previous: Some(revision(6)),
            update: Ok(()),
            update_reached_service: false,
            rollout: Rollout::Ends(RolloutOutcome::Completed),
            verify: Ok(()),
            roll_back: Ok(()),
            rollback_rollout: Rollout::Ends(RolloutOutcome::Completed),
            automatic_rollback: true,
            notifier: Ok(()),
            unfinished_release: false,
        }
    }
}

/// How many times each stage must be called.
#[derive(Clone, Copy, Debug, Default)]
pub struct Calls {
    pub tests: usize,
    pub build: usize,
    pub push: usize,
    pub resolve: usize,
    pub register: usize,
    pub update: usize,
    pub roll_back: usize,
    pub verify: usize,
}

impl Calls {
    /// Every stage of a built release up to and including verification, once.
    pub fn full_release() -> Self {
        Self {
            tests: 1,
            build: 1,
            push: 1,
            resolve: 0,
            register: 1,
            update: 1,
            roll_back: 0,
            verify: 1,
        }
    }
}

/// An orchestrator over the mocks, and what the mocks saw.
pub struct Harness {
    pub orchestrator: Orchestrator,
    pub cancel: CancellationToken,
    pub events: Arc<RecordedEvents>,
    pub records: Arc<Mutex<Vec<DeployRecord>>>,
    /// Record writes and service updates, in the order they happened.
    pub journal: Arc<Mutex<Vec<String>>>,
    pub registered: Arc<Mutex<Vec<RenderedTaskDefinition>>>,
    pub notifications: Arc<Mutex<Vec<NotificationKind>>>,
    source: ReleaseSource,
}

impl Harness {
    /// Deploys the develop commit to staging.
    pub async fn deploy(&self) -> DeployReport {
        self.orchestrator
            .deploy(DeployRequest {
                environment: "staging".into(),
                source: self.source.clone(),
                git: develop_commit(),
                actor: "alice".into(),
                cancel: self.cancel.clone(),
            })
            .await
    }

    pub fn records(&self) -> Vec<DeployRecord> {
        lock(&self.records).clone()
    }

    pub fn registered(&self) -> Vec<RenderedTaskDefinition> {
        lock(&self.registered).clone()
    }

    pub fn notifications(&self) -> Vec<NotificationKind> {
        lock(&self.notifications).clone()
    }
}

pub fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn answer(step: Result<(), StageErrorKind>, what: &str) -> Result<(), StageError> {
    step.map_err(|kind| StageError::new(kind, format!("{what} failed (scripted)")))
}

/// The mock platform's rollout: on the first look some progress and a service event,
/// and the world's ending (a rollout that times out stays in progress).
struct HarnessRollout {
    deployment: DeploymentHandle,
    ending: Rollout,
    looked: bool,
}

#[async_trait]
impl RolloutWatch for HarnessRollout {
    async fn observe(&mut self, _events: &Events) -> Result<RolloutObservation, StageError> {
        let outcome = match &self.ending {
            Rollout::Ends(outcome) => outcome.clone(),
            Rollout::Unobservable => {
                return Err(StageError::unavailable(
                    "DescribeServices: connection refused",
                ))
            }
            Rollout::CancelledMidway => {
                return Err(StageError::failed(
                    "the mock waiter cannot block; CancelDuringRollout handles this",
                ))
            }
        };
        let state = RolloutState::ending_as(outcome, &self.deployment.revision);
        let first = !std::mem::replace(&mut self.looked, true);
        Ok(RolloutObservation {
            state,
            progress: Some(RolloutProgress {
                deployment: self.deployment.id.clone(),
                state: "IN_PROGRESS".into(),
                running: 1,
                pending: 1,
                desired: 2,
                failed_tasks: 0,
            }),
            new_events: if first {
                vec![ObservedEvent {
                    at: pinned_time(),
                    message: "(service cv-matcher-service) has reached a steady state.".into(),
                }]
            } else {
                Vec::new()
            },
            waiting_for: None,
        })
    }
}

/// The release's rollout as `CancelDuringRollout` sees it: the run is cancelled, and the
/// look never returns.
struct CancelledWhileWatching(CancellationToken);

#[async_trait]
impl RolloutWatch for CancelledWhileWatching {
    async fn observe(&mut self, _events: &Events) -> Result<RolloutObservation, StageError> {
        self.0.cancel();
        std::future::pending().await
    }
}

/// Builds the mocks for `world`, each stage expected exactly as often as `calls` says.
pub fn harness(world: &World, calls: Calls) -> Harness {
    let cancel = CancellationToken::new();
    let events = RecordedEvents::new();
    let records: Arc<Mutex<Vec<DeployRecord>>> = Arc::new(Mutex::new(Vec::new()));
    let journal = Arc::new(Mutex::new(Vec::new()));
    let registered = Arc::new(Mutex::new(Vec::new()));
    let notifications = Arc::new(Mutex::new(Vec::new()));
    let lock_taken = world.lock.is_ok();

    let mut tests = MockTestRunner::new();
    let result = world.tests;
    tests
        .expect_run_tests()
        .times(calls.tests)
        .returning(move |spec, events| {
            for command in &spec.commands {
                events.emit(PipelineEvent::Output {
                    stage: Stage::Test,
                    line: format!("$ {command}: ok"),
                });
            }
            answer(result, "make test").map(|()| TestReport::default())
        });

    let mut builder = MockImageBuilder::new();
    let result = world.build;
    builder
        .expect_build()
        .times(calls.build)
        .returning(move |spec, _| {
            answer(result, "docker build").map(|()| BuiltImage {
                image_id: "sha256:built".into(),
                local_tags: spec.tags.clone(),
            })
        });

    let mut registry = MockRegistry::new();
    registry
        .expect_ensure_repository()
        .times(calls.push)
        .returning(|_| Ok(crate::support::ACCOUNT_REPOSITORY.to_string()));
    let result = world.push;
    registry
        .expect_push()
        .times(calls.push)
        .returning(move |_, _, _, _| answer(result, "docker push").map(|()| pinned_image()));
    let findings = world.scan_findings.clone();
    let reports = Arc::new(Mutex::new(world.scan_reports.clone()));
    registry.expect_scan_findings().returning(move |_, _| {
        let mut reports = lock(&reports);
        Ok(if reports.is_empty() {
            pipeline_core::ScanReport::Complete(findings.clone())
        } else {
            reports.remove(0)
        })
    });
    let already_pushed = world.commit_already_pushed;
    registry
        .expect_find_tag()
        .returning(move |_, _| Ok(already_pushed.then(pinned_image)));
    let result = world.resolve;
    registry
        .expect_resolve()
        .times(calls.resolve)
        .returning(move |repository, reference| {
            result.map(|()| pinned_image()).map_err(|kind| {
                StageError::new(
                    kind,
                    format!("no image {reference} in repository {repository}"),
                )
            })
        });

    let mut secrets = MockSecretStore::new();
    let result = world.secrets;
    secrets.expect_resolve().returning(move |spec| {
        result
            .map_err(|kind| {
                StageError::new(
                    kind,
                    format!("parameter {}JWT_SECRET_KEY does not exist", spec.path),
                )
                .with_help("aws ssm put-parameter --type SecureString ...")
            })
            .map(|()| {
                ["DATABASE_URL", "JWT_SECRET_KEY", "S3_BUCKET_NAME"]
                    .iter()
                    .map(|name| SecretRef {
                        name: (*name).to_string(),
                        value_from: format!(
                            "arn:aws:ssm:us-east-1:123456789012:parameter{}{name}",
                            spec.path
                        ),
                    })
                    .collect()
            })
    });
    secrets.expect_ensure_exist().returning(|_| Ok(Vec::new()));

    let updated = Arc::new(AtomicBool::new(false));
    let mut deployer = MockDeployer::new();
    let previous = world.previous.clone();
    let seen_update = updated.clone();
    deployer.expect_current_revision().returning(move |_| {
        Ok(if seen_update.load(Ordering::SeqCst) {
            Some(revision(7))
        } else {
            previous.clone()
        })
    });
    let seen = registered.clone();
    deployer
        .expect_register()
        .times(calls.register)
        .returning(move |_, rendered| {
            lock(&seen).push(rendered.clone());
            Ok(revision(7))
        });
    let (result, reached) = (world.update, world.update_reached_service);
    let seen_update = updated.clone();
    let order = journal.clone();
    deployer
        .expect_update_service()
        .times(calls.update)
        .returning(move |_, request: &UpdateRequest| {
            lock(&order).push("update_service".into());
            if result.is_ok() || reached {
                seen_update.store(true, Ordering::SeqCst);
            }
            answer(result, "UpdateService").map(|()| DeploymentHandle {
                id: RELEASE_DEPLOYMENT.into(),
                revision: request.revision.clone(),
            })
        });
    let (release, rollback) = (world.rollout.clone(), world.rollback_rollout.clone());
    deployer
        .expect_watch_rollout()
        .returning(move |_, deployment| {
            let ending = if deployment.id == RELEASE_DEPLOYMENT {
                release.clone()
            } else {
                rollback.clone()
            };
            Box::new(HarnessRollout {
                deployment: deployment.clone(),
                ending,
                looked: false,
            })
        });
    let result = world.roll_back;
    let seen_update = updated.clone();
    deployer
        .expect_roll_back()
        .times(calls.roll_back)
        .returning(move |_, request| {
            if result.is_ok() {
                seen_update.store(false, Ordering::SeqCst);
            }
            answer(result, "UpdateService (rollback)").map(|()| DeploymentHandle {
                id: ROLLBACK_DEPLOYMENT.into(),
                revision: request.to.clone(),
            })
        });
    deployer.expect_revision_active().returning(|_| Ok(true));
    deployer
        .expect_prune_revisions()
        .returning(|_, _, _, _| Ok(Vec::new()));
    let mut service_reader = MockServiceReader::new();
    let (previous, seen_update) = (world.previous.clone(), updated.clone());
    service_reader.expect_status().returning(move |_| {
        let serving = if seen_update.load(Ordering::SeqCst) {
            Some(revision(7))
        } else {
            previous.clone()
        };
        Ok(crate::support::serving_status(serving, 2))
    });
    let deployer: Arc<dyn Deployer> = match world.rollout {
        Rollout::CancelledMidway => Arc::new(CancelDuringRollout {
            inner: deployer,
            cancel: cancel.clone(),
        }),
        _ => Arc::new(deployer),
    };

    let mut verifier = MockVerifier::new();
    verifier.expect_name().returning(|| "http".into());
    let result = world.verify;
    verifier
        .expect_verify()
        .times(calls.verify)
        .returning(move |_, _| {
            answer(result, "GET http://127.0.0.1:8000/health").map_err(|mut err| {
                err.message = "GET http://127.0.0.1:8000/health returned 503".into();
                err
            })
        });

    let mut locks = MockDeployLocks::new();
    let mut record_store = MockReleaseRecords::new();
    let mut artifacts = MockArtifactStore::new();
    let result = world.lock;
    locks
        .expect_acquire_lock()
        .times(1)
        .returning(move |app, environment, holder| {
            result
                .map(|()| DeployLock {
                    app: app.to_string(),
                    environment: environment.to_string(),
                    holder: holder.clone(),
                    token: "etag-1".into(),
                })
                .map_err(|kind| {
                    StageError::new(
                        kind,
                        format!(
                            "the deploy lock of {app}/{environment} is held by bob since 14:00"
                        ),
                    )
                })
        });
    locks
        .expect_release_lock()
        .times(usize::from(lock_taken))
        .returning(|_| Ok(()));
    // A rollout followed until its timeout outlives the lease: it is renewed.
    locks.expect_renew_lock().returning(|lock| Ok(lock.clone()));
    let (seen, order) = (records.clone(), journal.clone());
    record_store.expect_put_record().returning(move |record| {
        lock(&order).push(format!("record {:?}", record.outcome));
        // One record per run: a later write of the same release replaces it.
        let mut records = lock(&seen);
        match records
            .iter_mut()
            .find(|r| r.release_id == record.release_id)
        {
            Some(existing) => *existing = record.clone(),
            None => records.push(record.clone()),
        }
        Ok(())
    });
    let unfinished = world.unfinished_release;
    record_store
        .expect_history()
        .returning(move |app, environment, _| {
            Ok(if unfinished {
                vec![crate::support::unfinished_record(app, environment)]
            } else {
                Vec::new()
            })
        });
    artifacts
        .expect_put_artifact()
        .returning(|_, _, _, artifact| Ok(format!("s3://records/{}", artifact.name)));

    let mut notifier = MockNotifier::new();
    let result = world.notifier;
    let seen = notifications.clone();
    notifier
        .expect_notify()
        .times(if lock_taken { 2 } else { 0 })
        .returning(move |notification| {
            lock(&seen).push(notification.kind);
            answer(result, "chat.postMessage")
        });

    let mut project = cv_matcher();
    for env in project.config.environments.values_mut() {
        env.rollback.automatic = world.automatic_rollback;
        // Every scripted release passes the security-scan gate (empty findings by default).
        env.scan.block_at = Some(pipeline_core::Severity::High);
        if let Some(wait) = world.scan_wait_seconds {
            env.scan.wait_seconds = wait;
            env.scan.poll_seconds = 0.05;
        }
    }
    let stages = Stages {
        test_runner: Some(Arc::new(tests)),
        image_builder: Some(Arc::new(builder)),
        registry: Arc::new(registry),
        deployer,
        service_reader: Arc::new(service_reader),
        verifiers: vec![Arc::new(verifier)],
        secrets: Arc::new(secrets),
        locks: Arc::new(locks),
        records: Arc::new(record_store),
        artifacts: Arc::new(artifacts),
        notifiers: vec![Arc::new(notifier)],
        diagnostics: None,
        one_off: None,
    };
    let orchestrator = Orchestrator::new(project, stages, Events::new().with(events.clone()))
        .with_clock(Arc::new(FixedClock));
    Harness {
        orchestrator,
        cancel,
        events,
        records,
        journal,
        registered,
        notifications,
        source: world.source.clone(),
    }
}

/// A deployer whose waiter, for the release's deployment, sees the run cancelled (as by
/// Ctrl-C) and then never returns, like a real waiter on a slow rollout. Everything else
/// goes to the mock.
struct CancelDuringRollout {
    inner: MockDeployer,
    cancel: CancellationToken,
}

#[async_trait]
impl Deployer for CancelDuringRollout {
    async fn current_revision(
        &self,
        target: &DeployTarget,
    ) -> Result<Option<Revision>, StageError> {
        self.inner.current_revision(target).await
    }

    async fn register(
        &self,
        target: &DeployTarget,
        rendered: &RenderedTaskDefinition,
    ) -> Result<Revision, StageError> {
        self.inner.register(target, rendered).await
    }

    async fn update_service(
        &self,
        target: &DeployTarget,
        request: &UpdateRequest,
    ) -> Result<DeploymentHandle, StageError> {
        self.inner.update_service(target, request).await
    }

    fn watch_rollout(
        &self,
        target: &DeployTarget,
        deployment: &DeploymentHandle,
    ) -> Box<dyn RolloutWatch> {
        if deployment.id == RELEASE_DEPLOYMENT {
            Box::new(CancelledWhileWatching(self.cancel.clone()))
        } else {
            self.inner.watch_rollout(target, deployment)
        }
    }

    async fn roll_back(
        &self,
        target: &DeployTarget,
        request: &RestoreRequest,
    ) -> Result<DeploymentHandle, StageError> {
        self.inner.roll_back(target, request).await
    }

    async fn revision_active(&self, revision: &Revision) -> Result<bool, StageError> {
        self.inner.revision_active(revision).await
    }

    async fn prune_revisions(
        &self,
        target: &DeployTarget,
        family: &str,
        keep: usize,
        protected: &[Revision],
    ) -> Result<Vec<Revision>, StageError> {
        self.inner
            .prune_revisions(target, family, keep, protected)
            .await
    }
}
