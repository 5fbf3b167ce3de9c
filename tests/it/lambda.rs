//! The Lambda front end's handler, called directly with EventBridge events shaped like
//! AWS's (`tests/events/*.json`), against CV Matcher's production environment on moto.
//! The handler renders releases from the service's current task definition (the
//! package has no task definition file), as the function does with an S3 config.

use anyhow::{ensure, Context};
use pipeline_core::{
    DeployRecord, MockNotifier, Notification, NotificationKind, Project, RecordOutcome,
};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tugboat_lambda::{Action, ConfigSource, Handler, HandlerError, InvocationResult, LoadedConfig};
use tugboat_tests::aws::AwsFixture;
use tugboat_tests::cv_matcher::{self as cv, eventually, CvMatcher};

const ALARM: &str = "cv-matcher-5xx-rate";

fn sample(name: &str) -> anyhow::Result<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("events")
        .join(name);
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

fn push_event(id: &str, repository: &str, tag: &str, digest: &str) -> anyhow::Result<Value> {
    let mut event = sample("ecr-push.json")?;
    event["id"] = json!(id);
    event["detail"]["repository-name"] = json!(repository);
    event["detail"]["image-tag"] = json!(tag);
    event["detail"]["image-digest"] = json!(digest);
    Ok(event)
}

fn deployment_event(id: &str, file: &str, deployment_id: &str) -> anyhow::Result<Value> {
    let mut event = sample(file)?;
    event["id"] = json!(id);
    event["detail"]["deploymentId"] = json!(deployment_id);
    Ok(event)
}

fn alarm_event(id: &str) -> anyhow::Result<Value> {
    let mut event = sample("cloudwatch-alarm.json")?;
    event["id"] = json!(id);
    Ok(event)
}

/// Production only (staging's cluster does not exist on moto), without the scan gate
/// (moto has no scan of the pushed images; `scan_gate.rs` tests the gate), with `change`
/// applied.
fn config(project: &Project, change: impl FnOnce(&mut Project)) -> LoadedConfig {
    let mut project = project.clone();
    project
        .config
        .environments
        .retain(|name, _| name == cv::ENVIRONMENT);
    for env in project.config.environments.values_mut() {
        env.scan.block_at = None;
    }
    change(&mut project);
    LoadedConfig::without_package(project.config, cv::config_file())
}

fn handler(cv: &CvMatcher, loaded: LoadedConfig) -> Handler {
    Handler::new(ConfigSource::File(cv::config_file()))
        .with_clients(cv.aws.clients.clone())
        .with_config(loaded)
}

async fn setup() -> anyhow::Result<CvMatcher> {
    CvMatcher::setup(AwsFixture::start().await?).await
}

async fn handle(handler: &Handler, event: Value) -> anyhow::Result<InvocationResult> {
    handler
        .handle(event)
        .await
        .map_err(|err| anyhow::anyhow!("the handler failed: {err}"))
}

/// Pushes `repository:tag` and feeds the push event; returns the result and the
/// release's stored record.
async fn push(
    cv: &CvMatcher,
    handler: &Handler,
    id: &str,
    repository: &str,
    tag: &str,
) -> anyhow::Result<(InvocationResult, DeployRecord)> {
    let image = cv.put_image(repository, tag).await?;
    let result = handle(handler, push_event(id, repository, tag, &image.digest)?).await?;
    ensure!(
        result.action == Action::StartRelease && result.outcome == "in_progress",
        "the push did not start a release: {result:?}\nmoto: {}",
        cv.aws.moto.log_tail()
    );
    let release = result.release_id.clone().context("no release id")?;
    let record = cv.stored_record(&release).await?;
    Ok((result, record))
}

/// Waits until moto's model moved `deployment` to `state` (`COMPLETED`, `FAILED`).
async fn wait_for(cv: &CvMatcher, deployment: &str, state: &str) -> anyhow::Result<()> {
    eventually(Duration::from_secs(30), || async {
        // Reading the service moves moto's model forward.
        cv.service().await?;
        let transitions = cv.aws.moto.transitions().await?;
        Ok(transitions
            .iter()
            .any(|t| t["deploymentId"] == deployment && t["state"] == state))
    })
    .await
    .with_context(|| format!("deployment {deployment} never became {state}"))
}

/// Push, then the ECS event that the rollout completed: the release is live.
async fn released(cv: &CvMatcher, handler: &Handler) -> anyhow::Result<DeployRecord> {
    let (_, record) = push(cv, handler, "push-1", cv::REPOSITORY, "v1.1.0").await?;
    let deployment = record.deployment_id.clone().context("no deployment id")?;
    wait_for(cv, &deployment, "COMPLETED").await?;
    let event = deployment_event("ecs-1", "ecs-deployment-completed.json", &deployment)?;
    let result = handle(handler, event).await?;
    ensure!(
        result.outcome == "succeeded",
        "the release did not finish: {result:?}"
    );
    cv.stored_record(&record.release_id.0).await
}

/// A rollback the function started is recorded in progress with its deployment; feeds
/// that deployment's COMPLETED event once moto completed it, returns the result.
async fn rollback_completes(
    cv: &CvMatcher,
    handler: &Handler,
    release_id: &str,
) -> anyhow::Result<InvocationResult> {
    let record = cv.stored_record(release_id).await?;
    ensure!(
        record.outcome == RecordOutcome::InProgress,
        "the rollback is not in progress: {record:?}"
    );
    let rollback = record
        .rollback_deployment_id
        .clone()
        .context("no rollback deployment id")?;
    ensure!(
        record
            .reason
            .as_deref()
            .is_some_and(|r| r.contains(&format!("(deployment {rollback})"))),
        "reason: {:?}",
        record.reason
    );
    ensure!(
        cv.stored_lock().await?.is_some(),
        "the rollback does not hold the lock"
    );
    wait_for(cv, &rollback, "COMPLETED").await?;
    let event = deployment_event(
        &format!("ecs-{rollback}"),
        "ecs-deployment-completed.json",
        &rollback,
    )?;
    handle(handler, event).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_starts_a_release_that_holds_the_lock() -> anyhow::Result<()> {
    let cv = setup().await?;
    let handler = handler(&cv, config(&cv.project, |_| {}));

    let (result, record) = push(&cv, &handler, "push-1", cv::REPOSITORY, "v1.1.0").await?;

    assert_eq!(result.environment.as_deref(), Some(cv::ENVIRONMENT));
    assert!(
        result.message.contains("started"),
        "message: {}",
        result.message
    );
    assert_eq!(record.outcome, RecordOutcome::InProgress);
    assert_eq!(record.trigger.as_deref(), Some("push-1"));
    assert_eq!(record.actor, "lambda:push-1");
    assert_eq!(record.git.git_ref, "refs/tags/v1.1.0");
    assert_eq!(record.git.sha, "", "a version tag is no commit sha");
    let revision = record.revision.clone().context("no revision")?;
    assert_eq!(cv::label(&revision.id), "cv-matcher:2");
    assert!(record.deployment_id.is_some());
    // The service was updated to the new revision, which pins the pushed digest.
    let service = cv.service().await?;
    assert_eq!(service.task_definition(), Some(revision.id.as_str()));
    let described = cv
        .aws
        .clients
        .ecs
        .describe_task_definition()
        .task_definition(&revision.id)
        .send()
        .await?;
    let image = described
        .task_definition()
        .and_then(|td| {
            td.container_definitions()
                .iter()
                .find(|c| c.name() == Some(cv::CONTAINER))
        })
        .and_then(|c| c.image())
        .map(str::to_string);
    let pushed = record.image.clone().context("no image")?;
    assert_eq!(image, Some(pushed.reference()));
    // The release keeps the deploy lock until ECS reports its deployment.
    let lock = cv.stored_lock().await?.context("the lock is not held")?;
    assert_eq!(lock.release_id, record.release_id);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_deployment_finishes_the_release() -> anyhow::Result<()> {
    let cv = setup().await?;
    let handler = handler(&cv, config(&cv.project, |_| {}));

    let record = released(&cv, &handler).await?;

    assert_eq!(record.outcome, RecordOutcome::Succeeded);
    assert!(record.finished_at.is_some());
    assert_eq!(cv.stored_lock().await?, None, "the lock was not released");
    let revision = record.revision.context("no revision")?;
    assert_eq!(
        cv.service().await?.task_definition(),
        Some(revision.id.as_str())
    );
    // The same ECS event again changes nothing.
    let deployment = record.deployment_id.context("no deployment id")?;
    let again = handle(
        &handler,
        deployment_event("ecs-1", "ecs-deployment-completed.json", &deployment)?,
    )
    .await?;
    assert_eq!(again.outcome, "ignored", "{again:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_deployment_is_rolled_back() -> anyhow::Result<()> {
    let cv = setup().await?;
    // moto fails tasks whose image names `crashloop`; a release pins
    // `repository@sha256:…`, so the marker goes in the repository name.
    let repository = "cv_matcher-crashloop";
    let handler = handler(
        &cv,
        config(&cv.project, |p| {
            p.config.image.repository = repository.to_string()
        }),
    );

    let (_, record) = push(&cv, &handler, "push-1", repository, "v1.2.0").await?;
    let deployment = record.deployment_id.clone().context("no deployment id")?;
    wait_for(&cv, &deployment, "FAILED").await?;
    let result = handle(
        &handler,
        deployment_event("ecs-1", "ecs-deployment-failed.json", &deployment)?,
    )
    .await?;

    assert_eq!(result.action, Action::FinishRelease);
    assert_eq!(result.outcome, "in_progress", "{result:?}");
    let done = rollback_completes(&cv, &handler, &record.release_id.0).await?;
    assert_eq!(done.outcome, "rolled_back", "{done:?}");
    let stored = cv.stored_record(&record.release_id.0).await?;
    assert_eq!(stored.outcome, RecordOutcome::RolledBack);
    assert!(
        stored
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("circuit breaker")),
        "reason: {:?}",
        stored.reason
    );
    assert_eq!(
        cv.service().await?.task_definition(),
        Some(cv.initial_revision.as_str())
    );
    assert_eq!(cv.stored_lock().await?, None, "the lock was not released");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_inside_the_bake_window_rolls_back() -> anyhow::Result<()> {
    let cv = setup().await?;
    let handler = handler(
        &cv,
        config(&cv.project, |p| {
            if let Some(env) = p.config.environments.get_mut(cv::ENVIRONMENT) {
                env.verify.bake_seconds = 3600;
            }
        }),
    );
    let release = released(&cv, &handler).await?;

    let result = handle(&handler, alarm_event("alarm-1")?).await?;

    assert_eq!(result.action, Action::AlarmFired);
    assert_eq!(result.outcome, "in_progress", "{result:?}");
    assert!(
        result.message.contains(ALARM),
        "message: {}",
        result.message
    );
    let id = result.release_id.as_deref().context("no release id")?;
    let done = rollback_completes(&cv, &handler, id).await?;
    assert_eq!(done.outcome, "rolled_back", "{done:?}");
    let rollback = cv.stored_record(id).await?;
    assert_eq!(rollback.outcome, RecordOutcome::RolledBack);
    assert_eq!(rollback.rollback_of.as_ref(), Some(&release.release_id));
    assert_eq!(rollback.trigger.as_deref(), Some("alarm-1"));
    assert_eq!(
        cv.service().await?.task_definition(),
        Some(cv.initial_revision.as_str()),
        "not back on the previous revision"
    );
    assert_eq!(cv.stored_lock().await?, None);
    // The same alarm event again: handled already.
    let again = handle(&handler, alarm_event("alarm-1")?).await?;
    assert_eq!(again.outcome, "ignored", "{again:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_after_the_bake_window_only_notifies() -> anyhow::Result<()> {
    let cv = setup().await?;
    let sent: Arc<Mutex<Vec<Notification>>> = Arc::default();
    let mut notifier = MockNotifier::new();
    let log = sent.clone();
    notifier.expect_notify().returning(move |notification| {
        log.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(notification.clone());
        Ok(())
    });
    let handler = handler(
        &cv,
        config(&cv.project, |p| {
            if let Some(env) = p.config.environments.get_mut(cv::ENVIRONMENT) {
                env.verify.bake_seconds = 0;
            }
        }),
    )
    .with_notifier(Arc::new(notifier));
    let release = released(&cv, &handler).await?;
    let revision = release.revision.clone().context("no revision")?;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let result = handle(&handler, alarm_event("alarm-1")?).await?;

    assert_eq!(result.action, Action::AlarmFired);
    assert_eq!(result.outcome, "notified", "{result:?}");
    assert!(
        result.message.contains("past its bake window"),
        "{}",
        result.message
    );
    assert_eq!(
        cv.service().await?.task_definition(),
        Some(revision.id.as_str()),
        "the release was rolled back"
    );
    let sent = sent.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let last = sent.last().context("no notification")?;
    assert_eq!(last.kind, NotificationKind::Failed);
    assert!(last.reason.as_deref().is_some_and(|r| r.contains(ALARM)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_push_twice_deploys_once() -> anyhow::Result<()> {
    let cv = setup().await?;
    let handler = handler(&cv, config(&cv.project, |_| {}));
    let (_, record) = push(&cv, &handler, "push-1", cv::REPOSITORY, "v1.1.0").await?;
    let digest = record.image.clone().context("no image")?.digest;

    let again = handle(
        &handler,
        push_event("push-1", cv::REPOSITORY, "v1.1.0", &digest)?,
    )
    .await?;

    assert_eq!(again.action, Action::StartRelease);
    assert_eq!(again.outcome, "ignored", "{again:?}");
    let revisions = cv.active_revisions().await?;
    assert_eq!(revisions.len(), 2, "one revision registered: {revisions:?}");
    let records = cv.artifact_store();
    let history =
        pipeline_core::ReleaseRecords::history(&records, &cv.target.app, cv::ENVIRONMENT, 10)
            .await?;
    assert_eq!(history.len(), 1, "one record: {history:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_events_are_ignored_and_malformed_ones_name_the_field() -> anyhow::Result<()> {
    let cv = setup().await?;
    let handler = handler(&cv, config(&cv.project, |_| {}));

    for file in [
        "unknown-ec2-state-change.json",
        "ecs-deployment-in-progress.json",
    ] {
        let result = handle(&handler, sample(file)?).await?;
        assert_eq!(result.action, Action::Ignored, "{file}: {result:?}");
    }
    // A deployment tugboat did not start, an alarm in OK, a push to another repository.
    let result = handle(
        &handler,
        deployment_event("ecs-9", "ecs-deployment-completed.json", "ecs-svc/1")?,
    )
    .await?;
    assert_eq!(result.outcome, "ignored", "{result:?}");
    let mut ok = alarm_event("alarm-9")?;
    ok["detail"]["state"]["value"] = json!("OK");
    assert_eq!(handle(&handler, ok).await?.action, Action::Ignored);
    let other = push_event("push-9", "someone_else", "v9.9.9", "sha256:00")?;
    assert_eq!(handle(&handler, other).await?.action, Action::Ignored);

    for (file, field) in [
        (
            "malformed-ecr-push-no-repository.json",
            "detail.repository-name",
        ),
        (
            "malformed-ecs-deployment-id-not-a-string.json",
            "detail.deploymentId",
        ),
        ("malformed-no-detail-type.json", "detail-type"),
    ] {
        match handler.handle(sample(file)?).await {
            Err(err @ HandlerError::MalformedEvent { .. }) => {
                assert!(
                    err.to_string().contains(&format!("`{field}`")),
                    "{file}: {err}"
                );
                assert_eq!(err.error_type(), "MalformedEvent");
            }
            other => anyhow::bail!("{file}: not a malformed-event error: {other:?}"),
        }
    }
    // Nothing was deployed.
    assert_eq!(cv.active_revisions().await?.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overdue_release_is_finished_by_the_next_invocation() -> anyhow::Result<()> {
    let cv = setup().await?;
    let handler = handler(
        &cv,
        config(&cv.project, |p| {
            if let Some(env) = p.config.environments.get_mut(cv::ENVIRONMENT) {
                env.deploy.timeout_seconds = 2;
            }
        }),
    );
    let (_, record) = push(&cv, &handler, "push-1", cv::REPOSITORY, "v1.1.0").await?;
    // The ECS event is lost; the rollout completes (1.5 s) and the timeout passes.
    tokio::time::sleep(Duration::from_millis(2600)).await;

    let result = handle(&handler, sample("unknown-ec2-state-change.json")?).await?;

    assert_eq!(result.action, Action::Ignored);
    assert_eq!(result.overdue.len(), 1, "{result:?}");
    let overdue = &result.overdue[0];
    assert_eq!(overdue.environment, cv::ENVIRONMENT);
    assert_eq!(overdue.outcome, "succeeded", "{overdue:?}");
    assert_eq!(
        overdue.release_id.as_deref(),
        Some(record.release_id.0.as_str())
    );
    let stored = cv.stored_record(&record.release_id.0).await?;
    assert_eq!(stored.outcome, RecordOutcome::Succeeded);
    assert_eq!(cv.stored_lock().await?, None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_is_read_from_s3_once() -> anyhow::Result<()> {
    let cv = setup().await?;
    let text = std::fs::read_to_string(cv::config_file())?;
    cv.aws
        .clients
        .s3
        .put_object()
        .bucket(&cv.bucket)
        .key("config/tugboat.toml")
        .body(text.into_bytes().into())
        .send()
        .await?;
    let handler = Handler::new(ConfigSource::S3 {
        bucket: cv.bucket.clone(),
        key: "config/tugboat.toml".into(),
    })
    .with_clients(cv.aws.clients.clone());

    let result = handle(&handler, sample("unknown-ec2-state-change.json")?).await?;
    assert_eq!(result.action, Action::Ignored);
    let loaded = handler
        .config()
        .await
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    assert_eq!(loaded.config.app.name, "cv-matcher");
    assert!(loaded.task_definition.is_none());
    // Parsed once: removing the object does not matter to a warm handler.
    cv.aws
        .clients
        .s3
        .delete_object()
        .bucket(&cv.bucket)
        .key("config/tugboat.toml")
        .send()
        .await?;
    let result = handle(&handler, sample("ecs-deployment-in-progress.json")?).await?;
    assert_eq!(result.action, Action::Ignored);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_config_is_a_clear_error() -> anyhow::Result<()> {
    let handler = Handler::new(ConfigSource::File("/nonexistent/tugboat.toml".into()));
    let err = handler
        .handle(sample("unknown-ec2-state-change.json")?)
        .await
        .err()
        .context("no error")?;
    assert!(
        err.to_string()
            .contains("cannot read the config file /nonexistent/tugboat.toml"),
        "{err}"
    );
    // A malformed event is reported as such, config or not.
    let err = handler
        .handle(sample("malformed-no-detail-type.json")?)
        .await
        .err()
        .context("no error")?;
    assert_eq!(err.error_type(), "MalformedEvent", "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_push_deploys_nothing() -> anyhow::Result<()> {
    let cv = setup().await?;
    let handler = handler(&cv, config(&cv.project, |_| {}));
    let real = cv.put_image(cv::REPOSITORY, "v1.1.0").await?;
    let other = cv.put_image(cv::REPOSITORY, "v1.2.0").await?;
    let before = cv.service().await?.task_definition().map(str::to_string);

    // The tag is not on that digest: someone wants v1.2.0 released as v1.1.0's environment.
    let forged = push_event("forged-1", cv::REPOSITORY, "v1.1.0", &other.digest)?;
    let result = handle(&handler, forged).await?;
    assert_eq!(result.action, Action::Ignored, "{result:?}");
    assert!(
        result.message.contains("nothing deployed"),
        "{}",
        result.message
    );
    // Another repository.
    let elsewhere = push_event("forged-2", "someone_elses_repo", "v1.1.0", &real.digest)?;
    let result = handle(&handler, elsewhere).await?;
    assert_eq!(result.action, Action::Ignored, "{result:?}");
    // Another region.
    let mut far = push_event("forged-3", cv::REPOSITORY, "v1.1.0", &real.digest)?;
    far["region"] = json!("eu-west-1");
    let result = handle(&handler, far).await?;
    assert_eq!(result.action, Action::Ignored, "{result:?}");
    assert!(result.message.contains("eu-west-1"), "{}", result.message);
    // A tag ECR does not hold at all.
    let ghost = push_event("forged-4", cv::REPOSITORY, "v9.9.9", &real.digest)?;
    let result = handle(&handler, ghost).await?;
    assert_eq!(result.action, Action::Ignored, "{result:?}");

    assert_eq!(
        cv.service().await?.task_definition().map(str::to_string),
        before
    );
    assert!(cv.stored_lock().await?.is_none(), "a lock was taken");
    // The genuine event still releases.
    let genuine = push_event("push-1", cv::REPOSITORY, "v1.1.0", &real.digest)?;
    let result = handle(&handler, genuine).await?;
    assert_eq!(result.action, Action::StartRelease, "{result:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_sweep_is_an_event_of_its_own() -> anyhow::Result<()> {
    let cv = setup().await?;
    let handler = handler(&cv, config(&cv.project, |_| {}));
    let scheduled = json!({
        "version": "0", "id": "sweep-1", "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "123456789012", "time": "2026-12-01T10:00:00Z",
        "region": "us-east-1", "resources": ["arn:aws:events:us-east-1:123456789012:rule/tugboat-sweep"],
        "detail": {}
    });
    let result = handle(&handler, scheduled).await?;
    assert_eq!(result.action, Action::Ignored, "{result:?}");
    assert!(
        result.message.contains("scheduled sweep"),
        "{}",
        result.message
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_during_a_release_is_retried_and_then_deployed() -> anyhow::Result<()> {
    let cv = setup().await?;
    let handler = handler(&cv, config(&cv.project, |_| {}));
    let (_, first) = push(&cv, &handler, "push-1", cv::REPOSITORY, "v1.1.0").await?;
    let image = cv.put_image(cv::REPOSITORY, "v1.2.0").await?;
    let second = push_event("push-2", cv::REPOSITORY, "v1.2.0", &image.digest)?;

    // The lock is held by release 1: the push fails so that Lambda delivers it again.
    let refused = handler.handle(second.clone()).await;
    let Err(err) = refused else {
        anyhow::bail!("a push during a release returned success: {refused:?}");
    };
    assert_eq!(err.error_type(), "RetryLater", "{err}");
    assert!(matches!(err, HandlerError::Retry { .. }), "{err}");

    let deployment = first.deployment_id.clone().context("no deployment id")?;
    wait_for(&cv, &deployment, "COMPLETED").await?;
    let done = handle(
        &handler,
        deployment_event("ecs-1", "ecs-deployment-completed.json", &deployment)?,
    )
    .await?;
    assert_eq!(done.outcome, "succeeded", "{done:?}");

    // Lambda's retry: now it is deployed; a further redelivery is a duplicate.
    let retried = handle(&handler, second.clone()).await?;
    assert_eq!(retried.outcome, "in_progress", "{retried:?}");
    let record = cv
        .stored_record(retried.release_id.as_deref().context("no release id")?)
        .await?;
    assert_eq!(record.image.context("no image")?.digest, image.digest);
    let again = handle(&handler, second).await?;
    assert_eq!(again.outcome, "ignored", "{again:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_and_alarm_together_conclude_the_release_once() -> anyhow::Result<()> {
    let cv = setup().await?;
    let handler = handler(&cv, config(&cv.project, |_| {}));
    let (_, record) = push(&cv, &handler, "push-1", cv::REPOSITORY, "v1.1.0").await?;
    let deployment = record.deployment_id.clone().context("no deployment id")?;
    wait_for(&cv, &deployment, "COMPLETED").await?;
    let completed = deployment_event("ecs-1", "ecs-deployment-completed.json", &deployment)?;

    let (a, b) = tokio::join!(
        handle(&handler, completed),
        handle(&handler, alarm_event("alarm-1")?)
    );
    let (a, b) = (a?, b?);

    // One concluded it (verified, or started the rollback); the other stopped.
    let lost: Vec<&InvocationResult> = [&a, &b]
        .into_iter()
        .filter(|r| r.outcome == "ignored")
        .collect();
    assert_eq!(lost.len(), 1, "exactly one conclusion: {a:?} / {b:?}");
    assert!(
        lost[0].message.contains("another invocation") || lost[0].message.contains("rolling back"),
        "{:?}",
        lost[0]
    );
    let won = if a.outcome == "ignored" { &b } else { &a };
    let stored = cv.stored_record(&record.release_id.0).await?;
    match won.action {
        Action::FinishRelease => {
            assert_eq!(won.outcome, "succeeded", "{won:?}");
            assert_eq!(stored.outcome, RecordOutcome::Succeeded);
            assert_eq!(cv.stored_lock().await?, None);
        }
        _ => {
            assert_eq!(won.outcome, "in_progress", "{won:?}");
            assert!(stored.rollback_deployment_id.is_some(), "{stored:?}");
            let done = rollback_completes(&cv, &handler, &record.release_id.0).await?;
            assert_eq!(done.outcome, "rolled_back", "{done:?}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_near_the_deadline_returns_in_time_and_its_event_finishes_it(
) -> anyhow::Result<()> {
    let cv = setup().await?;
    let repository = "cv_matcher-crashloop";
    let handler = handler(
        &cv,
        config(&cv.project, |p| {
            p.config.image.repository = repository.to_string()
        }),
    );
    let (_, record) = push(&cv, &handler, "push-1", repository, "v1.2.0").await?;
    let deployment = record.deployment_id.clone().context("no deployment id")?;
    wait_for(&cv, &deployment, "FAILED").await?;
    let failed = deployment_event("ecs-1", "ecs-deployment-failed.json", &deployment)?;

    let deadline = std::time::SystemTime::now() + Duration::from_secs(5);
    let started = std::time::Instant::now();
    let result = handler
        .handle_by(failed, Some(deadline))
        .await
        .map_err(|err| anyhow::anyhow!("the handler failed: {err}"))?;
    let took = started.elapsed();

    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(result.outcome, "in_progress", "{result:?}");
    let done = rollback_completes(&cv, &handler, &record.release_id.0).await?;
    assert_eq!(done.outcome, "rolled_back", "{done:?}");
    let stored = cv.stored_record(&record.release_id.0).await?;
    assert_eq!(stored.outcome, RecordOutcome::RolledBack);
    assert!(
        stored
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("rolling back to")),
        "reason: {:?}",
        stored.reason
    );
    assert_eq!(
        cv.service().await?.task_definition(),
        Some(cv.initial_revision.as_str())
    );
    assert_eq!(cv.stored_lock().await?, None, "the lock was not released");
    // The failed deployment's event again changes nothing.
    let again = handle(
        &handler,
        deployment_event("ecs-1", "ecs-deployment-failed.json", &deployment)?,
    )
    .await?;
    assert_eq!(again.outcome, "ignored", "{again:?}");
    Ok(())
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// How long one invocation takes against moto, for a push, a COMPLETED event and the
/// scheduled sweep (with a release in progress, and with none): medians of 10, printed
/// (run with `--nocapture` to see them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocation_times() -> anyhow::Result<()> {
    let cv = setup().await?;
    let handler = handler(&cv, config(&cv.project, |_| {}));
    let sweep = |id: String| {
        json!({
            "version": "0", "id": id, "detail-type": "Scheduled Event",
            "source": "aws.events", "account": "123456789012", "time": "2026-12-01T10:00:00Z",
            "region": "us-east-1", "resources": ["arn:aws:events:us-east-1:123456789012:rule/tugboat-sweep"],
            "detail": {}
        })
    };
    let (mut pushes, mut completions, mut busy_sweeps, mut idle_sweeps) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..10 {
        let tag = format!("v2.{i}.0");
        let image = cv.put_image(cv::REPOSITORY, &tag).await?;
        let event = push_event(&format!("push-{i}"), cv::REPOSITORY, &tag, &image.digest)?;
        let at = std::time::Instant::now();
        let started = handle(&handler, event).await?;
        pushes.push(at.elapsed());
        ensure!(started.outcome == "in_progress", "{started:?}");
        let release = started.release_id.context("no release id")?;
        let deployment = cv
            .stored_record(&release)
            .await?
            .deployment_id
            .context("no deployment id")?;

        let at = std::time::Instant::now();
        let swept = handle(&handler, sweep(format!("sweep-busy-{i}"))).await?;
        busy_sweeps.push(at.elapsed());
        ensure!(swept.overdue.is_empty(), "{swept:?}");

        wait_for(&cv, &deployment, "COMPLETED").await?;
        let event = deployment_event(
            &format!("ecs-{i}"),
            "ecs-deployment-completed.json",
            &deployment,
        )?;
        let at = std::time::Instant::now();
        let done = handle(&handler, event).await?;
        completions.push(at.elapsed());
        ensure!(done.outcome == "succeeded", "{done:?}");

        let at = std::time::Instant::now();
        handle(&handler, sweep(format!("sweep-idle-{i}"))).await?;
        idle_sweeps.push(at.elapsed());
    }
    eprintln!(
        "invocation time against moto, median of 10:\n  push (start_release): {:?}\n  COMPLETED (finish_release, no verifiers): {:?}\n  sweep, a release in progress: {:?}\n  sweep, nothing in progress: {:?}",
        median(pushes),
        median(completions),
        median(busy_sweeps),
        median(idle_sweeps)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_whose_event_is_lost_is_finished_by_the_sweep() -> anyhow::Result<()> {
    let cv = setup().await?;
    let repository = "cv_matcher-crashloop";
    let handler = handler(
        &cv,
        config(&cv.project, |p| {
            p.config.image.repository = repository.to_string();
            if let Some(env) = p.config.environments.get_mut(cv::ENVIRONMENT) {
                env.deploy.timeout_seconds = 2;
            }
        }),
    );
    let (_, record) = push(&cv, &handler, "push-1", repository, "v1.2.0").await?;
    let deployment = record.deployment_id.clone().context("no deployment id")?;
    wait_for(&cv, &deployment, "FAILED").await?;
    // The FAILED event (or the sweep before it, the release being overdue) starts the rollback.
    handle(
        &handler,
        deployment_event("ecs-1", "ecs-deployment-failed.json", &deployment)?,
    )
    .await?;
    let rolling = cv.stored_record(&record.release_id.0).await?;
    assert_eq!(rolling.outcome, RecordOutcome::InProgress, "{rolling:?}");
    let rollback = rolling
        .rollback_deployment_id
        .clone()
        .context("no rollback deployment id")?;
    wait_for(&cv, &rollback, "COMPLETED").await?;
    // Its event is lost; once the rollback is overdue, the next invocation looks once.
    tokio::time::sleep(Duration::from_millis(2200)).await;

    let result = handle(&handler, sample("unknown-ec2-state-change.json")?).await?;

    assert_eq!(result.overdue.len(), 1, "{result:?}");
    assert_eq!(result.overdue[0].outcome, "rolled_back", "{result:?}");
    let stored = cv.stored_record(&record.release_id.0).await?;
    assert_eq!(stored.outcome, RecordOutcome::RolledBack);
    assert_eq!(cv.stored_lock().await?, None, "the lock was not released");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_from_another_account_deploys_nothing() -> anyhow::Result<()> {
    let cv = setup().await?;
    let handler = handler(&cv, config(&cv.project, |_| {}));
    let image = cv.put_image(cv::REPOSITORY, "v1.1.0").await?;
    let before = cv.service().await?.task_definition().map(str::to_string);
    let mut event = push_event("other-account-1", cv::REPOSITORY, "v1.1.0", &image.digest)?;
    event["account"] = json!("999999999999");

    let result = handle(&handler, event).await?;

    assert_eq!(result.action, Action::Ignored, "{result:?}");
    assert!(
        result.message.contains("999999999999"),
        "{}",
        result.message
    );
    assert_eq!(
        cv.service().await?.task_definition().map(str::to_string),
        before
    );
    Ok(())
}

/// The function sees every environment when it cleans up old revisions: staging's
/// releases by push never deregister production's current or previous revision (same
/// family), which production may need to roll back to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_function_never_deregisters_another_environments_rollback_target() -> anyhow::Result<()>
{
    let cv = setup().await?;
    let mut project = cv.with_staging().await?;
    let mut production = Vec::new();
    for tag in ["v1.1.0", "v1.2.0"] {
        cv.put_image(cv::REPOSITORY, tag).await?;
        let run = cv.deploy(&project, tag, &cv::sha('b')).await;
        ensure!(
            run.report.outcome == pipeline_core::Outcome::Succeeded,
            "production {tag}: {}",
            run.report.message
        );
        production.push(run.record()?.revision.clone().context("no revision")?.id);
    }
    let staging = project
        .config
        .environments
        .get_mut("staging")
        .context("no staging")?;
    staging.image_tags = vec!["staging-*".into()];
    staging.scan.block_at = None;
    let staging_target = staging.target("cv-matcher", "staging");
    if let Some(env) = project.config.environments.get_mut(cv::ENVIRONMENT) {
        env.scan.block_at = None;
    }
    let handler = handler(
        &cv,
        LoadedConfig::without_package(project.config.clone(), cv::config_file()),
    );

    for n in 0..5 {
        let tag = format!("staging-{n}");
        let image = cv.put_image(cv::REPOSITORY, &tag).await?;
        let id = format!("push-{n}");
        let started = handle(
            &handler,
            push_event(&id, cv::REPOSITORY, &tag, &image.digest)?,
        )
        .await?;
        ensure!(
            started.outcome == "in_progress" && started.environment.as_deref() == Some("staging"),
            "staging push {n}: {started:?}"
        );
        let record = cv
            .stored_record_of("staging", started.release_id.as_deref().unwrap_or_default())
            .await?;
        let deployment = record.deployment_id.clone().context("no deployment id")?;
        eventually(Duration::from_secs(30), || async {
            // Reading staging's service moves moto's model forward.
            cv.aws
                .clients
                .ecs
                .describe_services()
                .cluster(&staging_target.cluster)
                .services(&staging_target.service)
                .send()
                .await?;
            let transitions = cv.aws.moto.transitions().await?;
            Ok(transitions
                .iter()
                .any(|t| t["deploymentId"] == deployment.as_str() && t["state"] == "COMPLETED"))
        })
        .await?;
        let mut event = deployment_event(
            &format!("ecs-{n}"),
            "ecs-deployment-completed.json",
            &deployment,
        )?;
        event["resources"] = json!([format!(
            "arn:aws:ecs:{}:123456789012:service/{}/{}",
            tugboat_tests::aws::REGION,
            staging_target.cluster,
            staging_target.service
        )]);
        let finished = handle(&handler, event).await?;
        ensure!(
            finished.outcome == "succeeded",
            "staging release {n}: {finished:?}"
        );
    }
    for revision in &production {
        let status = cv
            .aws
            .clients
            .ecs
            .describe_task_definition()
            .task_definition(revision)
            .send()
            .await?
            .task_definition()
            .and_then(|t| t.status())
            .cloned();
        ensure!(
            status == Some(aws_sdk_ecs::types::TaskDefinitionStatus::Active),
            "production's revision {revision} was deregistered by staging's releases: {status:?}"
        );
    }
    let active = cv.active_revisions().await?;
    ensure!(active.len() < 8, "the function pruned nothing: {active:?}");
    Ok(())
}
