//! The `tugboat` binary end to end: against moto (with the ECS rollout patch) for the
//! AWS commands, checking AWS state through the SDK, not through tugboat's output.

// The command tests live in tests/cli/; this file stays the one test binary's root.
#[path = "cli/common.rs"]
mod common;
#[path = "cli/deploy_json.rs"]
mod deploy_json;
#[path = "cli/environments.rs"]
mod environments;
#[path = "cli/fleet.rs"]
mod fleet;
#[path = "cli/infra.rs"]
mod infra;
#[path = "cli/init.rs"]
mod init;
#[path = "cli/local_target.rs"]
mod local_target;
#[path = "cli/logs.rs"]
mod logs;
#[path = "cli/plain_output.rs"]
mod plain_output;
#[path = "cli/read_only.rs"]
mod read_only;
#[path = "cli/report.rs"]
mod report;
#[path = "cli/run_task.rs"]
mod run_task;
#[path = "cli/signals.rs"]
mod signals;
#[path = "cli/test_environment.rs"]
mod test_environment;
#[path = "cli/unlock.rs"]
mod unlock;
#[path = "cli/verify.rs"]
mod verify;

use std::path::{Path, PathBuf};
use std::process::Output;
use tokio::process::Command;
use tugboat_tests::aws::AwsFixture;

fn tugboat() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tugboat"));
    command.env_remove("GITHUB_REF").env("NO_COLOR", "1");
    command
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cv-matcher")
}

fn aws_env(command: &mut Command, endpoint: &str) {
    command
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        // Production watches its (seeded, OK) alarms once instead of for 5 minutes, and
        // checks no URL: nothing serves the app here.
        .env("BAKE_SECONDS", "0")
        .env_remove("APP_URL")
        .env_remove("STAGING_APP_URL")
        .env_remove("SLACK_BOT_TOKEN");
}

async fn seed(endpoint: &str) {
    let python = std::env::var("TUGBOAT_MOTO_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/tugboat-moto-venv/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let support =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/support/moto/seed_cv_matcher.py");
    let status = Command::new(python)
        .arg(support)
        .arg(endpoint)
        .arg(example().join(".aws/task-definition.json"))
        .output()
        .await
        .expect("run the seed script");
    assert!(
        status.status.success(),
        "seed failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
}

async fn run(endpoint: &str, args: &[&str]) -> Output {
    let mut command = tugboat();
    aws_env(&mut command, endpoint);
    command
        .current_dir(example())
        .args(args)
        .output()
        .await
        .expect("run tugboat")
}

async fn service_revision(fixture: &AwsFixture) -> String {
    let output = fixture
        .clients
        .ecs
        .describe_services()
        .cluster("cv-matcher-cluster")
        .services("cv-matcher-service")
        .send()
        .await
        .expect("describe services");
    let service = &output.services()[0];
    service
        .task_definition()
        .unwrap_or_default()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_status_history_rollback_status() {
    let fixture = AwsFixture::start().await.expect("moto");
    let endpoint = fixture.moto.endpoint.clone();
    seed(&endpoint).await;
    assert_eq!(service_revision(&fixture).await, "cv-matcher:1");

    let deployed = run(
        &endpoint,
        &[
            "deploy",
            "--env",
            "production",
            "--image",
            "v1.1.0",
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(
        deployed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&deployed.stderr)
    );
    // The seeded Parameter Store values never reach tugboat's output.
    for stream in [&deployed.stdout, &deployed.stderr] {
        let text = String::from_utf8_lossy(stream);
        assert!(
            !text.contains("prod-database_url-secret")
                && !text.contains("prod-jwt_secret_key-secret"),
            "{text}"
        );
    }
    let events = json_lines(&deployed.stdout);
    let result = &events.last().expect("a result line")["result"];
    assert_eq!(result["outcome"], "succeeded");
    assert!(events
        .iter()
        .any(|e| e["event"] == "rollout_progress" && e["state"] == "COMPLETED"));
    assert!(events
        .iter()
        .all(|e| e.get("ts").is_some() || e.get("result").is_some()));
    assert_eq!(service_revision(&fixture).await, "cv-matcher:2");

    let status = run(
        &endpoint,
        &["status", "--env", "production", "--output", "json"],
    )
    .await;
    assert_eq!(status.status.code(), Some(0));
    let status = &json_lines(&status.stdout)[0]["result"];
    assert_eq!(status["status"]["revision"]["label"], "cv-matcher:2");
    assert_eq!(
        status["release"]["release_id"],
        result["record"]["release_id"]
    );

    let failed = run(
        &endpoint,
        &[
            "deploy",
            "--env",
            "production",
            "--image",
            "crashloop-v1.2.0",
        ],
    )
    .await;
    assert_eq!(
        failed.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&failed.stderr).contains('\u{1b}'),
        "no escape codes off a terminal"
    );
    assert_eq!(
        service_revision(&fixture).await,
        "cv-matcher:2",
        "back on the previous revision"
    );

    let history = run(
        &endpoint,
        &["history", "--env", "production", "--output", "json"],
    )
    .await;
    let records = json_lines(&history.stdout)[0]["result"]["records"].clone();
    let outcomes: Vec<&str> = records
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["outcome"].as_str())
        .collect();
    assert_eq!(outcomes, ["rolled_back", "succeeded"]);

    let rolled = run(
        &endpoint,
        &["rollback", "--env", "production", "--to", "cv-matcher:1"],
    )
    .await;
    assert_eq!(
        rolled.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&rolled.stderr)
    );
    assert_eq!(service_revision(&fixture).await, "cv-matcher:1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_error_exits_2_and_makes_no_aws_call() {
    // A listener that would see any AWS call.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let dir = std::env::temp_dir().join(format!("tugboat-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(dir.join(".aws")).expect("dir");
    std::fs::copy(
        example().join(".aws/task-definition.json"),
        dir.join(".aws/task-definition.json"),
    )
    .expect("copy");
    let config = std::fs::read_to_string(example().join("tugboat.toml"))
        .expect("read")
        .replace("desired_count = 2", "desired_cuont = 2");
    std::fs::write(dir.join("tugboat.toml"), config).expect("write");

    let mut command = tugboat();
    aws_env(&mut command, &endpoint);
    let output = command
        .current_dir(&dir)
        .args(["deploy", "--env", "production", "--image", "v1.1.0"])
        .output()
        .await
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("tugboat.toml"), "{stderr}");
    assert!(
        stderr.contains("environments.production.desired_cuont"),
        "{stderr}"
    );
    assert!(
        stderr.contains("desired_count"),
        "suggests the nearest key: {stderr}"
    );
    let accepted =
        tokio::time::timeout(std::time::Duration::from_millis(200), listener.accept()).await;
    assert!(accepted.is_err(), "tugboat made an AWS call on bad config");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Numbers out of range, written or from a `${VAR}`: exit 2 naming file, key and value,
/// never a panic.
#[tokio::test(flavor = "multi_thread")]
async fn a_number_out_of_range_exits_2_without_a_panic() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let dir = std::env::temp_dir().join(format!("tugboat-cli-range-{}", std::process::id()));
    std::fs::create_dir_all(dir.join(".aws")).expect("dir");
    std::fs::copy(
        example().join(".aws/task-definition.json"),
        dir.join(".aws/task-definition.json"),
    )
    .expect("copy");
    let example_config = std::fs::read_to_string(example().join("tugboat.toml")).expect("read");
    let cases = [
        (
            example_config.replace("poll_interval_seconds = 5", "poll_interval_seconds = nan"),
            None,
            "environments.production.deploy.poll_interval_seconds",
            "NaN",
        ),
        (
            example_config.clone(),
            Some(("BAKE_SECONDS", "99999999999")),
            "environments.production.verify.bake_seconds",
            // Where the value came from, never the value itself.
            "the value of ${BAKE_SECONDS:-300}",
        ),
    ];
    for (config, var, key, value) in cases {
        std::fs::write(dir.join("tugboat.toml"), config).expect("write");
        let mut command = tugboat();
        aws_env(&mut command, &endpoint);
        if let Some((name, value)) = var {
            command.env(name, value);
        }
        let output = command
            .current_dir(&dir)
            .args(["deploy", "--env", "production", "--image", "v1.1.0"])
            .output()
            .await
            .expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{key}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        for text in ["tugboat.toml", key, value] {
            assert!(stderr.contains(text), "{text}: {stderr}");
        }
    }
    let accepted =
        tokio::time::timeout(std::time::Duration::from_millis(200), listener.accept()).await;
    assert!(accepted.is_err(), "tugboat made an AWS call on bad config");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn help_of_every_subcommand() {
    for sub in [
        "deploy",
        "plan",
        "rollback",
        "status",
        "history",
        "report",
        "diff",
        "render",
        "verify",
        "init",
        "infra",
        "completions",
        "unlock",
        "run",
        "logs",
    ] {
        let output = tugboat().args([sub, "--help"]).output().await.expect("run");
        assert_eq!(output.status.code(), Some(0));
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(text.contains("Example"), "{sub} --help shows an example");
        insta::assert_snapshot!(format!("help_{sub}"), text);
    }
    let top = tugboat().arg("--help").output().await.expect("run");
    let text = String::from_utf8_lossy(&top.stdout).to_string();
    assert!(text.contains("Exit codes"));
    insta::assert_snapshot!("help_top", text);
}
