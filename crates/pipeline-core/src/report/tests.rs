//! The report on fixed record sets, as the JSON `tugboat report --output json` prints.

use super::*;
use crate::model::{GitInfo, Revision, StageTiming};
use chrono::Duration;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|err| panic!("{text}: {err}"))
}

fn request() -> ReportRequest {
    ReportRequest {
        app: "cv-matcher".into(),
        environments: vec!["production".into()],
        since: at("2026-11-01T00:00:00Z"),
        until: at("2026-12-01T00:00:00Z"),
    }
}

/// A release of revision `rev` started at `start`, taking `minutes`, its commit made
/// `lead_hours` before it finished.
fn release(
    start: &str,
    rev: u32,
    outcome: RecordOutcome,
    minutes: i64,
    lead_hours: Option<i64>,
) -> DeployRecord {
    let started_at = at(start);
    let finished_at = started_at + Duration::minutes(minutes);
    let sha = format!("{rev:07}abcdef");
    let deploy_millis = u64::try_from(minutes).unwrap_or(0) * 60_000 / 2;
    DeployRecord {
        release_id: ReleaseId::new(
            started_at,
            &GitInfo {
                sha: sha.clone(),
                ..GitInfo::default()
            },
        ),
        app: "cv-matcher".into(),
        environment: "production".into(),
        git: GitInfo {
            sha,
            git_ref: "refs/tags/v1.0.0".into(),
            committed_at: lead_hours.map(|h| finished_at - Duration::hours(h)),
        },
        image: None,
        revision: Some(Revision::new(
            format!("arn:aws:ecs:us-east-1:1:task-definition/cv-matcher:{rev}"),
            format!("cv-matcher:{rev}"),
        )),
        previous_revision: Some(Revision::new(
            format!(
                "arn:aws:ecs:us-east-1:1:task-definition/cv-matcher:{}",
                rev - 1
            ),
            format!("cv-matcher:{}", rev - 1),
        )),
        outcome,
        reason: (outcome != RecordOutcome::Succeeded).then(|| "rollout failed".to_string()),
        stages: vec![
            StageTiming {
                stage: Stage::Test,
                millis: 40_000,
                ok: true,
            },
            StageTiming {
                stage: Stage::Deploy,
                millis: deploy_millis,
                ok: outcome == RecordOutcome::Succeeded,
            },
        ],
        actor: "octocat".into(),
        started_at,
        finished_at: Some(finished_at),
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

/// `tugboat rollback` from revision `from` to the release `to` (revision `to_rev`).
fn manual_rollback(start: &str, from: u32, to: &DeployRecord, minutes: i64) -> DeployRecord {
    let mut record = release(start, from, RecordOutcome::Succeeded, minutes, None);
    record.revision = to.revision.clone();
    record.previous_revision = Some(Revision::new(
        format!("arn:aws:ecs:us-east-1:1:task-definition/cv-matcher:{from}"),
        format!("cv-matcher:{from}"),
    ));
    record.git = to.git.clone();
    record.rollback_of = Some(to.release_id.clone());
    record.stages = vec![StageTiming {
        stage: Stage::Rollback,
        millis: 90_000,
        ok: true,
    }];
    record
}

#[test]
fn no_releases() {
    let report = DeliveryReport::compute(&request(), &[]);
    assert_eq!(report.deployment_frequency.band, Band::Low);
    assert_eq!(report.change_failure_rate.rate, None);
    assert_eq!(report.lead_time.median_seconds, None);
    insta::assert_json_snapshot!(report);
}

#[test]
fn only_failures() {
    let records = [
        release(
            "2026-11-03T10:00:00Z",
            2,
            RecordOutcome::RolledBack,
            12,
            Some(5),
        ),
        release(
            "2026-11-04T10:00:00Z",
            3,
            RecordOutcome::RolledBack,
            20,
            Some(5),
        ),
        release(
            "2026-11-05T10:00:00Z",
            4,
            RecordOutcome::NotRestored,
            30,
            Some(5),
        ),
        release(
            "2026-11-06T10:00:00Z",
            5,
            RecordOutcome::FailedUnchanged,
            2,
            Some(5),
        ),
    ];
    let report = DeliveryReport::compute(&request(), &records);
    assert_eq!(
        report.counts.releases, 3,
        "a run that failed its tests is no release"
    );
    assert_eq!(report.change_failure_rate.rate, Some(1.0));
    assert_eq!(report.change_failure_rate.band, Some(Band::Low));
    assert_eq!(report.deployment_frequency.releases, 0);
    // Two restored by their own rollback (12 and 20 min); the third never was.
    assert_eq!(report.time_to_restore.samples, 2);
    assert_eq!(report.time_to_restore.unrestored, 1);
    assert_eq!(report.time_to_restore.median_seconds, Some(16 * 60));
    insta::assert_json_snapshot!(report);
}

#[test]
fn a_rollback() {
    let good = release(
        "2026-11-10T09:00:00Z",
        7,
        RecordOutcome::Succeeded,
        10,
        Some(3),
    );
    let bad = release(
        "2026-11-11T09:00:00Z",
        8,
        RecordOutcome::Succeeded,
        10,
        Some(30),
    );
    // Rolled back by hand two hours after the bad release went live.
    let undo = manual_rollback("2026-11-11T11:10:00Z", 8, &good, 5);
    let auto = release(
        "2026-11-12T09:00:00Z",
        9,
        RecordOutcome::RolledBack,
        15,
        Some(2),
    );
    let fixed = release(
        "2026-11-12T15:00:00Z",
        10,
        RecordOutcome::Succeeded,
        10,
        Some(1),
    );
    let report = DeliveryReport::compute(&request(), &[fixed, auto, undo, bad.clone(), good]);
    assert_eq!(report.counts.releases, 4);
    assert_eq!(report.counts.rollbacks, 1);
    assert_eq!(report.counts.rolled_back_later, 1);
    assert_eq!(report.change_failure_rate.failed, 2);
    assert_eq!(report.change_failure_rate.rate, Some(0.5));
    let undone = report
        .releases
        .iter()
        .find(|r| r.release_id == bad.release_id)
        .expect("the bad release is in the table");
    assert!(undone.rolled_back_later && undone.failed_change);
    // Live at 09:10, the rollback finished at 11:15.
    assert_eq!(undone.restored_after_seconds, Some(125 * 60));
    assert_eq!(
        report.releases.first().map(|r| r.kind),
        Some(RunKind::Release)
    );
    insta::assert_json_snapshot!(report);
}

#[test]
fn records_from_before_this_change() {
    // As tugboat wrote them before commit times (and the later optional fields) existed.
    let old = [
        r#"{"release_id":"r20261102-101500-abc1234","app":"cv-matcher","environment":"production",
            "git":{"sha":"abc1234def","git_ref":"refs/heads/main"},"image":null,
            "revision":{"id":"arn:x:cv-matcher:3","label":"cv-matcher:3"},"previous_revision":null,
            "outcome":"succeeded","reason":null,
            "stages":[{"stage":"deploy","millis":61000,"ok":true},{"stage":"verify","millis":5000,"ok":true}],
            "actor":"alice","started_at":"2026-11-02T10:15:00Z","finished_at":"2026-11-02T10:17:00Z"}"#,
        r#"{"release_id":"r20261103-101500-def5678","app":"cv-matcher","environment":"production",
            "git":{"sha":"def5678abc","git_ref":"refs/heads/main"},"image":null,
            "revision":{"id":"arn:x:cv-matcher:4","label":"cv-matcher:4"},"previous_revision":{"id":"arn:x:cv-matcher:3","label":"cv-matcher:3"},
            "outcome":"rolled_back","reason":"rollout failed",
            "stages":[{"stage":"deploy","millis":240000,"ok":false},{"stage":"rollback","millis":60000,"ok":true}],
            "actor":"bob","started_at":"2026-11-03T10:15:00Z","finished_at":"2026-11-03T10:21:00Z"}"#,
    ];
    let records: Vec<DeployRecord> = old
        .iter()
        .map(|text| serde_json::from_str(text).unwrap_or_else(|err| panic!("{err}: {text}")))
        .collect();
    assert_eq!(records[0].git.committed_at, None);
    let report = DeliveryReport::compute(&request(), &records);
    assert_eq!(report.lead_time.samples, 0);
    assert_eq!(report.lead_time.without_commit_time, 1);
    assert_eq!(report.lead_time.band, None);
    // The rollout with a rollback stage is still a release, not a manual rollback.
    assert_eq!(report.counts.rollbacks, 0);
    assert_eq!(report.time_to_restore.median_seconds, Some(6 * 60));
    insta::assert_json_snapshot!(report);
}

#[test]
fn a_busy_month_with_other_environments_and_apps_left_out() {
    let mut records = Vec::new();
    // 40 releases over 20 days, commits 2 to 9 hours before, one in ten rolled back.
    for n in 0..40u32 {
        let start = at("2026-11-05T08:00:00Z") + Duration::hours(12 * i64::from(n));
        let outcome = if n % 10 == 9 {
            RecordOutcome::RolledBack
        } else {
            RecordOutcome::Succeeded
        };
        let mut record = release(
            &start.to_rfc3339(),
            n + 2,
            outcome,
            8,
            Some(2 + i64::from(n % 8)),
        );
        record.release_id = ReleaseId(format!("{}-{n}", record.release_id.0));
        records.push(record);
    }
    let mut staging = release(
        "2026-11-06T08:00:00Z",
        90,
        RecordOutcome::NotRestored,
        8,
        None,
    );
    staging.environment = "staging".into();
    let mut other_app = release(
        "2026-11-06T09:00:00Z",
        91,
        RecordOutcome::NotRestored,
        8,
        None,
    );
    other_app.app = "other".into();
    let before_window = release(
        "2026-10-20T08:00:00Z",
        1,
        RecordOutcome::NotRestored,
        8,
        None,
    );
    records.extend([staging, other_app, before_window]);
    let mut report = DeliveryReport::compute(&request(), &records);
    assert_eq!(report.counts.releases, 40);
    assert_eq!(report.deployment_frequency.releases, 36);
    assert_eq!(report.deployment_frequency.band, Band::Elite);
    assert_eq!(report.change_failure_rate.rate, Some(0.1));
    assert_eq!(report.change_failure_rate.band, Some(Band::High));
    assert_eq!(report.lead_time.band, Some(Band::Elite));
    assert_eq!(report.time_to_restore.band, Some(Band::Elite));
    let slowest = report.slowest_stages.first().map(|s| s.stage);
    assert_eq!(
        slowest,
        Some(Stage::Deploy),
        "4 min deploys against 40 s of tests"
    );
    report.releases.truncate(3);
    insta::assert_json_snapshot!(report);
}
