//! [`DockerEnginePusher`]: pushes through the Docker Engine API, with the registry
//! password in a request header only, and reads tags back from the registry's v2 API.
//!
//! Why one file of ~990 lines: the push is one exchange with the engine (auth header,
//! progress stream, its errors) and the v2 tag read-back it is checked against; a
//! tenth of it is tests.

use crate::docker_host::{DockerHost, EngineEndpoint};
use crate::http::{self, encode_query_value, Connection, Request, Response};
use async_trait::async_trait;
use base64::Engine as _;
use pipeline_core::{
    BuiltImage, Events, ImagePusher, PipelineEvent, RegistryCredentials, Stage, StageError,
};
use serde::Deserialize;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a short engine or registry request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest silence in a push's progress stream before it is given up.
const PUSH_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// The most of an error body that is read.
const ERROR_BODY_LIMIT: usize = 64 * 1024;
/// The most of a manifest that is read (registries refuse manifests over 4 MiB).
const MANIFEST_LIMIT: usize = 4 * 1024 * 1024;

/// The manifest types a tag can point at; a registry answers `HEAD` with the digest of
/// the manifest as stored only when it may return that type.
const MANIFEST_TYPES: &str = "application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json";

/// Pushes images through the Docker Engine API and reads tags from the registry
/// (`remote_digest` with `HEAD`, `holds_image` with `GET` of the manifest).
///
/// The registry password travels in memory only: to the engine in the
/// `X-Registry-Auth` header of the push request, to the registry in an `Authorization`
/// header. No `docker login` (which writes `~/.docker/config.json`), no command line.
/// Every line this pusher emits or puts in an error is scrubbed of the password.
///
/// The engine is reached at [`DockerHost`] (`unix://` or plain `tcp://`). The registry
/// is reached over plain HTTP when the server is a loopback address (`127.0.0.1:5000`,
/// `localhost:5000`) or written `http://…`, and over HTTPS (system roots plus any added
/// with [`DockerEnginePusher::with_root_certificates_pem`]) otherwise.
///
/// ```no_run
/// # async fn example(image: pipeline_core::BuiltImage) -> Result<(), pipeline_core::StageError> {
/// use host_adapters::DockerEnginePusher;
/// use pipeline_core::{Events, ImagePusher, RegistryCredentials};
/// let credentials = RegistryCredentials {
///     server: "123456789012.dkr.ecr.us-east-1.amazonaws.com".into(),
///     username: "AWS".into(),
///     password: "token from GetAuthorizationToken".into(),
/// };
/// let pusher = DockerEnginePusher::from_env();
/// let digest = pusher.push(&image, &credentials, "cv_matcher", "0123abc", &Events::new()).await?;
/// assert_eq!(pusher.remote_digest(&credentials, "cv_matcher", "0123abc").await?, Some(digest));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct DockerEnginePusher {
    host: DockerHost,
    extra_roots: Vec<CertificateDer<'static>>,
    tls: Arc<OnceLock<Arc<ClientConfig>>>,
}

/// How many layers a push moved, from the final status of each layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerCounts {
    /// `Pushed`: uploaded.
    pub uploaded: usize,
    /// `Layer already exists`: the registry had it.
    pub already_present: usize,
    /// `Mounted from …`: the registry copied it from another repository.
    pub mounted: usize,
}

impl LayerCounts {
    /// Counts one status of a push's progress stream.
    pub fn observe(&mut self, status: &str) {
        if status == "Pushed" {
            self.uploaded += 1;
        } else if status == "Layer already exists" {
            self.already_present += 1;
        } else if status.starts_with("Mounted from") {
            self.mounted += 1;
        }
    }

    /// Counts the layers in a push's progress stream: the engine's JSON lines, or the
    /// `id: status` lines `docker push` prints.
    pub fn from_push_output(output: &str) -> Self {
        let mut counts = Self::default();
        for line in output.lines() {
            match serde_json::from_str::<PushMessage>(line) {
                Ok(message) => {
                    if let Some(status) = message.status.as_deref() {
                        counts.observe(status);
                    }
                }
                Err(_) => {
                    let status = line.split_once(": ").map_or(line, |(_, status)| status);
                    counts.observe(status.trim());
                }
            }
        }
        counts
    }

    /// `pushed 2 layers, 1 already present`.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "pushed {} {}, {} already present",
            self.uploaded,
            if self.uploaded == 1 {
                "layer"
            } else {
                "layers"
            },
            self.already_present
        );
        if self.mounted > 0 {
            text.push_str(&format!(
                ", {} mounted from another repository",
                self.mounted
            ));
        }
        text
    }
}

/// What a push did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushOutcome {
    /// The manifest digest the registry holds (`sha256:…`).
    pub digest: String,
    pub layers: LayerCounts,
}

/// One line of the engine's push progress stream.
#[derive(Debug, Default, Deserialize)]
struct PushMessage {
    status: Option<String>,
    id: Option<String>,
    error: Option<String>,
    #[serde(rename = "errorDetail")]
    error_detail: Option<ErrorDetail>,
    aux: Option<PushAux>,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PushAux {
    #[serde(rename = "Digest")]
    digest: Option<String>,
}

#[derive(Debug, Deserialize)]
struct EngineError {
    message: String,
}

/// Replaces every secret in a text with `<redacted>`.
struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        Self {
            secrets: secrets
                .into_iter()
                .filter(|secret| !secret.is_empty())
                .collect(),
        }
    }

    fn clean(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "<redacted>");
            }
        }
        text
    }

    fn error(&self, mut error: StageError) -> StageError {
        error.message = self.clean(&error.message);
        error.help = error.help.map(|help| self.clean(&help));
        error
    }
}

/// A registry server split into how to reach it.
#[derive(Debug, PartialEq, Eq)]
struct RegistryAddress {
    tls: bool,
    /// `host` without brackets, for SNI and certificate checks.
    host: String,
    /// `host:port` as the `Host` header and the engine's image names write it.
    authority: String,
    /// What to connect to (`host:port`, with the scheme's default port).
    connect_to: String,
}

impl RegistryAddress {
    fn parse(server: &str) -> Result<Self, StageError> {
        let bad = || {
            StageError::bad_input(format!(
                "bad registry server `{server}`: expected host[:port], e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com or 127.0.0.1:5000"
            ))
        };
        let (scheme, rest) = match server.split_once("://") {
            Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
            None => (None, server),
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty()
            || !authority
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        {
            return Err(bad());
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or_else(bad)?;
            let port = match after {
                "" => None,
                port => Some(port.strip_prefix(':').ok_or_else(bad)?),
            };
            (host, port)
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() || port.is_some_and(|port| port.parse::<u16>().is_err()) {
            return Err(bad());
        }
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        let tls = match scheme.as_deref() {
            Some("https") => true,
            Some("http") => false,
            Some(_) => return Err(bad()),
            None => !loopback,
        };
        let default_port = if tls { "443" } else { "80" };
        let host_part = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        Ok(Self {
            tls,
            host: host.to_string(),
            authority: authority.to_string(),
            connect_to: format!("{host_part}:{}", port.unwrap_or(default_port)),
        })
    }

    fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.authority
        )
    }
}

fn valid_repository(repository: &str) -> bool {
    !repository.is_empty()
        && !repository.starts_with('/')
        && !repository.ends_with('/')
        && repository.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-' | b'/')
        })
}

fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn valid_local_image(image: &str) -> bool {
    !image.is_empty()
        && image.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/' | b':' | b'@')
        })
}

/// The `X-Registry-Auth` header value the engine expects: URL-safe base64 of the JSON
/// auth config.
fn registry_auth_header(credentials: &RegistryCredentials, server: &str) -> String {
    let json = serde_json::json!({
        "username": credentials.username,
        "password": credentials.password,
        "serveraddress": server,
    });
    base64::engine::general_purpose::URL_SAFE.encode(json.to_string())
}

fn basic_auth(credentials: &RegistryCredentials) -> String {
    let pair = format!("{}:{}", credentials.username, credentials.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// The engine's error message from a JSON body, or the body itself.
fn engine_message(body: &[u8]) -> String {
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

impl DockerEnginePusher {
    /// The engine named by `DOCKER_HOST`, or the default socket.
    pub fn from_env() -> Self {
        Self::new(DockerHost::from_env())
    }

    pub fn new(host: DockerHost) -> Self {
        Self {
            host,
            extra_roots: Vec::new(),
            tls: Arc::new(OnceLock::new()),
        }
    }

    /// Also trusts the certificates in `pem` (a private registry's CA) for HTTPS to the registry.
    pub fn with_root_certificates_pem(mut self, pem: &[u8]) -> Result<Self, StageError> {
        let mut found = 0;
        for certificate in CertificateDer::pem_slice_iter(pem) {
            let certificate = certificate.map_err(|err| {
                StageError::bad_input(format!("bad PEM certificate for the registry: {err}"))
            })?;
            self.extra_roots.push(certificate);
            found += 1;
        }
        if found == 0 {
            return Err(StageError::bad_input(
                "no PEM certificate found in the registry CA bundle",
            ));
        }
        self.tls = Arc::new(OnceLock::new());
        Ok(self)
    }

    pub fn host(&self) -> &DockerHost {
        &self.host
    }

    fn engine_unreachable(&self, err: &std::io::Error) -> StageError {
        StageError::unavailable(format!(
            "the Docker engine is not reachable at {}: {err}",
            self.host.describe()
        ))
        .with_help(self.host.unreachable_help())
    }

    /// Sends one request to the engine API.
    async fn engine_request(
        &self,
        method: &str,
        target: &str,
        headers: Vec<(&str, String)>,
    ) -> Result<Response<Box<dyn Connection>>, StageError> {
        http::check_target(target).map_err(|err| {
            StageError::bad_input(format!("{err}; nothing was sent to the Docker engine"))
        })?;
        let endpoint = self.host.endpoint()?;
        let (stream, host_header): (Box<dyn Connection>, String) = match &endpoint {
            EngineEndpoint::Unix(path) => {
                let stream = tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(path))
                    .await
                    .map_err(|_| self.engine_unreachable(&std::io::ErrorKind::TimedOut.into()))?
                    .map_err(|err| self.engine_unreachable(&err))?;
                (Box::new(stream), "docker".to_string())
            }
            EngineEndpoint::Tcp(authority) => {
                let stream =
                    tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(authority.as_str()))
                        .await
                        .map_err(|_| self.engine_unreachable(&std::io::ErrorKind::TimedOut.into()))?
                        .map_err(|err| self.engine_unreachable(&err))?;
                (Box::new(stream), authority.clone())
            }
        };
        let request = Request {
            method,
            target,
            host: &host_header,
            headers,
        };
        tokio::time::timeout(REQUEST_TIMEOUT, http::send(stream, &request))
            .await
            .map_err(|_| {
                StageError::unavailable(format!(
                    "the Docker engine at {} did not answer {method} {} within {}s",
                    self.host.describe(),
                    target.split('?').next().unwrap_or(target),
                    REQUEST_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|err| {
                StageError::unavailable(format!(
                    "the Docker engine at {} broke off {method} {}: {err}",
                    self.host.describe(),
                    target.split('?').next().unwrap_or(target)
                ))
            })
    }

    /// Pushes `image` as `server/repository:tag` and returns the digest with how many
    /// layers were uploaded; [`ImagePusher::push`] is this without the counts.
    pub async fn push_with_summary(
        &self,
        image: &BuiltImage,
        credentials: &RegistryCredentials,
        repository: &str,
        tag: &str,
        events: &Events,
    ) -> Result<PushOutcome, StageError> {
        let auth = registry_auth_header(
            credentials,
            &RegistryAddress::parse(&credentials.server)?.authority,
        );
        let redactor = Redactor::new([
            credentials.password.clone(),
            auth.clone(),
            basic_auth(credentials),
        ]);
        self.push_inner(image, credentials, repository, tag, events, auth, &redactor)
            .await
            .map_err(|err| redactor.error(err))
    }

    #[allow(clippy::too_many_arguments)]
    async fn push_inner(
        &self,
        image: &BuiltImage,
        credentials: &RegistryCredentials,
        repository: &str,
        tag: &str,
        events: &Events,
        auth: String,
        redactor: &Redactor,
    ) -> Result<PushOutcome, StageError> {
        let address = RegistryAddress::parse(&credentials.server)?;
        if !valid_repository(repository) {
            return Err(StageError::bad_input(format!(
                "bad repository name `{repository}`: expected lowercase letters, digits and . _ - /"
            )));
        }
        if !valid_tag(tag) {
            return Err(StageError::bad_input(format!(
                "bad image tag `{tag}`: expected up to 128 letters, digits and . _ - (not starting with . or -)"
            )));
        }
        let local = if image.image_id.is_empty() {
            image.local_tags.first().cloned().unwrap_or_default()
        } else {
            image.image_id.clone()
        };
        if !valid_local_image(&local) {
            return Err(StageError::bad_input(format!(
                "the built image has no usable id or tag (`{local}`)"
            )));
        }
        let remote = format!("{}/{repository}", address.authority);

        // Name the image as the registry will know it; the engine pushes by name.
        let target = format!(
            "/images/{local}/tag?repo={}&tag={}",
            encode_query_value(&remote),
            encode_query_value(tag)
        );
        let mut response = self.engine_request("POST", &target, Vec::new()).await?;
        if response.status != 201 && response.status != 200 {
            let body = response
                .body
                .read_to_end(ERROR_BODY_LIMIT)
                .await
                .unwrap_or_default();
            let message = engine_message(&body);
            let error =
                format!("could not tag {local} as {remote}:{tag} in the Docker engine: {message}");
            return Err(if response.status == 404 {
                StageError::bad_input(error)
                    .with_help("build the image first; it is not in the local engine")
            } else {
                StageError::failed(error)
            });
        }

        events.info(format!("pushing {local} to {remote}:{tag}"));
        let target = format!("/images/{remote}/push?tag={}", encode_query_value(tag));
        let mut response = self
            .engine_request("POST", &target, vec![("X-Registry-Auth", auth)])
            .await?;
        if response.status != 200 {
            let body = response
                .body
                .read_to_end(ERROR_BODY_LIMIT)
                .await
                .unwrap_or_default();
            return Err(StageError::failed(format!(
                "the Docker engine refused to push {remote}:{tag} (HTTP {}): {}",
                response.status,
                redactor.clean(&engine_message(&body))
            )));
        }

        let mut layers = LayerCounts::default();
        let mut digest = None;
        loop {
            let line =
                match tokio::time::timeout(PUSH_IDLE_TIMEOUT, response.body.next_line()).await {
                    Err(_) => {
                        return Err(StageError::failed(format!(
                            "the push of {remote}:{tag} made no progress for {}s",
                            PUSH_IDLE_TIMEOUT.as_secs()
                        )))
                    }
                    Ok(Err(err)) => {
                        return Err(StageError::unavailable(format!(
                            "the Docker engine at {} broke off the push of {remote}:{tag}: {err}",
                            self.host.describe()
                        )))
                    }
                    Ok(Ok(None)) => break,
                    Ok(Ok(Some(line))) => line,
                };
            if line.trim().is_empty() {
                continue;
            }
            let message: PushMessage = match serde_json::from_str(&line) {
                Ok(message) => message,
                Err(_) => {
                    events.emit(PipelineEvent::Output {
                        stage: Stage::Push,
                        line: redactor.clean(&line),
                    });
                    continue;
                }
            };
            if message.error.is_some() || message.error_detail.is_some() {
                let text = message
                    .error_detail
                    .and_then(|detail| detail.message)
                    .or(message.error)
                    .unwrap_or_else(|| "unknown error".to_string());
                let mut error = StageError::failed(format!(
                    "the push of {local} to {remote}:{tag} failed: {text}"
                ));
                let lower = text.to_ascii_lowercase();
                if lower.contains("unauthorized")
                    || lower.contains("denied")
                    || lower.contains("authentication")
                {
                    error = error.with_help(format!(
                        "check the credentials for {} (user `{}`) and that they may push to {repository}",
                        address.authority, credentials.username
                    ));
                }
                return Err(error);
            }
            if let Some(found) = message.aux.and_then(|aux| aux.digest) {
                digest = Some(found);
            }
            if let Some(status) = message.status.as_deref() {
                layers.observe(status);
                // Byte-count updates would drown everything else.
                if status != "Pushing" {
                    let line = match &message.id {
                        Some(id) => format!("{id}: {status}"),
                        None => status.to_string(),
                    };
                    events.emit(PipelineEvent::Output {
                        stage: Stage::Push,
                        line: redactor.clean(&line),
                    });
                }
            }
        }

        let digest = digest.ok_or_else(|| {
            StageError::failed(format!(
                "the Docker engine finished the push of {remote}:{tag} without reporting a digest"
            ))
        })?;
        events.info(format!("{} ({remote}@{digest})", layers.summary()));
        Ok(PushOutcome { digest, layers })
    }

    fn tls_config(&self) -> Result<Arc<ClientConfig>, StageError> {
        if let Some(config) = self.tls.get() {
            return Ok(config.clone());
        }
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (added, _ignored) = roots.add_parsable_certificates(native.certs);
        let (extra, _) = roots.add_parsable_certificates(self.extra_roots.iter().cloned());
        if added + extra == 0 {
            return Err(StageError::unavailable(
                "no trusted root certificates found for HTTPS to the registry",
            )
            .with_help("install ca-certificates, or set SSL_CERT_FILE to a CA bundle"));
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| StageError::unavailable(format!("could not set up TLS: {err}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let config = Arc::new(config);
        let _ = self.tls.set(config.clone());
        Ok(config)
    }

    async fn registry_connection(
        &self,
        address: &RegistryAddress,
    ) -> Result<Box<dyn Connection>, StageError> {
        let unreachable = |err: String| {
            StageError::unavailable(format!(
                "the registry {} is not reachable: {err}",
                address.url()
            ))
        };
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect(address.connect_to.as_str()),
        )
        .await
        .map_err(|_| {
            unreachable(format!(
                "no connection within {}s",
                CONNECT_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|err| unreachable(err.to_string()))?;
        if !address.tls {
            return Ok(Box::new(tcp));
        }
        let name = ServerName::try_from(address.host.clone()).map_err(|err| {
            StageError::bad_input(format!("bad registry host name `{}`: {err}", address.host))
        })?;
        let connector = TlsConnector::from(self.tls_config()?);
        let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| {
                unreachable(format!(
                    "no TLS handshake within {}s",
                    CONNECT_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|err| unreachable(format!("TLS handshake failed: {err}")))?;
        Ok(Box::new(tls))
    }

    /// Sends `method /v2/<repository>/manifests/<reference>` to the registry; 200 and
    /// 404 come back, other answers are errors saying what the registry refused.
    async fn manifest_request(
        &self,
        method: &str,
        credentials: &RegistryCredentials,
        repository: &str,
        reference: &str,
    ) -> Result<Response<Box<dyn Connection>>, StageError> {
        let address = RegistryAddress::parse(&credentials.server)?;
        if !valid_repository(repository) {
            return Err(StageError::bad_input(format!(
                "bad repository name `{repository}`: expected lowercase letters, digits and . _ - /"
            )));
        }
        let reference_ok = valid_tag(reference)
            || reference
                .strip_prefix("sha256:")
                .is_some_and(|hex| !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()));
        if !reference_ok {
            return Err(StageError::bad_input(format!(
                "bad image tag or digest `{reference}`"
            )));
        }
        let url = format!("{}/v2/{repository}/manifests/{reference}", address.url());
        let stream = self.registry_connection(&address).await?;
        let mut headers = vec![("Accept", MANIFEST_TYPES.to_string())];
        if !credentials.username.is_empty() || !credentials.password.is_empty() {
            headers.push(("Authorization", basic_auth(credentials)));
        }
        let target = format!("/v2/{repository}/manifests/{reference}");
        let request = Request {
            method,
            target: &target,
            host: &address.authority,
            headers,
        };
        let response = tokio::time::timeout(REQUEST_TIMEOUT, http::send(stream, &request))
            .await
            .map_err(|_| {
                StageError::unavailable(format!(
                    "{method} {url} got no answer within {}s",
                    REQUEST_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|err| StageError::unavailable(format!("{method} {url} failed: {err}")))?;
        match response.status {
            200 | 404 => Ok(response),
            401 | 403 => {
                let bearer = response
                    .header("WWW-Authenticate")
                    .is_some_and(|value| value.to_ascii_lowercase().starts_with("bearer"));
                let error = StageError::failed(format!(
                    "the registry {} refused {method} {url} (HTTP {}) for user `{}`",
                    address.url(),
                    response.status,
                    credentials.username
                ));
                Err(if bearer {
                    error.with_help("this registry wants a bearer token exchange, which tugboat does not support yet; ECR and basic-auth registries work")
                } else {
                    error.with_help(
                        "check the registry credentials and that they may read the repository",
                    )
                })
            }
            status => Err(StageError::failed(format!(
                "{method} {url} answered HTTP {status}"
            ))),
        }
    }

    async fn remote_digest_inner(
        &self,
        credentials: &RegistryCredentials,
        repository: &str,
        tag: &str,
    ) -> Result<Option<String>, StageError> {
        let response = self
            .manifest_request("HEAD", credentials, repository, tag)
            .await?;
        if response.status == 404 {
            return Ok(None);
        }
        match response.header("Docker-Content-Digest") {
            Some(digest) if digest.starts_with("sha256:") => Ok(Some(digest.to_string())),
            _ => Err(StageError::failed(format!(
                "the registry {} answered HEAD /v2/{repository}/manifests/{tag} without a Docker-Content-Digest header",
                credentials.server
            ))),
        }
    }

    async fn holds_image_inner(
        &self,
        credentials: &RegistryCredentials,
        repository: &str,
        tag: &str,
        image: &BuiltImage,
    ) -> Result<bool, StageError> {
        let mut response = self
            .manifest_request("GET", credentials, repository, tag)
            .await?;
        if response.status == 404 || image.image_id.is_empty() {
            return Ok(false);
        }
        let body = tokio::time::timeout(REQUEST_TIMEOUT, response.body.read_to_end(MANIFEST_LIMIT))
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no whole manifest within {}s", REQUEST_TIMEOUT.as_secs()),
                ))
            })
            .map_err(|err| {
                StageError::unavailable(format!(
                    "reading the manifest of {repository}:{tag} from {} failed: {err}",
                    credentials.server
                ))
            })?;
        // A list or index names no single config: whether it holds this image is unknown.
        let manifest: ImageManifest = match serde_json::from_slice(&body) {
            Ok(manifest) => manifest,
            Err(_) => return Ok(false),
        };
        Ok(manifest
            .config
            .is_some_and(|config| config.digest == image.image_id))
    }
}

/// The part of an image manifest (Docker v2 schema 2 or OCI) that names the image config.
#[derive(Debug, Deserialize)]
struct ImageManifest {
    config: Option<ManifestConfig>,
}

#[derive(Debug, Deserialize)]
struct ManifestConfig {
    digest: String,
}

#[async_trait]
impl ImagePusher for DockerEnginePusher {
    async fn remote_digest(
        &self,
        credentials: &RegistryCredentials,
        repository: &str,
        tag: &str,
    ) -> Result<Option<String>, StageError> {
        let redactor = Redactor::new([credentials.password.clone(), basic_auth(credentials)]);
        self.remote_digest_inner(credentials, repository, tag)
            .await
            .map_err(|err| redactor.error(err))
    }

    /// Compares the config digest of the manifest `repository:tag` points at with the
    /// engine's image id (which is that digest for images the engine built).
    async fn holds_image(
        &self,
        credentials: &RegistryCredentials,
        repository: &str,
        tag: &str,
        image: &BuiltImage,
    ) -> Result<bool, StageError> {
        let redactor = Redactor::new([credentials.password.clone(), basic_auth(credentials)]);
        self.holds_image_inner(credentials, repository, tag, image)
            .await
            .map_err(|err| redactor.error(err))
    }

    async fn push(
        &self,
        image: &BuiltImage,
        credentials: &RegistryCredentials,
        repository: &str,
        tag: &str,
        events: &Events,
    ) -> Result<String, StageError> {
        self.push_with_summary(image, credentials, repository, tag, events)
            .await
            .map(|outcome| outcome.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_counts_come_from_final_statuses() {
        let output = r#"{"status":"The push refers to repository [127.0.0.1:5000/cv_matcher]"}
{"status":"Preparing","progressDetail":{},"id":"d90d7be741c1"}
{"status":"Pushing","progressDetail":{"current":512,"total":3},"id":"d90d7be741c1"}
{"status":"Pushed","progressDetail":{},"id":"d90d7be741c1"}
{"status":"Layer already exists","progressDetail":{},"id":"4ebd03eddc2a"}
{"status":"Mounted from other/repo","progressDetail":{},"id":"5fbd03eddc2a"}
{"status":"t1: digest: sha256:d23d size: 735"}"#;
        let counts = LayerCounts::from_push_output(output);
        assert_eq!(
            counts,
            LayerCounts {
                uploaded: 1,
                already_present: 1,
                mounted: 1
            }
        );
        assert_eq!(
            counts.summary(),
            "pushed 1 layer, 1 already present, 1 mounted from another repository"
        );
        let cli = "d90d7be741c1: Layer already exists\n4ebd03eddc2a: Layer already exists\n";
        assert_eq!(LayerCounts::from_push_output(cli).already_present, 2);
        assert_eq!(
            LayerCounts::from_push_output(cli).summary(),
            "pushed 0 layers, 2 already present"
        );
    }

    #[test]
    fn registry_auth_is_url_safe_base64_json() {
        let credentials = RegistryCredentials {
            server: "127.0.0.1:5000".into(),
            username: "AWS".into(),
            password: "p>?~~".into(),
        };
        let header = registry_auth_header(&credentials, "127.0.0.1:5000");
        assert!(!header.contains(['+', '/']));
        let decoded = base64::engine::general_purpose::URL_SAFE
            .decode(&header)
            .unwrap_or_default();
        let json: serde_json::Value = serde_json::from_slice(&decoded).unwrap_or_default();
        assert_eq!(json["username"], "AWS");
        assert_eq!(json["password"], "p>?~~");
        assert_eq!(json["serveraddress"], "127.0.0.1:5000");
    }

    #[test]
    fn loopback_registries_are_plain_http_others_https() {
        let parse = |server: &str| {
            RegistryAddress::parse(server).map(|a| (a.tls, a.connect_to, a.authority))
        };
        assert_eq!(
            parse("127.0.0.1:5000"),
            Ok((false, "127.0.0.1:5000".into(), "127.0.0.1:5000".into()))
        );
        assert_eq!(parse("localhost:5000").map(|a| a.0), Ok(false));
        assert_eq!(
            parse("[::1]:5000"),
            Ok((false, "[::1]:5000".into(), "[::1]:5000".into()))
        );
        assert_eq!(
            parse("123456789012.dkr.ecr.us-east-1.amazonaws.com"),
            Ok((
                true,
                "123456789012.dkr.ecr.us-east-1.amazonaws.com:443".into(),
                "123456789012.dkr.ecr.us-east-1.amazonaws.com".into()
            ))
        );
        assert_eq!(
            parse("https://123456789012.dkr.ecr.us-east-1.amazonaws.com/").map(|a| a.2),
            Ok("123456789012.dkr.ecr.us-east-1.amazonaws.com".into())
        );
        assert_eq!(parse("https://127.0.0.1:5443").map(|a| a.0), Ok(true));
        assert_eq!(
            parse("http://registry.internal").map(|a| a.1),
            Ok("registry.internal:80".into())
        );
        assert!(parse("ftp://x").is_err());
        assert!(parse("host:port").is_err());
        assert!(parse("a b").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn names_that_could_break_a_request_are_rejected() {
        assert!(valid_repository("team/cv_matcher"));
        assert!(!valid_repository("CV"));
        assert!(!valid_repository("cv matcher"));
        assert!(!valid_repository("cv?x=1"));
        assert!(valid_tag("v1.2.0"));
        assert!(!valid_tag("-x"));
        assert!(!valid_tag("a\r\nX-Evil: 1"));
        assert!(valid_local_image("sha256:abc"));
        assert!(!valid_local_image("x y"));
    }

    #[test]
    fn redaction_removes_every_secret() {
        let redactor = Redactor::new(["hunter2".to_string(), String::new()]);
        assert_eq!(
            redactor.clean("bad password hunter2!"),
            "bad password <redacted>!"
        );
        let error = redactor.error(StageError::failed("hunter2").with_help("not hunter2"));
        assert_eq!(error.message, "<redacted>");
        assert_eq!(error.help.as_deref(), Some("not <redacted>"));
    }
}
