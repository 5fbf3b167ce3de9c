//! From a task definition's containers to Docker containers: start order, `dependsOn`
//! conditions, `essential`, the health check, port mappings and the create request.
//! Pure functions, so the translation is tested without an engine.

use pipeline_core::task_definition::ContainerDefinition;
use pipeline_core::{StageError, TaskDefinition};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// A `dependsOn` condition, as ECS defines them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum Condition {
    /// The dependency has started.
    Start,
    /// The dependency ran to completion (any exit code).
    Complete,
    /// The dependency exited 0.
    Success,
    /// The dependency's health check passed.
    Healthy,
}

/// What the deployer needs to know of one container, besides its create request.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ContainerSpec {
    pub name: String,
    pub essential: bool,
    pub depends_on: Vec<(String, Condition)>,
    pub has_health_check: bool,
    /// `(container port, protocol)` of each port mapping.
    pub ports: Vec<(u16, String)>,
}

fn bad(container: &str, field: &str, problem: impl std::fmt::Display) -> StageError {
    StageError::bad_input(format!(
        "container {container:?}: `{field}` {problem} (the local target runs it with Docker)"
    ))
}

/// The containers of `definition` in an order that starts every dependency first.
pub(crate) fn container_specs(
    definition: &TaskDefinition,
) -> Result<Vec<ContainerSpec>, StageError> {
    let mut specs = Vec::new();
    for container in &definition.container_definitions {
        specs.push(spec_of(container)?);
    }
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    for spec in &specs {
        for (dependency, _) in &spec.depends_on {
            if !names.contains(&dependency.as_str()) {
                return Err(bad(
                    &spec.name,
                    "dependsOn",
                    format!(
                        "names {dependency:?}, which is not a container of the task definition"
                    ),
                ));
            }
        }
    }
    // Kahn's algorithm, keeping the file's order among containers that are ready.
    let mut ordered: Vec<ContainerSpec> = Vec::new();
    let mut left = specs;
    while !left.is_empty() {
        let ready = left.iter().position(|spec| {
            spec.depends_on
                .iter()
                .all(|(dep, _)| ordered.iter().any(|done| &done.name == dep))
        });
        match ready {
            Some(index) => ordered.push(left.remove(index)),
            None => {
                let cycle: Vec<&str> = left.iter().map(|s| s.name.as_str()).collect();
                return Err(StageError::bad_input(format!(
                    "the containers {} depend on each other in a cycle (dependsOn)",
                    cycle.join(", ")
                )));
            }
        }
    }
    if !ordered.iter().any(|spec| spec.essential) {
        return Err(StageError::bad_input(
            "the task definition has no essential container; at least one must be essential",
        ));
    }
    Ok(ordered)
}

fn spec_of(container: &ContainerDefinition) -> Result<ContainerSpec, StageError> {
    let name = container.name.clone();
    let essential = match container.extra.get("essential") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(value)) => *value,
        Some(other) => {
            return Err(bad(
                &name,
                "essential",
                format!("must be true or false, found {other}"),
            ))
        }
    };
    let mut depends_on = Vec::new();
    if let Some(list) = container.extra.get("dependsOn") {
        let items = list
            .as_array()
            .ok_or_else(|| bad(&name, "dependsOn", "must be a list"))?;
        for item in items {
            let dependency = item
                .get("containerName")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(&name, "dependsOn", "needs containerName in every entry"))?;
            let condition = match item.get("condition").and_then(Value::as_str) {
                Some("START") => Condition::Start,
                Some("COMPLETE") => Condition::Complete,
                Some("SUCCESS") => Condition::Success,
                Some("HEALTHY") => Condition::Healthy,
                other => {
                    return Err(bad(
                        &name,
                        "dependsOn",
                        format!(
                            "has condition {}, expected START, COMPLETE, SUCCESS or HEALTHY",
                            other.unwrap_or("(none)")
                        ),
                    ))
                }
            };
            depends_on.push((dependency.to_string(), condition));
        }
    }
    let mut ports = Vec::new();
    if let Some(list) = container.extra.get("portMappings") {
        let items = list
            .as_array()
            .ok_or_else(|| bad(&name, "portMappings", "must be a list"))?;
        for item in items {
            let port = item
                .get("containerPort")
                .and_then(Value::as_u64)
                .and_then(|port| u16::try_from(port).ok())
                .filter(|port| *port > 0)
                .ok_or_else(|| {
                    bad(
                        &name,
                        "portMappings",
                        "needs a containerPort between 1 and 65535",
                    )
                })?;
            let protocol = item
                .get("protocol")
                .and_then(Value::as_str)
                .unwrap_or("tcp")
                .to_ascii_lowercase();
            if protocol != "tcp" && protocol != "udp" {
                return Err(bad(
                    &name,
                    "portMappings",
                    format!("has protocol {protocol}, expected tcp or udp"),
                ));
            }
            ports.push((port, protocol));
        }
    }
    let has_health_check = container
        .extra
        .get("healthCheck")
        .is_some_and(|v| !v.is_null());
    Ok(ContainerSpec {
        name,
        essential,
        depends_on,
        has_health_check,
        ports,
    })
}

/// ECS's `healthCheck` as Docker's `Healthcheck` (seconds become nanoseconds; ECS's
/// defaults: interval 30, timeout 5, retries 3, no start period). Without one, the
/// image's own `HEALTHCHECK` is switched off: ECS does not run it either.
pub(crate) fn docker_health_check(container: &ContainerDefinition) -> Result<Value, StageError> {
    let name = &container.name;
    let Some(check) = container.extra.get("healthCheck").filter(|v| !v.is_null()) else {
        return Ok(json!({ "Test": ["NONE"] }));
    };
    let command: Vec<String> = check
        .get("command")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if command.is_empty() {
        return Err(bad(
            name,
            "healthCheck.command",
            "must be a non-empty list of strings",
        ));
    }
    let test = match command[0].as_str() {
        "CMD" | "CMD-SHELL" | "NONE" => command,
        _ => vec!["CMD-SHELL".to_string(), command.join(" ")],
    };
    let seconds = |field: &str, default: u64, range: (u64, u64)| -> Result<u64, StageError> {
        match check.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(value) => value
                .as_u64()
                .filter(|v| (range.0..=range.1).contains(v))
                .ok_or_else(|| {
                    bad(
                        name,
                        &format!("healthCheck.{field}"),
                        format!(
                            "must be a whole number from {} to {}, found {value}",
                            range.0, range.1
                        ),
                    )
                }),
        }
    };
    let interval = seconds("interval", 30, (5, 300))?;
    let timeout = seconds("timeout", 5, (2, 120))?;
    let retries = seconds("retries", 3, (1, 10))?;
    let start_period = seconds("startPeriod", 0, (0, 300))?;
    Ok(json!({
        "Test": test,
        "Interval": interval * NANOS_PER_SECOND,
        "Timeout": timeout * NANOS_PER_SECOND,
        "Retries": retries,
        "StartPeriod": start_period * NANOS_PER_SECOND,
    }))
}

/// Everything the create request needs besides the container definition.
pub(crate) struct CreateInputs<'a> {
    pub image: &'a str,
    /// `NAME=value` lines: the definition's environment, then its secrets' values.
    pub env: Vec<String>,
    pub labels: &'a BTreeMap<String, String>,
    pub network: &'a str,
    /// The host port of each of the spec's port mappings, in order.
    pub host_ports: &'a [u16],
}

/// The body of `POST /containers/create` for one container.
pub(crate) fn create_body(
    container: &ContainerDefinition,
    spec: &ContainerSpec,
    inputs: &CreateInputs<'_>,
) -> Result<Value, StageError> {
    let extra = &container.extra;
    let mut labels: Map<String, Value> = Map::new();
    if let Some(Value::Object(docker_labels)) = extra.get("dockerLabels") {
        labels.extend(docker_labels.clone());
    }
    for (key, value) in inputs.labels {
        labels.insert(key.clone(), Value::String(value.clone()));
    }
    let mut exposed = Map::new();
    let mut bindings = Map::new();
    for ((port, protocol), host_port) in spec.ports.iter().zip(inputs.host_ports) {
        let key = format!("{port}/{protocol}");
        exposed.insert(key.clone(), json!({}));
        bindings.insert(
            key,
            json!([{ "HostIp": "127.0.0.1", "HostPort": host_port.to_string() }]),
        );
    }
    let mut host_config = json!({
        "PortBindings": bindings,
        "NetworkMode": inputs.network,
    });
    if let Some(memory) = extra.get("memory").and_then(Value::as_u64) {
        host_config["Memory"] = json!(memory * 1024 * 1024);
    }
    if let Some(read_only) = extra.get("readonlyRootFilesystem").and_then(Value::as_bool) {
        host_config["ReadonlyRootfs"] = json!(read_only);
    }
    // Docker's init as PID 1 unless the definition says otherwise: an app that does not
    // handle SIGTERM as PID 1 (busybox httpd) would otherwise hold up every release
    // switch for the whole stop timeout before it is killed.
    let init = extra
        .get("linuxParameters")
        .and_then(|p| p.get("initProcessEnabled"))
        .and_then(Value::as_bool)
        .unwrap_or(true);
    host_config["Init"] = json!(init);
    let mut body = json!({
        "Image": inputs.image,
        "Env": inputs.env,
        "Labels": labels,
        "ExposedPorts": exposed,
        "Healthcheck": docker_health_check(container)?,
        "HostConfig": host_config,
        "NetworkingConfig": {
            "EndpointsConfig": { inputs.network: { "Aliases": [container.name] } }
        },
    });
    let strings = |field: &str| -> Result<Option<Vec<String>>, StageError> {
        match extra.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().map(str::to_string))
                .collect::<Option<Vec<String>>>()
                .map(Some)
                .ok_or_else(|| bad(&container.name, field, "must be a list of strings")),
            Some(_) => Err(bad(&container.name, field, "must be a list of strings")),
        }
    };
    if let Some(command) = strings("command")? {
        body["Cmd"] = json!(command);
    }
    if let Some(entry_point) = strings("entryPoint")? {
        body["Entrypoint"] = json!(entry_point);
    }
    for (ecs, docker) in [
        ("workingDirectory", "WorkingDir"),
        ("user", "User"),
        ("hostname", "Hostname"),
    ] {
        if let Some(value) = extra.get(ecs).and_then(Value::as_str) {
            body[docker] = json!(value);
        }
    }
    if let Some(stop_timeout) = extra.get("stopTimeout").and_then(Value::as_u64) {
        body["StopTimeout"] = json!(stop_timeout);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn definition(containers: Value) -> TaskDefinition {
        let text = json!({ "family": "app", "containerDefinitions": containers }).to_string();
        match TaskDefinition::parse(Path::new("td.json"), &text) {
            Ok(definition) => definition,
            Err(err) => panic!("{err}"),
        }
    }

    fn specs(containers: Value) -> Result<Vec<ContainerSpec>, StageError> {
        container_specs(&definition(containers))
    }

    #[test]
    fn dependencies_start_first_and_essential_defaults_to_true() {
        let specs = specs(json!([
            { "name": "app", "image": "a", "dependsOn": [
                { "containerName": "migrate", "condition": "SUCCESS" },
                { "containerName": "proxy", "condition": "HEALTHY" } ],
              "portMappings": [{ "containerPort": 8000 }] },
            { "name": "proxy", "image": "p", "essential": false, "dependsOn": [
                { "containerName": "migrate", "condition": "COMPLETE" } ] },
            { "name": "migrate", "image": "m", "essential": false }
        ]));
        let specs = specs.unwrap_or_else(|err| panic!("{err}"));
        let order: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(order, ["migrate", "proxy", "app"]);
        assert!(specs[2].essential);
        assert!(!specs[0].essential);
        assert_eq!(specs[2].ports, vec![(8000, "tcp".to_string())]);
        assert_eq!(
            specs[2].depends_on,
            vec![
                ("migrate".to_string(), Condition::Success),
                ("proxy".to_string(), Condition::Healthy)
            ]
        );
    }

    #[test]
    fn cycles_unknown_dependencies_and_no_essential_container_are_bad_input() {
        let cycle = specs(json!([
            { "name": "a", "image": "x", "dependsOn": [{ "containerName": "b", "condition": "START" }] },
            { "name": "b", "image": "x", "dependsOn": [{ "containerName": "a", "condition": "START" }] }
        ]));
        assert!(cycle.is_err_and(|e| e.message.contains("cycle")));
        let unknown = specs(json!([
            { "name": "a", "image": "x", "dependsOn": [{ "containerName": "zz", "condition": "START" }] }
        ]));
        assert!(unknown.is_err_and(|e| e.message.contains("\"zz\"")));
        let none = specs(json!([{ "name": "a", "image": "x", "essential": false }]));
        assert!(none.is_err_and(|e| e.message.contains("essential")));
    }

    #[test]
    fn health_checks_are_translated_in_nanoseconds() {
        let definition = definition(json!([{ "name": "a", "image": "x", "healthCheck": {
            "command": ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:8000/health || exit 1"],
            "interval": 5, "timeout": 2, "retries": 1, "startPeriod": 10 } }]));
        let check = docker_health_check(&definition.container_definitions[0]);
        assert_eq!(
            check.ok(),
            Some(json!({
                "Test": ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:8000/health || exit 1"],
                "Interval": 5_000_000_000u64,
                "Timeout": 2_000_000_000u64,
                "Retries": 1,
                "StartPeriod": 10_000_000_000u64,
            }))
        );
        let without = definition_without_check();
        assert_eq!(
            docker_health_check(&without).ok(),
            Some(json!({ "Test": ["NONE"] }))
        );
        let bad = self::definition(json!([{ "name": "a", "image": "x", "healthCheck": {
            "command": ["CMD", "true"], "interval": 1 } }]));
        assert!(docker_health_check(&bad.container_definitions[0])
            .is_err_and(|e| e.message.contains("healthCheck.interval")));
    }

    fn definition_without_check() -> ContainerDefinition {
        definition(json!([{ "name": "a", "image": "x" }]))
            .container_definitions
            .remove(0)
    }

    #[test]
    fn the_create_request_maps_ports_to_loopback_and_keeps_labels() {
        let definition = definition(json!([{ "name": "web", "image": "x",
            "command": ["serve"], "workingDirectory": "/srv", "dockerLabels": { "team": "cv" },
            "portMappings": [{ "containerPort": 8000, "protocol": "tcp" }] }]));
        let container = &definition.container_definitions[0];
        let spec = spec_of(container).unwrap_or_else(|err| panic!("{err}"));
        let labels = BTreeMap::from([("tugboat.app".to_string(), "cv".to_string())]);
        let body = create_body(
            container,
            &spec,
            &CreateInputs {
                image: "sha256:abc",
                env: vec!["A=1".into()],
                labels: &labels,
                network: "tugboat-cv-local-1",
                host_ports: &[18001],
            },
        )
        .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(body["Image"], "sha256:abc");
        assert_eq!(body["Cmd"], json!(["serve"]));
        assert_eq!(body["WorkingDir"], "/srv");
        assert_eq!(body["Labels"], json!({ "team": "cv", "tugboat.app": "cv" }));
        assert_eq!(
            body["HostConfig"]["PortBindings"],
            json!({ "8000/tcp": [{ "HostIp": "127.0.0.1", "HostPort": "18001" }] })
        );
        assert_eq!(
            body["NetworkingConfig"]["EndpointsConfig"]["tugboat-cv-local-1"]["Aliases"],
            json!(["web"])
        );
        assert_eq!(body["Healthcheck"], json!({ "Test": ["NONE"] }));
    }
}
