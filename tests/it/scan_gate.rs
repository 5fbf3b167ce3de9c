//! The security-scan gate against moto's ECR, with findings seeded through moto's API:
//! a critical finding refuses the image before any change, an override deploys it and
//! records who, and a scan still running is waited for. With the emulator's scan delay
//! (`POST /tugboat-moto/scan-delay`), ECR answers ScanNotFoundException after the push
//! as scan on push does until the scan is registered: a scan that appears 3 s after
//! the push is waited for, one that never starts is refused after `scan.wait_seconds`.

use pipeline_core::{
    CancellationToken, DeployRequest, Events, GitInfo, ImageReference, Orchestrator, Outcome,
    ReleaseSource, Severity,
};
use tugboat_tests::aws::AwsFixture;
use tugboat_tests::cv_matcher::{CvMatcher, ENVIRONMENT, REPOSITORY};

fn scan_result(digest: &str, status: &str, severity: &str) -> serde_json::Value {
    serde_json::json!({
        "registryId": "123456789012",
        "repositoryName": REPOSITORY,
        "imageId": {"imageDigest": digest},
        "imageScanStatus": {"status": status, "description": "seeded by the test"},
        "imageScanFindings": {
            "findings": [{
                "name": "CVE-2026-0001",
                "uri": "https://cve.example/CVE-2026-0001",
                "severity": severity,
                "attributes": [
                    {"key": "package_name", "value": "openssl"},
                    {"key": "package_version", "value": "3.0.1"}
                ]
            }],
            "findingSeverityCounts": {severity: 1}
        }
    })
}

/// Puts an image (scanned, as scan on push would) and returns its digest.
async fn seed(cv: &CvMatcher, tag: &str) -> String {
    cv.put_image(REPOSITORY, tag)
        .await
        .expect("put image")
        .digest
}

async fn deploy(
    cv: &CvMatcher,
    tag: &str,
    override_by: Option<&str>,
    wait_seconds: u64,
) -> pipeline_core::DeployReport {
    let mut project = cv.project.clone();
    let env = project
        .config
        .environments
        .get_mut(ENVIRONMENT)
        .expect("production");
    env.scan.block_at = Some(Severity::Critical);
    env.scan.wait_seconds = wait_seconds;
    env.scan.poll_seconds = 0.2;
    env.deploy.poll_interval_seconds = 0.2;
    env.verify.alarms.clear();
    let mut orchestrator = Orchestrator::new(project, cv.stages(), Events::new());
    if let Some(who) = override_by {
        orchestrator = orchestrator.override_scan_gate(who);
    }
    orchestrator
        .deploy(DeployRequest {
            environment: ENVIRONMENT.into(),
            source: ReleaseSource::Image(ImageReference::Tag(tag.into())),
            git: GitInfo {
                sha: "5ca1ab1e".into(),
                git_ref: format!("refs/tags/{tag}"),
                committed_at: None,
            },
            actor: "tugboat-tests".into(),
            cancel: CancellationToken::new(),
        })
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_critical_finding_is_refused_and_an_override_is_recorded() {
    let cv = CvMatcher::setup(AwsFixture::start().await.expect("moto"))
        .await
        .expect("setup");
    let digest = seed(&cv, "v2.0.0").await;
    // Two answers for the image: the refused deploy's, then the overridden one's.
    let critical = scan_result(&digest, "COMPLETE", "CRITICAL");
    cv.aws
        .moto
        .post_json(
            "/moto-api/static/ecr/scan-finding-results",
            &serde_json::json!({"results": [critical.clone(), critical], "region": "us-east-1"}),
        )
        .await
        .expect("seed findings");
    let before = cv.active_revisions().await.expect("revisions");

    let refused = deploy(&cv, "v2.0.0", None, 10).await;
    assert_eq!(refused.outcome, Outcome::BadInput, "{}", refused.message);
    assert!(
        refused
            .message
            .contains("CVE-2026-0001 (Critical, openssl 3.0.1)"),
        "{}",
        refused.message
    );
    assert_eq!(
        cv.active_revisions().await.expect("revisions"),
        before,
        "nothing registered"
    );
    let service = cv.service().await.expect("service");
    assert_eq!(
        service.task_definition(),
        Some(cv.initial_revision.as_str()),
        "service untouched"
    );

    let overridden = deploy(&cv, "v2.0.0", Some("alice (incident 42)"), 10).await;
    assert_eq!(
        overridden.outcome,
        Outcome::Succeeded,
        "{}",
        overridden.message
    );
    let record = overridden.record.expect("record");
    assert_eq!(record.scan_override.as_deref(), Some("alice (incident 42)"));
    let stored = cv
        .stored_record(&record.release_id.0)
        .await
        .expect("stored record");
    assert_eq!(stored.scan_override.as_deref(), Some("alice (incident 42)"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scan_still_running_is_waited_for_then_refused_and_low_findings_pass() {
    let cv = CvMatcher::setup(AwsFixture::start().await.expect("moto"))
        .await
        .expect("setup");
    // moto answers an image's scan with the first seeded result from then on: this
    // scan stays IN_PROGRESS.
    let running = seed(&cv, "v2.1.0").await;
    let stuck = scan_result(&running, "IN_PROGRESS", "LOW");
    let clean = seed(&cv, "v2.2.0").await;
    let low = scan_result(&clean, "COMPLETE", "LOW");
    cv.aws
        .moto
        .post_json(
            "/moto-api/static/ecr/scan-finding-results",
            &serde_json::json!({"results": [stuck, low], "region": "us-east-1"}),
        )
        .await
        .expect("seed findings");
    let before = cv.active_revisions().await.expect("revisions");

    let started = std::time::Instant::now();
    let refused = deploy(&cv, "v2.1.0", None, 1).await;
    assert_eq!(refused.outcome, Outcome::BadInput, "{}", refused.message);
    assert!(
        refused.message.contains("did not finish within 1s"),
        "{}",
        refused.message
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "it waited for the scan"
    );
    assert_eq!(
        cv.active_revisions().await.expect("revisions"),
        before,
        "nothing registered"
    );

    let passed = deploy(&cv, "v2.2.0", None, 10).await;
    assert_eq!(passed.outcome, Outcome::Succeeded, "{}", passed.message);
    assert!(passed.record.expect("record").scan_override.is_none());
}

/// The emulator's ECR has no scan of `digest` until `seconds` after its push (`None`: never).
async fn delay_scan(cv: &CvMatcher, digest: &str, seconds: Option<f64>) {
    cv.aws
        .moto
        .post_json(
            "/tugboat-moto/scan-delay",
            &serde_json::json!({"repositoryName": REPOSITORY, "imageDigest": digest, "seconds": seconds}),
        )
        .await
        .expect("scan delay");
}

#[tokio::test(flavor = "multi_thread")]
async fn findings_that_appear_3s_after_the_push_are_waited_for_and_gate_the_release() {
    let cv = CvMatcher::setup(AwsFixture::start().await.expect("moto"))
        .await
        .expect("setup");
    let pushed = std::time::Instant::now();
    let digest = seed(&cv, "v2.3.0").await;
    delay_scan(&cv, &digest, Some(3.0)).await;
    let critical = scan_result(&digest, "COMPLETE", "CRITICAL");
    cv.aws
        .moto
        .post_json(
            "/moto-api/static/ecr/scan-finding-results",
            &serde_json::json!({"results": [critical], "region": "us-east-1"}),
        )
        .await
        .expect("seed findings");
    let before = cv.active_revisions().await.expect("revisions");

    let started = std::time::Instant::now();
    let refused = deploy(&cv, "v2.3.0", None, 30).await;
    let waited = started.elapsed();
    eprintln!(
        "scan wait: {:.2}s in the deploy, {:.2}s after the push",
        waited.as_secs_f64(),
        pushed.elapsed().as_secs_f64()
    );
    assert_eq!(refused.outcome, Outcome::BadInput, "{}", refused.message);
    assert_eq!(refused.outcome.exit_code(), 2);
    assert!(
        refused
            .message
            .contains("CVE-2026-0001 (Critical, openssl 3.0.1)"),
        "gated by the findings, not by a missing scan: {}",
        refused.message
    );
    assert!(
        pushed.elapsed() >= std::time::Duration::from_secs(3),
        "it waited for the scan to appear"
    );
    assert!(
        waited < std::time::Duration::from_secs(20),
        "it did not wait out scan.wait_seconds: {waited:?}"
    );
    assert_eq!(
        cv.active_revisions().await.expect("revisions"),
        before,
        "nothing registered"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scan_that_never_starts_is_refused_after_the_wait_with_how_to_start_one() {
    let cv = CvMatcher::setup(AwsFixture::start().await.expect("moto"))
        .await
        .expect("setup");
    let digest = seed(&cv, "v2.4.0").await;
    delay_scan(&cv, &digest, None).await;
    let before = cv.active_revisions().await.expect("revisions");

    let started = std::time::Instant::now();
    let refused = deploy(&cv, "v2.4.0", None, 2).await;
    let waited = started.elapsed();
    eprintln!(
        "scan wait: {:.2}s (scan.wait_seconds = 2)",
        waited.as_secs_f64()
    );
    assert_eq!(refused.outcome, Outcome::BadInput, "{}", refused.message);
    assert_eq!(refused.outcome.exit_code(), 2);
    assert!(
        waited >= std::time::Duration::from_secs(2),
        "it waited: {waited:?}"
    );
    for text in [
        "there is no security scan of",
        "none started within 2s",
        &format!("aws ecr start-image-scan --repository-name {REPOSITORY} --image-id imageDigest={digest}"),
        "scanOnPush=true",
    ] {
        assert!(refused.message.contains(text), "{text}: {}", refused.message);
    }
    assert!(
        !refused.message.contains("fix the findings"),
        "{}",
        refused.message
    );
    let record = refused.record.expect("record");
    assert_eq!(record.outcome, pipeline_core::RecordOutcome::Refused);
    assert_eq!(
        cv.active_revisions().await.expect("revisions"),
        before,
        "nothing registered"
    );
}
