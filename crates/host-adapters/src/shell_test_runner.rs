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
                .current_dir(&spec.workdir);
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
