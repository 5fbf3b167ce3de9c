//! Task definition revisions: cleanup that spares what a service uses, and a
//! registration that keeps fields tugboat does not model.

use anyhow::Context;
use aws_adapters::EcsDeployer;
use aws_sdk_ecs::types::{CpuArchitecture, TaskDefinitionStatus};
use pipeline_core::task_definition::{RenderedTaskDefinition, ResourceTag};
use pipeline_core::{Deployer, ServiceReader};
use tugboat_tests::aws::AwsFixture;
use tugboat_tests::cv_matcher::{self as cv, CvMatcher};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revision_cleanup_leaves_in_use_revisions_alone() -> anyhow::Result<()> {
    let cv = CvMatcher::setup(AwsFixture::start().await?).await?;
    // Revisions 2..=5 registered (3 by hand, the others by tugboat, 4 protected: an
    // environment may roll back to it); the service still runs revision 1.
    let mut newer = Vec::new();
    for n in 2..=5 {
        let tags: &[(&str, &str)] = if n == 3 {
            &[]
        } else {
            &[("tugboat:app", "cv-matcher")]
        };
        newer.push(
            cv.register_tagged(&cv.initial_image.reference(), tags)
                .await?,
        );
    }
    let protected = [pipeline_core::Revision::new(
        newer[2].clone(),
        "cv-matcher:4",
    )];
    let labels: Vec<&str> = newer.iter().map(|arn| cv::label(arn)).collect();
    assert_eq!(
        labels,
        [
            "cv-matcher:2",
            "cv-matcher:3",
            "cv-matcher:4",
            "cv-matcher:5"
        ]
    );

    let deployer = EcsDeployer::new(cv.aws.clients.ecs.clone());
    let removed = deployer
        .prune_revisions(&cv.target, "cv-matcher", 1, &protected)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    let mut removed: Vec<String> = removed.iter().map(|r| r.label.clone()).collect();
    removed.sort();
    assert_eq!(
        removed,
        ["cv-matcher:2"],
        "3 is not tugboat's, 4 is protected, 5 is the newest, 1 is in use"
    );
    for (arn, expected) in [
        (&cv.initial_revision, TaskDefinitionStatus::Active),
        (&newer[0], TaskDefinitionStatus::Inactive),
        (&newer[1], TaskDefinitionStatus::Active),
        (&newer[2], TaskDefinitionStatus::Active),
        (&newer[3], TaskDefinitionStatus::Active),
    ] {
        let described = cv
            .aws
            .clients
            .ecs
            .describe_task_definition()
            .task_definition(arn)
            .send()
            .await?;
        let status = described
            .task_definition()
            .and_then(|t| t.status())
            .cloned();
        assert_eq!(status, Some(expected), "{}", cv::label(arn));
    }
    let mut active: Vec<String> = cv
        .active_revisions()
        .await?
        .iter()
        .map(|arn| cv::label(arn).to_string())
        .collect();
    active.sort();
    assert_eq!(
        active,
        [
            "cv-matcher:1",
            "cv-matcher:3",
            "cv-matcher:4",
            "cv-matcher:5"
        ]
    );
    assert_eq!(
        cv.service().await?.task_definition(),
        Some(cv.initial_revision.as_str())
    );

    // Once 4 is no longer needed, it goes; 3 stays, it is not tugboat's.
    let again = deployer
        .prune_revisions(&cv.target, "cv-matcher", 1, &[])
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let again: Vec<&str> = again.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(again, ["cv-matcher:4"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_keeps_fields_tugboat_does_not_model() -> anyhow::Result<()> {
    let cv = CvMatcher::setup(AwsFixture::start().await?).await?;
    let mut definition = cv.project.task_definition.clone();
    definition.extra.insert(
        "runtimePlatform".into(),
        serde_json::json!({"cpuArchitecture": "ARM64", "operatingSystemFamily": "LINUX"}),
    );
    definition.extra.insert(
        "ephemeralStorage".into(),
        serde_json::json!({"sizeInGiB": 30}),
    );
    for container in &mut definition.container_definitions {
        container.image = cv.initial_image.reference();
    }
    let rendered = RenderedTaskDefinition {
        definition,
        tags: vec![ResourceTag {
            key: "tugboat:app".into(),
            value: "cv-matcher".into(),
        }],
    };
    let deployer = EcsDeployer::new(cv.aws.clients.ecs.clone());

    let revision = deployer
        .register(&cv.target, &rendered)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    assert_eq!(revision.label, "cv-matcher:2");
    let described = cv
        .aws
        .clients
        .ecs
        .describe_task_definition()
        .task_definition(&revision.id)
        .send()
        .await?;
    let td = described.task_definition().context("no task definition")?;
    let platform = td
        .runtime_platform()
        .context("runtimePlatform was dropped")?;
    assert_eq!(platform.cpu_architecture(), Some(&CpuArchitecture::Arm64));
    assert_eq!(
        td.ephemeral_storage().map(|e| e.size_in_gib()),
        Some(30),
        "ephemeralStorage was dropped"
    );
    // The port mapping and log configuration of the file, which tugboat passes through.
    let container = td.container_definitions().first().context("no container")?;
    assert_eq!(
        container
            .port_mappings()
            .first()
            .and_then(|p| p.container_port()),
        Some(8000)
    );
    assert_eq!(
        container
            .log_configuration()
            .map(|l| l.log_driver().as_str()),
        Some("awslogs")
    );

    // And tugboat reads them back unchanged.
    let read_back = deployer
        .registered_definition(&revision)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(
        read_back.extra.get("runtimePlatform"),
        rendered.definition.extra.get("runtimePlatform")
    );
    assert_eq!(
        read_back.extra.get("ephemeralStorage"),
        rendered.definition.extra.get("ephemeralStorage")
    );
    Ok(())
}
