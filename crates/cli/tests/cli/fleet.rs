//! A fleet through the `tugboat` binary: `deploy --env production --image TAG
//! --parallel N` on a fleet seeded in moto (tests/support/fleet.rs), each service's lines
//! named, exit 0; with a crash-looping service, exit 1 and every service back.

use crate::{aws_env, tugboat};
use tugboat_tests::aws::AwsFixture;
use tugboat_tests::fleet::{Fleet, FleetSpec};

async fn deploy(fleet: &Fleet, args: &[&str]) -> std::process::Output {
    let mut command = tugboat();
    aws_env(&mut command, &fleet.aws.moto.endpoint);
    command
        .current_dir(&fleet.dir)
        .args(args)
        .output()
        .await
        .expect("run tugboat")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_deploys_through_the_binary_and_one_bad_service_brings_all_back() {
    let mut spec = FleetSpec::new(3, 1);
    spec.crashing = vec!["s01".into()];
    let fleet = Fleet::setup(
        AwsFixture::start_with_env(&[("TUGBOAT_MOTO_ROLLOUT_SECONDS", "0.5")])
            .await
            .expect("moto"),
        &spec,
    )
    .await
    .expect("the fleet");
    fleet.put_image_everywhere("v2").await.expect("image");

    // Only the good ones: exit 0, each service's lines named.
    let good = deploy(
        &fleet,
        &[
            "deploy",
            "--env",
            "production",
            "--image",
            "v2",
            "--parallel",
            "2",
            "--service",
            "s00",
            "--service",
            "e00",
        ],
    )
    .await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&good.stdout),
        String::from_utf8_lossy(&good.stderr)
    );
    eprintln!("{text}");
    assert_eq!(good.status.code(), Some(0), "{text}");
    assert!(text.contains("s00@us-east-1"), "{text}");
    assert!(text.contains("e00@eu-west-1"), "{text}");
    assert!(!text.contains("s01@"), "s01 was not asked for: {text}");

    let mut before = Vec::new();
    for service in &fleet.services {
        before.push(fleet.running_revision(service).await.expect("revision"));
    }
    let released: Vec<bool> = fleet
        .services
        .iter()
        .zip(&before)
        .map(|(service, now)| *now != service.initial_revision)
        .collect();
    let names: Vec<&str> = fleet.services.iter().map(|s| s.name.as_str()).collect();
    let on_release: Vec<&str> = names
        .iter()
        .zip(&released)
        .filter(|(_, r)| **r)
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(on_release, ["s00", "e00"], "{names:?}");

    // All of them, s01 crash-looping: rollback_all, exit 1, all back where they were.
    let all = deploy(
        &fleet,
        &[
            "deploy",
            "--env",
            "production",
            "--image",
            "v2",
            "--parallel",
            "4",
        ],
    )
    .await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&all.stdout),
        String::from_utf8_lossy(&all.stderr)
    );
    eprintln!("{text}");
    assert_eq!(all.status.code(), Some(1), "{text}");
    assert!(text.contains("s01@us-east-1"), "{text}");
    assert!(text.contains("rollback_all"), "{text}");
    assert!(
        text.contains("Essential container in task exited"),
        "{text}"
    );
    for (service, was) in fleet.services.iter().zip(&before) {
        let now = fleet.running_revision(service).await.expect("revision");
        assert_eq!(&now, was, "{} is not back where it was", service.name);
    }
}
