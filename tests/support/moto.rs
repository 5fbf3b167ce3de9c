//! A per-test moto server whose ECS deployments progress like real ECS
//! (rollouts, crashloops with circuit-breaker rollback, hangs): see
//! `support/moto/README.md` and `support/moto/tugboat_moto.py`.
//!
//! ```ignore
//! let moto = MotoServer::start().await?;
//! // point the SDK at moto.endpoint / moto.env_for_sdk() ...
//! let log = moto.transitions().await?; // [{deploymentId, service, state, at}]
//! ```
//!
//! The server is killed when the `MotoServer` is dropped; it also exits by
//! itself when its stdin closes, so a killed test process leaves nothing behind.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

const LAUNCHER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/support/moto/tugboat_moto.py");
const READY_PREFIX: &str = "tugboat-moto ready on ";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
// A control request answers in milliseconds; under a loaded CI machine a few seconds.
// One that takes longer is asked again once on a fresh connection (every control
// request is idempotent: it sets state, or reads it); a second one that takes longer is a
// hang: the server is asked for its threads' stacks (faulthandler on SIGUSR1) and they
// go into the error. (Seen twice in CI: no answer in 30 s while the server's stacks showed
// it idle, with no thread left serving the request.)
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);
const HTTP_ATTEMPTS: u32 = 2;
const LOG_TAIL_LINES: usize = 150;

type LogTail = Arc<Mutex<VecDeque<String>>>;

/// A region's default VPC and its default subnets (one per availability zone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefaultNetwork {
    pub vpc_id: String,
    pub subnet_ids: Vec<String>,
    /// The VPC's `default` security group.
    pub security_group_ids: Vec<String>,
}

#[derive(Debug)]
pub struct MotoServer {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    child: Child,
    log_tail: LogTail,
}

impl MotoServer {
    /// Starts tugboat-moto on a free port and waits for it to be ready.
    pub async fn start() -> anyhow::Result<MotoServer> {
        Self::start_with_env(&[]).await
    }

    /// Like [`MotoServer::start`], with extra environment for the server, for example
    /// `[("TUGBOAT_MOTO_ROLLOUT_SECONDS", "5")]` (see the README for the variables).
    pub async fn start_with_env(env: &[(&str, &str)]) -> anyhow::Result<MotoServer> {
        let python = python()?;
        let mut last_error = None;
        // The port is free when we look, but another test may grab it before
        // python binds it: retry on "Address already in use".
        for _ in 0..3 {
            match Self::spawn(&python, free_port()?, env).await {
                Ok(server) => return Ok(server),
                Err(e) if format!("{e:#}").contains("Address already in use") => {
                    last_error = Some(e)
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("could not start tugboat-moto")))
    }

    async fn spawn(python: &Path, port: u16, env: &[(&str, &str)]) -> anyhow::Result<MotoServer> {
        let mut child = Command::new(python)
            .arg(LAUNCHER)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--exit-on-stdin-eof",
            ])
            .envs(env.iter().copied())
            // stdin stays in `child` unused: dropping it (or dying) closes the pipe.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {} {LAUNCHER}", python.display()))?;
        let stdout = child
            .stdout
            .take()
            .context("tugboat-moto stdout is not piped")?;
        let stderr = child
            .stderr
            .take()
            .context("tugboat-moto stderr is not piped")?;
        let log_tail = LogTail::default();
        // Keep draining stderr (errors; every request with TUGBOAT_MOTO_LOG_REQUESTS=1) so the pipe never fills.
        let stderr_drain = tokio::spawn(drain(stderr, log_tail.clone()));

        let mut stdout = BufReader::new(stdout).lines();
        let wait_ready = async {
            while let Some(line) = stdout.next_line().await? {
                if let Some(url) = line.strip_prefix(READY_PREFIX) {
                    return Ok::<_, std::io::Error>(Some(url.trim().to_owned()));
                }
                push_line(&log_tail, line);
            }
            Ok(None)
        };
        let ready = tokio::time::timeout(STARTUP_TIMEOUT, wait_ready).await;
        let problem = match ready {
            Ok(Ok(Some(endpoint))) => {
                let tail = log_tail.clone();
                tokio::spawn(async move {
                    while let Ok(Some(line)) = stdout.next_line().await {
                        push_line(&tail, line);
                    }
                });
                return Ok(MotoServer {
                    endpoint,
                    child,
                    log_tail,
                });
            }
            Ok(Ok(None)) => {
                let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                match status {
                    Ok(Ok(status)) => format!("exited ({status}) before it was ready"),
                    _ => "closed its stdout before it was ready".to_owned(),
                }
            }
            Ok(Err(e)) => format!("could not be read from: {e}"),
            Err(_) => {
                let _ = child.start_kill();
                format!("printed no ready line within {STARTUP_TIMEOUT:?}")
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), stderr_drain).await;
        bail!(
            "tugboat-moto ({} {LAUNCHER} --port {port}) {problem}; its output ends with:\n{}",
            python.display(),
            tail_text(&log_tail)
        )
    }

    /// The emulator's log of deployment transitions, sorted by time:
    /// `[{"deploymentId": "ecs-svc/…", "service": "web", "state": "COMPLETED"|"FAILED", "at": 1732630000.123}]`
    /// (`at` in epoch seconds: the moment the transition happened in the model).
    pub async fn transitions(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let body = self.http("GET", "/tugboat-moto/transitions").await?;
        serde_json::from_slice(&body).context("parsing /tugboat-moto/transitions")
    }

    /// Every `DescribeServices` call the emulator answered and every `UpdateService`,
    /// oldest first: `[{"op": "DescribeServices", "at": 1732630000.1, "cluster":
    /// "shop-us-east-1", "region": "us-east-1", "services": 10}]`.
    pub async fn describe_services_calls(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let body = self
            .http("GET", "/tugboat-moto/describe-services-calls")
            .await?;
        serde_json::from_slice(&body).context("parsing /tugboat-moto/describe-services-calls")
    }

    /// moto's default VPC in us-east-1, its default subnets and security group (moto
    /// gives them random ids): `GET /tugboat-moto/default-network`. For resources that need a VPC (ELBv2
    /// target groups and load balancers) without an EC2 client in the tests.
    pub async fn default_network(&self) -> anyhow::Result<DefaultNetwork> {
        let body = self.http("GET", "/tugboat-moto/default-network").await?;
        let value: serde_json::Value =
            serde_json::from_slice(&body).context("parsing /tugboat-moto/default-network")?;
        let vpc_id = value["vpcId"]
            .as_str()
            .context("no vpcId in /tugboat-moto/default-network")?
            .to_owned();
        let subnet_ids = value["subnetIds"]
            .as_array()
            .context("no subnetIds in /tugboat-moto/default-network")?
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect();
        let security_group_ids = value["securityGroupIds"]
            .as_array()
            .context("no securityGroupIds in /tugboat-moto/default-network")?
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect();
        Ok(DefaultNetwork {
            vpc_id,
            subnet_ids,
            security_group_ids,
        })
    }

    /// Wipes all of moto's state (and the transitions log): `POST /moto-api/reset`.
    pub async fn reset(&self) -> anyhow::Result<()> {
        self.http("POST", "/moto-api/reset").await.map(drop)
    }

    /// Environment for an AWS SDK client (or a tugboat child process) talking to this server.
    pub fn env_for_sdk(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }

    /// The last lines the server wrote (request log, tracebacks): handy in assertion messages.
    pub fn log_tail(&self) -> String {
        tail_text(&self.log_tail)
    }

    /// What every thread of the server is doing (its faulthandler prints the stacks
    /// to stderr on SIGUSR1), followed by the server's last log lines.
    async fn stacks(&self) -> String {
        let Some(pid) = self.child.id() else {
            return format!("(the server has exited)\n{}", self.log_tail());
        };
        let signalled = Command::new("kill")
            .args(["-USR1", &pid.to_string()])
            .status()
            .await
            .is_ok_and(|status| status.success());
        if signalled {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.log_tail()
    }

    /// The server's process id, if it is still running.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// One HTTP/1.1 request over a fresh connection (no HTTP client crate here); returns the
    /// body once it is whole, whether or not the server closes the connection.
    /// `POST path` with a JSON body to the moto API (`/moto-api/static/ecr/scan-finding-results`).
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<Vec<u8>> {
        self.http_with_body("POST", path, body.to_string().as_bytes())
            .await
    }

    async fn http(&self, method: &str, path: &str) -> anyhow::Result<Vec<u8>> {
        self.http_with_body(method, path, &[]).await
    }

    async fn http_with_body(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> anyhow::Result<Vec<u8>> {
        let authority = self
            .endpoint
            .strip_prefix("http://")
            .with_context(|| format!("endpoint {} is not http://", self.endpoint))?;
        let exchange = || async {
            let mut stream = TcpStream::connect(authority).await?;
            let request = format!(
                "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            // One write: the request and its body in one segment.
            let mut whole = request.into_bytes();
            whole.extend_from_slice(body);
            stream.write_all(&whole).await?;
            // Read until the response is whole (its Content-Length, or the last chunk),
            // not until the server closes: a connection it keeps open must not hang us.
            let mut raw = Vec::new();
            let mut buffer = [0u8; 16 * 1024];
            while !response_complete(&raw) {
                let read = stream.read(&mut buffer).await?;
                if read == 0 {
                    break;
                }
                raw.extend_from_slice(&buffer[..read]);
            }
            Ok::<_, std::io::Error>(raw)
        };
        let mut attempt = 1;
        let raw = loop {
            match tokio::time::timeout(HTTP_TIMEOUT, exchange()).await {
                Ok(answer) => {
                    break answer.with_context(|| format!("{method} {path} to {authority}"))?
                }
                Err(_) if attempt < HTTP_ATTEMPTS => {
                    eprintln!("moto: {method} {path}: no answer within {HTTP_TIMEOUT:?}; asking again");
                    attempt += 1;
                }
                Err(_) => bail!(
                    "{method} {path}: no answer within {HTTP_TIMEOUT:?}, {HTTP_ATTEMPTS} times; the server's threads and log:\n{}",
                    self.stacks().await
                ),
            }
        };
        parse_response(&raw).with_context(|| format!("{method} {path}"))
    }
}

fn python() -> anyhow::Result<PathBuf> {
    const SETUP: &str = "run `bash .ci/setup-backends` to create it, or set TUGBOAT_MOTO_PYTHON";
    let path = match std::env::var_os("TUGBOAT_MOTO_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            let home: OsString =
                std::env::var_os("HOME").with_context(|| format!("HOME is not set; {SETUP}"))?;
            PathBuf::from(home).join(".cache/tugboat-moto-venv/bin/python")
        }
    };
    // A bare name ("python3") is looked up on PATH by Command.
    if path.components().count() > 1 && !path.exists() {
        bail!(
            "moto's python interpreter {} does not exist: {SETUP}",
            path.display()
        );
    }
    Ok(path)
}

fn free_port() -> anyhow::Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0 to pick a port")?;
    Ok(listener.local_addr()?.port())
}

async fn drain(pipe: impl AsyncRead + Unpin, tail: LogTail) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        push_line(&tail, line);
    }
}

fn push_line(tail: &LogTail, line: String) {
    let mut tail = tail.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if tail.len() == LOG_TAIL_LINES {
        tail.pop_front();
    }
    tail.push_back(line);
}

fn tail_text(tail: &LogTail) -> String {
    let tail = tail.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if tail.is_empty() {
        return "(no output)".to_owned();
    }
    tail.iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Status must be 2xx; handles `Content-Length`, chunked, and read-to-close bodies.
/// Whether `raw` holds a whole HTTP response: headers, then as many body bytes as
/// Content-Length says, or a chunked body up to its last chunk. A response with neither
/// ends when the server closes the connection.
fn response_complete(raw: &[u8]) -> bool {
    let Some(split) = find(raw, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let rest = &raw[split + 4..];
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        match name.trim() {
            "content-length" => {
                return value
                    .trim()
                    .parse::<usize>()
                    .is_ok_and(|length| rest.len() >= length)
            }
            "transfer-encoding" if value.contains("chunked") => {
                return rest.ends_with(b"0\r\n\r\n")
            }
            _ => {}
        }
    }
    false
}

fn parse_response(raw: &[u8]) -> anyhow::Result<Vec<u8>> {
    let split = find(raw, b"\r\n\r\n").context("no end of headers in the HTTP response")?;
    let head = std::str::from_utf8(&raw[..split]).context("HTTP response headers are not UTF-8")?;
    let rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("bad HTTP status line {status_line:?}"))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked") {
            chunked = true;
        } else if name == "content-length" {
            length = Some(
                value
                    .parse::<usize>()
                    .with_context(|| format!("bad Content-Length {value:?}"))?,
            );
        }
    }
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(length) = length {
        rest.get(..length)
            .context("HTTP body shorter than its Content-Length")?
            .to_vec()
    } else {
        rest.to_vec()
    };
    if !(200..300).contains(&status) {
        bail!("HTTP {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(body)
}

fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let end = find(data, b"\r\n").context("truncated chunked body")?;
        let size_line = std::str::from_utf8(&data[..end]).context("chunk size is not UTF-8")?;
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .with_context(|| format!("bad chunk size {size_line:?}"))?;
        data = &data[end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(..size).context("truncated chunk")?);
        data = data.get(size + 2..).context("truncated chunk")?;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_and_chunked_bodies() -> anyhow::Result<()> {
        let plain =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]";
        assert_eq!(parse_response(plain)?, b"[]");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[{}\r\n1;x=y\r\n]\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked)?, b"[{}]");
        let error = b"HTTP/1.1 404 NOT FOUND\r\nContent-Length: 4\r\n\r\nnope";
        assert!(parse_response(error).is_err());
        Ok(())
    }
}
