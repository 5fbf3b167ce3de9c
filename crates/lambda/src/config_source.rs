//! Where the function's `tugboat.toml` comes from (`TUGBOAT_CONFIG`): an S3 object, or a
//! file in the deployment package; and the config as loaded once per warm container.

use crate::route::Routes;
use crate::HandlerError;
use pipeline_core::{Config, TaskDefinition};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The environment variable naming the config.
pub const CONFIG_VARIABLE: &str = "TUGBOAT_CONFIG";

/// Where `tugboat.toml` is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    /// `s3://bucket/key`, fetched with the function's S3 client.
    S3 { bucket: String, key: String },
    /// A file in the deployment package.
    File(PathBuf),
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

impl ConfigSource {
    /// From `TUGBOAT_CONFIG`; without it, `tugboat.toml` in `LAMBDA_TASK_ROOT` (where
    /// Lambda unpacks the package) or else next to the executable.
    pub fn from_env() -> Result<Self, HandlerError> {
        let base = package_root();
        match std::env::var(CONFIG_VARIABLE) {
            Ok(text) if !text.trim().is_empty() => Self::parse(text.trim(), &base),
            _ => Ok(Self::File(
                base.join(pipeline_core::config::DEFAULT_CONFIG_FILE),
            )),
        }
    }

    /// `s3://bucket/key`, or a path (relative paths are relative to `base`).
    pub fn parse(text: &str, base: &Path) -> Result<Self, HandlerError> {
        if let Some(rest) = text.strip_prefix("s3://") {
            return match rest.split_once('/') {
                Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => Ok(Self::S3 {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                }),
                _ => Err(HandlerError::Setup {
                    problem: format!("{CONFIG_VARIABLE} is not s3://BUCKET/KEY (found {text:?})"),
                    help: Some(
                        "set it to s3://my-bucket/tugboat.toml or to a file in the package".into(),
                    ),
                }),
            };
        }
        let path = PathBuf::from(text);
        Ok(Self::File(if path.is_absolute() {
            path
        } else {
            base.join(path)
        }))
    }
}

/// The folder relative config paths start from.
fn package_root() -> PathBuf {
    if let Some(root) = std::env::var_os("LAMBDA_TASK_ROOT").filter(|r| !r.is_empty()) {
        return PathBuf::from(root);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The config as parsed once per container.
#[derive(Clone, Debug)]
pub struct LoadedConfig {
    pub config: Config,
    /// What error messages call the file (`s3://…` or its path).
    pub config_file: PathBuf,
    /// The task definition file named by the config when the package has it; `None`
    /// (always for an S3 config, and for a fleet): each environment uses its service's
    /// current revision.
    pub task_definition: Option<TaskDefinition>,
    /// A fleet's task definition of each `[services]` entry the package has (none for an
    /// S3 config): the others use their service's current revision.
    pub service_definitions: BTreeMap<String, TaskDefinition>,
    /// Every environment the function releases (a fleet: each service in each region).
    pub routes: Routes,
}

impl LoadedConfig {
    /// A config given by the embedding program, with no task definition in a package:
    /// each environment releases from its service's current revision.
    pub fn without_package(config: Config, config_file: PathBuf) -> Self {
        let routes = Routes::of(&config);
        Self {
            config,
            config_file,
            task_definition: None,
            service_definitions: BTreeMap::new(),
            routes,
        }
    }
}

impl LoadedConfig {
    /// Parses the text (`${VAR}` from the process environment) and, for a file config,
    /// loads the task definition next to it when it exists.
    pub fn from_text(source: &ConfigSource, text: &str) -> Result<Self, HandlerError> {
        let config_file = PathBuf::from(source.to_string());
        if let Some(name) = credential_variable(text) {
            return Err(HandlerError::Setup {
                problem: format!(
                    "{config_file:?} names the variable ${{{name}}}: the function never expands AWS_* variables (they hold its session credentials)",
                    config_file = config_file.display().to_string()
                ),
                help: Some(format!(
                    "put the value in the config, or pass it as {VARIABLE_PREFIX}<NAME> in the function's environment and write ${{<NAME>}}"
                )),
            });
        }
        let config = Config::parse(&config_file, text, &|name| {
            function_variable(name, &|key| std::env::var(key).ok())
        })?;
        let (task_definition, service_definitions) = match source {
            ConfigSource::S3 { .. } => (None, BTreeMap::new()),
            ConfigSource::File(path) => {
                let root = path.parent().unwrap_or_else(|| Path::new("."));
                let packaged = |file: &Path| {
                    let file = root.join(file);
                    file.is_file().then_some(file)
                };
                let task_definition = match packaged(&config.task_definition.file) {
                    Some(file) if config.services.is_empty() => {
                        let definition = TaskDefinition::load(&file)?;
                        config.check_against(&config_file, &definition)?;
                        Some(definition)
                    }
                    _ => None,
                };
                let mut services = BTreeMap::new();
                for name in config.services.keys() {
                    let service = config.service_config(name, &|_| false);
                    if let Some(file) = packaged(&service.task_definition.file) {
                        let definition = TaskDefinition::load(&file)?;
                        service.check_against(&config_file, &definition)?;
                        services.insert(name.clone(), definition);
                    }
                }
                (task_definition, services)
            }
        };
        let routes = Routes::of(&config);
        Ok(Self {
            config,
            config_file,
            task_definition,
            service_definitions,
            routes,
        })
    }
}

/// A `${NAME}` in the function's config reads `TUGBOAT_VAR_NAME`, or `NAME` itself when it
/// is listed in `TUGBOAT_CONFIG_VARS` (comma separated); nothing else of the function's
/// environment, and no `AWS_*` variable but the region (the others hold the function's
/// session credentials; a config naming one is refused).
pub const VARIABLE_PREFIX: &str = "TUGBOAT_VAR_";
/// The allowlist of variables a config may read by their own name.
pub const ALLOWED_VARIABLES: &str = "TUGBOAT_CONFIG_VARS";

/// The value `${name}` expands to in the function, from `env`.
pub fn function_variable(name: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    // The region is no secret, and the example's `region = "${AWS_REGION:-…}"` must work.
    if REGION_VARIABLES.contains(&name) {
        return env(name);
    }
    if name.starts_with("AWS_") {
        return None;
    }
    if let Some(value) = env(&format!("{VARIABLE_PREFIX}{name}")) {
        return Some(value);
    }
    let allowed = env(ALLOWED_VARIABLES).unwrap_or_default();
    if allowed
        .split(',')
        .map(str::trim)
        .any(|allowed| allowed == name)
    {
        return env(name);
    }
    None
}

/// The `AWS_*` variables a config may read: the function's region.
const REGION_VARIABLES: [&str; 2] = ["AWS_REGION", "AWS_DEFAULT_REGION"];

/// The first `${AWS_…}` the config text names other than the region, if any.
fn credential_variable(text: &str) -> Option<String> {
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.starts_with("AWS_") && !REGION_VARIABLES.contains(&name.as_str()) {
            return Some(name);
        }
        rest = after;
    }
    None
}

/// Reads a config file from the package.
pub fn read_file(path: &Path) -> Result<String, HandlerError> {
    std::fs::read_to_string(path).map_err(|err| HandlerError::Setup {
        problem: format!("cannot read the config file {}: {err}", path.display()),
        help: Some(format!(
            "put tugboat.toml in the package next to bootstrap, or set {CONFIG_VARIABLE} to s3://BUCKET/KEY or a path in the package"
        )),
    })
}

/// Reads a config object from S3.
pub async fn read_s3(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<String, HandlerError> {
    let output = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|err| HandlerError::Setup {
            problem: format!(
                "cannot read the config s3://{bucket}/{key}: {}",
                aws_sdk_s3::error::DisplayErrorContext(&err)
            ),
            help: Some(
                "check that the object exists and that the function's role may s3:GetObject it"
                    .into(),
            ),
        })?;
    let bytes = output
        .body
        .collect()
        .await
        .map_err(|err| HandlerError::Setup {
            problem: format!("cannot read the config s3://{bucket}/{key}: {err}"),
            help: None,
        })?
        .into_bytes();
    String::from_utf8(bytes.to_vec()).map_err(|_| HandlerError::Setup {
        problem: format!("the config s3://{bucket}/{key} is not UTF-8 text"),
        help: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        let base = Path::new("/var/task");
        assert_eq!(
            ConfigSource::parse("s3://cfg/apps/tugboat.toml", base).ok(),
            Some(ConfigSource::S3 {
                bucket: "cfg".into(),
                key: "apps/tugboat.toml".into()
            })
        );
        assert_eq!(
            ConfigSource::parse("conf/tugboat.toml", base).ok(),
            Some(ConfigSource::File("/var/task/conf/tugboat.toml".into()))
        );
        assert_eq!(
            ConfigSource::parse("/etc/tugboat.toml", base).ok(),
            Some(ConfigSource::File("/etc/tugboat.toml".into()))
        );
        assert!(ConfigSource::parse("s3://bucket-only", base).is_err());
    }

    #[test]
    fn a_config_reads_only_the_variables_meant_for_it() {
        let env = |name: &str| -> Option<String> {
            match name {
                "TUGBOAT_VAR_BAKE_SECONDS" => Some("60".into()),
                "TUGBOAT_CONFIG_VARS" => Some("APP_URL, SLACK_CHANNEL_ID".into()),
                "APP_URL" => Some("https://cv.example.com".into()),
                "AWS_REGION" => Some("eu-west-1".into()),
                "AWS_SECRET_ACCESS_KEY" | "SLACK_BOT_TOKEN" => Some("secret".into()),
                _ => None,
            }
        };
        assert_eq!(
            function_variable("BAKE_SECONDS", &env).as_deref(),
            Some("60")
        );
        assert_eq!(
            function_variable("APP_URL", &env).as_deref(),
            Some("https://cv.example.com")
        );
        assert_eq!(
            function_variable("AWS_REGION", &env).as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            function_variable("SLACK_BOT_TOKEN", &env),
            None,
            "not listed"
        );
        assert_eq!(function_variable("AWS_SECRET_ACCESS_KEY", &env), None);
    }

    #[test]
    fn a_config_naming_the_credentials_is_refused_without_their_value() {
        let source = ConfigSource::S3 {
            bucket: "cfg".into(),
            key: "tugboat.toml".into(),
        };
        let text = "[app]\nname = \"${AWS_SECRET_ACCESS_KEY}\"\n";
        // Refused before any variable is read: whatever the environment holds stays out.
        let message = match LoadedConfig::from_text(&source, text) {
            Ok(_) => panic!("a config naming the credentials was accepted"),
            Err(err) => err.to_string(),
        };
        assert!(message.contains("AWS_SECRET_ACCESS_KEY"), "{message}");
        assert!(message.contains("never expands"), "{message}");
    }

    #[test]
    fn a_fleet_config_routes_each_service() {
        let source = ConfigSource::S3 {
            bucket: "cfg".into(),
            key: "tugboat.toml".into(),
        };
        let text = r#"
[app]
name = "shop"
[image]
repository = "shop"
[task_definition]
file = "web.json"
containers = ["web"]
[services.web]
[services.worker]
[environments.production]
cluster = "shop"
service = "{app}-{service}"
tags = ["v*"]
"#;
        let loaded = match LoadedConfig::from_text(&source, text) {
            Ok(loaded) => loaded,
            Err(err) => panic!("a fleet config was refused: {err}"),
        };
        assert_eq!(
            loaded.routes.names(),
            ["production.web", "production.worker"]
        );
        assert!(
            loaded.service_definitions.is_empty(),
            "an S3 config has no package"
        );
    }
}
