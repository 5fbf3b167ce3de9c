//! The few Docker Engine API calls the local target needs (images, containers, networks,
//! events), over the adapters' own HTTP client: one request per connection, JSON bodies.

use chrono::{DateTime, Utc};
use host_adapters::docker_host::{DockerHost, EngineEndpoint};
use host_adapters::http::{self, encode_query_value, Connection, Request};
use pipeline_core::StageError;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::net::{TcpStream, UnixStream};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a short engine request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The most of a response body that is read (container lists, inspect output).
const BODY_LIMIT: usize = 16 * 1024 * 1024;
/// How long a stop that uses the container's own stop timeout may take (ECS allows a
/// `stopTimeout` of up to 120 s).
const LONGEST_STOP_TIMEOUT: Duration = Duration::from_secs(120);

/// A Docker engine, reached at a [`DockerHost`].
#[derive(Clone, Debug)]
pub(crate) struct Engine {
    host: DockerHost,
}

/// What `GET /images/{name}/json` says about an image.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ImageInfo {
    pub id: String,
    #[serde(default)]
    pub repo_tags: Option<Vec<String>>,
}

/// What `GET /containers/{id}/json` says about a container (the parts tugboat reads;
/// never its environment, which holds secret values).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ContainerInfo {
    pub state: ContainerState,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ContainerState {
    /// `created`, `running`, `restarting`, `exited`, `dead`, …
    pub status: String,
    #[serde(default)]
    pub exit_code: i64,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub health: Option<Health>,
    #[serde(default, rename = "OOMKilled")]
    pub oom_killed: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Health {
    /// `starting`, `healthy`, `unhealthy`, `none`.
    pub status: String,
    #[serde(default)]
    pub log: Option<Vec<HealthLog>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct HealthLog {
    #[serde(default)]
    pub exit_code: i64,
    #[serde(default)]
    pub output: String,
}

/// A line of `GET /containers/json`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ContainerSummary {
    pub id: String,
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub ports: Vec<PortSummary>,
}

impl ContainerSummary {
    /// The name without the leading `/`.
    pub fn name(&self) -> &str {
        self.names
            .first()
            .map(|name| name.trim_start_matches('/'))
            .unwrap_or(&self.id)
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct PortSummary {
    #[serde(default, rename = "IP")]
    pub ip: Option<String>,
    #[serde(default)]
    pub private_port: u16,
    #[serde(default)]
    pub public_port: Option<u16>,
    #[serde(default, rename = "Type")]
    pub kind: String,
}

/// A line of `GET /networks`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct NetworkSummary {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// One engine event (`GET /events`).
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct EngineEvent {
    #[serde(default, rename = "Action")]
    pub action: String,
    #[serde(default, rename = "Actor")]
    pub actor: EventActor,
    #[serde(default, rename = "timeNano")]
    pub time_nano: i64,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct EventActor {
    #[serde(default, rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct EngineError {
    message: String,
}

/// The engine's error message from a JSON body, or the body itself.
pub(crate) fn engine_message(body: &[u8]) -> String {
    match serde_json::from_slice::<EngineError>(body) {
        Ok(error) => error.message,
        Err(_) => {
            let text = String::from_utf8_lossy(body).trim().to_string();
            if text.is_empty() {
                "no error message".to_string()
            } else {
                text
            }
        }
    }
}

/// `{"label": ["a=b", …]}` as a `filters` query value.
pub(crate) fn label_filters(labels: &[(&str, &str)]) -> String {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let filters = serde_json::json!({ "label": labels });
    encode_query_value(&filters.to_string())
}

impl Engine {
    pub fn new(host: DockerHost) -> Self {
        Self { host }
    }

    pub fn host(&self) -> &DockerHost {
        &self.host
    }

    fn unreachable(&self, err: &std::io::Error) -> StageError {
        StageError::unavailable(format!(
            "the Docker engine is not reachable at {}: {err}",
            self.host.describe()
        ))
        .with_help(self.host.unreachable_help())
    }

    /// Sends one request and reads the whole response: `(status, body)`.
    pub async fn call(
        &self,
        method: &str,
        target: &str,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<(u16, Vec<u8>), StageError> {
        host_adapters::http::check_target(target).map_err(|err| {
            StageError::bad_input(format!("{err}; nothing was sent to the Docker engine"))
        })?;
        let endpoint = self.host.endpoint()?;
        let (stream, host_header): (Box<dyn Connection>, String) = match &endpoint {
            EngineEndpoint::Unix(path) => {
                let stream = tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(path))
                    .await
                    .map_err(|_| self.unreachable(&std::io::ErrorKind::TimedOut.into()))?
                    .map_err(|err| self.unreachable(&err))?;
                (Box::new(stream), "docker".to_string())
            }
            EngineEndpoint::Tcp(authority) => {
                let stream =
                    tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(authority.as_str()))
                        .await
                        .map_err(|_| self.unreachable(&std::io::ErrorKind::TimedOut.into()))?
                        .map_err(|err| self.unreachable(&err))?;
                (Box::new(stream), authority.clone())
            }
        };
        let bytes = match body {
            Some(body) => Some(serde_json::to_vec(body).map_err(|err| {
                StageError::failed(format!("cannot encode an engine request: {err}"))
            })?),
            None => None,
        };
        let mut headers = Vec::new();
        if bytes.is_some() {
            headers.push(("Content-Type", "application/json".to_string()));
        }
        let request = Request {
            method,
            target,
            host: &host_header,
            headers,
        };
        let path = target.split('?').next().unwrap_or(target);
        let limit = timeout.unwrap_or(REQUEST_TIMEOUT);
        let exchange = async {
            let mut response = http::send_with_body(stream, &request, bytes.as_deref()).await?;
            let body = response.body.read_to_end(BODY_LIMIT).await?;
            Ok::<_, std::io::Error>((response.status, body))
        };
        tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| {
                StageError::unavailable(format!(
                    "the Docker engine at {} did not answer {method} {path} within {}s",
                    self.host.describe(),
                    limit.as_secs()
                ))
            })?
            .map_err(|err| {
                StageError::unavailable(format!(
                    "the Docker engine at {} broke off {method} {path}: {err}",
                    self.host.describe()
                ))
            })
    }

    /// A request that must answer one of `ok` statuses; the error names what was asked.
    async fn expect(
        &self,
        method: &str,
        target: &str,
        body: Option<&Value>,
        ok: &[u16],
        what: &str,
    ) -> Result<(u16, Vec<u8>), StageError> {
        let (status, bytes) = self.call(method, target, body, None).await?;
        if ok.contains(&status) {
            Ok((status, bytes))
        } else {
            Err(StageError::failed(format!(
                "the Docker engine at {} refused to {what} (HTTP {status}): {}",
                self.host.describe(),
                engine_message(&bytes)
            )))
        }
    }

    fn parse<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StageError> {
        serde_json::from_slice(bytes).map_err(|err| {
            StageError::failed(format!(
                "the Docker engine's answer to {what} is not what tugboat expects: {err}"
            ))
        })
    }

    /// The image a name, id or digest reference names, `None` when the engine has none.
    pub async fn image(&self, reference: &str) -> Result<Option<ImageInfo>, StageError> {
        host_adapters::http::check_image_reference(reference).map_err(|why| {
            StageError::bad_input(format!("{why}; nothing was sent to the Docker engine"))
                .with_help("fix the image in the task definition or --image")
        })?;
        let target = format!("/images/{reference}/json");
        let (status, bytes) = self
            .expect(
                "GET",
                &target,
                None,
                &[200, 404, 400],
                &format!("inspect image {reference}"),
            )
            .await?;
        if status != 200 {
            return Ok(None);
        }
        Self::parse(&bytes, "an image inspection").map(Some)
    }

    /// Tags an image (`repo:tag`); replaces whatever the tag named before.
    pub async fn tag_image(&self, image: &str, repo: &str, tag: &str) -> Result<(), StageError> {
        let target = format!(
            "/images/{image}/tag?repo={}&tag={}",
            encode_query_value(repo),
            encode_query_value(tag)
        );
        self.expect(
            "POST",
            &target,
            None,
            &[200, 201],
            &format!("tag {image} as {repo}:{tag}"),
        )
        .await
        .map(drop)
    }

    /// Pulls `reference` (`name:tag` or `name@digest`); the error is the engine's.
    pub async fn pull(&self, reference: &str) -> Result<(), StageError> {
        let (name, tag) = split_reference(reference);
        let mut target = format!("/images/create?fromImage={}", encode_query_value(name));
        if let Some(tag) = tag {
            target.push_str(&format!("&tag={}", encode_query_value(tag)));
        }
        let (status, bytes) = self
            .call("POST", &target, None, Some(Duration::from_secs(600)))
            .await?;
        if status != 200 {
            return Err(StageError::bad_input(format!(
                "image {reference} is not in the Docker engine and could not be pulled: {}",
                engine_message(&bytes)
            )));
        }
        // A pull streams JSON lines; a failure is a line with `error`.
        for line in String::from_utf8_lossy(&bytes).lines() {
            if let Ok(value) = serde_json::from_str::<Value>(line) {
                if let Some(error) = value.get("error").and_then(Value::as_str) {
                    return Err(StageError::bad_input(format!(
                        "image {reference} is not in the Docker engine and could not be pulled: {error}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Creates a container; `Ok(Err(message))` when the engine refused the request
    /// (a name in use, a bad configuration) so the caller can say what it was doing.
    pub async fn create_container(
        &self,
        name: &str,
        body: &Value,
    ) -> Result<Result<String, String>, StageError> {
        let target = format!("/containers/create?name={}", encode_query_value(name));
        let (status, bytes) = self.call("POST", &target, Some(body), None).await?;
        if status != 201 {
            return Ok(Err(format!("HTTP {status}: {}", engine_message(&bytes))));
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Created {
            id: String,
        }
        Ok(Ok(
            Self::parse::<Created>(&bytes, "a container creation")?.id
        ))
    }

    /// Starts a container; `Ok(Err(message))` when the engine refused (a port in use).
    pub async fn start_container(&self, id: &str) -> Result<Result<(), String>, StageError> {
        let (status, bytes) = self
            .call("POST", &format!("/containers/{id}/start"), None, None)
            .await?;
        if status == 204 || status == 304 {
            Ok(Ok(()))
        } else {
            Ok(Err(format!("HTTP {status}: {}", engine_message(&bytes))))
        }
    }

    pub async fn inspect_container(&self, id: &str) -> Result<Option<ContainerInfo>, StageError> {
        let (status, bytes) = self
            .expect(
                "GET",
                &format!("/containers/{id}/json"),
                None,
                &[200, 404],
                &format!("inspect container {id}"),
            )
            .await?;
        if status == 404 {
            return Ok(None);
        }
        Self::parse(&bytes, "a container inspection").map(Some)
    }

    /// The last `tail` lines a container wrote (stdout and stderr, with timestamps), in
    /// the engine's stream format.
    pub async fn container_logs(&self, id: &str, tail: usize) -> Result<Vec<u8>, StageError> {
        let target = format!("/containers/{id}/logs?stdout=1&stderr=1&timestamps=1&tail={tail}");
        self.expect(
            "GET",
            &target,
            None,
            &[200],
            &format!("read the logs of {id}"),
        )
        .await
        .map(|(_, bytes)| bytes)
    }

    /// The lines a container wrote from `since` on (inclusive; all of them when `None`),
    /// stdout and stderr with timestamps, in the engine's stream format.
    pub async fn container_logs_since(
        &self,
        id: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<u8>, StageError> {
        let mut target = format!("/containers/{id}/logs?stdout=1&stderr=1&timestamps=1");
        if let Some(at) = since {
            target.push_str(&format!(
                "&since={}.{:09}",
                at.timestamp(),
                at.timestamp_subsec_nanos()
            ));
        }
        self.expect(
            "GET",
            &target,
            None,
            &[200],
            &format!("read the logs of {id}"),
        )
        .await
        .map(|(_, bytes)| bytes)
    }

    /// Stops a container: SIGTERM, then SIGKILL after `grace` (`None`: the container's
    /// own stop timeout, `stopTimeout` of its definition, else the engine's 10 s). A
    /// container already stopped or gone is fine; a refusal is only logged.
    pub async fn stop_container(&self, id: &str, grace: Option<Duration>) {
        let stop = match grace {
            Some(grace) => format!("/containers/{id}/stop?t={}", grace.as_secs()),
            None => format!("/containers/{id}/stop"),
        };
        let wait = grace.unwrap_or(LONGEST_STOP_TIMEOUT) + REQUEST_TIMEOUT;
        match self.call("POST", &stop, None, Some(wait)).await {
            Ok((status, _)) if [204, 304, 404].contains(&status) => {}
            Ok((status, bytes)) => tracing::debug!(
                "stopping {id} failed (HTTP {status}): {}",
                engine_message(&bytes)
            ),
            Err(err) => tracing::debug!("stopping {id} failed: {}", err.message),
        }
    }

    /// Stops (SIGTERM, then SIGKILL after `grace`) and removes a container; one that is
    /// already gone is fine.
    pub async fn remove_container(&self, id: &str, grace: Duration) -> Result<(), StageError> {
        self.stop_container(id, Some(grace)).await;
        self.expect(
            "DELETE",
            &format!("/containers/{id}?force=true&v=true"),
            None,
            &[204, 404],
            &format!("remove container {id}"),
        )
        .await
        .map(drop)
    }

    /// Containers (running or not) that carry every label.
    pub async fn containers(
        &self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<ContainerSummary>, StageError> {
        let target = format!(
            "/containers/json?all=true&filters={}",
            label_filters(labels)
        );
        let (_, bytes) = self
            .expect("GET", &target, None, &[200], "list containers")
            .await?;
        Self::parse(&bytes, "a container list")
    }

    /// Creates a bridge network; one that exists already (HTTP 409) is fine. Says
    /// whether this call created it.
    pub async fn create_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<bool, StageError> {
        let body = serde_json::json!({
            "Name": name,
            "Driver": "bridge",
            "CheckDuplicate": true,
            "Labels": labels,
        });
        let (status, bytes) = self
            .call("POST", "/networks/create", Some(&body), None)
            .await?;
        if status == 201 || status == 409 {
            Ok(status == 201)
        } else {
            Err(StageError::failed(format!(
                "the Docker engine at {} refused to create network {name} (HTTP {status}): {}",
                self.host.describe(),
                engine_message(&bytes)
            )))
        }
    }

    pub async fn remove_network(&self, name: &str) -> Result<(), StageError> {
        self.expect(
            "DELETE",
            &format!("/networks/{name}"),
            None,
            &[200, 204, 404],
            &format!("remove network {name}"),
        )
        .await
        .map(drop)
    }

    pub async fn networks(
        &self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<NetworkSummary>, StageError> {
        let target = format!("/networks?filters={}", label_filters(labels));
        let (_, bytes) = self
            .expect("GET", &target, None, &[200], "list networks")
            .await?;
        Self::parse(&bytes, "a network list")
    }

    /// Container events between two Unix times for containers with every label.
    pub async fn events(
        &self,
        since: i64,
        until: i64,
        labels: &[(&str, &str)],
    ) -> Result<Vec<EngineEvent>, StageError> {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let filters = serde_json::json!({ "label": labels, "type": ["container"] });
        let target = format!(
            "/events?since={since}&until={until}&filters={}",
            encode_query_value(&filters.to_string())
        );
        let (_, bytes) = self
            .expect("GET", &target, None, &[200], "list events")
            .await?;
        Ok(String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect())
    }
}

/// `name:tag` → (`name`, `tag`), `name@sha256:…` → (`name`, `sha256:…`), `name` → (`name`, none).
fn split_reference(reference: &str) -> (&str, Option<&str>) {
    if let Some((name, digest)) = reference.split_once('@') {
        return (name, Some(digest));
    }
    match reference.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
        _ => (reference, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_name_and_tag_or_digest() {
        assert_eq!(split_reference("busybox"), ("busybox", None));
        assert_eq!(split_reference("busybox:1.36"), ("busybox", Some("1.36")));
        assert_eq!(
            split_reference("127.0.0.1:5000/app@sha256:ab"),
            ("127.0.0.1:5000/app", Some("sha256:ab"))
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/app"),
            ("127.0.0.1:5000/app", None)
        );
    }

    #[test]
    fn label_filters_are_encoded_json() {
        assert_eq!(
            label_filters(&[("tugboat.app", "cv")]),
            "%7B%22label%22%3A%5B%22tugboat.app%3Dcv%22%5D%7D"
        );
    }
}
