//! What the command tests share: a seeded moto, a `tugboat` run with extra environment,
//! and AWS state read through the SDK (never through tugboat's own output).

use crate::{aws_env, example, seed, tugboat};
use std::path::{Path, PathBuf};
use std::process::Output;
use tugboat_tests::aws::AwsFixture;

/// The production service of the seeded example.
pub const CLUSTER: &str = "cv-matcher-cluster";
pub const STAGING_CLUSTER: &str = "cv-matcher-staging-cluster";
pub const SERVICE: &str = "cv-matcher-service";
/// The records bucket the seed script creates.
pub const BUCKET: &str = "cv-matcher-deployments";

/// A moto of its own, seeded with the CV Matcher resources (`seed_cv_matcher.py`).
pub struct Seeded {
    pub fixture: AwsFixture,
    pub endpoint: String,
}

impl Seeded {
    pub async fn start() -> Self {
        Self::start_with_env(&[]).await
    }

    /// With extra moto environment, e.g. `TUGBOAT_MOTO_ROLLOUT_SECONDS`.
    pub async fn start_with_env(env: &[(&str, &str)]) -> Self {
        let fixture = AwsFixture::start_with_env(env).await.expect("moto");
        let endpoint = fixture.moto.endpoint.clone();
        seed(&endpoint).await;
        Self { fixture, endpoint }
    }

    /// `tugboat ARGS` in the example's folder.
    pub async fn run(&self, args: &[&str]) -> Output {
        self.run_in(&example(), &[], args).await
    }

    /// `tugboat ARGS` in `dir` with extra environment.
    pub async fn run_in(&self, dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut command = tugboat();
        aws_env(&mut command, &self.endpoint);
        command
            .current_dir(dir)
            .envs(env.iter().copied())
            .args(args)
            .output()
            .await
            .expect("run tugboat")
    }

    /// The task definition ARN a service runs, as ECS describes it.
    pub async fn task_definition(&self, cluster: &str) -> String {
        let output = self
            .fixture
            .clients
            .ecs
            .describe_services()
            .cluster(cluster)
            .services(SERVICE)
            .send()
            .await
            .expect("describe services");
        output.services()[0]
            .task_definition()
            .expect("a task definition")
            .to_string()
    }

    /// ACTIVE revisions of the `cv-matcher` family.
    pub async fn active_revisions(&self) -> usize {
        self.fixture
            .clients
            .ecs
            .list_task_definitions()
            .family_prefix("cv-matcher")
            .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
            .send()
            .await
            .expect("list task definitions")
            .task_definition_arns()
            .len()
    }

    /// Keys in the records bucket (records, locks).
    pub async fn record_keys(&self) -> Vec<String> {
        self.fixture
            .clients
            .s3
            .list_objects_v2()
            .bucket(BUCKET)
            .send()
            .await
            .expect("list objects")
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect()
    }
}

/// stdout then stderr, for messages that may be on either.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Asserts the exit code, showing both streams when it differs.
#[track_caller]
pub fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The single JSON result object of a `--output json` run.
pub fn result(output: &Output) -> serde_json::Value {
    let lines = crate::json_lines(&output.stdout);
    let last = lines.last().expect("a result line");
    last.get("result")
        .unwrap_or_else(|| panic!("the last line is no result: {last}"))
        .clone()
}

/// An empty scratch folder for this test process.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tugboat-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The example app in a folder of its own, with `commands` (a TOML list) as its test
/// commands.
pub fn example_with_tests(commands: &str) -> tugboat_tests::docker::TempDir {
    let dir = tugboat_tests::docker::TempDir::new("example").expect("temp dir");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", example().display()))
        .arg(dir.path())
        .status()
        .expect("cp");
    assert!(copied.success(), "copying the example failed");
    let config = dir.path().join("tugboat.toml");
    let toml = std::fs::read_to_string(&config).expect("tugboat.toml");
    let toml = toml.replace(
        r#"commands = ["make lint", "make test"]"#,
        &format!("commands = {commands}"),
    );
    std::fs::write(&config, toml).expect("write tugboat.toml");
    dir
}
