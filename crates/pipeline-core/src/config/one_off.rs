//! `[[environments.X.before_deploy]]`: one-off tasks (a schema migration) run with the
//! release's new task definition after it is registered and before the service moves.
//!
//! ```toml
//! [[environments.production.before_deploy]]
//! name = "migrate"
//! command = ["python", "-m", "alembic", "upgrade", "head"]
//! timeout_seconds = 600
//! ```

use super::validate::MAX_SECONDS;
use super::ConfigError;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// One one-off task of a release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneOffTaskConfig {
    /// What people call it (`migrate`); `before_deploy[N]` when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// The container whose command is replaced (and whose exit code counts); the first of
    /// `task_definition.containers` when absent.
    #[serde(default)]
    pub container: Option<String>,
    /// The command, as an exec list (`["python", "-m", "alembic", "upgrade", "head"]`).
    pub command: Vec<String>,
    /// After this long the task is stopped and the release fails.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
}

fn default_timeout() -> u64 {
    600
}

impl OneOffTaskConfig {
    /// Its name for people: `name`, or `before_deploy[index]`.
    pub fn display_name(&self, index: usize) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("before_deploy[{index}]"))
    }

    /// The container it runs in: `container`, or the first image container.
    pub fn container_in<'a>(&'a self, image_containers: &'a [String]) -> Option<&'a str> {
        self.container
            .as_deref()
            .or(image_containers.first().map(String::as_str))
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }
}

/// The checks of an environment's `before_deploy` list.
/// `section` is where the list is: `environments.NAME` or `services.NAME`.
pub(super) fn validate_one_off_tasks(
    file: &Path,
    section: &str,
    tasks: &[OneOffTaskConfig],
) -> Result<(), ConfigError> {
    let key = |index: usize, field: &str| format!("{section}.before_deploy[{index}].{field}");
    for (index, task) in tasks.iter().enumerate() {
        if task.command.is_empty() || task.command.iter().all(|part| part.trim().is_empty()) {
            return Err(ConfigError::invalid(
                file,
                key(index, "command"),
                "must name a program to run",
            )
            .with_value("[]")
            .with_help(
                "for example command = [\"python\", \"-m\", \"alembic\", \"upgrade\", \"head\"]",
            ));
        }
        if task.timeout_seconds == 0 || task.timeout_seconds > MAX_SECONDS {
            return Err(ConfigError::invalid(
                file,
                key(index, "timeout_seconds"),
                format!("must be from 1 to {MAX_SECONDS} seconds"),
            )
            .with_value(task.timeout_seconds.to_string()));
        }
        if let Some(name) = &task.name {
            let fits = !name.is_empty()
                && name.len() <= 32
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !fits {
                return Err(ConfigError::invalid(
                    file,
                    key(index, "name"),
                    "must be 1 to 32 letters, digits, hyphens or underscores",
                )
                .with_value(format!("{name:?}")));
            }
        }
        if let Some(earlier) = tasks[..index]
            .iter()
            .position(|t| t.name.is_some() && t.name == task.name)
        {
            return Err(ConfigError::invalid(
                file,
                key(index, "name"),
                format!("is the name of before_deploy[{earlier}] too"),
            )
            .with_value(format!("{:?}", task.name.as_deref().unwrap_or_default()))
            .with_help("give each one-off task its own name"));
        }
    }
    Ok(())
}
