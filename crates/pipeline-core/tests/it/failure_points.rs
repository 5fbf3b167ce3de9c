//! Every point where a release can fail, as a table: what the world does, which stages
//! must (and must not) run, and what the run reports and records.
//!
//! On every path the table also checks that exactly one deploy record is written, that
//! the deploy lock is released whenever it was taken (`release_lock` is `.times(1)`),
//! and that people are told how the run ended.

use crate::harness::{harness, lock, Calls, Rollout, World};
use crate::support::{cv_matcher, develop_commit, pinned_image, revision};
use pipeline_core::{
    DeployRequest, Events, Finding, ImageReference, MockArtifactStore, MockDeployLocks,
    MockDeployer, MockImageBuilder, MockRegistry, MockReleaseRecords, MockSecretStore,
    MockServiceReader, MockTestRunner, NotificationKind, Orchestrator, Outcome, PipelineEvent,
    RecordOutcome, ReleaseSource, RolloutOutcome, Severity, Stage, StageErrorKind, Stages,
};
use std::sync::Arc;
use std::time::Duration;

use Stage::{Build, Deploy, Push, Rollback, Test, Verify};
use StageErrorKind::{BadInput, Failed, LockHeld, Unavailable};

struct Case {
    name: &'static str,
    world: World,
    calls: Calls,
    outcome: Outcome,
    record: RecordOutcome,
    /// The stage timings of the record, in order, with their `ok`.
    stages: &'static [(Stage, bool)],
    /// The revision numbers the record names: registered, and serving before.
    revision: Option<u32>,
    previous: Option<u32>,
    /// Text the report's message must contain.
    message: &'static [&'static str],
    /// Text some warning event must contain.
    warnings: &'static [&'static str],
}

fn critical_finding() -> Finding {
    Finding {
        name: "CVE-2026-0001".into(),
        severity: Severity::Critical,
        package: Some("openssl 3.0.1".into()),
    }
}

fn rollout_fails(reason: &str) -> Rollout {
    Rollout::Ends(RolloutOutcome::Failed {
        reason: reason.into(),
    })
}

/// A built release whose rollout fails: everything up to the update, then a rollback.
fn rolled_back_calls() -> Calls {
    Calls {
        verify: 0,
        roll_back: 1,
        ..Calls::full_release()
    }
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "every stage passes",
            world: World::default(),
            calls: Calls::full_release(),
            outcome: Outcome::Succeeded,
            record: RecordOutcome::Succeeded,
            stages: &[(Test, true), (Build, true), (Push, true), (Deploy, true), (Verify, true)],
            revision: Some(7),
            previous: Some(6),
            message: &["released r20261126-141500-abc1234 to staging", "cv-matcher:7"],
            warnings: &[],
        },
        Case {
            name: "tests fail: nothing built",
            world: World {
                tests: Err(Failed),
                ..World::default()
            },
            calls: Calls {
                tests: 1,
                ..Calls::default()
            },
            outcome: Outcome::FailedRestored,
            record: RecordOutcome::FailedUnchanged,
            stages: &[(Test, false)],
            revision: None,
            previous: None,
            message: &["test failed, nothing was deployed", "make test failed"],
            warnings: &[],
        },
        Case {
            name: "build fails: nothing pushed",
            world: World {
                build: Err(Failed),
                ..World::default()
            },
            calls: Calls {
                tests: 1,
                build: 1,
                ..Calls::default()
            },
            outcome: Outcome::FailedRestored,
            record: RecordOutcome::FailedUnchanged,
            stages: &[(Test, true), (Build, false)],
            revision: None,
            previous: None,
            message: &["build failed, nothing was deployed"],
            warnings: &[],
        },
        Case {
            name: "push fails: nothing deployed",
            world: World {
                push: Err(Unavailable),
                ..World::default()
            },
            calls: Calls {
                tests: 1,
                build: 1,
                push: 1,
                ..Calls::default()
            },
            outcome: Outcome::FailedRestored,
            record: RecordOutcome::FailedUnchanged,
            stages: &[(Test, true), (Build, true), (Push, false)],
            revision: None,
            previous: None,
            message: &["push failed, nothing was deployed"],
            warnings: &[],
        },
        Case {
            name: "a parameter is missing from the secret store: refused, service untouched",
            world: World {
                secrets: Err(BadInput),
                ..World::default()
            },
            calls: Calls {
                tests: 1,
                build: 1,
                push: 1,
                ..Calls::default()
            },
            outcome: Outcome::BadInput,
            record: RecordOutcome::Refused,
            stages: &[(Test, true), (Build, true), (Push, true), (Deploy, false)],
            revision: None,
            previous: None,
            message: &["/cv-matcher/staging/JWT_SECRET_KEY does not exist", "help: aws ssm"],
            warnings: &[],
        },
        Case {
            name: "rollout fails: rolled back",
            world: World {
                rollout: rollout_fails("tasks failed to start"),
                ..World::default()
            },
            calls: rolled_back_calls(),
            outcome: Outcome::FailedRestored,
            record: RecordOutcome::RolledBack,
            stages: &[(Test, true), (Build, true), (Push, true), (Deploy, false), (Rollback, true)],
            revision: Some(7),
            previous: Some(6),
            message: &["rollout failed: tasks failed to start", "is on cv-matcher:6 again"],
            warnings: &[],
        },
        Case {
            name: "the circuit breaker rolled back: a failure, then rolled back",
            world: World {
                rollout: Rollout::Ends(RolloutOutcome::RolledBackByPlatform {
                    reason: "circuit breaker triggered".into(),
                }),
                ..World::default()
            },
            calls: rolled_back_calls(),
            outcome: Outcome::FailedRestored,
            record: RecordOutcome::RolledBack,
            stages: &[(Test, true), (Build, true), (Push, true), (Deploy, false), (Rollback, true)],
            revision: Some(7),
            previous: Some(6),
            message: &["the platform rolled it back: circuit breaker triggered", "cv-matcher:6 again"],
            warnings: &[],
        },
        Case {
            name: "rollout times out: rolled back",
            world: World {
                rollout: Rollout::Ends(RolloutOutcome::TimedOut {
                    after: Duration::from_secs(900),
                }),
                ..World::default()
            },
            calls: rolled_back_calls(),
            outcome: Outcome::FailedRestored,
            record: RecordOutcome::RolledBack,
            stages: &[(Test, true), (Build, true), (Push, true), (Deploy, false), (Rollback, true)],
            revision: Some(7),
            previous: Some(6),
            message: &["did not finish within 900s"],
            warnings: &[],
        },
        Case {
            name: "the waiter cannot see the service: rolled back",
            world: World {
                rollout: Rollout::Unobservable,
                ..World::default()
            },
            calls: rolled_back_calls(),
            outcome: Outcome::FailedRestored,
            record: RecordOutcome::RolledBack,
            stages: &[(Test, true), (Build, true), (Push, true), (Deploy, false), (Rollback, true)],
            revision: Some(7),
            previous: Some(6),
            message: &["could not follow the rollout: DescribeServices: connection refused"],
            warnings: &[],
        },
        Case {
            name: "verification fails: rolled back",
            world: World {
                verify: Err(Failed),
                ..World::default()
            },
            calls: Calls {
                roll_back: 1,
                ..Calls::full_release()
            },
            outcome: Outcome::FailedRestored,
            record: RecordOutcome::RolledBack,
            stages: &[
                (Test, true),
                (Build, true),
                (Push, true),
                (Deploy, true),
                (Verify, false),
                (Rollback, true),
            ],
            revision: Some(7),
            previous: Some(6),
            message: &["verification http failed", "returned 503", "cv-matcher:6 again"],
            warnings: &[],
        },
        Case {
            name: "the rollback call fails: not restored",
            world: World {
                rollout: rollout_fails("tasks failed to start"),
                roll_back: Err(Failed),
                ..World::default()
            },
            calls: rolled_back_calls(),
            outcome: Outcome::FailedNotRestored,
            record: RecordOutcome::NotRestored,
            stages: &[(Test, true), (Build, true), (Push, true), (Deploy, false), (Rollback, false)],
            revision: Some(7),
            previous: Some(6),
            message: &[
                "THE ROLLBACK TO cv-matcher:6 FAILED TOO",
                "tugboat status --env staging",
                "tugboat rollback --env staging --to cv-matcher:6",
            ],
            warnings: &[],
        },
        Case {
            name: "the rollback's own rollout fails: not restored",
            world: World {
                rollout: rollout_fails("tasks failed to start"),
                rollback_rollout: rollout_fails("old tasks failed too"),
                ..World::default()
            },
            calls: rolled_back_calls(),
            outcome: Outcome::FailedNotRestored,
            record: RecordOutcome::NotRestored,
            stages: &[(Test, true), (Build, true), (Push, true), (Deploy, false), (Rollback, false)],
            revision: Some(7),
            previous: Some(6),
            message: &["FAILED TOO (rollout failed: old tasks failed too)"],
            warnings: &[],
        },
        Case {
            name: "the lock is held: refused, nothing touched",
            world: World {
                lock: Err(LockHeld),
                ..World::default()
            },
            calls: Calls::default(),
            outcome: Outcome::BadInput,
            record: RecordOutcome::Refused,
            stages: &[],
            revision: None,
            previous: None,
            message: &["the deploy lock of cv-matcher/staging is held by bob since 14:00"],
            warnings: &[],
        },
        Case {
            name: "the lock store is unreachable: nothing touched",
            world: World {
                lock: Err(Unavailable),
                ..World::default()
            },
            calls: Calls::default(),
            outcome: Outcome::FailedRestored,
            record: RecordOutcome::FailedUnchanged,
            stages: &[],
            revision: None,
            previous: None,
            message: &["could not take the deploy lock, nothing was changed"],
            warnings: &[],
        },
        Case {
            name: "cancelled mid-rollout: rolled back",
            world: World {
                rollout: Rollout::CancelledMidway,
                ..World::default()
            },
            calls: rolled_back_calls(),
            outcome: Outcome::FailedRestored,
            record: RecordOutcome::RolledBack,
            stages: &[(Test, true), (Build, true), (Push, true), (Deploy, false), (Rollback, true)],
            revision: Some(7),
            previous: Some(6),
            message: &["cancelled during the rollout", "cv-matcher:6 again"],
            warnings: &["cancelled, rolling back to cv-matcher:6 (deployment ecs-svc/rollback)"],
        },
        Case {
            name: "the first release fails: nothing to roll back to",
            world: World {
                previous: None,
                rollout: rollout_fails("tasks failed to start"),
                ..World::default()
            },
            calls: Calls {
                verify: 0,
                ..Calls::full_release()
            },
            outcome: Outcome::FailedNotRestored,
            record: RecordOutcome::NotRestored,
            stages: &[(Test, true), (Build, true), (Push, true), (Deploy, false)],
            revision: Some(7),
            previous: None,
            message: &[
                "had no earlier revision",
                "it is on cv-matcher:7, not working",
                "run `tugboat deploy --env staging` again",
                "aws ecs update-service --cluster cv-matcher-staging-cluster --service cv-matcher-service --desired-count 0",
            ],
            warnings: &[],
        },
        Case {
            name: "automatic rollback is off: not restored, told how to roll back",
            world: World {
                rollout: rollout_fails("tasks failed to start"),
                automatic_rollback: false,
                ..World::default()
            },
            calls: Calls {
                verify: 0,
                ..Calls::full_release()
            },
            outcome: Outcome::FailedNotRestored,
            record: RecordOutcome::NotRestored,
            stages: &[(Test, true), (Build, true), (Push, true), (Deploy, false)],
            revision: Some(7),
            previous: Some(6),
            message: &["Automatic rollback is off", "tugboat rollback --env staging --to cv-matcher:6"],
            warnings: &[],
        },
        Case {
            name: "the service update fails before reaching the service: unchanged",
            world: World {
                update: Err(Failed),
                ..World::default()
            },
            calls: Calls {
                verify: 0,
                ..Calls::full_release()
            },
            outcome: Outcome::FailedRestored,
            record: RecordOutcome::FailedUnchanged,
            stages: &[(Test, true), (Build, true), (Push, true), (Deploy, false)],
            revision: Some(7),
            previous: Some(6),
            message: &["deploy failed, nothing was deployed: UpdateService failed"],
            warnings: &[],
        },
        Case {
            name: "the service update fails after reaching the service: rolled back",
            world: World {
                update: Err(Unavailable),
                update_reached_service: true,
                ..World::default()
            },
            calls: rolled_back_calls(),
            outcome: Outcome::FailedRestored,
            record: RecordOutcome::RolledBack,
            stages: &[(Test, true), (Build, true), (Push, true), (Deploy, false), (Rollback, true)],
            revision: Some(7),
            previous: Some(6),
            message: &["updating the service failed", "cv-matcher:6 again"],
            warnings: &[],
        },
        Case {
            name: "the notifier fails: only a warning",
            world: World {
                notifier: Err(Unavailable),
                ..World::default()
            },
            calls: Calls::full_release(),
            outcome: Outcome::Succeeded,
            record: RecordOutcome::Succeeded,
            stages: &[(Test, true), (Build, true), (Push, true), (Deploy, true), (Verify, true)],
            revision: Some(7),
            previous: Some(6),
            message: &["released"],
            warnings: &["notification not sent (the release goes on): chat.postMessage failed"],
        },
        Case {
            name: "a commit whose image is already pushed: no test, build or push",
            world: World {
                commit_already_pushed: true,
                ..World::default()
            },
            calls: Calls {
                register: 1,
                update: 1,
                verify: 1,
                ..Calls::default()
            },
            outcome: Outcome::Succeeded,
            record: RecordOutcome::Succeeded,
            stages: &[(Deploy, true), (Verify, true)],
            revision: Some(7),
            previous: Some(6),
            message: &["released", "cv_matcher@sha256:"],
            warnings: &[],
        },
        Case {
            name: "an image with a finding at the gate's severity: refused, nothing deployed",
            world: World {
                source: ReleaseSource::Image(ImageReference::Tag("v1.2.0".into())),
                scan_findings: vec![critical_finding()],
                ..World::default()
            },
            calls: Calls {
                resolve: 1,
                ..Calls::default()
            },
            outcome: Outcome::BadInput,
            record: RecordOutcome::Refused,
            stages: &[],
            revision: None,
            previous: None,
            message: &["1 finding(s) at or above High: CVE-2026-0001 (Critical, openssl 3.0.1)", "--override-scan"],
            warnings: &[],
        },
        Case {
            name: "findings below the gate's severity: deployed",
            world: World {
                source: ReleaseSource::Image(ImageReference::Tag("v1.2.0".into())),
                scan_findings: vec![Finding {
                    severity: Severity::Medium,
                    ..critical_finding()
                }],
                ..World::default()
            },
            calls: Calls {
                resolve: 1,
                register: 1,
                update: 1,
                verify: 1,
                ..Calls::default()
            },
            outcome: Outcome::Succeeded,
            record: RecordOutcome::Succeeded,
            stages: &[(Deploy, true), (Verify, true)],
            revision: Some(7),
            previous: Some(6),
            message: &["released"],
            warnings: &[],
        },
        Case {
            name: "an existing image: no test, build or push",
            world: World {
                source: ReleaseSource::Image(ImageReference::Tag("v1.2.0".into())),
                ..World::default()
            },
            calls: Calls {
                resolve: 1,
                register: 1,
                update: 1,
                verify: 1,
                ..Calls::default()
            },
            outcome: Outcome::Succeeded,
            record: RecordOutcome::Succeeded,
            stages: &[(Deploy, true), (Verify, true)],
            revision: Some(7),
            previous: Some(6),
            message: &["released", "cv_matcher@sha256:"],
            warnings: &[],
        },
        Case {
            name: "an image that is not in the registry: refused, nothing deployed",
            world: World {
                source: ReleaseSource::Image(ImageReference::Tag("v9.9.9".into())),
                resolve: Err(BadInput),
                ..World::default()
            },
            calls: Calls {
                resolve: 1,
                ..Calls::default()
            },
            outcome: Outcome::BadInput,
            record: RecordOutcome::Refused,
            stages: &[],
            revision: None,
            previous: None,
            message: &["no image tag v9.9.9 in repository cv_matcher"],
            warnings: &[],
        },
    ]
}

// Paused time: a rollout that times out is followed for its whole (virtual) timeout.
#[tokio::test(start_paused = true)]
async fn each_failure_point_ends_in_the_documented_state() {
    for case in cases() {
        let name = case.name;
        // mockall reports a wrong call count when the harness drops; this line says which case.
        eprintln!("case: {name}");
        let harness = harness(&case.world, case.calls);
        let report = harness.deploy().await;

        assert_eq!(
            report.outcome, case.outcome,
            "{name}: outcome; message: {}",
            report.message
        );
        for text in case.message {
            assert!(
                report.message.contains(text),
                "{name}: the message should contain {text:?}; it is:\n{}",
                report.message
            );
        }

        let records = harness.records();
        assert_eq!(
            records.len(),
            1,
            "{name}: exactly one deploy record is written"
        );
        let record = &records[0];
        let journal = lock(&harness.journal).clone();
        if let Some(update) = journal.iter().position(|e| e == "update_service") {
            assert!(
                journal[..update].iter().any(|e| e == "record InProgress"),
                "{name}: the record is written in progress before the service changes: {journal:?}"
            );
        }
        assert_eq!(
            report.record.as_ref(),
            Some(record),
            "{name}: the report carries the record"
        );
        assert_eq!(record.outcome, case.record, "{name}: record outcome");
        assert_eq!(
            record.outcome.outcome(),
            report.outcome,
            "{name}: record and report agree"
        );
        assert_eq!(record.app, "cv-matcher", "{name}");
        assert_eq!(record.environment, "staging", "{name}");
        assert_eq!(record.actor, "alice", "{name}");
        assert_eq!(record.release_id.0, "r20261126-141500-abc1234", "{name}");
        assert!(
            record.finished_at.is_some(),
            "{name}: the record is finished"
        );
        assert_eq!(
            record.reason.is_none(),
            case.outcome == Outcome::Succeeded,
            "{name}: a reason is given exactly when the release failed: {:?}",
            record.reason
        );
        let stages: Vec<(Stage, bool)> = record.stages.iter().map(|t| (t.stage, t.ok)).collect();
        assert_eq!(stages, case.stages, "{name}: stage timings");
        assert_eq!(
            record.revision,
            case.revision.map(revision),
            "{name}: new revision"
        );
        assert_eq!(
            record.previous_revision,
            case.previous.map(revision),
            "{name}: previous revision"
        );
        if case.outcome == Outcome::Succeeded {
            assert_eq!(
                record.image,
                Some(pinned_image()),
                "{name}: the image is recorded"
            );
        }

        let notifications = harness.notifications();
        if case.world.lock.is_ok() {
            let last = match record.outcome {
                RecordOutcome::Succeeded => NotificationKind::Succeeded,
                RecordOutcome::RolledBack => NotificationKind::RolledBack,
                _ => NotificationKind::Failed,
            };
            assert_eq!(
                notifications,
                [NotificationKind::Started, last],
                "{name}: notifications"
            );
        } else {
            assert!(
                notifications.is_empty(),
                "{name}: a refused run notifies nobody"
            );
        }

        let events = harness.events.take();
        let warnings: Vec<&str> = events
            .iter()
            .filter_map(|event| match event {
                PipelineEvent::Warning { message } => Some(message.as_str()),
                _ => None,
            })
            .collect();
        for text in case.warnings {
            assert!(
                warnings.iter().any(|w| w.contains(text)),
                "{name}: expected a warning containing {text:?}; warnings: {warnings:?}"
            );
        }
        let rolled_back =
            case.stages.contains(&(Rollback, true)) || case.stages.contains(&(Rollback, false));
        let rollback_events = events
            .iter()
            .filter(
                |e| matches!(e, PipelineEvent::RollbackStarted { to, .. } if *to == revision(6)),
            )
            .count();
        assert_eq!(
            rollback_events,
            usize::from(rolled_back),
            "{name}: rollback announced"
        );
        drop(harness);
    }
}

#[tokio::test]
async fn an_unknown_environment_is_refused_before_anything_runs() {
    // Mocks without expectations: any call at all fails the test.
    let stages = Stages {
        test_runner: Some(Arc::new(MockTestRunner::new())),
        image_builder: Some(Arc::new(MockImageBuilder::new())),
        registry: Arc::new(MockRegistry::new()),
        deployer: Arc::new(MockDeployer::new()),
        service_reader: Arc::new(MockServiceReader::new()),
        verifiers: Vec::new(),
        secrets: Arc::new(MockSecretStore::new()),
        locks: Arc::new(MockDeployLocks::new()),
        records: Arc::new(MockReleaseRecords::new()),
        artifacts: Arc::new(MockArtifactStore::new()),
        notifiers: Vec::new(),
        diagnostics: None,
        one_off: None,
    };
    let orchestrator = Orchestrator::new(cv_matcher(), stages, Events::new());
    let report = orchestrator
        .deploy(DeployRequest {
            environment: "prod".into(),
            source: ReleaseSource::Build,
            git: develop_commit(),
            actor: "alice".into(),
            cancel: Default::default(),
        })
        .await;
    assert_eq!(report.outcome, Outcome::BadInput);
    assert!(report.record.is_none());
    assert!(
        report.message.contains("(found \"prod\")"),
        "{}",
        report.message
    );
    assert!(
        report
            .message
            .contains("--env takes one of: local, production, staging"),
        "{}",
        report.message
    );
}

#[tokio::test]
async fn a_release_that_never_finished_is_reported_with_what_it_left() {
    let world = World {
        unfinished_release: true,
        ..World::default()
    };
    let harness = harness(&world, Calls::full_release());
    let report = harness.deploy().await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.message);
    let warnings: Vec<String> = harness
        .events
        .take()
        .iter()
        .filter_map(|e| match e {
            pipeline_core::PipelineEvent::Warning { message } => Some(message.clone()),
            _ => None,
        })
        .collect();
    let note = warnings
        .iter()
        .find(|w| w.contains("r20261126-130000-dead123"))
        .unwrap_or_else(|| panic!("no note of the dead run: {warnings:?}"));
    for part in [
        "by bob",
        "never finished",
        "cv-matcher:5 to cv-matcher:6",
        "the service is on cv-matcher:6",
        "finished",
    ] {
        assert!(note.contains(part), "{part:?} missing: {note}");
    }
    let record = harness.records().pop().expect("a record");
    assert!(
        record.warnings.iter().any(|w| w == note),
        "{:?}",
        record.warnings
    );
}
