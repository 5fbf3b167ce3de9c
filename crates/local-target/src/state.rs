//! What the local target keeps on disk, under `.tugboat/<app>/<env>/`:
//! `revisions/<n>.json` (a registered task definition, as registered) with
//! `revisions/<n>.tags.json`, and `service.json` (the release behind the proxy, the
//! deployments, tugboat's own event lines). Written whole and renamed into place.

use super::containers::ContainerSpec;
use chrono::{DateTime, Utc};
use pipeline_core::task_definition::ResourceTag;
use pipeline_core::{Revision, StageError, TaskDefinition};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The most deployments and event lines `service.json` keeps.
const KEEP_DEPLOYMENTS: usize = 20;
const KEEP_EVENTS: usize = 50;

/// The service state of one local environment.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct ServiceState {
    /// The highest revision number ever registered (numbers are never reused).
    #[serde(default)]
    pub last_revision: u64,
    /// The release the service runs (behind the proxy); `None` before the first one or
    /// after `tugboat stop`.
    #[serde(default)]
    pub serving: Option<Serving>,
    /// Oldest first.
    #[serde(default)]
    pub deployments: Vec<LocalDeployment>,
    /// Oldest first.
    #[serde(default)]
    pub events: Vec<LocalEvent>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Serving {
    pub revision: u64,
    pub deployment: String,
    /// `127.0.0.1:<port>` the proxy forwards to; `None` when no container maps a port.
    pub upstream: Option<String>,
    pub since: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum DeploymentState {
    InProgress,
    Completed,
    Failed,
    /// A newer deployment started before this one finished.
    Replaced,
    /// `tugboat stop` removed it.
    Stopped,
}

/// One container of a deployment, as created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeployedContainer {
    pub spec: ContainerSpec,
    /// `tugboat-<app>-<env>-<n>-<container>`.
    pub docker_name: String,
    pub host_ports: Vec<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LocalDeployment {
    pub id: String,
    pub revision: u64,
    pub state: DeploymentState,
    #[serde(default)]
    pub reason: Option<String>,
    /// For a restore of the release that already serves (nothing was started): the
    /// deployment whose containers it checks.
    #[serde(default)]
    pub restores: Option<String>,
    pub network: String,
    #[serde(default)]
    pub containers: Vec<DeployedContainer>,
    /// The container and port the proxy forwards to.
    #[serde(default)]
    pub front: Option<(String, u16)>,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LocalEvent {
    pub at: DateTime<Utc>,
    pub message: String,
}

impl ServiceState {
    pub fn deployment(&self, id: &str) -> Option<&LocalDeployment> {
        self.deployments.iter().find(|d| d.id == id)
    }

    pub fn deployment_mut(&mut self, id: &str) -> Option<&mut LocalDeployment> {
        self.deployments.iter_mut().find(|d| d.id == id)
    }

    /// Adds a deployment, forgetting the oldest ones beyond the limit but never the
    /// serving one.
    pub fn push_deployment(&mut self, deployment: LocalDeployment) {
        self.deployments.push(deployment);
        while self.deployments.len() > KEEP_DEPLOYMENTS {
            let serving = self.serving.as_ref().map(|s| s.deployment.as_str());
            match self
                .deployments
                .iter()
                .position(|d| Some(d.id.as_str()) != serving)
            {
                Some(index) => {
                    self.deployments.remove(index);
                }
                None => break,
            }
        }
    }

    pub fn event(&mut self, message: impl Into<String>) {
        self.events.push(LocalEvent {
            at: Utc::now(),
            message: message.into(),
        });
        let excess = self.events.len().saturating_sub(KEEP_EVENTS);
        self.events.drain(..excess);
    }
}

/// Where one environment's files live.
#[derive(Clone, Debug)]
pub(crate) struct StateDir {
    root: PathBuf,
}

fn io_error(action: &str, path: &Path, err: &std::io::Error) -> StageError {
    StageError::failed(format!("cannot {action} {}: {err}", path.display()))
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StageError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io_error("create", parent, &e))?;
    }
    let partial = path.with_extension(format!("partial-{}", std::process::id()));
    std::fs::write(&partial, bytes).map_err(|e| io_error("write", &partial, &e))?;
    std::fs::rename(&partial, path).map_err(|e| io_error("write", path, &e))
}

impl StateDir {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn service_file(&self) -> PathBuf {
        self.root.join("service.json")
    }

    fn revisions(&self) -> PathBuf {
        self.root.join("revisions")
    }

    pub fn revision_file(&self, number: u64) -> PathBuf {
        self.revisions().join(format!("{number}.json"))
    }

    fn tags_file(&self, number: u64) -> PathBuf {
        self.revisions().join(format!("{number}.tags.json"))
    }

    pub fn load(&self) -> Result<ServiceState, StageError> {
        let path = self.service_file();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|err| {
                StageError::failed(format!(
                    "{} is not a tugboat service state: {err}",
                    path.display()
                ))
                .with_help("run `tugboat stop` for this environment and delete the file")
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(ServiceState::default()),
            Err(err) => Err(io_error("read", &path, &err)),
        }
    }

    pub fn save(&self, state: &ServiceState) -> Result<(), StageError> {
        let bytes = serde_json::to_vec_pretty(state)
            .map_err(|err| StageError::failed(format!("cannot encode the service state: {err}")))?;
        write_atomically(&self.service_file(), &bytes)
    }

    /// Registers a definition as the next revision number.
    pub fn register(
        &self,
        state: &mut ServiceState,
        definition: &TaskDefinition,
        tags: &[ResourceTag],
    ) -> Result<u64, StageError> {
        let number = state
            .last_revision
            .max(self.numbers()?.last().copied().unwrap_or(0))
            + 1;
        let tags = serde_json::to_vec_pretty(tags)
            .map_err(|err| StageError::failed(format!("cannot encode tags: {err}")))?;
        write_atomically(&self.tags_file(number), &tags)?;
        let mut text = definition.to_json_pretty();
        text.push('\n');
        write_atomically(&self.revision_file(number), text.as_bytes())?;
        state.last_revision = number;
        Ok(number)
    }

    /// The registered revision numbers, ascending.
    pub fn numbers(&self) -> Result<Vec<u64>, StageError> {
        let dir = self.revisions();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(io_error("read", &dir, &err)),
        };
        let mut numbers: Vec<u64> = entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().to_string();
                name.strip_suffix(".json")?.parse::<u64>().ok()
            })
            .collect();
        numbers.sort_unstable();
        Ok(numbers)
    }

    pub fn definition(&self, number: u64) -> Result<Option<TaskDefinition>, StageError> {
        let path = self.revision_file(number);
        match std::fs::read_to_string(&path) {
            Ok(text) => TaskDefinition::parse(&path, &text)
                .map(Some)
                .map_err(|err| StageError::failed(err.to_string())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(io_error("read", &path, &err)),
        }
    }

    pub fn tags(&self, number: u64) -> Vec<ResourceTag> {
        std::fs::read(self.tags_file(number))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    pub fn remove_revision(&self, number: u64) -> Result<(), StageError> {
        for path in [self.revision_file(number), self.tags_file(number)] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(io_error("remove", &path, &err)),
            }
        }
        Ok(())
    }
}

/// The revision handle of number `n`: id `local:<app>-<env>:<n>`, label `<family>:<n>`.
pub(crate) fn revision(service: &str, family: &str, number: u64) -> Revision {
    Revision::new(
        format!("local:{service}:{number}"),
        format!("{family}:{number}"),
    )
}

/// The number of a revision id, label (`cv-matcher:3`) or bare number.
pub(crate) fn revision_number(text: &str) -> Option<u64> {
    text.rsplit(':').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_numbers_come_from_ids_labels_and_numbers() {
        let revision = revision("cv-matcher-local", "cv-matcher", 7);
        assert_eq!(revision.id, "local:cv-matcher-local:7");
        assert_eq!(revision.label, "cv-matcher:7");
        assert_eq!(revision_number(&revision.id), Some(7));
        assert_eq!(revision_number(&revision.label), Some(7));
        assert_eq!(revision_number("12"), Some(12));
        assert_eq!(revision_number("cv-matcher"), None);
    }
}
