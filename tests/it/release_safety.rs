//! Release safety in an account shaped like production (issue 12), against moto taught
//! what AWS does: Application Auto Scaling owns `desiredCount`, staging and production
//! share one task definition family, ECS refuses a deregistered revision, and a
//! deployment that is not tugboat's may be rolling out when a release starts.

use anyhow::Context;
use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};
use aws_sdk_ecs::types::TaskDefinitionStatus;
use pipeline_core::{Outcome, Project, RecordOutcome};
use std::time::Duration;
use tugboat_tests::aws::AwsFixture;
use tugboat_tests::cv_matcher::{self as cv, CvMatcher};

/// moto with quick rollouts: these tests run many releases.
async fn cv_matcher() -> anyhow::Result<CvMatcher> {
    CvMatcher::setup(AwsFixture::start_with_env(&[("TUGBOAT_MOTO_ROLLOUT_SECONDS", "0.3")]).await?)
        .await
}

/// Production without `[scaling]`: whether the service is autoscaled is read from AWS.
fn without_scaling_config(cv: &CvMatcher, desired_count: u32) -> anyhow::Result<Project> {
    let mut project = cv.project.clone();
    let env = project
        .config
        .environments
        .get_mut(cv::ENVIRONMENT)
        .context("no production")?;
    env.scaling = None;
    env.desired_count = Some(desired_count);
    Ok(project)
}

async fn desired_count(cv: &CvMatcher) -> anyhow::Result<i32> {
    Ok(cv.service().await?.desired_count())
}

fn resource_id(cv: &CvMatcher) -> String {
    format!("service/{}/{}", cv.target.cluster, cv.target.service)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_autoscaled_service_keeps_the_count_autoscaling_chose() -> anyhow::Result<()> {
    let cv = cv_matcher().await?;
    // Autoscaling scaled the service out to 6 under load (the config says 2).
    cv.aws
        .clients
        .autoscaling
        .register_scalable_target()
        .service_namespace(ServiceNamespace::Ecs)
        .resource_id(resource_id(&cv))
        .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
        .min_capacity(2)
        .max_capacity(10)
        .send()
        .await
        .context("RegisterScalableTarget")?;
    let scaled = cv
        .aws
        .moto
        .post_json(
            &format!(
                "/tugboat-moto/autoscale?resource={}&desired=6",
                resource_id(&cv)
            ),
            &serde_json::json!({}),
        )
        .await?;
    assert!(String::from_utf8_lossy(&scaled).contains("\"desiredCount\": 6"));
    assert_eq!(desired_count(&cv).await?, 6);
    cv.put_image(cv::REPOSITORY, "v1.1.0").await?;
    let project = without_scaling_config(&cv, 2)?;

    let run = cv.deploy(&project, "v1.1.0", &cv::sha('b')).await;

    assert_eq!(
        run.report.outcome,
        Outcome::Succeeded,
        "{}",
        run.report.message
    );
    assert_eq!(
        desired_count(&cv).await?,
        6,
        "the release cut the autoscaled service"
    );
    assert!(
        run.infos()
            .iter()
            .any(|line| line.contains("left to Application Auto Scaling")),
        "{:?}",
        run.infos()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_count_is_raised_and_never_lowered() -> anyhow::Result<()> {
    let cv = cv_matcher().await?;
    cv.put_image(cv::REPOSITORY, "v1.1.0").await?;
    cv.put_image(cv::REPOSITORY, "v1.2.0").await?;
    assert_eq!(desired_count(&cv).await?, 2);

    let higher = without_scaling_config(&cv, 4)?;
    let run = cv.deploy(&higher, "v1.1.0", &cv::sha('b')).await;
    assert_eq!(
        run.report.outcome,
        Outcome::Succeeded,
        "{}",
        run.report.message
    );
    assert_eq!(
        desired_count(&cv).await?,
        4,
        "a higher desired_count is applied"
    );

    let lower = without_scaling_config(&cv, 1)?;
    let orchestrator =
        pipeline_core::Orchestrator::new(lower.clone(), cv.stages(), pipeline_core::Events::new());
    let plan = orchestrator
        .plan(
            cv::ENVIRONMENT,
            &pipeline_core::ReleaseSource::Image(pipeline_core::ImageReference::Tag(
                "v1.2.0".into(),
            )),
            &pipeline_core::GitInfo::default(),
        )
        .await
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    let plan_text = plan.to_string();
    assert!(
        plan_text.contains("desired count left at 4"),
        "plan says what happens to the count:\n{plan_text}"
    );
    let run = cv.deploy(&lower, "v1.2.0", &cv::sha('c')).await;
    assert_eq!(
        run.report.outcome,
        Outcome::Succeeded,
        "{}",
        run.report.message
    );
    assert_eq!(
        desired_count(&cv).await?,
        4,
        "a lower desired_count is left alone"
    );
    Ok(())
}

async fn with_staging(cv: &CvMatcher) -> anyhow::Result<Project> {
    cv.with_staging().await
}

async fn status_of(cv: &CvMatcher, arn: &str) -> anyhow::Result<Option<TaskDefinitionStatus>> {
    Ok(cv
        .aws
        .clients
        .ecs
        .describe_task_definition()
        .task_definition(arn)
        .send()
        .await?
        .task_definition()
        .and_then(|t| t.status())
        .cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_releases_never_deregister_what_production_may_roll_back_to() -> anyhow::Result<()>
{
    let cv = cv_matcher().await?;
    let project = with_staging(&cv).await?;
    for tag in ["v1.1.0", "v1.2.0"] {
        cv.put_image(cv::REPOSITORY, tag).await?;
    }
    let first = cv.deploy(&project, "v1.1.0", &cv::sha('b')).await;
    assert_eq!(
        first.report.outcome,
        Outcome::Succeeded,
        "{}",
        first.report.message
    );
    let second = cv.deploy(&project, "v1.2.0", &cv::sha('c')).await;
    assert_eq!(
        second.report.outcome,
        Outcome::Succeeded,
        "{}",
        second.report.message
    );
    let production_previous = first.record()?.revision.clone().context("no revision")?;
    let production_current = second.record()?.revision.clone().context("no revision")?;

    for n in 0..12 {
        let tag = format!("staging-{n}");
        cv.put_image(cv::REPOSITORY, &tag).await?;
        let run = cv.deploy_to(&project, "staging", &tag, &cv::sha('d')).await;
        assert_eq!(
            run.report.outcome,
            Outcome::Succeeded,
            "staging release {n}: {}",
            run.report.message
        );
    }

    for (what, revision) in [
        ("current", &production_current),
        ("previous", &production_previous),
    ] {
        assert_eq!(
            status_of(&cv, &revision.id).await?,
            Some(TaskDefinitionStatus::Active),
            "production's {what} revision {} was deregistered by staging's releases",
            revision.label
        );
    }
    // Staging's own old revisions were cleaned up: pruning still works.
    let active = cv.active_revisions().await?;
    assert!(active.len() < 15, "nothing was pruned: {active:?}");

    let rollback = cv.rollback(&project, None).await;
    assert_eq!(
        rollback.report.outcome,
        Outcome::Succeeded,
        "{}",
        rollback.report.message
    );
    assert_eq!(
        cv.service().await?.task_definition(),
        Some(production_previous.id.as_str())
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_to_a_deregistered_revision_registers_it_again() -> anyhow::Result<()> {
    let cv = cv_matcher().await?;
    for tag in ["v1.1.0", "v1.2.0"] {
        cv.put_image(cv::REPOSITORY, tag).await?;
    }
    let first = cv.deploy(&cv.project, "v1.1.0", &cv::sha('b')).await;
    assert_eq!(
        first.report.outcome,
        Outcome::Succeeded,
        "{}",
        first.report.message
    );
    let second = cv.deploy(&cv.project, "v1.2.0", &cv::sha('c')).await;
    assert_eq!(
        second.report.outcome,
        Outcome::Succeeded,
        "{}",
        second.report.message
    );
    let target = first.record()?.revision.clone().context("no revision")?;
    let ecs = &cv.aws.clients.ecs;
    ecs.deregister_task_definition()
        .task_definition(&target.id)
        .send()
        .await?;
    // The emulator refuses it as AWS does.
    let refused = ecs
        .update_service()
        .cluster(&cv.target.cluster)
        .service(&cv.target.service)
        .task_definition(&target.id)
        .send()
        .await;
    let refused = format!(
        "{:?}",
        refused
            .err()
            .context("UpdateService to an INACTIVE revision was accepted")?
    );
    assert!(refused.contains("TaskDefinition is inactive"), "{refused}");

    let rollback = cv.rollback(&cv.project, None).await;

    assert_eq!(
        rollback.report.outcome,
        Outcome::Succeeded,
        "{}",
        rollback.report.message
    );
    assert!(
        rollback.report.message.contains("registered again"),
        "{}",
        rollback.report.message
    );
    let service = cv.service().await?;
    let now = service.task_definition().context("no task definition")?;
    assert_ne!(
        now, target.id,
        "the service cannot be on the INACTIVE revision"
    );
    assert_eq!(
        status_of(&cv, now).await?,
        Some(TaskDefinitionStatus::Active)
    );
    // The same containers as the release rolled back to.
    let image_of = |arn: String| async move {
        let described = ecs
            .describe_task_definition()
            .task_definition(arn)
            .send()
            .await?;
        anyhow::Ok(
            described
                .task_definition()
                .and_then(|t| t.container_definitions().first())
                .and_then(|c| c.image())
                .map(str::to_string),
        )
    };
    assert_eq!(
        image_of(now.to_string()).await?,
        image_of(target.id.clone()).await?
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_does_not_start_on_top_of_a_deployment_that_is_not_its_own() -> anyhow::Result<()>
{
    let cv = cv_matcher().await?;
    // Someone deploys a revision by hand; it is still rolling out (it never finishes).
    let hanging = cv.put_image(cv::REPOSITORY, "hang-1").await?;
    let by_hand = cv.register_plain(&hanging.reference()).await?;
    cv.aws
        .clients
        .ecs
        .update_service()
        .cluster(&cv.target.cluster)
        .service(&cv.target.service)
        .task_definition(&by_hand)
        .send()
        .await?;
    cv.put_image(cv::REPOSITORY, "v1.1.0").await?;

    let run = cv.deploy(&cv.project, "v1.1.0", &cv::sha('b')).await;

    assert_eq!(
        run.report.outcome,
        Outcome::BadInput,
        "{}",
        run.report.message
    );
    assert!(
        run.report.message.contains("not this release's"),
        "{}",
        run.report.message
    );
    assert!(
        run.report.message.contains(cv::label(&by_hand)),
        "{}",
        run.report.message
    );
    assert_eq!(run.record()?.outcome, RecordOutcome::Refused);
    assert_eq!(
        cv.service().await?.task_definition(),
        Some(by_hand.as_str()),
        "nothing changed"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_rollback_after_adoption_restores_what_served_before() -> anyhow::Result<()> {
    let cv = cv_matcher().await?;
    cv.put_image(cv::REPOSITORY, "v1.1.0").await?;
    // The one tugboat release; revision 1 was made by hand before tugboat was adopted.
    let release = cv.deploy(&cv.project, "v1.1.0", &cv::sha('b')).await;
    assert_eq!(
        release.report.outcome,
        Outcome::Succeeded,
        "{}",
        release.report.message
    );

    let rollback = cv.rollback(&cv.project, None).await;

    assert_eq!(
        rollback.report.outcome,
        Outcome::Succeeded,
        "{}",
        rollback.report.message
    );
    assert!(
        rollback.report.message.contains("served before"),
        "{}",
        rollback.report.message
    );
    assert_eq!(
        cv.service().await?.task_definition(),
        Some(cv.initial_revision.as_str())
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_breaker_rollback_restores_the_completed_revision() -> anyhow::Result<()> {
    let cv = cv_matcher().await?;
    cv.put_image(cv::REPOSITORY, "v1.1.0").await?;
    cv.put_image(cv::REPOSITORY, "crashloop-1").await?;
    let good = cv.deploy(&cv.project, "v1.1.0", &cv::sha('b')).await;
    assert_eq!(
        good.report.outcome,
        Outcome::Succeeded,
        "{}",
        good.report.message
    );
    let good_revision = good.record()?.revision.clone().context("no revision")?;

    let bad = cv.deploy(&cv.project, "crashloop-1", &cv::sha('c')).await;

    assert_eq!(
        bad.report.outcome,
        Outcome::FailedRestored,
        "{}",
        bad.report.message
    );
    assert_eq!(
        bad.record()?.previous_revision.as_ref(),
        Some(&good_revision)
    );
    // The failure says why the tasks stopped (issue 17): the stopped reason and the
    // container's exit code, in the report and the record alike.
    for told in [
        bad.report.message.clone(),
        bad.record()?.reason.clone().unwrap_or_default(),
    ] {
        assert!(
            told.contains("Essential container in task exited")
                && told.contains("exit code 1")
                && told.contains("fatal error"),
            "{told}"
        );
    }
    tugboat_tests::cv_matcher::eventually(Duration::from_secs(10), || async {
        let service = cv.service().await?;
        Ok(service.task_definition() == Some(good_revision.id.as_str()))
    })
    .await?;
    Ok(())
}
