//! The orchestrator deploying CV Matcher's production environment on moto, and what
//! AWS holds afterwards.

use anyhow::Context;
use aws_sdk_ecs::types::{Deployment, DeploymentRolloutState, Service, TaskDefinitionField};
use pipeline_core::{LockHolder, Outcome, RecordOutcome, ReleaseId, Revision};
use std::collections::BTreeMap;
use tugboat_tests::aws::AwsFixture;
use tugboat_tests::cv_matcher::{self as cv, CvMatcher};

async fn cv_matcher() -> anyhow::Result<CvMatcher> {
    CvMatcher::setup(AwsFixture::start().await?).await
}

fn primary(service: &Service) -> anyhow::Result<&Deployment> {
    service
        .deployments()
        .iter()
        .find(|d| d.status() == Some("PRIMARY"))
        .with_context(|| format!("no PRIMARY deployment: {:?}", service.deployments()))
}

/// The service runs `revision` and its only deployment completed on it.
fn assert_serves(service: &Service, revision: &str) -> anyhow::Result<()> {
    assert_eq!(
        service.task_definition(),
        Some(revision),
        "service taskDefinition"
    );
    let primary = primary(service)?;
    assert_eq!(
        primary.task_definition(),
        Some(revision),
        "PRIMARY deployment"
    );
    assert_eq!(
        primary.rollout_state(),
        Some(&DeploymentRolloutState::Completed),
        "PRIMARY deployment state: {primary:?}"
    );
    assert_eq!(
        service.deployments().len(),
        1,
        "{:?}",
        service.deployments()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cv_matcher_task_definition_is_deployed() -> anyhow::Result<()> {
    let cv = cv_matcher().await?;
    let image = cv.put_image(cv::REPOSITORY, "v1.1.0").await?;
    let git_sha = cv::sha('b');

    let run = cv.deploy(&cv.project, "v1.1.0", &git_sha).await;

    assert_eq!(
        run.report.outcome,
        Outcome::Succeeded,
        "{}\nmoto: {}",
        run.report.message,
        cv.aws.moto.log_tail()
    );
    let record = run.record()?;
    let revision = record
        .revision
        .clone()
        .context("no revision in the record")?;
    assert_eq!(cv::label(&revision.id), "cv-matcher:2");
    assert_serves(&cv.service().await?, &revision.id)?;

    let described = cv
        .aws
        .clients
        .ecs
        .describe_task_definition()
        .task_definition(&revision.id)
        .include(TaskDefinitionField::Tags)
        .send()
        .await?;
    let td = described.task_definition().context("no task definition")?;
    assert_eq!(td.family(), Some("cv-matcher"));
    assert_eq!(td.cpu(), Some("256"));
    assert_eq!(td.memory(), Some("512"));
    assert_eq!(
        td.execution_role_arn(),
        Some("arn:aws:iam::123456789012:role/cv-matcher-task-execution"),
        "execution_role_arn from tugboat.toml's default"
    );
    let container = td
        .container_definitions()
        .iter()
        .find(|c| c.name() == Some(cv::CONTAINER))
        .context("no cv-matcher container")?;

    // The image is pinned by the digest ECR holds, never by the tag.
    let pinned = format!("{}@{}", cv::repository_uri(cv::REPOSITORY), image.digest);
    assert_eq!(container.image(), Some(pinned.as_str()));
    assert!(image.digest.starts_with("sha256:") && image.digest.len() == 71);

    // Environment: the file has none, tugboat.toml adds APP_ENV.
    let environment: BTreeMap<&str, &str> = container
        .environment()
        .iter()
        .filter_map(|kv| Some((kv.name()?, kv.value()?)))
        .collect();
    assert_eq!(environment, BTreeMap::from([("APP_ENV", "production")]));

    // Secrets: one per parameter, valueFrom what Parameter Store's metadata names it by
    // (its ARN when DescribeParameters returns one, else its name).
    let secrets: BTreeMap<&str, &str> = container
        .secrets()
        .iter()
        .map(|s| (s.name(), s.value_from()))
        .collect();
    assert_eq!(
        secrets.keys().copied().collect::<Vec<_>>(),
        cv::SECRET_NAMES.to_vec()
    );
    for name in cv::SECRET_NAMES {
        let full = format!("{}{name}", cv::SECRETS_PATH);
        let metadata = cv
            .aws
            .clients
            .ssm
            .describe_parameters()
            .parameter_filters(
                aws_sdk_ssm::types::ParameterStringFilter::builder()
                    .key("Name")
                    .option("Equals")
                    .values(&full)
                    .build()?,
            )
            .send()
            .await?;
        let metadata_arn = metadata.parameters().first().and_then(|p| p.arn());
        let parameter = cv
            .aws
            .clients
            .ssm
            .get_parameter()
            .name(&full)
            .send()
            .await?;
        let arn = parameter
            .parameter()
            .and_then(|p| p.arn())
            .context("no ARN")?;
        assert_eq!(
            arn,
            format!("arn:aws:ssm:us-east-1:123456789012:parameter{full}")
        );
        let expected = metadata_arn.unwrap_or(&full);
        assert_eq!(secrets[name], expected, "valueFrom of {name}");
        eprintln!(
            "secret {name}: valueFrom = {} ({})",
            secrets[name],
            if metadata_arn.is_some() {
                "the parameter ARN"
            } else {
                "the parameter name: moto's DescribeParameters returns no ARN"
            }
        );
    }

    // The release's tags on the revision, through both APIs.
    let expected_tags = BTreeMap::from([
        ("tugboat:app", "cv-matcher"),
        ("tugboat:environment", "production"),
        ("tugboat:git-sha", git_sha.as_str()),
        ("tugboat:release", record.release_id.0.as_str()),
    ]);
    let listed = cv
        .aws
        .clients
        .ecs
        .list_tags_for_resource()
        .resource_arn(&revision.id)
        .send()
        .await?;
    let tags: BTreeMap<&str, &str> = listed
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?, t.value()?)))
        .collect();
    assert_eq!(tags, expected_tags, "ListTagsForResource");
    let described_tags: BTreeMap<&str, &str> = described
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?, t.value()?)))
        .collect();
    assert_eq!(
        described_tags, expected_tags,
        "DescribeTaskDefinition include=TAGS"
    );

    // The record in S3, and the lock given back.
    let stored = cv.stored_record(&record.release_id.0).await?;
    assert_eq!(stored.outcome, RecordOutcome::Succeeded);
    assert_eq!(stored.revision.as_ref(), Some(&revision));
    assert_eq!(
        stored.previous_revision.as_ref().map(|r| r.id.as_str()),
        Some(cv.initial_revision.as_str())
    );
    assert_eq!(
        stored.image.as_ref().map(|i| i.digest.as_str()),
        Some(image.digest.as_str())
    );
    assert_eq!(stored.git.sha, git_sha);
    assert!(stored.finished_at.is_some());
    let raw = cv
        .object(&format!(
            "{}records/{}.json",
            cv.key_prefix(),
            record.release_id
        ))
        .await?
        .context("record object")?;
    let raw: serde_json::Value = serde_json::from_slice(&raw)?;
    assert_eq!(raw["outcome"], "succeeded");
    assert_eq!(
        cv.stored_lock().await?,
        None,
        "the deploy lock was not released"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_rollback_is_reported_as_failure() -> anyhow::Result<()> {
    let cv = cv_matcher().await?;
    // The release pins `repository@sha256:…`, so the emulator never sees the tag: the
    // `crashloop` marker has to be in the repository name for moto to fail the tasks.
    let repository = "cv_matcher-crashloop";
    let mut project = cv.project.clone();
    project.config.image.repository = repository.to_string();
    cv.put_image(repository, "crashloop-1").await?;

    let run = cv.deploy(&project, "crashloop-1", &cv::sha('c')).await;

    assert_eq!(
        run.report.outcome,
        Outcome::FailedRestored,
        "{}\nmoto: {}",
        run.report.message,
        cv.aws.moto.log_tail()
    );
    assert_eq!(run.report.outcome.exit_code(), 1);
    let record = run.record()?;
    let failed_revision = record.revision.clone().context("no revision")?;
    assert_eq!(cv::label(&failed_revision.id), "cv-matcher:2");
    let stored = cv.stored_record(&record.release_id.0).await?;
    assert_eq!(stored.outcome, RecordOutcome::RolledBack);
    let reason = stored.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("circuit breaker") && reason.contains("rolled it back"),
        "reason: {reason}"
    );

    // Back on revision 1, and ECS itself said why.
    let service = cv.service().await?;
    assert_serves(&service, &cv.initial_revision)?;
    let transitions = cv.aws.moto.transitions().await?;
    assert!(
        transitions.iter().any(|t| t["state"] == "FAILED"),
        "no FAILED transition in {transitions:?}"
    );

    let warnings = run.warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("failed to start or stay healthy")),
        "no failed-tasks warning in {warnings:?}"
    );
    let service_events = run.service_events();
    assert!(
        service_events
            .iter()
            .any(|m| m.contains("failed container health checks")),
        "service events not streamed: {service_events:?}"
    );
    assert!(
        run.report.message.contains("cv-matcher:1"),
        "message does not name the restored revision: {}",
        run.report.message
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_is_rolled_back() -> anyhow::Result<()> {
    // Quick healthy rollouts, so the rollback completes well within the 2 s timeout
    // that also applies to it.
    let aws = AwsFixture::start_with_env(&[("TUGBOAT_MOTO_ROLLOUT_SECONDS", "0.5")]).await?;
    let cv = CvMatcher::setup(aws).await?;
    let repository = "cv_matcher-hang";
    let mut project = cv.project.clone();
    project.config.image.repository = repository.to_string();
    project
        .config
        .environments
        .get_mut(cv::ENVIRONMENT)
        .context("production")?
        .deploy
        .timeout_seconds = 2;
    cv.put_image(repository, "hang-1").await?;

    let run = cv.deploy(&project, "hang-1", &cv::sha('d')).await;

    assert_eq!(
        run.report.outcome,
        Outcome::FailedRestored,
        "{}\nmoto: {}",
        run.report.message,
        cv.aws.moto.log_tail()
    );
    assert_eq!(run.report.outcome.exit_code(), 1);
    let record = run.record()?;
    let stored = cv.stored_record(&record.release_id.0).await?;
    assert_eq!(stored.outcome, RecordOutcome::RolledBack);
    let reason = stored.reason.unwrap_or_default();
    assert!(
        reason.contains("did not finish within 2s"),
        "reason: {reason}"
    );
    assert!(run.report.message.contains("did not finish within 2s"));

    // The wait gave up after the configured 2 s, not much later.
    let deploy_stage = stored
        .stages
        .iter()
        .find(|s| s.stage == pipeline_core::Stage::Deploy)
        .context("no deploy stage timing")?;
    assert!(!deploy_stage.ok);
    assert!(
        (2000..5000).contains(&deploy_stage.millis),
        "deploy stage took {} ms",
        deploy_stage.millis
    );
    assert_serves(&cv.service().await?, &cv.initial_revision)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_parameter_is_refused_before_any_change() -> anyhow::Result<()> {
    let cv = cv_matcher().await?;
    cv.put_image(cv::REPOSITORY, "v1.1.0").await?;
    let missing = format!("{}JWT_SECRET_KEY", cv::SECRETS_PATH);
    cv.aws
        .clients
        .ssm
        .delete_parameter()
        .name(&missing)
        .send()
        .await?;
    let revisions_before = cv.active_revisions().await?;

    let run = cv.deploy(&cv.project, "v1.1.0", &cv::sha('e')).await;

    assert_eq!(
        run.report.outcome,
        Outcome::BadInput,
        "{}",
        run.report.message
    );
    assert_eq!(run.report.outcome.exit_code(), 2);
    assert!(
        run.report.message.contains(&missing),
        "the message does not name {missing}: {}",
        run.report.message
    );
    assert_eq!(
        cv.active_revisions().await?,
        revisions_before,
        "a revision was registered"
    );
    assert_eq!(revisions_before.len(), 1);
    assert_serves(&cv.service().await?, &cv.initial_revision)?;
    let record = run.record()?;
    assert_eq!(record.revision, None);
    let stored = cv.stored_record(&record.release_id.0).await?;
    assert_eq!(stored.outcome, RecordOutcome::Refused);
    assert_eq!(cv.stored_lock().await?, None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deploy_is_refused_by_the_lock() -> anyhow::Result<()> {
    let cv = cv_matcher().await?;
    cv.put_image(cv::REPOSITORY, "v1.1.0").await?;
    let store = cv.artifact_store();
    let other = LockHolder {
        who: "alice@ci-runner-7".to_string(),
        release_id: ReleaseId("r20261126-090000-0000000".to_string()),
        since: chrono::Utc::now(),
        run_token: "alices-run".to_string(),
        renewed_at: None,
        lease_seconds: Some(120),
    };
    let held =
        pipeline_core::DeployLocks::acquire_lock(&store, "cv-matcher", cv::ENVIRONMENT, &other)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let revisions_before = cv.active_revisions().await?;

    let run = cv.deploy(&cv.project, "v1.1.0", &cv::sha('f')).await;

    assert_eq!(
        run.report.outcome,
        Outcome::BadInput,
        "{}",
        run.report.message
    );
    assert!(
        run.report.message.contains("alice@ci-runner-7"),
        "the message does not name the holder: {}",
        run.report.message
    );
    assert_eq!(cv.active_revisions().await?, revisions_before);
    assert_serves(&cv.service().await?, &cv.initial_revision)?;
    assert_eq!(
        cv.stored_lock().await?,
        Some(held.holder.clone()),
        "the held lock changed"
    );

    pipeline_core::DeployLocks::release_lock(&store, &held)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(cv.stored_lock().await?, None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_goes_to_the_previous_release() -> anyhow::Result<()> {
    let cv = cv_matcher().await?;
    cv.put_image(cv::REPOSITORY, "v1.1.0").await?;
    cv.put_image(cv::REPOSITORY, "v1.2.0").await?;

    let a = cv.deploy(&cv.project, "v1.1.0", &cv::sha('a')).await;
    assert_eq!(
        a.report.outcome,
        Outcome::Succeeded,
        "A: {}",
        a.report.message
    );
    let b = cv.deploy(&cv.project, "v1.2.0", &cv::sha('b')).await;
    assert_eq!(
        b.report.outcome,
        Outcome::Succeeded,
        "B: {}",
        b.report.message
    );
    let revision_a: Revision = a.record()?.revision.clone().context("A revision")?;
    let revision_b: Revision = b.record()?.revision.clone().context("B revision")?;
    assert_ne!(revision_a, revision_b);
    assert_serves(&cv.service().await?, &revision_b.id)?;

    let back = cv.rollback(&cv.project, None).await;

    assert_eq!(
        back.report.outcome,
        Outcome::Succeeded,
        "{}",
        back.report.message
    );
    assert_serves(&cv.service().await?, &revision_a.id)?;
    let record = back.record()?;
    let stored = cv.stored_record(&record.release_id.0).await?;
    assert_eq!(stored.outcome, RecordOutcome::Succeeded);
    assert_eq!(stored.revision.as_ref(), Some(&revision_a));
    assert_eq!(stored.previous_revision.as_ref(), Some(&revision_b));
    assert_eq!(stored.rollback_of.as_ref(), Some(&a.record()?.release_id));
    assert_eq!(stored.git.sha, cv::sha('a'));
    assert_eq!(cv.stored_lock().await?, None);
    Ok(())
}
