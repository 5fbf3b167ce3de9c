//! [`ConfigError`], and the translation of TOML and serde errors into one that names the
//! full key, the value and a fix.

use crate::task_definition::TaskDefinitionError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The configuration (or the task definition it names) is wrong. Always names the file,
/// the key and, where there is one, the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: `{key}`: {problem}{}{}", value.as_ref().map(|v| format!(" (found {v})")).unwrap_or_default(), help.as_ref().map(|h| format!("\n  help: {h}")).unwrap_or_default())]
    Invalid {
        file: PathBuf,
        key: String,
        value: Option<String>,
        problem: String,
        help: Option<String>,
    },
    #[error(transparent)]
    TaskDefinition(#[from] TaskDefinitionError),
}

impl ConfigError {
    pub(super) fn invalid(file: &Path, key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Invalid {
            file: file.to_path_buf(),
            key: key.into(),
            value: None,
            problem: problem.into(),
            help: None,
        }
    }

    pub(super) fn with_value(mut self, found: impl Into<String>) -> Self {
        if let Self::Invalid { value, .. } = &mut self {
            *value = Some(found.into());
        }
        self
    }

    pub(super) fn with_help(mut self, fix: impl Into<String>) -> Self {
        if let Self::Invalid { help, .. } = &mut self {
            *help = Some(fix.into());
        }
        self
    }

    /// The same error with the value replaced by where it came from when a `${VAR}` of
    /// `from_variables` (key → the text in the file) filled the key or a part of it.
    pub(super) fn hiding(mut self, from_variables: &BTreeMap<String, String>) -> Self {
        if let Self::Invalid { key, value, .. } = &mut self {
            let source = from_variables.iter().find(|(filled, _)| {
                *filled == key
                    || key.starts_with(&format!("{filled}."))
                    || key.starts_with(&format!("{filled}["))
                    || filled.starts_with(&format!("{key}."))
                    || filled.starts_with(&format!("{key}["))
            });
            if let (Some((_, text)), Some(shown)) = (source, value.as_mut()) {
                *shown = format!("the value of {text}");
            }
        }
        self
    }

    /// The key the error is about (`environments.staging.cluster`).
    pub fn key(&self) -> &str {
        match self {
            Self::Invalid { key, .. } => key,
            Self::TaskDefinition(err) => &err.key,
        }
    }
}

/// The full key of a TOML duplicate-key error: "duplicate key `staging` in table
/// `environments`" → `environments.staging`.
pub(super) fn duplicate_key(message: &str) -> Option<String> {
    let rest = message.split("duplicate key `").nth(1)?;
    let (key, rest) = rest.split_once('`')?;
    let table = rest
        .strip_prefix(" in table `")
        .and_then(|table| table.split('`').next())
        .filter(|table| !table.is_empty());
    Some(match table {
        Some(table) => format!("{table}.{key}"),
        None => key.to_string(),
    })
}

/// Turns a serde error into one that names the full key, the value and a fix.
pub(super) fn serde_error(file: &Path, path: &str, message: &str) -> ConfigError {
    let path = if path == "." { "" } else { path };
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        let key = if path.is_empty() || path.ends_with(field) {
            if path.is_empty() {
                field.to_string()
            } else {
                path.to_string()
            }
        } else {
            format!("{path}.{field}")
        };
        let nearest = candidates
            .iter()
            .map(|c| (strsim::damerau_levenshtein(field, c), *c))
            .min();
        let help = match nearest {
            Some((distance, candidate))
                if distance <= 3 || candidate.contains(field) || field.contains(candidate) =>
            {
                let parent = key
                    .rsplit_once('.')
                    .map(|(p, _)| format!("{p}."))
                    .unwrap_or_default();
                format!(
                    "did you mean `{parent}{candidate}`? valid keys here: {}",
                    candidates.join(", ")
                )
            }
            _ => format!("valid keys here: {}", candidates.join(", ")),
        };
        return ConfigError::invalid(file, key, "is not a known key")
            .with_value(format!("{field:?}"))
            .with_help(help);
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or(rest);
        let key = if path.is_empty() {
            field.to_string()
        } else {
            format!("{path}.{field}")
        };
        return ConfigError::invalid(file, key, "is required but missing")
            .with_help("see examples/cv-matcher/tugboat.toml for a complete file");
    }
    let (problem, value) = match message.split_once(", expected ") {
        Some((found, expected)) => (
            format!("expected {expected}"),
            Some(
                found
                    .trim_start_matches("invalid type: ")
                    .trim_start_matches("invalid value: ")
                    .to_string(),
            ),
        ),
        None => (message.to_string(), None),
    };
    let mut error = ConfigError::invalid(file, if path.is_empty() { "$" } else { path }, problem)
        .with_help("fix the value's type; see examples/cv-matcher/tugboat.toml");
    if let Some(value) = value {
        error = error.with_value(value);
    }
    error
}
