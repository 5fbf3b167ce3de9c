//! What one CV Matcher deploy costs: AWS API calls by operation, and how long after
//! the emulator completed the deployment the orchestrator noticed and returned.
//! The numbers are printed (run with `--nocapture` to see them).

use anyhow::Context;
use pipeline_core::{Outcome, PipelineEvent};
use std::time::{Duration, UNIX_EPOCH};
use tugboat_tests::aws::AwsFixture;
use tugboat_tests::cv_matcher::{self as cv, CvMatcher};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_deploy_calls_and_latency() -> anyhow::Result<()> {
    let cv = CvMatcher::setup(AwsFixture::start().await?).await?;
    cv.put_image(cv::REPOSITORY, "v1.1.0").await?;
    cv.aws.calls.reset();

    let run = cv.deploy(&cv.project, "v1.1.0", &cv::sha('9')).await;
    let counts = cv.aws.calls.snapshot();

    assert_eq!(
        run.report.outcome,
        Outcome::Succeeded,
        "{}",
        run.report.message
    );

    // When did tugboat see our deployment COMPLETED, and when did moto complete it?
    let (noticed_at, deployment) = run
        .events
        .iter()
        .find_map(|(at, event)| match event {
            PipelineEvent::RolloutProgress {
                deployment, state, ..
            } if state == "COMPLETED" => Some((*at, deployment.clone())),
            _ => None,
        })
        .context("no COMPLETED progress event")?;
    let transitions = cv.aws.moto.transitions().await?;
    let completed_at = transitions
        .iter()
        .find(|t| t["deploymentId"] == deployment.as_str() && t["state"] == "COMPLETED")
        .and_then(|t| t["at"].as_f64())
        .with_context(|| {
            format!("moto has no COMPLETED transition of {deployment}: {transitions:?}")
        })?;
    let completed_at = UNIX_EPOCH + Duration::from_secs_f64(completed_at);
    let noticed = noticed_at.duration_since(completed_at)?;
    let returned = run.returned_at.duration_since(completed_at)?;
    let deploy_stage = run
        .record()?
        .stages
        .iter()
        .find(|s| s.stage == pipeline_core::Stage::Deploy)
        .map(|s| s.millis)
        .unwrap_or_default();

    eprintln!(
        "one CV Matcher deploy (poll {}s, moto rollout 1.5s):\n\
         AWS API calls by operation:\n{counts}\n\
         deployment {deployment} COMPLETED in moto -> COMPLETED progress event: {:.0} ms\n\
         deployment COMPLETED in moto -> Orchestrator::deploy returned:       {:.0} ms\n\
         deploy stage: {deploy_stage} ms",
        cv::POLL_SECONDS,
        noticed.as_secs_f64() * 1000.0,
        returned.as_secs_f64() * 1000.0,
    );

    // Noticed within one poll interval plus a request's time, not 15 s later.
    assert!(
        noticed < Duration::from_secs_f64(cv::POLL_SECONDS) + Duration::from_millis(800),
        "noticed {noticed:?} after completion"
    );
    assert!(returned >= noticed);
    assert!(
        returned < Duration::from_secs(3),
        "returned {returned:?} after completion"
    );

    // One registration, one service update, the image resolved once.
    assert_eq!(counts.calls_of("ecs.RegisterTaskDefinition"), 1, "{counts}");
    assert_eq!(counts.calls_of("ecs.UpdateService"), 1, "{counts}");
    assert_eq!(counts.calls_of("ecr.DescribeImages"), 1, "{counts}");
    assert!(counts.calls_of("ecs.DescribeServices") >= 2, "{counts}");
    // Secrets are located, never read.
    let ssm = counts.calls_to("ssm");
    assert!(
        ssm.keys().all(|op| op == "ssm.DescribeParameters"),
        "tugboat called {ssm:?}"
    );
    // Lock taken and given back, record written.
    assert!(counts.calls_of("s3.PutObject") >= 2, "{counts}");
    assert_eq!(counts.calls_of("s3.DeleteObject"), 1, "{counts}");
    Ok(())
}
