//! The security-scan gate against a scripted registry: a scan not registered yet (right
//! after a push with scan on push) or still running is waited for; one that never starts
//! is refused after `scan.wait_seconds` with how to start one; a scan the registry could
//! not do is refused at once with the registry's own help. (A "never" is a script longer
//! than the wait: 1000 answers at a 0.05 s poll.)

use crate::harness::{harness, Calls, World};
use pipeline_core::{
    Finding, ImageReference, Outcome, RecordOutcome, ReleaseSource, ScanReport, Severity,
};
use std::time::{Duration, Instant};

const HOW_TO_START: &str = "start one with `aws ecr start-image-scan --repository-name cv_matcher --image-id imageDigest=sha256:...`, or turn on scan on push";

fn not_started() -> ScanReport {
    ScanReport::NotStarted {
        how_to_start: HOW_TO_START.into(),
    }
}

fn finding(severity: Severity) -> Finding {
    Finding {
        name: "CVE-2026-0001".into(),
        severity,
        package: Some("openssl 3.0.1".into()),
    }
}

fn world(reports: Vec<ScanReport>, findings: Vec<Finding>, wait: u64) -> World {
    World {
        source: ReleaseSource::Image(ImageReference::Tag("v1.2.0".into())),
        scan_reports: reports,
        scan_findings: findings,
        scan_wait_seconds: Some(wait),
        ..World::default()
    }
}

fn refused_calls() -> Calls {
    Calls {
        resolve: 1,
        ..Calls::default()
    }
}

fn released_calls() -> Calls {
    Calls {
        resolve: 1,
        register: 1,
        update: 1,
        verify: 1,
        ..Calls::default()
    }
}

#[tokio::test]
async fn a_scan_not_registered_yet_then_running_is_waited_for_and_its_findings_gate() {
    let reports = vec![
        not_started(),
        not_started(),
        ScanReport::InProgress,
        ScanReport::InProgress,
    ];
    let harness = harness(
        &world(reports, vec![finding(Severity::Critical)], 10),
        refused_calls(),
    );
    let report = harness.deploy().await;
    assert_eq!(report.outcome, Outcome::BadInput, "{}", report.message);
    assert!(
        report
            .message
            .contains("CVE-2026-0001 (Critical, openssl 3.0.1)"),
        "{}",
        report.message
    );
    assert!(
        report.message.contains("fix the findings"),
        "{}",
        report.message
    );
    assert!(harness.registered().is_empty(), "nothing registered");
    let record = harness.records().pop().expect("a record");
    assert_eq!(record.outcome, RecordOutcome::Refused);
}

#[tokio::test]
async fn a_scan_that_starts_late_with_low_findings_passes() {
    let reports = vec![not_started(), not_started(), not_started()];
    let harness = harness(
        &world(reports, vec![finding(Severity::Low)], 10),
        released_calls(),
    );
    let report = harness.deploy().await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.message);
}

#[tokio::test]
async fn a_scan_that_never_starts_is_refused_after_the_wait_with_how_to_start_one() {
    let harness = harness(
        &world(vec![not_started(); 1000], Vec::new(), 1),
        refused_calls(),
    );
    let started = Instant::now();
    let report = harness.deploy().await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "it waited scan.wait_seconds"
    );
    assert_eq!(report.outcome, Outcome::BadInput, "{}", report.message);
    for text in [
        "there is no security scan of",
        "none started within 1s",
        "aws ecr start-image-scan",
        "scan on push",
    ] {
        assert!(report.message.contains(text), "{text}: {}", report.message);
    }
    assert!(
        !report.message.contains("fix the findings"),
        "{}",
        report.message
    );
    assert!(harness.registered().is_empty(), "nothing registered");
}

#[tokio::test]
async fn a_scan_still_running_after_the_wait_is_refused() {
    let harness = harness(
        &world(vec![ScanReport::InProgress; 1000], Vec::new(), 1),
        refused_calls(),
    );
    let report = harness.deploy().await;
    assert_eq!(report.outcome, Outcome::BadInput, "{}", report.message);
    assert!(
        report.message.contains("did not finish within 1s"),
        "{}",
        report.message
    );
    assert!(
        report.message.contains("scan.wait_seconds"),
        "{}",
        report.message
    );
}

#[tokio::test]
async fn a_failed_or_unsupported_scan_is_refused_at_once_with_the_registry_help() {
    let unsupported = ScanReport::Unavailable {
        reason: "the scan is UNSUPPORTED_IMAGE: The operating system and/or package manager are not supported.".into(),
        help: "build on a base image basic scanning supports".into(),
    };
    let harness = harness(&world(vec![unsupported], Vec::new(), 60), refused_calls());
    let started = Instant::now();
    let report = harness.deploy().await;
    assert!(started.elapsed() < Duration::from_secs(30), "no waiting");
    assert_eq!(report.outcome, Outcome::BadInput, "{}", report.message);
    for text in ["UNSUPPORTED_IMAGE", "build on a base image"] {
        assert!(report.message.contains(text), "{text}: {}", report.message);
    }
    assert!(
        !report.message.contains("fix the findings"),
        "{}",
        report.message
    );
}
