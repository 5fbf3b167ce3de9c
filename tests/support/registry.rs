//! A real Docker Registry v2 (`docker-registry serve`, Debian's distribution 2.8) on a
//! free loopback port, standing in for ECR's data plane: started per test, killed when
//! dropped, with its access log readable to count blob uploads.
//!
//! ```ignore
//! let registry = LocalRegistry::start_fresh();
//! // push to registry.address() ...
//! let manifest = registry.get(&format!("/v2/cv_matcher/manifests/{digest}"), &[("Accept", MANIFEST_V2)])?;
//! assert_eq!(sha256_digest(&manifest.body), digest);
//! ```
//!
//! Anything missing (the `docker-registry` binary, `openssl` for TLS) panics: the test
//! fails, it is never skipped.
//!
//! This file depends on `std`, `sha2` and `hex` only, because host-adapters' tests
//! include it too (`#[path]` in `crates/host-adapters/tests/it/support.rs`): a
//! dev-dependency on this crate would build the AWS SDK for them.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The manifest type `docker push` stores; ask for it to get the manifest as pushed.
pub const MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";

const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// A directory of the registry's own (config, log, storage), removed when dropped.
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn new(prefix: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "tugboat-registry-{prefix}-{}-{}-{nanos:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        if let Err(err) = fs::create_dir_all(&path) {
            panic!("cannot create {}: {err}", path.display());
        }
        Self { path }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
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

/// Makes a throwaway CA and server certificate in `dir` with the `openssl` CLI.
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

/// A running `docker-registry` on `127.0.0.1:port`, killed when dropped. It has no
/// auth: it ignores credentials.
pub struct LocalRegistry {
    child: Child,
    pub port: u16,
    log: PathBuf,
    _config_dir: ScratchDir,
    _storage: Option<ScratchDir>,
}

impl LocalRegistry {
    /// A registry with empty storage of its own (removed when dropped), over plain HTTP.
    pub fn start_fresh() -> Self {
        let storage = ScratchDir::new("storage");
        let mut registry = Self::start(&storage.path, None);
        registry._storage = Some(storage);
        registry
    }

    /// Stores blobs under `storage` (shared by two registries to serve the same images
    /// over plain HTTP and HTTPS); `tls` serves HTTPS.
    pub fn start(storage: &Path, tls: Option<&TestCertificates>) -> Self {
        let mut last_error = String::new();
        // The port is free when we look, but another test may take it first: retry.
        for _ in 0..5 {
            let config_dir = ScratchDir::new("config");
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
            let config_path = config_dir.path.join("registry.yml");
            if let Err(err) = fs::write(&config_path, config) {
                panic!("cannot write {}: {err}", config_path.display());
            }
            let log = config_dir.path.join("registry.log");
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
                _storage: None,
            };
            match registry.wait_ready(tls.is_some()) {
                Ok(()) => return registry,
                Err(err) => last_error = err,
            }
        }
        panic!("the registry did not start: {last_error}");
    }

    fn wait_ready(&mut self, tls: bool) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
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
        Err(format!(
            "no answer within {}s: {}",
            READY_TIMEOUT.as_secs(),
            self.log_text()
        ))
    }

    /// `127.0.0.1:PORT`, as image names and `with_data_plane` write it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Everything the registry logged (access log included).
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
