//! [`DockerImageBuilder`]: `docker buildx build --load`, or `docker build` without buildx.

use crate::docker_host::{DockerHost, DockerHostSource};
use crate::process::{describe_status, format_tail, run_streaming};
use async_trait::async_trait;
use pipeline_core::{BuildSpec, BuiltImage, Events, ImageBuilder, Stage, StageError};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

/// How long the quick engine queries (`docker version`, `docker image inspect`) may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds images with the Docker CLI, talking to the engine at [`DockerHost`].
///
/// Uses `docker buildx build --load` when the buildx plugin is installed and the classic
/// builder (`docker build --force-rm`, `DOCKER_BUILDKIT=0`) otherwise. Before building it checks
/// that the Dockerfile exists and that the engine answers, so that both failures get a
/// message of their own rather than the CLI's.
///
/// ```no_run
/// # async fn example() -> Result<(), pipeline_core::StageError> {
/// use host_adapters::DockerImageBuilder;
/// use pipeline_core::{BuildSpec, Events, ImageBuilder};
/// let spec = BuildSpec {
///     context: "examples/cv-matcher".into(),
///     dockerfile: "examples/cv-matcher/Dockerfile".into(),
///     platform: Some("linux/amd64".into()),
///     build_args: Default::default(),
///     secrets: Vec::new(),
///     tags: vec!["cv_matcher:0123abc".into()],
///     labels: Default::default(),
///     cache_from: vec![],
/// };
/// let image = DockerImageBuilder::from_env().build(&spec, &Events::new()).await?;
/// println!("{}", image.image_id);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct DockerImageBuilder {
    host: DockerHost,
    cli: PathBuf,
}

/// Which builder the CLI offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Builder {
    Buildx,
    Classic,
}

/// What a quick CLI query printed.
struct QueryOutput {
    success: bool,
    stdout: String,
    stderr: String,
}

impl DockerImageBuilder {
    /// The engine named by `DOCKER_HOST`, or the default socket.
    pub fn from_env() -> Self {
        Self::new(DockerHost::from_env())
    }

    pub fn new(host: DockerHost) -> Self {
        Self {
            host,
            cli: PathBuf::from("docker"),
        }
    }

    /// Uses another `docker` executable than the one on `PATH`.
    pub fn with_cli(mut self, cli: impl Into<PathBuf>) -> Self {
        self.cli = cli.into();
        self
    }

    pub fn host(&self) -> &DockerHost {
        &self.host
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.cli);
        // With nothing set the CLI picks its current context; say nothing then.
        if self.host.source() != DockerHostSource::Default {
            command.env("DOCKER_HOST", self.host.address());
        }
        command
    }

    /// Runs a short CLI command and captures its output.
    async fn query<I, S>(&self, args: I) -> Result<QueryOutput, StageError>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let mut command = self.command();
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let shown = || {
            let args: Vec<_> = args.iter().map(|arg| arg.to_string_lossy()).collect();
            format!("{} {}", self.cli.display(), args.join(" "))
        };
        let output = match tokio::time::timeout(QUERY_TIMEOUT, command.output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(err)) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(StageError::unavailable(format!(
                    "the Docker CLI `{}` was not found: {err}",
                    self.cli.display()
                ))
                .with_help("install the Docker CLI (Debian: `apt-get install docker.io`) or put `docker` on PATH"));
            }
            Ok(Err(err)) => {
                return Err(StageError::unavailable(format!(
                    "could not run `{}`: {err}",
                    shown()
                )));
            }
            Err(_) => {
                return Err(StageError::unavailable(format!(
                    "`{}` did not answer within {}s (engine {})",
                    shown(),
                    QUERY_TIMEOUT.as_secs(),
                    self.host.describe()
                ))
                .with_help(self.host.unreachable_help()));
            }
        };
        Ok(QueryOutput {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).trim().to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }

    /// Fails with [`pipeline_core::StageErrorKind::Unavailable`] naming the address tried
    /// unless the engine answers.
    pub async fn check_engine(&self) -> Result<String, StageError> {
        let output = self
            .query(["version", "--format", "{{.Server.Version}}"])
            .await?;
        if output.success && !output.stdout.is_empty() {
            return Ok(output.stdout);
        }
        let detail = first_meaningful_line(&output.stderr);
        Err(StageError::unavailable(format!(
            "the Docker engine is not reachable at {}: {detail}",
            self.host.describe()
        ))
        .with_help(self.host.unreachable_help()))
    }

    async fn detect_builder(&self) -> Result<Builder, StageError> {
        let output = self.query(["buildx", "version"]).await?;
        Ok(if output.success {
            Builder::Buildx
        } else {
            Builder::Classic
        })
    }

    async fn image_exists(&self, image: &str) -> Result<bool, StageError> {
        Ok(self
            .query(["image", "inspect", "--format", "{{.Id}}", image])
            .await?
            .success)
    }

    fn build_command(&self, builder: Builder, spec: &BuildSpec, cache_from: &[String]) -> Command {
        let mut command = self.command();
        match builder {
            Builder::Buildx => {
                command.args(["buildx", "build", "--load", "--progress", "plain"]);
            }
            Builder::Classic => {
                // A DOCKER_BUILDKIT=1 in the environment would make the CLI refuse to
                // build without buildx.
                command
                    .env("DOCKER_BUILDKIT", "0")
                    .args(["build", "--force-rm"]);
            }
        }
        command.arg("-f").arg(&spec.dockerfile);
        for tag in &spec.tags {
            command.arg("-t").arg(tag);
        }
        for (key, value) in &spec.labels {
            command.arg("--label").arg(format!("{key}={value}"));
        }
        for (key, value) in &spec.build_args {
            command.arg("--build-arg").arg(format!("{key}={value}"));
        }
        // The value stays in the builder's environment: only the names are on the line.
        for secret in &spec.secrets {
            command
                .arg("--secret")
                .arg(format!("id={secret},env={secret}"));
        }
        if let Some(platform) = &spec.platform {
            command.arg("--platform").arg(platform);
        }
        for image in cache_from {
            command.arg("--cache-from").arg(image);
        }
        command.arg(&spec.context);
        command
    }
}

/// The first line of a CLI error that says something (the CLI likes to start with a
/// blank line or a deprecation notice).
fn first_meaningful_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with("DEPRECATED"))
        .unwrap_or("no error message")
        .to_string()
}

#[async_trait]
impl ImageBuilder for DockerImageBuilder {
    async fn build(&self, spec: &BuildSpec, events: &Events) -> Result<BuiltImage, StageError> {
        let first_tag = spec
            .tags
            .first()
            .ok_or_else(|| {
                StageError::bad_input(
                    "no tag to build the image with: the build needs at least one",
                )
            })?
            .clone();
        if !spec.context.is_dir() {
            return Err(StageError::bad_input(format!(
                "the build context {} does not exist or is not a directory",
                spec.context.display()
            )));
        }
        if !spec.dockerfile.is_file() {
            return Err(StageError::bad_input(format!(
                "the Dockerfile {} does not exist",
                spec.dockerfile.display()
            ))
            .with_help("create it, or set [image] dockerfile in tugboat.toml to the right path"));
        }

        for name in spec.build_args.keys().filter(|name| looks_secret(name)) {
            events.warn(format!(
                "build arg {name} looks like a secret: build args stay in the image's history; \
                 pass it as a build secret ([image] secrets = [\"{name}\"], RUN --mount=type=secret,id={name})"
            ));
        }
        let version = self.check_engine().await?;
        let builder = self.detect_builder().await?;
        if builder == Builder::Classic && !spec.secrets.is_empty() {
            return Err(StageError::bad_input(format!(
                "[image] secrets ({}) need BuildKit, and this Docker has no buildx: nothing was built",
                spec.secrets.join(", ")
            ))
            .with_help("install the buildx plugin (Debian: docker-buildx), or build without secrets"));
        }
        if let Some(missing) = spec
            .secrets
            .iter()
            .find(|name| std::env::var_os(name).is_none())
        {
            return Err(StageError::bad_input(format!(
                "the build secret {missing} has no value: the variable {missing} is not set"
            ))
            .with_help(format!(
                "set {missing} in the environment that runs tugboat"
            )));
        }
        let mut cache_from = Vec::new();
        for image in &spec.cache_from {
            if self.image_exists(image).await? {
                cache_from.push(image.clone());
            }
        }
        events.info(format!(
            "building {} with {} on Docker engine {version} at {}",
            spec.dockerfile.display(),
            match builder {
                Builder::Buildx => "docker buildx build",
                Builder::Classic => "docker build (buildx is not installed)",
            },
            self.host.address()
        ));

        let command = self.build_command(builder, spec, &cache_from);
        let finished = run_streaming(command, Stage::Build, events, None)
            .await
            .map_err(|err| {
                StageError::unavailable(format!(
                    "could not run `{} build`: {err}",
                    self.cli.display()
                ))
            })?;
        if !finished.success() {
            let what = finished
                .status
                .as_ref()
                .map(describe_status)
                .unwrap_or_else(|| "was stopped".to_string());
            return Err(StageError::failed(format!(
                "the image build of {} (context {}) {what}\n{}",
                spec.dockerfile.display(),
                spec.context.display(),
                format_tail(&finished.tail)
            ))
            .with_help("fix the Dockerfile or the build context; the full output is above"));
        }

        let inspected = self
            .query([
                "image",
                "inspect",
                "--format",
                "{{.Id}}",
                first_tag.as_str(),
            ])
            .await?;
        if !inspected.success || inspected.stdout.is_empty() {
            return Err(StageError::failed(format!(
                "the build passed but `docker image inspect {first_tag}` failed: {}",
                first_meaningful_line(&inspected.stderr)
            )));
        }
        Ok(BuiltImage {
            image_id: inspected.stdout,
            local_tags: spec.tags.clone(),
        })
    }
}

/// Whether a build arg's name says it holds a secret.
fn looks_secret(name: &str) -> bool {
    let name = name.to_ascii_uppercase();
    ["TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY", "CREDENTIAL"]
        .iter()
        .any(|word| name.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn spec() -> BuildSpec {
        BuildSpec {
            context: PathBuf::from("/app"),
            dockerfile: PathBuf::from("/app/Dockerfile"),
            platform: Some("linux/amd64".into()),
            build_args: BTreeMap::from([("PY".to_string(), "3.12".to_string())]),
            secrets: Vec::new(),
            tags: vec!["cv_matcher:abc".into(), "cv_matcher:v1".into()],
            labels: BTreeMap::from([(
                "org.opencontainers.image.revision".to_string(),
                "abc".to_string(),
            )]),
            cache_from: vec!["cv_matcher:latest-build".into()],
        }
    }

    fn args(command: &Command) -> Vec<String> {
        command
            .as_std()
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn classic_build_command_has_every_option() {
        let builder = DockerImageBuilder::new(DockerHost::new("unix:///tmp/d.sock"));
        let command = builder.build_command(
            Builder::Classic,
            &spec(),
            &["cv_matcher:latest-build".into()],
        );
        assert_eq!(
            args(&command).join(" "),
            "build --force-rm -f /app/Dockerfile -t cv_matcher:abc -t cv_matcher:v1 \
             --label org.opencontainers.image.revision=abc --build-arg PY=3.12 \
             --platform linux/amd64 --cache-from cv_matcher:latest-build /app"
        );
        let envs: Vec<_> = command
            .as_std()
            .get_envs()
            .map(|(key, value)| {
                (
                    key.to_string_lossy().into_owned(),
                    value.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        assert!(envs.contains(&("DOCKER_HOST".into(), Some("unix:///tmp/d.sock".into()))));
        assert!(envs.contains(&("DOCKER_BUILDKIT".into(), Some("0".into()))));
    }

    #[test]
    fn build_secrets_go_by_name_and_secret_looking_args_are_told() {
        let builder = DockerImageBuilder::new(DockerHost::default_socket());
        let spec = BuildSpec {
            secrets: vec!["NPM_TOKEN".into()],
            ..spec()
        };
        let args = args(&builder.build_command(Builder::Buildx, &spec, &[]));
        let at = args
            .iter()
            .position(|a| a == "--secret")
            .unwrap_or(usize::MAX);
        assert_eq!(
            args.get(at + 1).map(String::as_str),
            Some("id=NPM_TOKEN,env=NPM_TOKEN")
        );
        for name in [
            "NPM_TOKEN",
            "db_password",
            "API_KEY",
            "AWS_SECRET_ACCESS_KEY",
        ] {
            assert!(looks_secret(name), "{name}");
        }
        for name in ["PY", "NODE_VERSION", "APP_ENV"] {
            assert!(!looks_secret(name), "{name}");
        }
    }

    #[test]
    fn buildx_build_loads_the_image() {
        let builder = DockerImageBuilder::new(DockerHost::default_socket());
        let command = builder.build_command(Builder::Buildx, &spec(), &[]);
        let args = args(&command);
        assert_eq!(
            args[..5],
            ["buildx", "build", "--load", "--progress", "plain"]
        );
        assert!(!args.contains(&"--cache-from".to_string()));
        assert!(command
            .as_std()
            .get_envs()
            .all(|(key, _)| key != "DOCKER_HOST"));
    }

    #[test]
    fn first_meaningful_line_skips_blank_and_deprecation_lines() {
        assert_eq!(
            first_meaningful_line(
                "\nDEPRECATED: legacy builder\nCannot connect to the Docker daemon\nmore"
            ),
            "Cannot connect to the Docker daemon"
        );
    }
}
