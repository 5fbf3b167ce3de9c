//! The fixed front door of a local environment: a TCP proxy on `127.0.0.1:<port>` that
//! forwards each new connection to the serving release's host port, and a control
//! socket through which the deployer switches releases.
//!
//! The proxy runs as its own long-lived process (`tugboat __proxy …`, started detached
//! by the deployer the first time a release is switched in), so the URL keeps working
//! between `tugboat` runs. It writes `proxy.json` (pid, address, control socket) next to
//! the service state, and exits on `STOP` (`tugboat stop`), on SIGTERM or SIGINT, or when
//! its control socket or `proxy.json` disappears (the project folder was deleted).
//!
//! Control protocol, one line each way over the unix socket:
//! - `PING` → `OK <pid> <listen> <upstream|->`
//! - `SWITCH <addr> <drain ms>` → `OK <previous|-> <connections still open>`: new
//!   connections go to `<addr>` at once; the answer comes when the previous upstream's
//!   connections have finished, or the drain time is over.
//! - `STOP` → `OK`, then the proxy exits.

use pipeline_core::StageError;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ffi::OsString;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::watch;

/// How long a new connection waits for an upstream when none is set yet.
const NO_UPSTREAM_WAIT: Duration = Duration::from_secs(10);
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the proxy checks that its project still exists.
const WATCHDOG_INTERVAL: Duration = Duration::from_secs(2);
/// The longest control socket path (`sun_path` holds 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 100;

/// Where a proxy listens and how it is controlled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyOptions {
    /// `127.0.0.1:<LocalSettings.port>`.
    pub listen: SocketAddr,
    /// The control socket.
    pub control: PathBuf,
    /// `proxy.json`, written once both sockets are bound.
    pub state_file: PathBuf,
}

impl ProxyOptions {
    /// The arguments of `tugboat __proxy` for these options.
    pub fn to_args(&self) -> Vec<OsString> {
        vec![
            "--listen".into(),
            self.listen.to_string().into(),
            "--control".into(),
            self.control.clone().into(),
            "--state-file".into(),
            self.state_file.clone().into(),
        ]
    }
}

/// What `proxy.json` says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProxyRecord {
    pub pid: u32,
    pub listen: String,
    pub control: PathBuf,
}

/// The command that starts a proxy process, given by the front end (the CLI: itself with
/// its hidden `__proxy` subcommand); the deployer appends [`ProxyOptions::to_args`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

/// The control socket of a state folder: `control/proxy.sock` in it (the folder 0700,
/// the socket 0600), or, when that path would be too long for a unix socket, in a folder
/// of this user's own (0700) under the temp folder, named from the state folder.
pub(crate) fn control_path(state_dir: &Path) -> PathBuf {
    let inside = state_dir.join("control").join("proxy.sock");
    if inside.as_os_str().len() <= MAX_SOCKET_PATH {
        return inside;
    }
    // FNV-1a: stable across builds, so another tugboat finds the same socket.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in state_dir.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let user = rustix::process::getuid().as_raw();
    std::env::temp_dir()
        .join(format!("tugboat-{user}-{hash:016x}"))
        .join("proxy.sock")
}

/// Makes the control socket's folder private (0700, this user's); a folder someone else
/// owns or others may enter is refused rather than used.
fn private_folder(folder: &Path) -> Result<(), StageError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::create_dir_all(folder)
        .map_err(|err| failed(format!("cannot create {}: {err}", folder.display())))?;
    let metadata = std::fs::symlink_metadata(folder)
        .map_err(|err| failed(format!("cannot read {}: {err}", folder.display())))?;
    if !metadata.is_dir() || metadata.uid() != rustix::process::getuid().as_raw() {
        return Err(failed(format!(
            "{} is not a folder of this user's: refusing to put the proxy's control socket there",
            folder.display()
        )));
    }
    std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o700))
        .map_err(|err| failed(format!("cannot make {} private: {err}", folder.display())))
}

/// The upstream and the open connections per upstream, under one lock: a connection
/// reads the upstream and is counted in one step, so a switch that sees no connection
/// left to the previous upstream knows none can still be on its way there.
#[derive(Default)]
struct Routes {
    upstream: Option<SocketAddr>,
    active: HashMap<SocketAddr, usize>,
}

#[derive(Default)]
struct Shared {
    routes: Mutex<Routes>,
}

impl Shared {
    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        match self.routes.lock() {
            Ok(routes) => routes,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn upstream(&self) -> Option<SocketAddr> {
        self.routes().upstream
    }

    fn set_upstream(&self, to: SocketAddr) -> Option<SocketAddr> {
        self.routes().upstream.replace(to)
    }

    fn active(&self, upstream: SocketAddr) -> usize {
        self.routes().active.get(&upstream).copied().unwrap_or(0)
    }

    /// The current upstream, counted as in use until the returned guard drops.
    fn acquire(self: &Arc<Self>) -> Option<Active> {
        let mut routes = self.routes();
        let upstream = routes.upstream?;
        *routes.active.entry(upstream).or_insert(0) += 1;
        Some(Active {
            shared: self.clone(),
            upstream,
        })
    }
}

/// Counts a connection to an upstream while it lives.
struct Active {
    shared: Arc<Shared>,
    upstream: SocketAddr,
}

impl Drop for Active {
    fn drop(&mut self) {
        let mut routes = self.shared.routes();
        if let Some(count) = routes.active.get_mut(&self.upstream) {
            *count = count.saturating_sub(1);
        }
    }
}

fn failed(message: String) -> StageError {
    StageError::failed(message)
}

/// Runs a proxy until `STOP`, `shutdown` completes, or its files disappear.
pub async fn run_proxy(
    options: ProxyOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StageError> {
    if !options.listen.ip().is_loopback() {
        return Err(StageError::bad_input(format!(
            "the local proxy listens on this machine's loopback only, not on {}",
            options.listen
        ))
        .with_help("use 127.0.0.1 (local.port sets the port)"));
    }
    if let Some(folder) = options.control.parent() {
        private_folder(folder)?;
    }
    let listener = TcpListener::bind(options.listen).await.map_err(|err| {
        StageError::bad_input(format!("cannot listen on {}: {err}", options.listen))
            .with_help("another program uses that port: stop it, or set local.port to a free one")
    })?;
    if options.control.exists() {
        // A live proxy answers on it; a dead one left the file behind.
        if UnixStream::connect(&options.control).await.is_ok() {
            return Err(failed(format!(
                "another proxy already answers on {}",
                options.control.display()
            )));
        }
        let _ = std::fs::remove_file(&options.control);
    }
    let control = UnixListener::bind(&options.control).map_err(|err| {
        failed(format!(
            "cannot create the control socket {}: {err}",
            options.control.display()
        ))
    })?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&options.control, std::fs::Permissions::from_mode(0o600))
            .map_err(|err| {
                failed(format!(
                    "cannot make the control socket {} private: {err}",
                    options.control.display()
                ))
            })?;
    }
    let record = ProxyRecord {
        pid: std::process::id(),
        listen: options.listen.to_string(),
        control: options.control.clone(),
    };
    let bytes = serde_json::to_vec_pretty(&record).map_err(|err| {
        failed(format!(
            "cannot encode {}: {err}",
            options.state_file.display()
        ))
    })?;
    super::state::write_atomically(&options.state_file, &bytes)?;
    tracing::info!(
        "proxy {} listening on {}, control {}",
        record.pid,
        options.listen,
        options.control.display()
    );

    let shared = Arc::new(Shared::default());
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    tokio::pin!(shutdown);
    let mut watchdog = tokio::time::interval(WATCHDOG_INTERVAL);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    tokio::spawn(forward(client, shared.clone()));
                }
                // Out of file descriptors, say: do not spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            accepted = control.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(serve_control(stream, shared.clone(), options.listen, stop_tx.clone()));
                }
            }
            _ = watchdog.tick() => {
                if !still_owned(&options, record.pid) {
                    tracing::info!("proxy files are gone; exiting");
                    break;
                }
            }
            _ = stop_rx.changed() => break,
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if still_owned(&options, record.pid) {
        let _ = std::fs::remove_file(&options.state_file);
    }
    let _ = std::fs::remove_file(&options.control);
    Ok(())
}

/// Whether the control socket exists and `proxy.json` still names this process.
fn still_owned(options: &ProxyOptions, pid: u32) -> bool {
    if !options.control.exists() {
        return false;
    }
    std::fs::read(&options.state_file)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<ProxyRecord>(&bytes).ok())
        .is_some_and(|record| record.pid == pid)
}

async fn forward(mut client: TcpStream, shared: Arc<Shared>) {
    let _ = client.set_nodelay(true);
    let waited = Instant::now();
    let mut attempts = 0;
    loop {
        let Some(active) = shared.acquire() else {
            if waited.elapsed() > NO_UPSTREAM_WAIT {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let connect = TcpStream::connect(active.upstream);
        match tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, connect).await {
            Ok(Ok(mut server)) => {
                let _ = server.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                return;
            }
            _ => {
                drop(active);
                attempts += 1;
                // The release may have been switched meanwhile: try again, briefly.
                if attempts >= 5 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_control(
    stream: UnixStream,
    shared: Arc<Shared>,
    listen: SocketAddr,
    stop: Arc<watch::Sender<bool>>,
) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(4096));
    if reader.read_line(&mut line).await.is_err() {
        return;
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let reply = match words.as_slice() {
        ["PING"] => format!(
            "OK {} {listen} {}",
            std::process::id(),
            shared
                .upstream()
                .map_or_else(|| "-".to_string(), |u| u.to_string())
        ),
        ["SWITCH", address, drain_ms] => {
            match (address.parse::<SocketAddr>(), drain_ms.parse::<u64>()) {
                (Ok(to), Ok(drain_ms)) if to.ip().is_loopback() => {
                    let previous = shared.set_upstream(to);
                    tracing::info!("upstream {previous:?} -> {to}");
                    let deadline = Instant::now() + Duration::from_millis(drain_ms);
                    let remaining = match previous.filter(|p| *p != to) {
                        Some(previous) => loop {
                            let open = shared.active(previous);
                            if open == 0 || Instant::now() >= deadline {
                                break open;
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        },
                        None => 0,
                    };
                    format!(
                        "OK {} {remaining}",
                        previous.map_or_else(|| "-".to_string(), |p| p.to_string())
                    )
                }
                _ => "ERR expected SWITCH <loopback address:port> <drain milliseconds>".to_string(),
            }
        }
        ["STOP"] => {
            let _ = stop.send(true);
            "OK".to_string()
        }
        _ => "ERR unknown command".to_string(),
    };
    let _ = write.write_all(format!("{reply}\n").as_bytes()).await;
    let _ = write.shutdown().await;
}

/// Talks to a running proxy over its control socket.
#[derive(Clone, Debug)]
pub(crate) struct ProxyClient {
    control: PathBuf,
}

/// A live proxy's answer to `PING`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProxyInfo {
    pub pid: u32,
    pub listen: String,
    pub upstream: Option<String>,
}

impl ProxyClient {
    pub fn new(control: PathBuf) -> Self {
        Self { control }
    }

    async fn command(&self, line: &str, timeout: Duration) -> std::io::Result<String> {
        let exchange = async {
            let mut stream = UnixStream::connect(&self.control).await?;
            stream.write_all(format!("{line}\n").as_bytes()).await?;
            let mut reply = String::new();
            BufReader::new(stream.take(4096))
                .read_line(&mut reply)
                .await?;
            Ok(reply.trim().to_string())
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
    }

    pub async fn ping(&self) -> Option<ProxyInfo> {
        let reply = self.command("PING", Duration::from_secs(3)).await.ok()?;
        let words: Vec<&str> = reply.split_whitespace().collect();
        match words.as_slice() {
            ["OK", pid, listen, upstream] => Some(ProxyInfo {
                pid: pid.parse().ok()?,
                listen: (*listen).to_string(),
                upstream: (*upstream != "-").then(|| (*upstream).to_string()),
            }),
            _ => None,
        }
    }

    /// Switches to `upstream`; returns the previous upstream and the connections to it
    /// still open when the drain time ended.
    pub async fn switch(
        &self,
        upstream: &str,
        drain: Duration,
    ) -> Result<(Option<String>, usize), StageError> {
        let millis = u64::try_from(drain.as_millis()).unwrap_or(u64::MAX);
        let reply = self
            .command(
                &format!("SWITCH {upstream} {millis}"),
                drain + Duration::from_secs(5),
            )
            .await
            .map_err(|err| {
                failed(format!(
                    "the local proxy ({}) did not answer a switch to {upstream}: {err}",
                    self.control.display()
                ))
            })?;
        let words: Vec<&str> = reply.split_whitespace().collect();
        match words.as_slice() {
            ["OK", previous, remaining] => Ok((
                (*previous != "-").then(|| (*previous).to_string()),
                remaining.parse().unwrap_or(0),
            )),
            _ => Err(failed(format!(
                "the local proxy refused a switch to {upstream}: {reply}"
            ))),
        }
    }

    pub async fn stop(&self) -> bool {
        self.command("STOP", Duration::from_secs(3))
            .await
            .is_ok_and(|reply| reply == "OK")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_state_paths_get_a_short_control_socket() {
        let short = control_path(Path::new("/p/.tugboat/app/local"));
        assert_eq!(short, Path::new("/p/.tugboat/app/local/control/proxy.sock"));
        let deep = PathBuf::from(format!("/{}/.tugboat/app/local", "d".repeat(120)));
        let long = control_path(&deep);
        assert!(long.as_os_str().len() <= MAX_SOCKET_PATH + 40);
        assert_eq!(long, control_path(&deep));
        assert!(long.starts_with(std::env::temp_dir()));
        let user = rustix::process::getuid().as_raw();
        let folder = long
            .parent()
            .and_then(Path::file_name)
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        assert!(
            folder.starts_with(&format!("tugboat-{user}-")),
            "{folder}: a folder of this user's"
        );
    }

    #[tokio::test]
    async fn the_proxy_listens_on_loopback_only_and_its_control_socket_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let refused = run_proxy(
            ProxyOptions {
                listen: "0.0.0.0:0"
                    .parse()
                    .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
                control: std::env::temp_dir().join("tugboat-never.sock"),
                state_file: std::env::temp_dir().join("tugboat-never.json"),
            },
            std::future::ready(()),
        )
        .await;
        let message = refused.err().map(|e| e.message).unwrap_or_default();
        assert!(message.contains("loopback only"), "{message}");

        let state = std::env::temp_dir().join(format!("tugboat-proxy-test-{}", std::process::id()));
        let control = control_path(&state);
        let options = ProxyOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            control: control.clone(),
            state_file: state.join("proxy.json"),
        };
        std::fs::create_dir_all(&state).unwrap_or_default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(run_proxy(options, async move {
            let _ = stopped.await;
        }));
        let mut modes = None;
        for _ in 0..100 {
            if let (Ok(socket), Ok(folder)) = (
                std::fs::metadata(&control),
                std::fs::metadata(control.parent().unwrap_or(&state)),
            ) {
                modes = Some((
                    socket.permissions().mode() & 0o777,
                    folder.permissions().mode() & 0o777,
                ));
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let _ = stop.send(());
        let _ = running.await;
        let _ = std::fs::remove_dir_all(&state);
        assert_eq!(modes, Some((0o600, 0o700)), "socket and folder modes");
    }
}
