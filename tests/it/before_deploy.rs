//! `before_deploy` one-off tasks (migrations) in a release, through the real SDK against
//! the emulator: they run the release's new revision after it is registered and before
//! the service moves; one that fails, hangs or is cancelled ends the release with the
//! service untouched, its lines in the failure and the record.

use anyhow::Context;
use pipeline_core::{
    CancellationToken, OneOffTaskConfig, Outcome, PipelineEvent, Project, RecordOutcome,
};
use std::time::{Duration, Instant, SystemTime};
use tugboat_tests::aws::AwsFixture;
use tugboat_tests::cv_matcher::{self as cv, CvMatcher};

async fn cv_matcher() -> anyhow::Result<CvMatcher> {
    CvMatcher::setup(AwsFixture::start_with_env(&[("TUGBOAT_MOTO_ROLLOUT_SECONDS", "0.3")]).await?)
        .await
}

/// Production with one `before_deploy` task running `script` (the emulator's `sh -c`).
fn with_migration(cv: &CvMatcher, script: &str, timeout_seconds: u64) -> anyhow::Result<Project> {
    let mut project = cv.project.clone();
    let env = project
        .config
        .environments
        .get_mut(cv::ENVIRONMENT)
        .context("no production")?;
    env.before_deploy = vec![OneOffTaskConfig {
        name: Some("migrate".into()),
        container: None,
        command: vec!["sh".into(), "-c".into(), script.into()],
        timeout_seconds,
    }];
    Ok(project)
}

/// The lines the run streamed from its one-off task, with when each came.
fn task_lines(run: &cv::Run) -> Vec<(SystemTime, &str)> {
    run.events
        .iter()
        .filter_map(|(at, e)| match e {
            PipelineEvent::TaskOutput { task, line } if task == "migrate" => {
                Some((*at, line.as_str()))
            }
            _ => None,
        })
        .collect()
}

/// The one-off task as ECS describes it.
async fn described(cv: &CvMatcher, task_arn: &str) -> anyhow::Result<aws_sdk_ecs::types::Task> {
    cv.aws
        .clients
        .ecs
        .describe_tasks()
        .cluster(&cv.target.cluster)
        .tasks(task_arn)
        .send()
        .await?
        .tasks()
        .first()
        .cloned()
        .context("the one-off task is not described")
}

async fn serving(cv: &CvMatcher) -> anyhow::Result<String> {
    Ok(cv
        .service()
        .await?
        .task_definition()
        .unwrap_or_default()
        .to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_that_exits_0_runs_the_new_revision_before_the_service_moves(
) -> anyhow::Result<()> {
    let cv = cv_matcher().await?;
    cv.put_image(cv::REPOSITORY, "v1.1.0").await?;
    let project = with_migration(
        &cv,
        "echo applying 0042_add_index; sleep 1; echo migrated",
        60,
    )?;
    let run = cv.deploy(&project, "v1.1.0", &cv::sha('a')).await;
    assert_eq!(
        run.report.outcome,
        Outcome::Succeeded,
        "{}",
        run.report.message
    );
    let record = run.record()?;
    let revision = record.revision.clone().context("no revision")?;

    // It ran, with the new revision, as tugboat's, and is in the record.
    let ran = record
        .one_off_tasks
        .first()
        .context("no one-off task recorded")?;
    assert_eq!(record.one_off_tasks.len(), 1);
    assert_eq!(ran.name, "migrate");
    assert_eq!(ran.container, cv::CONTAINER);
    assert_eq!(ran.run.exit_code, Some(0));
    assert!(ran.run.millis >= 1000, "{} ms", ran.run.millis);
    let tail: Vec<&str> = ran
        .run
        .log_tail
        .iter()
        .map(|l| l.message.as_str())
        .collect();
    assert_eq!(tail, ["applying 0042_add_index", "migrated"]);
    let task = described(&cv, &ran.run.task_arn).await?;
    assert_eq!(task.task_definition_arn(), Some(revision.id.as_str()));
    let started_by = format!("tugboat/{}", record.release_id);
    assert_eq!(task.started_by(), Some(started_by.as_str()));
    let stored = cv.stored_record(&record.release_id.0).await?;
    assert_eq!(stored.one_off_tasks, record.one_off_tasks);

    // Before the service moved: its lines came before the first rollout progress.
    let lines = task_lines(&run);
    assert_eq!(
        lines.iter().map(|(_, l)| *l).collect::<Vec<_>>(),
        ["applying 0042_add_index", "migrated"]
    );
    let last_line = lines.last().map(|(at, _)| *at).context("no lines")?;
    let first_progress = run
        .events
        .iter()
        .find(|(_, e)| matches!(e, PipelineEvent::RolloutProgress { .. }))
        .map(|(at, _)| *at)
        .context("no rollout progress")?;
    assert!(last_line <= first_progress);
    let service = cv.service().await?;
    let deployment_created = service
        .deployments()
        .iter()
        .find(|d| d.task_definition() == Some(revision.id.as_str()))
        .and_then(|d| d.created_at())
        .context("no deployment of the new revision")?;
    let task_stopped = task.stopped_at().context("the task has no stoppedAt")?;
    assert!(
        task_stopped.secs() <= deployment_created.secs(),
        "the service moved ({deployment_created}) before the migration stopped ({task_stopped})"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_migration_fails_the_release_with_the_service_untouched() -> anyhow::Result<()> {
    let cv = cv_matcher().await?;
    cv.put_image(cv::REPOSITORY, "v1.1.0").await?;
    let before = serving(&cv).await?;
    let project = with_migration(
        &cv,
        "echo applying 0042_add_index; sleep 0.5; echo 'error: relation candidates is locked'; exit 3",
        60,
    )?;
    let started = Instant::now();
    let run = cv.deploy(&project, "v1.1.0", &cv::sha('b')).await;
    eprintln!(
        "failed migration, {:?}:\n{}",
        started.elapsed(),
        run.report.message
    );
    assert_eq!(
        run.report.outcome,
        Outcome::FailedRestored,
        "{}",
        run.report.message
    );
    assert_eq!(run.report.outcome.exit_code(), 1);
    let message = &run.report.message;
    for expected in [
        "one-off task migrate exited with code 3",
        "nothing was deployed",
        "error: relation candidates is locked",
    ] {
        assert!(
            message.contains(expected),
            "{expected:?} not in: {message}\nmoto: {}",
            cv.aws.moto.log_tail()
        );
    }
    let record = run.record()?;
    assert_eq!(record.outcome, RecordOutcome::FailedUnchanged);
    assert!(record
        .reason
        .as_deref()
        .is_some_and(|r| r.contains("code 3")));
    assert_eq!(
        record.one_off_tasks.first().and_then(|t| t.run.exit_code),
        Some(3)
    );
    assert_eq!(record.deployment_id, None, "no service update");
    // The service never moved: same revision, one deployment.
    assert_eq!(serving(&cv).await?, before);
    assert_eq!(cv.service().await?.deployments().len(), 1);
    let stored = cv.stored_record(&record.release_id.0).await?;
    assert_eq!(stored.outcome, RecordOutcome::FailedUnchanged);
    assert_eq!(stored.one_off_tasks, record.one_off_tasks);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_migration_is_stopped_after_its_timeout() -> anyhow::Result<()> {
    let cv = cv_matcher().await?;
    cv.put_image(cv::REPOSITORY, "v1.1.0").await?;
    let before = serving(&cv).await?;
    let project = with_migration(&cv, "echo waiting for the advisory lock; sleep 3600", 1)?;
    let started = Instant::now();
    let run = cv.deploy(&project, "v1.1.0", &cv::sha('c')).await;
    let took = started.elapsed();
    assert_eq!(
        run.report.outcome,
        Outcome::FailedRestored,
        "{}",
        run.report.message
    );
    assert!(
        run.report
            .message
            .contains("ran out of time and was stopped"),
        "{}",
        run.report.message
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let ran = run
        .record()?
        .one_off_tasks
        .first()
        .context("not recorded")?;
    assert!(ran.run.timed_out);
    let task = described(&cv, &ran.run.task_arn).await?;
    assert_eq!(task.last_status(), Some("STOPPED"));
    assert_eq!(task.stop_code().map(|c| c.as_str()), Some("UserInitiated"));
    assert_eq!(serving(&cv).await?, before);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_during_the_migration_stops_it_and_deploys_nothing() -> anyhow::Result<()> {
    let cv = cv_matcher().await?;
    cv.put_image(cv::REPOSITORY, "v1.1.0").await?;
    let before = serving(&cv).await?;
    let project = with_migration(&cv, "echo migrating; sleep 3600", 600)?;
    let (orchestrator, recorder) = cv.orchestrator_for(&project, cv.stages());
    let cancel = CancellationToken::new();
    let signal = cancel.clone();
    // The signal comes once the task logged its first line.
    let watcher = recorder.clone();
    tokio::spawn(async move {
        for _ in 0..200 {
            if watcher
                .snapshot()
                .iter()
                .any(|(_, e)| matches!(e, PipelineEvent::TaskOutput { .. }))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        signal.cancel();
    });
    let started = Instant::now();
    let run =
        CvMatcher::deploy_using(orchestrator, recorder, "v1.1.0", &cv::sha('d'), cancel).await;
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(
        run.report.outcome,
        Outcome::FailedRestored,
        "{}",
        run.report.message
    );
    assert!(
        run.report.message.contains("cancelled"),
        "{}",
        run.report.message
    );
    let ran = run
        .record()?
        .one_off_tasks
        .first()
        .context("not recorded")?;
    assert!(ran.run.cancelled);
    let task = described(&cv, &ran.run.task_arn).await?;
    assert_eq!(
        task.last_status(),
        Some("STOPPED"),
        "the task was left running"
    );
    assert_eq!(serving(&cv).await?, before);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_a_migrations_lines_are_redacted_everywhere() -> anyhow::Result<()> {
    let cv = cv_matcher().await?;
    cv.put_image(cv::REPOSITORY, "v1.1.0").await?;
    let token = "xoxb-held-by-tugboat-0042";
    let password = "pg-pass-9f8e7d";
    let project = with_migration(
        &cv,
        &format!("echo 'connecting to postgres://cv:{password}@db:5432/cv'; echo 'slack {token}'; exit 1"),
        60,
    )?;
    let (orchestrator, recorder) = cv.orchestrator_for(&project, cv.stages());
    let orchestrator = orchestrator.with_redaction([token.to_string()]);
    let run = CvMatcher::deploy_using(
        orchestrator,
        recorder,
        "v1.1.0",
        &cv::sha('e'),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(
        run.report.outcome,
        Outcome::FailedRestored,
        "{}",
        run.report.message
    );
    let lines: Vec<&str> = task_lines(&run).into_iter().map(|(_, l)| l).collect();
    assert_eq!(
        lines,
        [
            "connecting to postgres://cv:<redacted>@db:5432/cv",
            "slack <redacted>"
        ]
    );
    let record = run.record()?;
    let stored = serde_json::to_string(&cv.stored_record(&record.release_id.0).await?)?;
    for (form, text) in [
        ("message", run.report.message.clone()),
        ("record", serde_json::to_string(record)?),
        ("stored record", stored),
        ("events", format!("{:?}", run.events)),
    ] {
        assert!(!text.contains(token), "{form}: {text}");
        assert!(!text.contains(password), "{form}: {text}");
    }
    assert!(run.report.message.contains("slack <redacted>"));
    Ok(())
}
