//! [`LocalSecretStore`]: `secrets` entries from a `NAME=value` file instead of Parameter
//! Store. Values are read only by the local deployer, which hands them to the engine in
//! a container's environment; they are never printed, logged or put in an error.

use async_trait::async_trait;
use pipeline_core::{SecretRef, SecretStore, SecretsSpec, StageError};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The prefix of a `valueFrom` that names a line of the secrets file.
pub const LOCAL_SECRET_PREFIX: &str = "local:";

/// [`SecretStore`] over a file of `NAME=value` lines (`LocalSettings.secrets_file`).
///
/// A name is written bare (`JWT_SECRET_KEY=…`) or under the environment's
/// `secrets_path` (`/cv-matcher/local/JWT_SECRET_KEY=…`). Blank lines and `#` comments
/// are skipped, `export ` is allowed, and a value in matching quotes loses them.
/// [`SecretStore::resolve`] gives `valueFrom: "local:NAME"`.
///
/// ```no_run
/// # async fn example() -> Result<(), pipeline_core::StageError> {
/// use local_target::LocalSecretStore;
/// use pipeline_core::{SecretStore, SecretsSpec};
/// let store = LocalSecretStore::new(Some("examples/cv-matcher/local-secrets.env".into()));
/// let spec = SecretsSpec { path: "/cv-matcher/local/".into(), names: Some(vec!["JWT_SECRET_KEY".into()]) };
/// let refs = store.resolve(&spec).await?;
/// assert_eq!(refs[0].value_from, "local:JWT_SECRET_KEY");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct LocalSecretStore {
    file: Option<PathBuf>,
}

/// The lines of a secrets file. `Debug` shows the names only.
#[derive(Clone, Default)]
pub(crate) struct SecretValues {
    values: BTreeMap<String, String>,
}

impl fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretValues")
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SecretValues {
    /// Every value, to be redacted from what the engine says.
    pub fn all_values(&self) -> Vec<String> {
        self.values.values().cloned().collect()
    }

    /// Reads and parses `file`; a line that is not `NAME=value` is an error naming the
    /// line number only (never its text, which may be a value).
    pub fn load(file: &Path) -> Result<Self, StageError> {
        let text = std::fs::read_to_string(file).map_err(|err| {
            StageError::bad_input(format!(
                "cannot read the local secrets file {}: {err}",
                file.display()
            ))
            .with_help("create it with NAME=value lines, or fix local.secrets_file in tugboat.toml")
        })?;
        let mut values = BTreeMap::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let Some((name, value)) = line.split_once('=') else {
                return Err(StageError::bad_input(format!(
                    "{}:{}: expected NAME=value",
                    file.display(),
                    index + 1
                )));
            };
            let name = name.trim();
            if name.is_empty() {
                return Err(StageError::bad_input(format!(
                    "{}:{}: the name before `=` is empty",
                    file.display(),
                    index + 1
                )));
            }
            values.insert(name.to_string(), unquote(value.trim()).to_string());
        }
        Ok(Self { values })
    }

    /// The value of `name`, written bare or under any path (`/app/env/NAME`).
    pub fn get(&self, name: &str) -> Option<&str> {
        if let Some(value) = self.values.get(name) {
            return Some(value);
        }
        self.values
            .iter()
            .find(|(key, _)| key.rsplit_once('/').is_some_and(|(_, last)| last == name))
            .map(|(_, value)| value.as_str())
    }

    /// The value a `valueFrom` points at: `local:NAME`, or a bare name in the file.
    pub fn value_from(&self, value_from: &str) -> Option<&str> {
        let name = value_from
            .strip_prefix(LOCAL_SECRET_PREFIX)
            .unwrap_or(value_from);
        self.get(name)
    }

    /// Names under `path` (bare names count as under every path), sorted.
    fn names_under(&self, path: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .values
            .keys()
            .filter_map(|key| match key.strip_prefix(path) {
                Some(name) if !name.contains('/') => Some(name.to_string()),
                _ if !key.contains('/') => Some(key.clone()),
                _ => None,
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    fn has(&self, path: &str, name: &str) -> bool {
        self.values.contains_key(name) || self.values.contains_key(&format!("{path}{name}"))
    }
}

fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return &value[1..value.len() - 1];
        }
    }
    value
}

impl LocalSecretStore {
    /// `file` is `LocalSettings.secrets_file`, resolved against the project folder.
    pub fn new(file: Option<PathBuf>) -> Self {
        Self { file }
    }

    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    fn values(&self) -> Result<(SecretValues, &Path), StageError> {
        let file = self.file.as_deref().ok_or_else(|| {
            StageError::bad_input(
                "this local environment has secrets, but no file to read them from",
            )
            .with_help("set local.secrets_file = \"local-secrets.env\" (NAME=value lines) in the environment")
        })?;
        Ok((SecretValues::load(file)?, file))
    }
}

#[async_trait]
impl SecretStore for LocalSecretStore {
    async fn resolve(&self, spec: &SecretsSpec) -> Result<Vec<SecretRef>, StageError> {
        let (values, file) = self.values()?;
        let names = match &spec.names {
            Some(names) => {
                let missing: Vec<&str> = names
                    .iter()
                    .filter(|name| !values.has(&spec.path, name))
                    .map(String::as_str)
                    .collect();
                if !missing.is_empty() {
                    return Err(StageError::bad_input(format!(
                        "the local secrets file {} has no {}",
                        file.display(),
                        missing.join(", ")
                    ))
                    .with_help(format!(
                        "add a line NAME=value for each (or {}NAME=value)",
                        spec.path
                    )));
                }
                names.clone()
            }
            None => values.names_under(&spec.path),
        };
        let mut refs: Vec<SecretRef> = names
            .into_iter()
            .map(|name| SecretRef {
                value_from: format!("{LOCAL_SECRET_PREFIX}{name}"),
                name,
            })
            .collect();
        refs.sort();
        refs.dedup();
        Ok(refs)
    }

    async fn ensure_exist(&self, value_froms: &[String]) -> Result<Vec<String>, StageError> {
        if value_froms.is_empty() {
            return Ok(Vec::new());
        }
        let (values, file) = self.values()?;
        let missing: Vec<&str> = value_froms
            .iter()
            .filter(|source| values.value_from(source).is_none())
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        Err(StageError::bad_input(format!(
            "the local secrets file {} has no secret for {}",
            file.display(),
            missing.join(", ")
        ))
        .with_help("the local target reads every secret from that file: add NAME=value lines, with valueFrom \"local:NAME\" in the task definition"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(text: &str) -> SecretValues {
        let dir = std::env::temp_dir().join(format!(
            "tugboat-secrets-{}-{}",
            std::process::id(),
            text.len()
        ));
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join("secrets.env");
        let _ = std::fs::write(&file, text);
        let loaded = SecretValues::load(&file);
        let _ = std::fs::remove_dir_all(&dir);
        match loaded {
            Ok(values) => values,
            Err(err) => panic!("{err}"),
        }
    }

    #[test]
    fn lines_are_names_and_values() {
        let values =
            values("# comment\n\nA=1\nexport B = \"two words\"\n/app/local/C='3'\nD=x=y\n");
        assert_eq!(values.get("A"), Some("1"));
        assert_eq!(values.get("B"), Some("two words"));
        assert_eq!(values.get("C"), Some("3"));
        assert_eq!(values.value_from("local:D"), Some("x=y"));
        assert_eq!(values.get("E"), None);
        assert_eq!(
            values.names_under("/app/local/"),
            vec!["A".to_string(), "B".into(), "C".into(), "D".into()]
        );
        assert_eq!(
            values.names_under("/other/"),
            vec!["A".to_string(), "B".into(), "D".into()]
        );
        assert!(!format!("{values:?}").contains("two words"));
    }
}
