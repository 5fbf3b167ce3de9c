//! Deploy records made up for the delivery report's tests and bench: a release every
//! `spacing` back from a start, most succeeding, some rolled back, with commit times and
//! stage timings, written through the store as tugboat writes them.

use chrono::{DateTime, Duration, Utc};
use pipeline_core::{
    DeployRecord, GitInfo, RecordOutcome, ReleaseId, ReleaseRecords, Revision, Stage, StageTiming,
};
use std::sync::Arc;

/// The `n`-th release of `app`/`environment`, started at `started_at`: every seventh is
/// rolled back, the others succeed; its commit was made `1 + n % 5` hours before.
pub fn sample_record(
    app: &str,
    environment: &str,
    n: u32,
    started_at: DateTime<Utc>,
) -> DeployRecord {
    let outcome = if n % 7 == 6 {
        RecordOutcome::RolledBack
    } else {
        RecordOutcome::Succeeded
    };
    let git = GitInfo {
        sha: format!("{n:07x}0123456789abcdef"),
        git_ref: format!("refs/tags/v1.{n}.0"),
        committed_at: Some(started_at - Duration::hours(1 + i64::from(n % 5))),
    };
    let finished_at = started_at + Duration::seconds(300 + i64::from(n % 11) * 20);
    let ok = outcome == RecordOutcome::Succeeded;
    let mut stages = vec![
        StageTiming {
            stage: Stage::Test,
            millis: 30_000 + u64::from(n % 9) * 1_000,
            ok: true,
        },
        StageTiming {
            stage: Stage::Build,
            millis: 45_000,
            ok: true,
        },
        StageTiming {
            stage: Stage::Deploy,
            millis: 150_000 + u64::from(n % 13) * 5_000,
            ok,
        },
    ];
    if !ok {
        stages.push(StageTiming {
            stage: Stage::Rollback,
            millis: 60_000,
            ok: true,
        });
    }
    let revision = |number: u32| {
        Revision::new(
            format!("arn:aws:ecs:us-east-1:123456789012:task-definition/{app}:{number}"),
            format!("{app}:{number}"),
        )
    };
    DeployRecord {
        release_id: ReleaseId::new(started_at, &git),
        app: app.to_string(),
        environment: environment.to_string(),
        image: None,
        revision: Some(revision(n + 2)),
        previous_revision: Some(revision(n + 1)),
        outcome,
        reason: (!ok).then(|| "rollout failed: tasks failed their health checks".to_string()),
        stages,
        actor: ["alice", "bob", "github-actions[bot]"][n as usize % 3].to_string(),
        started_at,
        finished_at: Some(finished_at),
        git,
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

/// `count` releases, the newest started at `newest`, one every `spacing` before it.
pub fn sample_records(
    app: &str,
    environment: &str,
    count: u32,
    newest: DateTime<Utc>,
    spacing: Duration,
) -> Vec<DeployRecord> {
    (0..count)
        .map(|n| {
            sample_record(
                app,
                environment,
                n,
                newest - spacing * (count - 1 - n) as i32,
            )
        })
        .collect()
}

/// Writes `records` through `store`, `parallel` at a time.
pub async fn put_records(
    store: Arc<dyn ReleaseRecords>,
    records: Vec<DeployRecord>,
    parallel: usize,
) -> anyhow::Result<()> {
    let mut writes = tokio::task::JoinSet::new();
    let mut pending = records.into_iter();
    loop {
        while writes.len() < parallel {
            let Some(record) = pending.next() else { break };
            let store = store.clone();
            writes.spawn(async move { store.put_record(&record).await });
        }
        let Some(written) = writes.join_next().await else {
            break;
        };
        written?.map_err(|err| anyhow::anyhow!("put_record: {err}"))?;
    }
    Ok(())
}
