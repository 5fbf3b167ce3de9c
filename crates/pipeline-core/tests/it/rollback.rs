//! `Orchestrator::rollback`: which release it picks, when it refuses, and what it records.

use crate::harness::lock;
use crate::support::{cv_matcher, pinned_time, revision, FixedClock};
use pipeline_core::{
    DeployLock, DeployRecord, DeploymentHandle, Events, GitInfo, MockArtifactStore,
    MockDeployLocks, MockDeployer, MockRegistry, MockReleaseRecords, MockSecretStore,
    MockServiceReader, Orchestrator, Outcome, RecordOutcome, ReleaseId, Revision, RollbackRequest,
    RollbackTo, RolloutOutcome, ScriptedRollout, Stage, StageError, Stages,
};
use std::sync::{Arc, Mutex};

/// A record of release number `n` (its id ends in `-rel{n}`) that registered `revision`.
fn record(n: u32, rev: u32, outcome: RecordOutcome) -> DeployRecord {
    DeployRecord {
        release_id: release(n),
        app: "cv-matcher".into(),
        environment: "staging".into(),
        git: GitInfo {
            sha: format!("{n:0>7}"),
            git_ref: "refs/heads/develop".into(),
            committed_at: None,
        },
        image: None,
        revision: Some(revision(rev)),
        previous_revision: None,
        outcome,
        reason: None,
        stages: Vec::new(),
        actor: "ci".into(),
        started_at: pinned_time(),
        finished_at: Some(pinned_time()),
        rollback_of: None,
        deployment_id: None,
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

fn release(n: u32) -> ReleaseId {
    ReleaseId(format!("r2026110{n}-120000-rel{n}"))
}

/// Record `n`: a manual rollback that put `rev`, of release `of`, back in service.
fn manual_rollback(n: u32, rev: u32, of: u32) -> DeployRecord {
    DeployRecord {
        rollback_of: Some(release(of)),
        ..record(n, rev, RecordOutcome::Succeeded)
    }
}

/// Newest first, as `ArtifactStore::history` returns it: release 5 failed and was
/// rolled back, so the service is on release 4's revision 8.
fn history() -> Vec<DeployRecord> {
    use RecordOutcome::*;
    vec![
        record(5, 9, RolledBack),
        record(4, 8, Succeeded),
        record(3, 7, NotRestored),
        record(2, 6, Succeeded),
        record(1, 5, Succeeded),
    ]
}

struct Case {
    name: &'static str,
    history: Vec<DeployRecord>,
    current: Option<u32>,
    to: Option<RollbackTo>,
    /// The revision rolled back to and the release it came from; `Err` is a refusal
    /// message.
    expected: Result<(u32, Option<u32>), &'static str>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "no --to: the last good release before the serving one",
            history: history(),
            current: Some(8),
            to: None,
            expected: Ok((6, Some(2))),
        },
        Case {
            name: "no --to, after a manual rollback: further back, not forward again",
            history: [vec![manual_rollback(6, 6, 2)], history()].concat(),
            current: Some(6),
            to: None,
            expected: Ok((5, Some(1))),
        },
        Case {
            name: "no --to, the service runs something tugboat never recorded",
            history: history(),
            current: Some(42),
            to: None,
            expected: Ok((8, Some(4))),
        },
        Case {
            name: "--to a release id",
            history: history(),
            current: Some(8),
            to: Some(RollbackTo::Release(release(1))),
            expected: Ok((5, Some(1))),
        },
        Case {
            name: "--to a revision label from the history",
            history: history(),
            current: Some(8),
            to: Some(RollbackTo::Revision("cv-matcher:6".into())),
            expected: Ok((6, Some(2))),
        },
        Case {
            name: "--to a revision ARN from the history",
            history: history(),
            current: Some(8),
            to: Some(RollbackTo::Revision(revision(5).id)),
            expected: Ok((5, Some(1))),
        },
        Case {
            name: "no --to and no earlier good release",
            history: vec![record(2, 8, RecordOutcome::Succeeded), record(1, 7, RecordOutcome::RolledBack)],
            current: Some(8),
            to: None,
            expected: Err("no earlier good release of cv-matcher/staging to roll back to; pass --to <revision> (for example cv-matcher:<number>)"),
        },
        Case {
            name: "--to a release that is not in the history",
            history: history(),
            current: Some(8),
            to: Some(RollbackTo::Release(ReleaseId("r-nope".into()))),
            expected: Err("release r-nope is not in the history of cv-matcher/staging"),
        },
        Case {
            name: "--to a revision that does not exist: refused before any change",
            history: history(),
            current: Some(8),
            to: Some(RollbackTo::Revision("cv-matcher:99".into())),
            expected: Err("cannot roll back to cv-matcher:99: DescribeTaskDefinition failed"),
        },
        Case {
            name: "--to the revision that already serves",
            history: history(),
            current: Some(8),
            to: Some(RollbackTo::Revision("cv-matcher:8".into())),
            expected: Err("already runs cv-matcher:8; nothing to roll back"),
        },
        Case {
            name: "--to the serving revision, which the history does not know",
            history: vec![record(1, 5, RecordOutcome::Succeeded)],
            current: Some(8),
            to: Some(RollbackTo::Revision("cv-matcher:8".into())),
            expected: Err("already runs cv-matcher:8; nothing to roll back"),
        },
    ]
}

/// A registry of task definitions that knows revisions 1 to 9 of cv-matcher.
fn registered_revisions_1_to_9() -> MockServiceReader {
    let mut reader = MockServiceReader::new();
    reader.expect_registered_definition().returning(|asked| {
        let number: u32 = asked.label.rsplit(':').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        if (1..=9).contains(&number) {
            Ok(cv_matcher().task_definition)
        } else {
            Err(StageError::bad_input(format!(
                "DescribeTaskDefinition failed: ClientException: Unable to describe task definition {}",
                asked.label
            )))
        }
    });
    reader
}

/// An orchestrator whose history and service are `case`'s, expecting exactly one
/// rollback (to the expected revision) or none.
fn orchestrator(
    history: Vec<DeployRecord>,
    current: Option<Revision>,
    rolls_back_to: Option<Revision>,
    rollback_rollout: RolloutOutcome,
) -> (Orchestrator, Arc<Mutex<Vec<DeployRecord>>>) {
    let runs = usize::from(rolls_back_to.is_some());
    let mut locks = MockDeployLocks::new();
    let mut record_store = MockReleaseRecords::new();
    let artifacts = MockArtifactStore::new();
    record_store
        .expect_history()
        .returning(move |_, _, _| Ok(history.clone()));
    locks
        .expect_acquire_lock()
        .times(runs)
        .returning(|app, environment, holder| {
            Ok(DeployLock {
                app: app.into(),
                environment: environment.into(),
                holder: holder.clone(),
                token: "t".into(),
            })
        });
    locks
        .expect_release_lock()
        .times(runs)
        .returning(|_| Ok(()));
    let records = Arc::new(Mutex::new(Vec::new()));
    let seen = records.clone();
    record_store
        .expect_put_record()
        .times(runs)
        .returning(move |record| {
            lock(&seen).push(record.clone());
            Ok(())
        });

    let mut deployer = MockDeployer::new();
    let serving = Arc::new(Mutex::new(current));
    let now = serving.clone();
    deployer
        .expect_current_revision()
        .returning(move |_| Ok(lock(&now).clone()));
    let restored = matches!(rollback_rollout, RolloutOutcome::Completed);
    deployer
        .expect_roll_back()
        .times(runs)
        .withf(move |_, request| Some(&request.to) == rolls_back_to.as_ref())
        .returning(move |_, request| {
            if restored {
                *lock(&serving) = Some(request.to.clone());
            }
            Ok(DeploymentHandle {
                id: "ecs-svc/rollback".into(),
                revision: request.to.clone(),
            })
        });
    deployer.expect_revision_active().returning(|_| Ok(true));
    deployer
        .expect_watch_rollout()
        .times(runs)
        .returning(move |_, deployment| {
            ScriptedRollout::ending(Ok(rollback_rollout.clone()), &deployment.revision)
        });
    deployer.expect_register().times(0);
    deployer.expect_update_service().times(0);

    let stages = Stages {
        test_runner: None,
        image_builder: None,
        registry: Arc::new(MockRegistry::new()),
        deployer: Arc::new(deployer),
        service_reader: Arc::new(registered_revisions_1_to_9()),
        verifiers: Vec::new(),
        secrets: Arc::new(MockSecretStore::new()),
        locks: Arc::new(locks),
        records: Arc::new(record_store),
        artifacts: Arc::new(artifacts),
        notifiers: Vec::new(),
        diagnostics: None,
        one_off: None,
    };
    let orchestrator =
        Orchestrator::new(cv_matcher(), stages, Events::new()).with_clock(Arc::new(FixedClock));
    (orchestrator, records)
}

fn request(to: Option<RollbackTo>) -> RollbackRequest {
    RollbackRequest {
        environment: "staging".into(),
        to,
        actor: "alice".into(),
        reason: None,
        cancel: Default::default(),
    }
}

#[tokio::test]
async fn a_manual_rollback_picks_the_right_release_or_refuses() {
    for case in cases() {
        let name = case.name;
        eprintln!("case: {name}");
        let target = case.expected.as_ref().ok().map(|(rev, _)| revision(*rev));
        let (orchestrator, records) = orchestrator(
            case.history.clone(),
            case.current.map(revision),
            target.clone(),
            RolloutOutcome::Completed,
        );
        let report = orchestrator.rollback(request(case.to.clone())).await;
        match case.expected {
            Ok((rev, of)) => {
                assert_eq!(
                    report.outcome,
                    Outcome::Succeeded,
                    "{name}: {}",
                    report.message
                );
                let records = lock(&records).clone();
                assert_eq!(records.len(), 1, "{name}: one record");
                let record = &records[0];
                assert_eq!(report.record.as_ref(), Some(record), "{name}");
                assert_eq!(record.outcome, RecordOutcome::Succeeded, "{name}");
                assert_eq!(
                    record.revision,
                    Some(revision(rev)),
                    "{name}: rolled back to"
                );
                assert_eq!(
                    record.previous_revision,
                    case.current.map(revision),
                    "{name}: from"
                );
                assert_eq!(record.rollback_of, of.map(release), "{name}: rollback_of");
                assert_eq!(record.actor, "alice", "{name}");
                let stages: Vec<(Stage, bool)> =
                    record.stages.iter().map(|t| (t.stage, t.ok)).collect();
                assert_eq!(stages, [(Stage::Rollback, true)], "{name}");
                if let Some(of) = of {
                    let source = case.history.iter().find(|r| r.release_id == release(of));
                    assert_eq!(
                        Some(&record.git),
                        source.map(|r| &r.git),
                        "{name}: the git of the release restored"
                    );
                }
                assert!(
                    report.message.contains(&format!("to cv-matcher:{rev}")),
                    "{name}: {}",
                    report.message
                );
            }
            Err(text) => {
                assert_eq!(
                    report.outcome,
                    Outcome::BadInput,
                    "{name}: {}",
                    report.message
                );
                assert!(report.message.contains(text), "{name}: {}", report.message);
                assert!(
                    lock(&records).is_empty(),
                    "{name}: a refusal changes nothing"
                );
            }
        }
        drop(orchestrator);
    }
}

#[tokio::test]
async fn a_rollback_that_does_not_complete_is_not_restored() {
    let (orchestrator, records) = orchestrator(
        history(),
        Some(revision(8)),
        Some(revision(6)),
        RolloutOutcome::Failed {
            reason: "tasks failed to start".into(),
        },
    );
    let report = orchestrator.rollback(request(None)).await;
    assert_eq!(
        report.outcome,
        Outcome::FailedNotRestored,
        "{}",
        report.message
    );
    assert!(
        report
            .message
            .contains("did not complete (rollout failed: tasks failed to start)"),
        "{}",
        report.message
    );
    assert!(
        report.message.contains("tugboat status --env staging"),
        "{}",
        report.message
    );
    let records = lock(&records).clone();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].outcome, RecordOutcome::NotRestored);
    assert_eq!(records[0].stages.len(), 1);
    assert!(!records[0].stages[0].ok);
}

#[tokio::test]
async fn a_rollback_under_a_held_lock_is_refused_and_recorded() {
    let mut locks = MockDeployLocks::new();
    let mut record_store = MockReleaseRecords::new();
    let artifacts = MockArtifactStore::new();
    record_store
        .expect_history()
        .returning(|_, _, _| Ok(history()));
    locks.expect_acquire_lock().times(1).returning(|_, _, _| {
        Err(StageError::new(
            pipeline_core::StageErrorKind::LockHeld,
            "held by bob since 14:00",
        ))
    });
    locks.expect_release_lock().times(0);
    let records = Arc::new(Mutex::new(Vec::new()));
    let seen = records.clone();
    record_store
        .expect_put_record()
        .times(1)
        .returning(move |record| {
            lock(&seen).push(record.clone());
            Ok(())
        });
    let mut deployer = MockDeployer::new();
    deployer
        .expect_current_revision()
        .returning(|_| Ok(Some(revision(8))));
    deployer.expect_roll_back().times(0);
    let stages = Stages {
        test_runner: None,
        image_builder: None,
        registry: Arc::new(MockRegistry::new()),
        deployer: Arc::new(deployer),
        service_reader: Arc::new(MockServiceReader::new()),
        verifiers: Vec::new(),
        secrets: Arc::new(MockSecretStore::new()),
        locks: Arc::new(locks),
        records: Arc::new(record_store),
        artifacts: Arc::new(artifacts),
        notifiers: Vec::new(),
        diagnostics: None,
        one_off: None,
    };
    let orchestrator = Orchestrator::new(cv_matcher(), stages, Events::new());
    let report = orchestrator.rollback(request(None)).await;
    assert_eq!(report.outcome, Outcome::BadInput);
    assert!(report.message.contains("held by bob"), "{}", report.message);
    let records = lock(&records).clone();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].outcome, RecordOutcome::Refused);
}
