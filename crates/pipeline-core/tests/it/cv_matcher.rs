//! The CV Matcher example end to end, as snapshots: the task definition a staging
//! release registers, the plan for a release, and the events and record of a
//! successful deploy.

use crate::harness::{harness, Calls, World};
use crate::support::{cv_matcher, pinned_image, read_data, revision, FixedClock};
use pipeline_core::{
    Events, GitInfo, ImageReference, MockArtifactStore, MockDeployLocks, MockDeployer,
    MockRegistry, MockReleaseRecords, MockSecretStore, MockServiceReader, Orchestrator, Outcome,
    ReleaseSource, SecretRef, Stages, TaskDefinition,
};
use std::path::Path;
use std::sync::Arc;

/// Durations depend on the machine.
macro_rules! with_durations_filtered {
    ($body:block) => {
        insta::with_settings!({filters => vec![
            (r#""duration_ms": \d+"#, r#""duration_ms": "[duration]""#),
            (r#""millis": \d+"#, r#""millis": "[duration]""#),
        ]}, $body)
    };
}

#[tokio::test]
async fn a_staging_release_registers_the_file_with_the_release_merged_in() {
    let harness = harness(&World::default(), Calls::full_release());
    let report = harness.deploy().await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.message);
    let registered = harness.registered();
    assert_eq!(registered.len(), 1, "one revision registered");
    let rendered = &registered[0];

    let container = rendered
        .definition
        .container("cv-matcher")
        .expect("the cv-matcher container");
    assert_eq!(container.image, pinned_image().reference());
    assert!(
        container.image.contains("/cv_matcher@sha256:"),
        "pinned by digest: {}",
        container.image
    );
    assert!(
        container.secrets.iter().all(|s| s
            .value_from
            .starts_with("arn:aws:ssm:us-east-1:123456789012:parameter/cv-matcher/staging/")),
        "secrets are ARNs: {:?}",
        container.secrets
    );
    insta::assert_json_snapshot!("staging_release_task_definition", rendered);
}

#[tokio::test]
async fn a_successful_deploy_emits_these_events_and_writes_this_record() {
    let harness = harness(&World::default(), Calls::full_release());
    let report = harness.deploy().await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.message);
    let events = harness.events.take();
    let record = report.record.expect("a record");
    with_durations_filtered!({
        insta::assert_json_snapshot!("successful_deploy_events", events);
        insta::assert_json_snapshot!("successful_deploy_record", record);
    });
}

/// Mocks for a plan: they may read, and must not change anything.
fn plan_stages(current: Option<u32>) -> Stages {
    let mut registry = MockRegistry::new();
    registry
        .expect_resolve()
        .withf(|repository, reference| {
            repository == "cv_matcher" && *reference == ImageReference::Tag("v1.2.0".into())
        })
        .returning(|_, _| Ok(pinned_image()));
    registry.expect_push().times(0);

    let mut deployer = MockDeployer::new();
    deployer
        .expect_current_revision()
        .returning(move |_| Ok(current.map(revision)));
    deployer.expect_register().times(0);
    deployer.expect_update_service().times(0);
    deployer.expect_roll_back().times(0);

    let mut service_reader = MockServiceReader::new();
    service_reader
        .expect_status()
        .returning(move |_| Ok(crate::support::serving_status(current.map(revision), 2)));
    service_reader
        .expect_registered_definition()
        .times(usize::from(current.is_some()))
        .withf(move |asked| Some(asked) == current.map(revision).as_ref())
        .returning(|_| {
            Ok(TaskDefinition::parse(
                Path::new("describe-cv-matcher-6.json"),
                &read_data("describe-cv-matcher-6.json"),
            )
            .expect("the registered revision parses"))
        });

    let mut secrets = MockSecretStore::new();
    secrets.expect_resolve().returning(|spec| {
        Ok(spec
            .names
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|name| SecretRef {
                value_from: format!(
                    "arn:aws:ssm:us-east-1:123456789012:parameter{}{name}",
                    spec.path
                ),
                name,
            })
            .collect())
    });

    Stages {
        test_runner: None,
        image_builder: None,
        registry: Arc::new(registry),
        deployer: Arc::new(deployer),
        service_reader: Arc::new(service_reader),
        verifiers: Vec::new(),
        secrets: Arc::new(secrets),
        // No expectations: a plan that takes the lock or writes a record fails here.
        locks: Arc::new(MockDeployLocks::new()),
        records: Arc::new(MockReleaseRecords::new()),
        artifacts: Arc::new(MockArtifactStore::new()),
        notifiers: Vec::new(),
        diagnostics: None,
        one_off: None,
    }
}

#[tokio::test]
async fn the_plan_for_a_pushed_image_shows_the_steps_and_the_diff() {
    let orchestrator = Orchestrator::new(cv_matcher(), plan_stages(Some(6)), Events::new())
        .with_clock(Arc::new(FixedClock));
    let git = GitInfo {
        sha: "abc1234def5678".into(),
        git_ref: "refs/tags/v1.2.0".into(),
        committed_at: None,
    };
    let source = ReleaseSource::Image(ImageReference::Tag("v1.2.0".into()));
    let plan = orchestrator
        .plan("staging", &source, &git)
        .await
        .expect("a plan");
    assert_eq!(plan.current_revision, Some(revision(6)));
    // The registered revision has an older image and no APP_ENV: both must show.
    assert!(plan.diff.contains("-      \"image\": \"123456789012.dkr.ecr.us-east-1.amazonaws.com/cv_matcher@sha256:9e1c"), "{}", plan.diff);
    assert!(
        plan.diff.contains(&format!(
            "+      \"image\": \"{}\"",
            pinned_image().reference()
        )),
        "{}",
        plan.diff
    );
    assert!(
        plan.diff.contains("+          \"name\": \"APP_ENV\""),
        "{}",
        plan.diff
    );
    insta::assert_snapshot!("plan_for_a_pushed_image", plan.to_string());
}

#[tokio::test]
async fn the_plan_for_a_first_release_built_here_shows_the_whole_definition() {
    let orchestrator = Orchestrator::new(cv_matcher(), plan_stages(None), Events::new())
        .with_clock(Arc::new(FixedClock));
    let git = GitInfo {
        sha: "abc1234def5678".into(),
        git_ref: "refs/tags/v1.2.0".into(),
        committed_at: None,
    };
    let plan = orchestrator
        .plan("production", &ReleaseSource::Build, &git)
        .await
        .expect("a plan");
    assert_eq!(plan.current_revision, None);
    assert!(plan
        .to_string()
        .contains("nothing to roll back to (first release)"));
    insta::assert_snapshot!("plan_for_a_first_release", plan.to_string());
}

#[tokio::test]
async fn the_plan_lists_the_one_off_tasks_before_the_update() {
    let mut project = cv_matcher();
    let env = project
        .config
        .environments
        .get_mut("staging")
        .expect("staging");
    env.before_deploy = vec![pipeline_core::OneOffTaskConfig {
        name: Some("migrate".into()),
        container: None,
        command: vec![
            "python".into(),
            "-m".into(),
            "alembic".into(),
            "upgrade".into(),
            "head".into(),
        ],
        timeout_seconds: 900,
    }];
    let orchestrator = Orchestrator::new(project, plan_stages(Some(6)), Events::new())
        .with_clock(Arc::new(FixedClock));
    let git = GitInfo {
        sha: "abc1234def5678".into(),
        git_ref: "refs/tags/v1.2.0".into(),
        committed_at: None,
    };
    let source = ReleaseSource::Image(ImageReference::Tag("v1.2.0".into()));
    let plan = orchestrator
        .plan("staging", &source, &git)
        .await
        .expect("a plan");
    let position = |text: &str| {
        plan.steps
            .iter()
            .position(|step| step.contains(text))
            .unwrap_or_else(|| panic!("no step with {text:?}: {:#?}", plan.steps))
    };
    let migrate = position("one-off task migrate");
    assert!(
        plan.steps[migrate].contains("`python -m alembic upgrade head` in container cv-matcher")
    );
    assert!(plan.steps[migrate].contains("timeout 900s"));
    assert!(position("register:") < migrate && migrate < position("update:"));
}
