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

/// What a terminal shows, without its control sequences (`ESC [ … letter`, `ESC ] … BEL`).
fn screen_text(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                Some('[') => {
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
                Some(']') => {
                    for c in chars.by_ref() {
                        if c == '\u{7}' {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\r' => out.push('\n'),
            c => out.push(c),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_terminal_a_fleet_is_a_live_table_with_a_line_per_service() {
    let fleet = Fleet::setup(
        AwsFixture::start_with_env(&[("TUGBOAT_MOTO_ROLLOUT_SECONDS", "0.5")])
            .await
            .expect("moto"),
        &FleetSpec::new(3, 0),
    )
    .await
    .expect("the fleet");
    fleet.put_image_everywhere("v2").await.expect("image");
    // `script` gives tugboat a terminal (a pty) for stdout and stderr.
    let line = format!(
        "{} deploy --env production --image v2 --parallel 3",
        env!("CARGO_BIN_EXE_tugboat")
    );
    let mut command = tokio::process::Command::new("script");
    command.args(["-qfec", &line, "/dev/null"]);
    aws_env(&mut command, &fleet.aws.moto.endpoint);
    let output = command
        .current_dir(&fleet.dir)
        .env_remove("NO_COLOR")
        .env_remove("GITHUB_REF")
        .env("TERM", "xterm-256color")
        .env("COLUMNS", "120")
        .output()
        .await
        .expect("run tugboat under script");
    let screen = screen_text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{screen}");
    for service in ["s00", "s01", "s02"] {
        let label = format!("{service}@us-east-1");
        // The table's last drawing of its line: label, stage, tasks, elapsed, outcome
        // (the terminal's cursor moves, not newlines, separate the lines).
        let rows: Vec<String> = screen
            .match_indices(&format!("{label}  "))
            .map(|(at, _)| {
                let row: String = screen[at..].chars().take(60).collect();
                row.lines().next().unwrap_or_default().to_string()
            })
            .filter(|row| row.contains('/') || row.contains(" - "))
            .collect();
        let row = rows
            .last()
            .unwrap_or_else(|| panic!("no table line for {label}:\n{screen}"));
        eprintln!("{row}");
        assert!(
            row.contains("released") && row.contains("2/2"),
            "{label}'s line does not say it is released with its tasks: {row:?}\n{screen}"
        );
        // Its end is printed above the table too.
        assert!(screen.contains(&format!("[{label}] released:")), "{screen}");
    }
    // A terminal gets no CI lines (timestamped).
    assert!(
        !screen
            .lines()
            .any(|l| l.starts_with("20") && l.contains("Z [s0")),
        "{screen}"
    );
}

/// A CI runner's SIGTERM in the middle of a fleet's rollouts: every service that changed
/// is rolled back at once, the fleet says which, and the run exits 1.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_fleet_rolls_every_changed_service_back_and_exits_1() {
    let fleet = Fleet::setup(
        AwsFixture::start_with_env(&[("TUGBOAT_MOTO_ROLLOUT_SECONDS", "0.5")])
            .await
            .expect("moto"),
        &FleetSpec::new(3, 0),
    )
    .await
    .expect("the fleet");
    // An image whose rollout never finishes: the services stay mid-rollout.
    fleet.put_image_everywhere("hang-v2").await.expect("image");
    let mut command = tugboat();
    aws_env(&mut command, &fleet.aws.moto.endpoint);
    let child = command
        .current_dir(&fleet.dir)
        .args([
            "deploy",
            "--env",
            "production",
            "--image",
            "hang-v2",
            "--parallel",
            "3",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start tugboat");
    let pid = child.id().expect("a pid");
    let started = std::time::Instant::now();
    loop {
        let mut changed = 0;
        for service in &fleet.services {
            if fleet.running_revision(service).await.expect("revision") != service.initial_revision
            {
                changed += 1;
            }
        }
        if changed == fleet.services.len() {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the fleet never changed every service"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let output = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("tugboat did not exit after SIGTERM")
        .expect("wait for tugboat");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("SIGTERM: cancelling"), "{text}");
    for service in &fleet.services {
        assert_eq!(
            fleet.running_revision(service).await.expect("revision"),
            service.initial_revision,
            "{} is not back:\n{text}",
            service.name
        );
        assert!(
            text.contains(&format!("{}@us-east-1  rolled back", service.name)),
            "{text}"
        );
    }
}

/// A command that acts on one service (rollback, logs, unlock, …) takes a fleet's
/// service by `--service NAME`: without it, it refuses with the list and changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn one_service_of_a_fleet_is_rolled_back_by_name() {
    let fleet = Fleet::setup(
        AwsFixture::start_with_env(&[("TUGBOAT_MOTO_ROLLOUT_SECONDS", "0.3")])
            .await
            .expect("moto"),
        &FleetSpec::new(2, 1),
    )
    .await
    .expect("the fleet");
    fleet.put_image_everywhere("v2").await.expect("image");
    let released = deploy(&fleet, &["deploy", "--env", "production", "--image", "v2"]).await;
    assert_eq!(
        released.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&released.stderr)
    );
    let mut on_release = Vec::new();
    for service in &fleet.services {
        on_release.push(fleet.running_revision(service).await.expect("revision"));
    }

    let unnamed = deploy(&fleet, &["rollback", "--env", "production"]).await;
    let stderr = String::from_utf8_lossy(&unnamed.stderr);
    assert_eq!(unnamed.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("pass --service NAME, one of: e00@eu-west-1, s00@us-east-1, s01@us-east-1"),
        "{stderr}"
    );
    let unknown = deploy(&fleet, &["logs", "--env", "production", "--service", "web"]).await;
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert_eq!(unknown.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no such service"), "{stderr}");
    for (service, was) in fleet.services.iter().zip(&on_release) {
        assert_eq!(
            &fleet.running_revision(service).await.expect("revision"),
            was
        );
    }

    let one = deploy(
        &fleet,
        &["rollback", "--env", "production", "--service", "s01"],
    )
    .await;
    let stderr = String::from_utf8_lossy(&one.stderr);
    assert_eq!(one.status.code(), Some(0), "{stderr}");
    for (service, was) in fleet.services.iter().zip(&on_release) {
        let now = fleet.running_revision(service).await.expect("revision");
        if service.name == "s01" {
            assert_eq!(now, service.initial_revision, "s01 is not rolled back");
        } else {
            assert_eq!(&now, was, "{} moved", service.name);
        }
    }
    // Its history says so, and only its own.
    let history = deploy(
        &fleet,
        &[
            "history",
            "--env",
            "production",
            "--service",
            "s01",
            "--output",
            "json",
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&history.stdout);
    assert_eq!(history.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("production.s01.us-east-1"), "{stdout}");
    assert!(!stdout.contains("production.s00"), "{stdout}");
}

/// `plan`, `diff` and `render` of a fleet show every service (× region) under its name,
/// or the ones `--service` names (`s00`, `e00@eu-west-1`); one named is the plain plan of
/// one environment; an unknown name is bad input. None of it changes anything.
#[tokio::test(flavor = "multi_thread")]
async fn a_fleets_plan_shows_each_service_under_its_name() {
    let fleet = Fleet::setup(
        AwsFixture::start().await.expect("moto"),
        &FleetSpec::new(2, 1),
    )
    .await
    .expect("the fleet");
    fleet.put_image_everywhere("v2").await.expect("image");
    let plan = &["plan", "--env", "production", "--image", "v2"];

    let all = deploy(&fleet, plan).await;
    let stdout = String::from_utf8_lossy(&all.stdout);
    assert_eq!(
        all.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&all.stderr)
    );
    for label in ["e00@eu-west-1", "s00@us-east-1", "s01@us-east-1"] {
        assert!(stdout.contains(&format!("== {label} ==")), "{stdout}");
    }
    assert!(
        stdout.contains("plan for environment production.s01.us-east-1"),
        "{stdout}"
    );

    let json = deploy(&fleet, &[plan.as_slice(), &["--output", "json"]].concat()).await;
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    let services: Vec<&str> = value["result"]["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| s["service"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        services,
        ["e00@eu-west-1", "s00@us-east-1", "s01@us-east-1"],
        "{value}"
    );
    assert!(value["result"]["services"][0]["task_definition"]["family"]
        .as_str()
        .is_some_and(|family| family == "shop-e00"));

    let some = deploy(
        &fleet,
        &[plan.as_slice(), &["--service", "s01", "--service", "e00"]].concat(),
    )
    .await;
    let stdout = String::from_utf8_lossy(&some.stdout);
    assert_eq!(some.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("== s01@us-east-1 ==") && stdout.contains("== e00@eu-west-1 =="));
    assert!(!stdout.contains("s00@us-east-1"), "{stdout}");

    let one = deploy(&fleet, &[plan.as_slice(), &["--service", "s00"]].concat()).await;
    let stdout = String::from_utf8_lossy(&one.stdout);
    assert_eq!(one.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.starts_with("plan for environment production.s00.us-east-1"),
        "{stdout}"
    );

    let unknown = deploy(&fleet, &["diff", "--env", "production", "--service", "web"]).await;
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert_eq!(unknown.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no such service") && stderr.contains("s01@us-east-1"),
        "{stderr}"
    );

    for service in &fleet.services {
        assert_eq!(
            fleet.running_revision(service).await.expect("revision"),
            service.initial_revision,
            "a plan changed {}",
            service.name
        );
    }
}
