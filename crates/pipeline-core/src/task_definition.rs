//! Task definitions in the `register-task-definition --cli-input-json` shape: parsed
//! without losing fields tugboat does not model, validated, rendered for a release, and
//! diffed after normalising the defaults AWS fills in.

use crate::model::{PinnedImage, SecretRef};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Fields `describe-task-definition` returns that `register-task-definition` refuses.
pub const READ_ONLY_FIELDS: &[&str] = &[
    "taskDefinitionArn",
    "revision",
    "status",
    "requiresAttributes",
    "compatibilities",
    "registeredAt",
    "registeredBy",
    "deregisteredAt",
];

/// A task definition file is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}: `{key}`: {problem}{}{}", value.as_ref().map(|v| format!(" (found {v})")).unwrap_or_default(), help.as_ref().map(|h| format!("\n  help: {h}")).unwrap_or_default())]
pub struct TaskDefinitionError {
    pub file: PathBuf,
    /// JSON path of the field (`containerDefinitions[0].name`).
    pub key: String,
    pub value: Option<String>,
    pub problem: String,
    pub help: Option<String>,
}

impl TaskDefinitionError {
    fn new(file: &Path, key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            key: key.into(),
            value: None,
            problem: problem.into(),
            help: None,
        }
    }

    fn value(mut self, value: impl Into<String>) -> Self {
        self.value = Some(value.into());
        self
    }

    fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// A `name`/`value` pair of `environment`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub name: String,
    pub value: String,
}

/// A `secrets` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    pub name: String,
    pub value_from: String,
}

/// A container of the task definition; fields tugboat does not model stay in `extra`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDefinition {
    pub name: String,
    #[serde(default)]
    pub image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<KeyValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<Secret>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A registrable task definition; fields tugboat does not model stay in `extra`, so a
/// field AWS adds tomorrow survives a round trip.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefinition {
    pub family: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires_compatibilities: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "string_or_number"
    )]
    pub cpu: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "string_or_number"
    )]
    pub memory: Option<String>,
    pub container_definitions: Vec<ContainerDefinition>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(de)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(Value::Number(number)) => Ok(Some(number.to_string())),
        Some(other) => Err(serde::de::Error::custom(format!(
            "invalid type: {other}, expected a string such as \"256\""
        ))),
    }
}

/// A tag attached to a registered revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceTag {
    pub key: String,
    pub value: String,
}

/// A task definition rendered for one release, with the tags to register it with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RenderedTaskDefinition {
    pub definition: TaskDefinition,
    pub tags: Vec<ResourceTag>,
}

/// What changes in a task definition for a release.
#[derive(Clone, Debug)]
pub struct ReleaseInputs<'a> {
    pub image: &'a PinnedImage,
    /// Containers that get the image.
    pub containers: &'a [String],
    /// Variables merged into those containers' `environment`.
    pub environment: &'a BTreeMap<String, String>,
    /// Entries merged into those containers' `secrets`.
    pub secrets: &'a [SecretRef],
    /// Set as `executionRoleArn` / `taskRoleArn` when the file has none.
    pub execution_role_arn: Option<&'a str>,
    pub task_role_arn: Option<&'a str>,
    pub tags: Vec<ResourceTag>,
}

impl TaskDefinition {
    /// Parses a task definition file: the register shape, a `describe-task-definition`
    /// result (`{"taskDefinition": {...}, "tags": [...]}`) or its inner object. Read-only
    /// fields are stripped; the rest is validated.
    pub fn parse(file: &Path, text: &str) -> Result<Self, TaskDefinitionError> {
        let value: Value = serde_json::from_str(text).map_err(|err| {
            TaskDefinitionError::new(file, format!("line {}", err.line()), "not valid JSON")
                .value(err.to_string())
                .help("the file must hold one JSON object in the register-task-definition shape")
        })?;
        let object = match value {
            Value::Object(mut object) => match object.remove("taskDefinition") {
                Some(Value::Object(inner)) => inner,
                Some(_) => {
                    return Err(TaskDefinitionError::new(
                        file,
                        "taskDefinition",
                        "expected an object",
                    ))
                }
                None => object,
            },
            other => {
                return Err(
                    TaskDefinitionError::new(file, "$", "expected a JSON object")
                        .value(json_type(&other)),
                )
            }
        };
        Self::from_object(file, object)
    }

    /// Reads and parses a task definition file.
    pub fn load(file: &Path) -> Result<Self, TaskDefinitionError> {
        let text = std::fs::read_to_string(file).map_err(|err| {
            TaskDefinitionError::new(file, "$", "cannot read the file")
                .value(err.to_string())
                .help("check `task_definition.file` in tugboat.toml; it is relative to tugboat.toml's folder")
        })?;
        Self::parse(file, &text)
    }

    fn from_object(
        file: &Path,
        mut object: Map<String, Value>,
    ) -> Result<Self, TaskDefinitionError> {
        for field in READ_ONLY_FIELDS {
            object.remove(*field);
        }
        let value = Value::Object(object);
        let definition: TaskDefinition =
            serde_path_to_error::deserialize(&value).map_err(|err| {
                let key = err.path().to_string();
                let inner = err.into_inner().to_string();
                let key = if key == "." {
                    missing_field(&inner).unwrap_or_else(|| "$".to_string())
                } else {
                    key
                };
                // "invalid type: integer `7`, expected a string": the value goes where
                // every other error puts it.
                match inner.split_once(", expected ") {
                    Some((found, expected)) => {
                        let found = found
                            .trim_start_matches("invalid type: ")
                            .trim_start_matches("invalid value: ");
                        TaskDefinitionError::new(file, key, format!("expected {expected}"))
                            .value(found)
                    }
                    None => TaskDefinitionError::new(file, key, inner),
                }
            })?;
        definition.validate(file)?;
        Ok(definition)
    }

    /// Checks what AWS would refuse, before anything is sent.
    pub fn validate(&self, file: &Path) -> Result<(), TaskDefinitionError> {
        let family_ok = !self.family.is_empty()
            && self.family.len() <= 255
            && self
                .family
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !family_ok {
            return Err(TaskDefinitionError::new(
                file,
                "family",
                "must be 1 to 255 letters, digits, hyphens or underscores",
            )
            .value(format!("{:?}", self.family))
            .help("set \"family\" to your app's name, for example \"cv-matcher\""));
        }
        if self.container_definitions.is_empty() {
            return Err(TaskDefinitionError::new(
                file,
                "containerDefinitions",
                "needs at least one container",
            )
            .value("[]"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (index, container) in self.container_definitions.iter().enumerate() {
            let key = format!("containerDefinitions[{index}].name");
            if container.name.trim().is_empty() {
                return Err(TaskDefinitionError::new(file, key, "must not be empty")
                    .value(format!("{:?}", container.name)));
            }
            if !seen.insert(container.name.as_str()) {
                return Err(
                    TaskDefinitionError::new(file, key, "is used by two containers")
                        .value(format!("{:?}", container.name))
                        .help("give every container its own name"),
                );
            }
            let mut names = std::collections::BTreeSet::new();
            for (i, variable) in container.environment.iter().enumerate() {
                if !names.insert(variable.name.as_str()) {
                    return Err(TaskDefinitionError::new(
                        file,
                        format!("containerDefinitions[{index}].environment[{i}].name"),
                        "is set twice in this container",
                    )
                    .value(format!("{:?}", variable.name)));
                }
            }
            for (i, secret) in container.secrets.iter().enumerate() {
                if !names.insert(secret.name.as_str()) {
                    return Err(TaskDefinitionError::new(
                        file,
                        format!("containerDefinitions[{index}].secrets[{i}].name"),
                        "is set twice in this container (as a secret and in environment, or twice)",
                    )
                    .value(format!("{:?}", secret.name)));
                }
            }
        }
        if self.requires_compatibilities.iter().any(|c| c == "FARGATE") {
            if self.network_mode.as_deref() != Some("awsvpc") {
                return Err(TaskDefinitionError::new(
                    file,
                    "networkMode",
                    "must be \"awsvpc\" for FARGATE",
                )
                .value(format!("{:?}", self.network_mode.as_deref().unwrap_or("")))
                .help("set \"networkMode\": \"awsvpc\""));
            }
            validate_fargate_size(file, self.cpu.as_deref(), self.memory.as_deref())?;
        }
        Ok(())
    }

    pub fn container(&self, name: &str) -> Option<&ContainerDefinition> {
        self.container_definitions.iter().find(|c| c.name == name)
    }

    /// The task definition for one release: the image pinned by digest in the named
    /// containers, environment and secrets merged by name into them.
    pub fn render(&self, inputs: &ReleaseInputs<'_>) -> Result<RenderedTaskDefinition, String> {
        let mut definition = self.clone();
        for (field, role) in [
            ("executionRoleArn", inputs.execution_role_arn),
            ("taskRoleArn", inputs.task_role_arn),
        ] {
            if let Some(role) = role {
                definition
                    .extra
                    .entry(field)
                    .or_insert_with(|| Value::String(role.to_string()));
            }
        }
        for name in inputs.containers {
            let container = definition
                .container_definitions
                .iter_mut()
                .find(|c| &c.name == name)
                .ok_or_else(|| format!("the task definition has no container named {name:?}"))?;
            container.image = inputs.image.reference();
            for (key, value) in inputs.environment {
                match container.environment.iter_mut().find(|kv| &kv.name == key) {
                    Some(existing) => existing.value = value.clone(),
                    None => container.environment.push(KeyValue {
                        name: key.clone(),
                        value: value.clone(),
                    }),
                }
            }
            for secret in inputs.secrets {
                container.environment.retain(|kv| kv.name != secret.name);
                match container.secrets.iter_mut().find(|s| s.name == secret.name) {
                    Some(existing) => existing.value_from = secret.value_from.clone(),
                    None => container.secrets.push(Secret {
                        name: secret.name.clone(),
                        value_from: secret.value_from.clone(),
                    }),
                }
            }
        }
        Ok(RenderedTaskDefinition {
            definition,
            tags: inputs.tags.clone(),
        })
    }

    /// Every `valueFrom` of every container's `secrets`.
    pub fn secret_sources(&self) -> Vec<String> {
        let mut sources: Vec<String> = self
            .container_definitions
            .iter()
            .flat_map(|c| c.secrets.iter().map(|s| s.value_from.clone()))
            .collect();
        sources.sort();
        sources.dedup();
        sources
    }

    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|err| format!("{{\"error\": \"{err}\"}}"))
    }

    /// The definition with the defaults AWS fills in made explicit and empty values
    /// removed, so that a file and its registered revision compare equal.
    pub fn normalised(&self) -> Value {
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        let awsvpc = self.network_mode.as_deref() == Some("awsvpc");
        if let Some(object) = value.as_object_mut() {
            for field in READ_ONLY_FIELDS {
                object.remove(*field);
            }
            if let Some(Value::Array(list)) = object.get_mut("requiresCompatibilities") {
                sort_values(list);
            }
            if let Some(Value::Array(containers)) = object.get_mut("containerDefinitions") {
                for container in containers.iter_mut().filter_map(Value::as_object_mut) {
                    normalise_container(container, awsvpc);
                }
            }
        }
        prune_empty(&mut value);
        // serde_json keeps insertion order (`preserve_order`), and AWS returns fields in
        // its own order: sort every object so the text diff compares content only.
        value.sort_all_objects();
        value
    }
}

fn normalise_container(container: &mut Map<String, Value>, awsvpc: bool) {
    container.entry("essential").or_insert(Value::Bool(true));
    if container.get("cpu").and_then(Value::as_u64) == Some(0) {
        container.remove("cpu");
    }
    for list in ["environment", "secrets"] {
        if let Some(Value::Array(entries)) = container.get_mut(list) {
            entries.sort_by(|a, b| {
                let name = |v: &Value| {
                    v.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                };
                name(a).cmp(&name(b))
            });
        }
    }
    if let Some(Value::Array(ports)) = container.get_mut("portMappings") {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            port.entry("protocol")
                .or_insert(Value::String("tcp".into()));
            if awsvpc {
                if let Some(container_port) = port.get("containerPort").cloned() {
                    port.entry("hostPort").or_insert(container_port);
                }
            }
        }
    }
}

fn sort_values(list: &mut [Value]) {
    list.sort_by_key(|v| v.to_string());
}

/// Drops empty values and sorts object keys, so key order never shows in a diff.
fn prune_empty(value: &mut Value) {
    match value {
        Value::Object(object) => {
            for child in object.values_mut() {
                prune_empty(child);
            }
            object.retain(|_, v| !is_empty(v));
            object.sort_keys();
        }
        Value::Array(list) => list.iter_mut().for_each(prune_empty),
        _ => {}
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(list) => list.is_empty(),
        Value::Object(object) => object.is_empty(),
        _ => false,
    }
}

/// A unified diff of two task definitions after normalising both; empty when they are
/// the same definition.
pub fn diff(registered: &TaskDefinition, rendered: &TaskDefinition) -> String {
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
    let old = pretty(&registered.normalised());
    let new = pretty(&rendered.normalised());
    if old == new {
        return String::new();
    }
    similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(3)
        .header("registered", "rendered")
        .to_string()
}

fn validate_fargate_size(
    file: &Path,
    cpu: Option<&str>,
    memory: Option<&str>,
) -> Result<(), TaskDefinitionError> {
    let fix = "use a supported Fargate pair, for example cpu \"256\" with memory \"512\", \"1024\" or \"2048\"";
    let cpu_text = cpu.ok_or_else(|| {
        TaskDefinitionError::new(file, "cpu", "is required for FARGATE").help(fix)
    })?;
    let memory_text = memory.ok_or_else(|| {
        TaskDefinitionError::new(file, "memory", "is required for FARGATE").help(fix)
    })?;
    let cpu_units = parse_units(cpu_text, "vcpu").ok_or_else(|| {
        TaskDefinitionError::new(file, "cpu", "is not a CPU size")
            .value(format!("{cpu_text:?}"))
            .help("use CPU units such as \"256\" or \"1 vCPU\"")
    })?;
    let memory_mib = parse_units(memory_text, "gb").ok_or_else(|| {
        TaskDefinitionError::new(file, "memory", "is not a memory size")
            .value(format!("{memory_text:?}"))
            .help("use MiB such as \"512\" or \"2 GB\"")
    })?;
    let allowed: Vec<u64> = match cpu_units {
        256 => vec![512, 1024, 2048],
        512 => (1..=4).map(|g| g * 1024).collect(),
        1024 => (2..=8).map(|g| g * 1024).collect(),
        2048 => (4..=16).map(|g| g * 1024).collect(),
        4096 => (8..=30).map(|g| g * 1024).collect(),
        8192 => (16..=60).step_by(4).map(|g| g * 1024).collect(),
        16384 => (32..=120).step_by(8).map(|g| g * 1024).collect(),
        _ => {
            return Err(
                TaskDefinitionError::new(file, "cpu", "is not a Fargate CPU size")
                    .value(format!("{cpu_text:?}"))
                    .help("Fargate takes 256, 512, 1024, 2048, 4096, 8192 or 16384 CPU units"),
            )
        }
    };
    if !allowed.contains(&memory_mib) {
        let listed: Vec<String> = allowed.iter().map(u64::to_string).collect();
        return Err(TaskDefinitionError::new(
            file,
            "memory",
            format!("is not allowed with cpu {cpu_text:?} on FARGATE"),
        )
        .value(format!("{memory_text:?}"))
        .help(format!(
            "with cpu {cpu_text:?} use one of: {}",
            listed.join(", ")
        )));
    }
    Ok(())
}

/// `"256"` → 256; `"1 vCPU"` → 1024 (unit `vcpu`); `"2 GB"` → 2048 (unit `gb`).
fn parse_units(text: &str, unit: &str) -> Option<u64> {
    let lower = text.trim().to_ascii_lowercase();
    if let Some(number) = lower.strip_suffix(unit) {
        let amount: f64 = number.trim().parse().ok()?;
        let scaled = amount * 1024.0;
        return (scaled.fract() == 0.0 && scaled > 0.0).then_some(scaled as u64);
    }
    lower.parse().ok().filter(|n| *n > 0)
}

fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next().map(str::to_string)
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
