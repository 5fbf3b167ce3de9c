//! Test support: temp dirs, the example app, a real `docker-registry` process, image
//! cleanup, recorded events. Anything missing (engine, registry binary) fails the test.

use pipeline_core::{Events, PipelineEvent, RecordedEvents, StageError};
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A name no other test (or concurrent run) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A directory removed when dropped.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(unique(&format!("host-adapters-it-{prefix}")));
        if let Err(err) = fs::create_dir_all(&path) {
            panic!("cannot create {}: {err}", path.display());
        }
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path.join(name);
        if let Some(parent) = path.parent() {
            let _ = fs::create_dir_all(parent);
        }
        if let Err(err) = fs::write(&path, contents) {
            panic!("cannot write {}: {err}", path.display());
        }
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// examples/cv-matcher in the repository.
pub fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cv-matcher")
}

/// A copy of the example app's sources (not `app/bin`, not `coverage.xml`), so that tests
/// never write into the repository and can run side by side.
pub fn example_copy() -> TempDir {
    let dir = TempDir::new("cv-matcher");
    let source = example_dir();
    for item in [
        "Dockerfile",
        "Makefile",
        "tugboat.toml",
        ".aws",
        "app/www",
        "tests",
    ] {
        copy_tree(&source.join(item), &dir.path().join(item));
    }
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        let _ = fs::create_dir_all(to);
        let entries = match fs::read_dir(from) {
            Ok(entries) => entries,
            Err(err) => panic!("cannot read {}: {err}", from.display()),
        };
        for entry in entries.flatten() {
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        if let Some(parent) = to.parent() {
            let _ = fs::create_dir_all(parent);
        }
        if let Err(err) = fs::copy(from, to) {
            panic!("cannot copy {} to {}: {err}", from.display(), to.display());
        }
    }
}

/// Panics (the test fails, it is not skipped) unless the Docker engine answers.
pub fn require_docker() {
    let output = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output();
    match output {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "these tests need a running Docker engine; `docker version` said: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(err) => panic!("these tests need the docker CLI and a running engine: {err}"),
    }
}

/// Runs the docker CLI; `Ok(stdout)` when it exits 0.
pub fn docker(args: &[&str]) -> Result<String, String> {
    match Command::new("docker").args(args).output() {
        Ok(output) if output.status.success() => {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        }
        Ok(output) => Err(String::from_utf8_lossy(&output.stderr).trim().to_string()),
        Err(err) => Err(err.to_string()),
    }
}

/// Removes the images it was told about when dropped (also when the test panicked).
#[derive(Default)]
pub struct Images {
    references: Vec<String>,
}

impl Images {
    pub fn add(&mut self, reference: impl Into<String>) {
        self.references.push(reference.into());
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        // Names first, so that removing the id then also removes its build parents.
        for reference in self.references.iter().rev() {
            let _ = docker(&["rmi", "-f", reference]);
        }
    }
}

/// The ids of the intermediate images a classic build printed (` ---> 1a2b3c4d5e6f`).
pub fn intermediate_images(events: &[PipelineEvent]) -> Vec<String> {
    output_lines(events)
        .iter()
        .filter_map(|line| line.trim().strip_prefix("---> "))
        .filter(|id| id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_string)
        .collect()
}

/// An `Events` whose events the test can read back.
pub fn recorded() -> (Events, Arc<RecordedEvents>) {
    let recorder = RecordedEvents::new();
    (Events::new().with(recorder.clone()), recorder)
}

pub fn output_lines(events: &[PipelineEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match event {
            PipelineEvent::Output { line, .. } => Some(line.clone()),
            _ => None,
        })
        .collect()
}

/// Everything a person could see of an error.
pub fn error_text(error: &StageError) -> String {
    format!("{error}\nhelp: {}", error.help.as_deref().unwrap_or(""))
}

fn free_port() -> u16 {
    match TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()) {
        Ok(address) => address.port(),
        Err(err) => panic!("no free loopback port: {err}"),
    }
}

/// TLS files for a registry: a CA and a certificate for 127.0.0.1 it signed.
pub struct TestCertificates {
    pub ca_pem: Vec<u8>,
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// Makes a throwaway CA and server certificate with the `openssl` CLI.
pub fn make_certificates(dir: &Path) -> TestCertificates {
    let run = |args: &[&str]| {
        let output = Command::new("openssl").args(args).current_dir(dir).output();
        match output {
            Ok(output) if output.status.success() => {}
            Ok(output) => panic!(
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(err) => panic!("these tests need the openssl CLI: {err}"),
        }
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=tugboat test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&ca);
    let mut request = vec!["req"];
    request.extend(ec);
    request.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&request);
    let _ = fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    );
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    TestCertificates {
        ca_pem: fs::read(dir.join("ca.pem")).unwrap_or_default(),
        certificate: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}

/// A real Docker Registry v2 (`docker-registry serve`, Debian's distribution 2.8) on a
/// free loopback port, killed when dropped. It has no auth: it ignores credentials.
pub struct LocalRegistry {
    child: Child,
    pub port: u16,
    log: PathBuf,
    _config_dir: TempDir,
}

impl LocalRegistry {
    /// Stores blobs under `storage` (shared by two registries to serve the same images
    /// over plain HTTP and HTTPS); `tls` serves HTTPS.
    pub fn start(storage: &Path, tls: Option<&TestCertificates>) -> Self {
        let mut last_error = String::new();
        for _ in 0..5 {
            let config_dir = TempDir::new("registry-config");
            let port = free_port();
            let tls_config = match tls {
                Some(tls) => format!(
                    ", tls: {{certificate: {}, key: {}}}",
                    tls.certificate.display(),
                    tls.key.display()
                ),
                None => String::new(),
            };
            let config = format!(
                "version: 0.1\nlog: {{level: info, accesslog: {{disabled: false}}}}\n\
                 storage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\n\
                 http: {{addr: 127.0.0.1:{port}{tls_config}}}\n",
                storage.display()
            );
            let config_path = config_dir.write("registry.yml", config);
            let log = config_dir.path().join("registry.log");
            let (stdout, stderr) =
                match fs::File::create(&log).and_then(|file| Ok((file.try_clone()?, file))) {
                    Ok(files) => files,
                    Err(err) => panic!("cannot create the registry log: {err}"),
                };
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                .spawn();
            let child = match child {
                Ok(child) => child,
                Err(err) => panic!(
                    "these tests need Debian's docker-registry (apt-get install docker-registry): {err}"
                ),
            };
            let mut registry = Self {
                child,
                port,
                log,
                _config_dir: config_dir,
            };
            match registry.wait_ready(tls.is_some()) {
                Ok(()) => return registry,
                Err(err) => last_error = err,
            }
        }
        panic!("the registry did not start: {last_error}");
    }

    fn wait_ready(&mut self, tls: bool) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "docker-registry exited ({status}): {}",
                    self.log_text()
                ));
            }
            let ready = if tls {
                TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            } else {
                self.get("/v2/", &[])
                    .is_ok_and(|response| response.status == 200)
            };
            if ready {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("no answer within 15s: {}", self.log_text()))
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many blob uploads the registry has started for `repository`.
    pub fn blob_uploads(&self, repository: &str) -> usize {
        let needle = format!("\"POST /v2/{repository}/blobs/uploads/");
        self.log_text().matches(&needle).count()
    }

    /// A plain HTTP GET (the registry answers with `Content-Length`).
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> std::io::Result<HttpResponse> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n",
            self.port
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes())?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let split = raw
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no end of the response head"))?;
        let head = String::from_utf8_lossy(&raw[..split]).to_string();
        let body = raw[split + 4..].to_vec();
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
            .collect();
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct HttpResponse {
    pub status: u16,
    /// Lowercase names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}
