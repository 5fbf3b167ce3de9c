//! Fleets on the emulator (issue 18): 20 services in one region's cluster and 5 in a
//! second region's, released with one image, 8 at a time, through the one wiring with
//! one `DescribeServices` poller per region; a crash-looping service under each
//! failure policy.

use pipeline_core::{Outcome, ServiceState};
use tugboat_tests::aws::AwsFixture;
use tugboat_tests::fleet::{self, Fleet, FleetSpec};

async fn seeded(spec: FleetSpec) -> anyhow::Result<Fleet> {
    let aws = AwsFixture::start_with_env(&[("TUGBOAT_MOTO_ROLLOUT_SECONDS", "0.6")]).await?;
    Fleet::setup(aws, &spec).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_25_in_two_regions_is_released_8_at_a_time() -> anyhow::Result<()> {
    let fleet = seeded(FleetSpec::new(20, 5)).await?;
    fleet.put_image_everywhere("v2").await?;
    fleet.aws.calls.reset();
    let run = fleet.deploy("v2", 8, &[]).await;
    assert_eq!(
        run.report.outcome,
        Outcome::Succeeded,
        "{}",
        run.report.message
    );
    let states = fleet::states(&run.report);
    assert_eq!(states.len(), 25, "{states:?}");
    assert!(
        states.values().all(|s| *s == ServiceState::Released),
        "{states:?}"
    );
    for service in &fleet.services {
        let now = fleet.running_revision(service).await?;
        assert_ne!(
            now, service.initial_revision,
            "{} was not released",
            service.name
        );
        assert!(now.contains(&format!("shop-{}:", service.name)), "{now}");
    }
    // Each service's events carry its name (web@region in a fleet with regions).
    assert!(run
        .events
        .iter()
        .any(|(service, _)| service.as_deref() == Some("e04@eu-west-1")));
    // Never more than 10 services per call (the emulator refuses more), and the poller
    // batches: the calls that looked at several services at once exist.
    let calls: Vec<serde_json::Value> = fleet
        .aws
        .moto
        .describe_services_calls()
        .await?
        .into_iter()
        .filter(|c| c["op"].as_str() == Some("DescribeServices"))
        .collect();
    assert!(calls.iter().all(|c| c["services"].as_u64() <= Some(10)));
    assert!(
        calls.iter().any(|c| c["services"].as_u64() >= Some(5)),
        "no batched DescribeServices: {calls:?}"
    );
    // The tag is pinned to a digest once, then the digest resolved once per region, not
    // once per service.
    let images = fleet.aws.calls.snapshot().calls_of("ecr.DescribeImages");
    assert_eq!(images, 1 + 2, "DescribeImages for 25 services in 2 regions");
    Ok(())
}

/// The scan gate decides once per region for every service there: with a critical
/// finding seeded in each region's ECR, one DescribeImageScanFindings per region (not one
/// per service: 6 without the sharing), and with rollback_failed (no service stops the
/// others) every service refused with the finding named, nothing registered or changed,
/// and the run is bad input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scan_gate_refuses_a_fleets_image_once_per_region_for_every_service(
) -> anyhow::Result<()> {
    let mut spec = FleetSpec::new(4, 2);
    spec.on_failure = "rollback_failed";
    let mut fleet = seeded(spec).await?;
    let env = fleet
        .project
        .config
        .environments
        .get_mut(fleet::ENVIRONMENT)
        .expect("production");
    env.scan.block_at = Some(pipeline_core::Severity::Critical);
    env.scan.wait_seconds = 5;
    env.scan.poll_seconds = 0.2;
    let digest = fleet.put_image_everywhere("v2").await?;
    for region in ["us-east-1", fleet::SECOND_REGION] {
        // As scan on push would: the emulator then has a scan of the image.
        fleet
            .clients(region)
            .ecr
            .start_image_scan()
            .repository_name(fleet::REPOSITORY)
            .image_id(
                aws_sdk_ecr::types::ImageIdentifier::builder()
                    .image_digest(&digest)
                    .build(),
            )
            .send()
            .await?;
        let critical = serde_json::json!({
            "registryId": "123456789012",
            "repositoryName": fleet::REPOSITORY,
            "imageId": {"imageDigest": digest},
            "imageScanStatus": {"status": "COMPLETE", "description": "seeded by the test"},
            "imageScanFindings": {
                "findings": [{"name": "CVE-2026-0001", "severity": "CRITICAL", "attributes": []}],
                "findingSeverityCounts": {"CRITICAL": 1}
            }
        });
        fleet
            .aws
            .moto
            .post_json(
                "/moto-api/static/ecr/scan-finding-results",
                &serde_json::json!({"results": [critical], "region": region}),
            )
            .await?;
    }
    fleet.aws.calls.reset();
    let run = fleet.deploy("v2", 6, &[]).await;
    assert_eq!(
        run.report.outcome,
        Outcome::BadInput,
        "{}",
        run.report.message
    );
    let states = fleet::states(&run.report);
    assert_eq!(states.len(), 6, "{states:?}");
    assert!(
        states.values().all(|s| *s == ServiceState::Unchanged),
        "{states:?}\n{}",
        run.report.message
    );
    assert!(
        run.report.message.contains("CVE-2026-0001"),
        "{}",
        run.report.message
    );
    for service in &fleet.services {
        assert_eq!(
            fleet.running_revision(service).await?,
            service.initial_revision,
            "{} changed",
            service.name
        );
    }
    let calls = fleet.aws.calls.snapshot();
    assert_eq!(
        calls.calls_of("ecr.DescribeImageScanFindings"),
        2,
        "{calls}"
    );
    assert_eq!(calls.calls_of("ecs.RegisterTaskDefinition"), 0, "{calls}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_crash_looping_service_with_rollback_all_puts_every_service_back() -> anyhow::Result<()>
{
    let mut spec = FleetSpec::new(20, 5);
    spec.crashing = vec!["s13".into()];
    let fleet = seeded(spec).await?;
    fleet.put_image_everywhere("v2").await?;
    let run = fleet.deploy("v2", 8, &[]).await;
    println!("{}", run.report.message);
    assert_eq!(
        run.report.outcome,
        Outcome::FailedRestored,
        "{}",
        run.report.message
    );
    let states = fleet::states(&run.report);
    assert_eq!(
        states.get("s13"),
        Some(&ServiceState::RolledBack),
        "{states:?}"
    );
    assert!(
        states
            .values()
            .all(|s| matches!(s, ServiceState::RolledBack | ServiceState::Skipped)),
        "{states:?}"
    );
    for service in &fleet.services {
        assert_eq!(
            fleet.running_revision(service).await?,
            service.initial_revision,
            "{} is not back on its previous revision",
            service.name
        );
    }
    assert!(run.report.message.contains("s13"), "{}", run.report.message);
    assert!(
        run.report.message.contains("rollback_all"),
        "{}",
        run.report.message
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_crash_looping_service_with_rollback_failed_puts_only_it_back() -> anyhow::Result<()> {
    let mut spec = FleetSpec::new(20, 5);
    spec.crashing = vec!["s13".into()];
    spec.on_failure = "rollback_failed";
    let fleet = seeded(spec).await?;
    fleet.put_image_everywhere("v2").await?;
    let run = fleet.deploy("v2", 8, &[]).await;
    assert_eq!(
        run.report.outcome,
        Outcome::FailedRestored,
        "{}",
        run.report.message
    );
    let states = fleet::states(&run.report);
    for service in &fleet.services {
        let now = fleet.running_revision(service).await?;
        if service.name == "s13" {
            assert_eq!(states.get("s13"), Some(&ServiceState::RolledBack));
            assert_eq!(now, service.initial_revision, "the failed one is back");
        } else {
            assert_eq!(
                states.get(&service.name),
                Some(&ServiceState::Released),
                "{states:?}"
            );
            assert_ne!(
                now, service.initial_revision,
                "{} stays on the release",
                service.name
            );
        }
    }
    let on_new = run
        .report
        .message
        .lines()
        .next()
        .and_then(|head| head.split("on the new release: ").nth(1))
        .unwrap_or_default()
        .to_string();
    assert_eq!(on_new.split(", ").count(), 24, "{}", run.report.message);
    assert!(
        on_new.contains("e04@eu-west-1") && !on_new.contains("s13"),
        "{on_new}"
    );
    Ok(())
}

/// One poller per region: while 25 services roll out together, `DescribeServices` is
/// called at most ceil(services / 10) times per cluster per poll interval (here 2 + 1),
/// where services polling on their own would call it 25 times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_services_is_one_call_per_10_services_per_poll_interval() -> anyhow::Result<()> {
    let aws = AwsFixture::start_with_env(&[("TUGBOAT_MOTO_ROLLOUT_SECONDS", "3")]).await?;
    let mut spec = FleetSpec::new(20, 5);
    spec.poll_seconds = 0.5;
    let fleet = Fleet::setup(aws, &spec).await?;
    fleet.put_image_everywhere("v2").await?;
    let run = fleet.deploy("v2", 25, &[]).await;
    assert_eq!(
        run.report.outcome,
        Outcome::Succeeded,
        "{}",
        run.report.message
    );
    let polling = fleet.polling().await?;
    let interval = std::time::Duration::from_secs_f64(spec.poll_seconds);
    let per_round = 2 + 1;
    let rounds = polling.rounds(interval);
    println!(
        "{polling:?}: {:.1} calls per poll interval",
        polling.per_interval(interval)
    );
    assert!(polling.window >= interval, "{polling:?}");
    assert!(
        polling.calls <= per_round * rounds,
        "{} DescribeServices in {:?} ({rounds} poll intervals): more than {per_round} per interval",
        polling.calls,
        polling.window
    );
    assert!(polling.largest_call <= 10, "{polling:?}");
    // As ECS, the emulator refuses more than 10 services in one call.
    let eleven: Vec<String> = (0..11)
        .map(|i| fleet::service_name(&format!("s{i:02}")))
        .collect();
    let refused = fleet
        .aws
        .clients
        .ecs
        .describe_services()
        .cluster(fleet::cluster("us-east-1"))
        .set_services(Some(eleven))
        .send()
        .await
        .expect_err("11 services in one DescribeServices");
    assert_eq!(
        aws_sdk_ecs::error::ProvideErrorMetadata::code(&refused),
        Some("InvalidParameterException"),
        "{refused:?}"
    );
    Ok(())
}

/// `rollback_all` whose rollback of a released service fails (ECS answers 500 to every
/// UpdateService from then on): the run is exit 3 and names that service NOT RESTORED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_rollback_that_fails_is_exit_3_naming_the_service() -> anyhow::Result<()> {
    use tugboat_tests::fault_proxy::{FaultConfig, FaultKind};
    let (aws, proxy) = AwsFixture::start_with_faults(
        &[
            ("TUGBOAT_MOTO_ROLLOUT_SECONDS", "0.6"),
            // s01 fails slowly: s00 is released well before.
            ("TUGBOAT_MOTO_FAIL_SECONDS", "1.0"),
        ],
        FaultConfig::new(1, 0.0),
    )
    .await?;
    let mut spec = FleetSpec::new(2, 0);
    spec.crashing = vec!["s01".into()];
    let fleet = Fleet::setup(aws, &spec).await?;
    fleet.put_image_everywhere("v2").await?;
    let released = async {
        let s00 = &fleet.services[0];
        loop {
            let running = fleet.running_revision(s00).await?;
            let transitions = fleet.aws.moto.transitions().await?;
            let completed = transitions.iter().any(|t| {
                t["state"] == "COMPLETED"
                    && t["service"]
                        .as_str()
                        .is_some_and(|s| s.ends_with("shop-s00"))
            });
            if running != s00.initial_revision && completed {
                // From now on ECS fails every UpdateService: the fleet's rollback of s00.
                proxy.script("ecs.UpdateService", FaultKind::InternalError, 1000);
                return anyhow::Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    let (run, released) = tokio::join!(fleet.deploy("v2", 2, &[]), released);
    released?;
    println!("{}", run.report.message);
    assert_eq!(
        run.report.outcome,
        Outcome::FailedNotRestored,
        "{}",
        run.report.message
    );
    assert_eq!(run.report.outcome.exit_code(), 3);
    let states = fleet::states(&run.report);
    assert_eq!(
        states.get("s00"),
        Some(&ServiceState::NotRestored),
        "{states:?}"
    );
    assert!(
        run.report.message.contains("NOT RESTORED: s00"),
        "{}",
        run.report.message
    );
    // Still on the release, as the message says.
    assert_ne!(
        fleet.running_revision(&fleet.services[0]).await?,
        fleet.services[0].initial_revision
    );
    Ok(())
}

/// ECS throttles `DescribeServices`: the shared poller backs off (one call per 10
/// services per round still, never one per service) and every service still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_poller_slows_down_and_the_fleet_still_completes() -> anyhow::Result<()> {
    use tugboat_tests::fault_proxy::{FaultConfig, FaultKind};
    let (aws, proxy) = AwsFixture::start_with_faults(
        &[("TUGBOAT_MOTO_ROLLOUT_SECONDS", "1")],
        FaultConfig::new(1, 0.0),
    )
    .await?;
    let mut spec = FleetSpec::new(20, 0);
    spec.poll_seconds = 0.25;
    let fleet = Fleet::setup(aws, &spec).await?;
    fleet.put_image_everywhere("v2").await?;
    // Once every service is rolling out, ECS throttles the poller's calls.
    let rolling = async {
        loop {
            let mut changed = 0;
            for service in &fleet.services {
                if fleet.running_revision(service).await? != service.initial_revision {
                    changed += 1;
                }
            }
            if changed == fleet.services.len() {
                proxy.script("ecs.DescribeServices", FaultKind::Throttle, 12);
                return anyhow::Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    let (run, rolling) = tokio::join!(fleet.deploy("v2", 20, &[]), rolling);
    rolling?;
    assert_eq!(
        run.report.outcome,
        Outcome::Succeeded,
        "{}",
        run.report.message
    );
    let counts = proxy.counts();
    let throttled = counts
        .by_operation
        .iter()
        .filter(|((kind, op), _)| *kind == FaultKind::Throttle && op.ends_with("DescribeServices"))
        .map(|(_, n)| *n)
        .sum::<usize>();
    assert_eq!(throttled, 12, "{counts}");
    // The poller's calls name many services; the test's own looks (and each service's
    // look before its release) name one.
    let log = fleet.aws.moto.describe_services_calls().await?;
    let batched: Vec<&serde_json::Value> = log
        .iter()
        .filter(|c| c["op"] == "DescribeServices" && c["services"].as_u64() > Some(1))
        .collect();
    let at = |c: &serde_json::Value| c["at"].as_f64().unwrap_or_default();
    let span = batched.last().map(|c| at(c)).unwrap_or_default()
        - batched.first().map(|c| at(c)).unwrap_or_default();
    let rounds = span / spec.poll_seconds + 1.0;
    println!(
        "{} batched DescribeServices over {span:.2} s in {:?}; {counts}",
        batched.len(),
        run.wall
    );
    assert!(
        batched.iter().all(|c| c["services"].as_u64() <= Some(10)),
        "{batched:?}"
    );
    assert!(
        (batched.len() as f64) <= 2.0 * rounds,
        "{} batched DescribeServices over {span:.2} s: more than 2 per round ({rounds:.1} rounds)",
        batched.len()
    );
    Ok(())
}
