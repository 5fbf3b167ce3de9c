//! [`ShellTestRunner`]: the release's test commands, run with `sh -c`.

use crate::process::{describe_status, run_streaming};
use async_trait::async_trait;
use pipeline_core::{Artifact, Events, Stage, StageError, TestReport, TestRunner, TestSpec};
use tokio::process::Command;

/// Runs each test command with `sh -c` in the spec's working directory, in order,
/// streaming its output as `Output` events of the test stage.
///
/// Each command runs in its own process group: when it passes its time limit the whole
/// group is killed (so `make test` does not leave a server behind), and so is whatever
/// it leaves running when it exits.
///
/// ```no_run
/// # async fn example() -> Result<(), pipeline_core::StageError> {
/// use host_adapters::ShellTestRunner;
/// use pipeline_core::{Events, TestRunner, TestSpec};
/// let spec = TestSpec {
///     commands: vec!["make lint".into(), "make test".into()],
///     workdir: "examples/cv-matcher".into(),
///     timeout: std::time::Duration::from_secs(900),
///     artifacts: vec!["coverage.xml".into()],
///     // Besides PATH, HOME, the locale, CI and the git variables; never AWS_* or the Slack token.
///     pass_env: vec!["PYTEST_*".into()],
///     env: Default::default(),
/// };
/// let report = ShellTestRunner::new().run_tests(&spec, &Events::new()).await?;
/// assert_eq!(report.artifacts[0].name, "coverage.xml");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ShellTestRunner {
    shell: Option<String>,
}

impl ShellTestRunner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses another POSIX shell than `sh` (it is called as `<shell> -c <command>`).
    pub fn with_shell(mut self, shell: impl Into<String>) -> Self {
        self.shell = Some(shell.into());
        self
    }

    fn shell(&self) -> &str {
        self.shell.as_deref().unwrap_or("sh")
    }
}

/// What every test command sees of tugboat's environment: what a build needs to run.
const BASIC_VARIABLES: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "TMPDIR",
    "TERM",
    "TZ",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "CI",
    "GITHUB_ACTIONS",
    "GITHUB_SHA",
    "GITHUB_REF",
    "GITHUB_REF_NAME",
    "GITHUB_REF_TYPE",
    "GITHUB_WORKSPACE",
    "GITHUB_RUN_ID",
    "GITHUB_RUN_NUMBER",
    "GITHUB_REPOSITORY",
    "GITHUB_ACTOR",
    "GITHUB_EVENT_NAME",
    "GITHUB_HEAD_REF",
    "GITHUB_BASE_REF",
    "GIT_*",
    "RUNNER_OS",
    "RUNNER_ARCH",
    "RUNNER_TEMP",
];

/// Never passed, even when `pass_env` names them: deploy credentials, the Slack token,
/// the registry's and tugboat's own settings.
const NEVER_PASSED: &[&str] = &[
    "AWS_*",
    "SLACK_BOT_TOKEN",
    "TUGBOAT_*",
    "ACTIONS_ID_TOKEN_REQUEST_*",
    "ACTIONS_RUNTIME_TOKEN",
    "GITHUB_TOKEN",
    "DOCKER_AUTH_CONFIG",
];

fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// The environment of a test command: the basic variables and those `pass_env` names
/// from `parent`, minus anything in [`NEVER_PASSED`], then `spec.env`.
pub fn test_environment(
    spec: &TestSpec,
    parent: impl Iterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let mut environment: Vec<(String, String)> = parent
        .filter(|(name, _)| {
            BASIC_VARIABLES
                .iter()
                .copied()
                .chain(spec.pass_env.iter().map(String::as_str))
                .any(|pattern| matches(pattern, name))
        })
        .filter(|(name, _)| !NEVER_PASSED.iter().any(|pattern| matches(pattern, name)))
        .filter(|(name, _)| !spec.env.contains_key(name))
        .collect();
    environment.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    environment
}

#[async_trait]
impl TestRunner for ShellTestRunner {
    async fn run_tests(&self, spec: &TestSpec, events: &Events) -> Result<TestReport, StageError> {
        if !spec.workdir.is_dir() {
            return Err(StageError::bad_input(format!(
                "test working directory {} does not exist or is not a directory",
                spec.workdir.display()
            )));
        }
        for command_line in &spec.commands {
            events.info(format!("running `{command_line}`"));
            let mut command = Command::new(self.shell());
            command
                .arg("-c")
                .arg(command_line)
                .current_dir(&spec.workdir)
                .env_clear()
                .envs(test_environment(spec, std::env::vars()));
            let finished = run_streaming(command, Stage::Test, events, Some(spec.timeout))
                .await
                .map_err(|err| {
                    StageError::failed(format!(
                        "could not start test command `{command_line}` with `{} -c`: {err}",
                        self.shell()
                    ))
                })?;
            if finished.success() {
                continue;
            }
            let what = match &finished.status {
                Some(status) => describe_status(status),
                None => format!(
                    "did not finish within {}s and was killed",
                    spec.timeout.as_secs_f64()
                ),
            };
            return Err(StageError::failed(format!(
                "test command `{command_line}` {what}\n{}",
                finished.tail_text()
            ))
            .with_help(format!(
                "run `{command_line}` in {} to reproduce",
                spec.workdir.display()
            )));
        }

        let mut artifacts = Vec::with_capacity(spec.artifacts.len());
        for name in &spec.artifacts {
            let path = spec.workdir.join(name);
            match tokio::fs::read(&path).await {
                Ok(bytes) => artifacts.push(Artifact {
                    name: name.clone(),
                    bytes,
                }),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    return Err(StageError::failed(format!(
                        "test artifact `{name}` was not produced: {} does not exist after the tests passed",
                        path.display()
                    ))
                    .with_help("make the test commands write it, or remove it from [test] artifacts"));
                }
                Err(err) => {
                    return Err(StageError::failed(format!(
                        "could not read test artifact `{name}` at {}: {err}",
                        path.display()
                    )));
                }
            }
        }
        Ok(TestReport { artifacts })
    }
}
