//! The local target end to end, on this machine's Docker engine (these tests fail, never
//! skip, when it does not answer): the example app deployed with `--env local` from a
//! copy of `examples/cv-matcher` in a git repository of its own, a client hammering the
//! fixed URL while releases switch, a release whose health check fails, a rollback, and
//! `tugboat stop` leaving nothing behind.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A dummy secret whose value must never appear in tugboat's output.
const SECRET_VALUE: &str = "sentinel-9f2c-never-printed";

fn docker(args: &[&str]) -> Result<String, String> {
    match std::process::Command::new("docker").args(args).output() {
        Ok(out) if out.status.success() => {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        }
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        Err(err) => Err(err.to_string()),
    }
}

fn require_docker() {
    if let Err(err) = docker(&["version", "--format", "{{.Server.Version}}"]) {
        panic!("the local target tests need a running Docker engine: {err}");
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=tugboat-test",
            "-c",
            "user.email=test@example.com",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read dir").flatten() {
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
}

/// A copy of the example as its own git repository, with an app name, port and secret of
/// its own; everything it started is removed when dropped (also after a panic).
struct LocalProject {
    dir: PathBuf,
    app: String,
    port: u16,
    shas: Vec<String>,
}

impl LocalProject {
    fn new() -> Self {
        // One folder and app per project: the tests of this binary run in parallel.
        static PROJECTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = PROJECTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let app = format!("cvm-it-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("tugboat-local-{app}"));
        let _ = std::fs::remove_dir_all(&dir);
        let example = crate::example();
        for item in [
            "Dockerfile",
            "Makefile",
            "tugboat.toml",
            "local-secrets.env",
            ".aws",
            "app/www",
            "tests",
        ] {
            copy_tree(&example.join(item), &dir.join(item));
        }
        let port = free_port();
        let config = std::fs::read_to_string(dir.join("tugboat.toml")).expect("read config");
        assert!(
            config.contains("[environments.local]"),
            "the example has a local environment"
        );
        let config = config
            .replace("name = \"cv-matcher\"", &format!("name = \"{app}\""))
            .replace("port = 8080", &format!("port = {port}"))
            .replace("http://127.0.0.1:8080", &format!("http://127.0.0.1:{port}"));
        std::fs::write(dir.join("tugboat.toml"), config).expect("write config");
        let secrets = std::fs::read_to_string(dir.join("local-secrets.env")).expect("secrets");
        let secrets = secrets
            .lines()
            .map(|line| match line.split_once('=') {
                Some((name, _)) if name == "JWT_SECRET_KEY" => format!("{name}={SECRET_VALUE}"),
                _ => line.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.join("local-secrets.env"), secrets + "\n").expect("write secrets");
        git(&dir, &["init", "-q", "-b", "main"]);
        let mut project = Self {
            dir,
            app,
            port,
            shas: Vec::new(),
        };
        project.commit("v1");
        project
    }

    fn commit(&mut self, message: &str) {
        git(&self.dir, &["add", "-A"]);
        git(&self.dir, &["commit", "-q", "-m", message]);
        self.shas.push(git(&self.dir, &["rev-parse", "HEAD"]));
    }

    fn write(&self, path: &str, text: &str) {
        std::fs::write(self.dir.join(path), text).expect("write");
    }

    async fn tugboat(&self, args: &[&str]) -> Output {
        let output = crate::tugboat()
            .current_dir(&self.dir)
            .args(args)
            .output()
            .await
            .expect("run tugboat");
        for stream in [&output.stdout, &output.stderr] {
            assert!(
                !String::from_utf8_lossy(stream).contains(SECRET_VALUE),
                "`tugboat {}` printed a secret value",
                args.join(" ")
            );
        }
        output
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `name (revision)` of this app's containers.
    fn containers(&self) -> Vec<String> {
        let listed = docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=tugboat.app={}", self.app),
            "--format",
            "{{.Names}} {{.Label \"tugboat.revision\"}} {{.State}}",
        ])
        .unwrap_or_default();
        listed.lines().map(str::to_string).collect()
    }

    fn proxy_pid(&self) -> Option<u32> {
        let file = self
            .dir
            .join(format!(".tugboat/{}/local/proxy.json", self.app));
        let record: serde_json::Value = serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
        record["pid"].as_u64().and_then(|p| u32::try_from(p).ok())
    }
}

impl Drop for LocalProject {
    fn drop(&mut self) {
        let pid = self.proxy_pid();
        let _ = std::process::Command::new(env!("CARGO_BIN_EXE_tugboat"))
            .args(["stop", "--env", "local"])
            .current_dir(&self.dir)
            .output();
        if let Ok(ids) = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=tugboat.app={}", self.app),
        ]) {
            for id in ids.lines() {
                let _ = docker(&["rm", "-f", id]);
            }
        }
        if let Some(pid) = pid.filter(|pid| alive(*pid)) {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .output();
        }
        for sha in &self.shas {
            let _ = docker(&["rmi", "-f", &format!("cv_matcher:{sha}")]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a process runs (a zombie waiting for its parent does not count).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim().to_string())
        })
        .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

#[track_caller]
fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// One `GET path` over a new connection: `(status, body)`.
async fn get(port: u16, path: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let response = String::from_utf8_lossy(&response).to_string();
        let (head, body) = response
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("no response head in {response:?}"))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        Ok((status, body.to_string()))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .unwrap_or_else(|_| Err("no answer within 5s".into()))
}

/// A client that requests `/` in a loop on new connections until stopped.
struct Hammer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<HammerReport>,
}

#[derive(Debug, Default)]
struct HammerReport {
    requests: u64,
    errors: Vec<String>,
    /// The body marker of each answer, in order (`v1`, `v2`), run-length encoded.
    sequence: Vec<(String, u64)>,
    /// From the last answer of the old release to the first of the new one.
    switch_gap: Option<Duration>,
}

impl Hammer {
    fn start(port: u16, marker: fn(&str) -> String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut report = HammerReport::default();
            let mut last: Option<(String, Instant)> = None;
            while !flag.load(Ordering::SeqCst) {
                report.requests += 1;
                match get(port, "/").await {
                    Ok((200, body)) => {
                        let version = marker(&body);
                        let now = Instant::now();
                        match report.sequence.last_mut() {
                            Some((seen, count)) if *seen == version => *count += 1,
                            _ => {
                                if let Some((_, at)) = &last {
                                    report.switch_gap = Some(now - *at);
                                }
                                report.sequence.push((version.clone(), 1));
                            }
                        }
                        last = Some((version, now));
                    }
                    Ok((status, body)) => report.errors.push(format!("HTTP {status}: {body}")),
                    Err(err) => report.errors.push(err),
                }
            }
            report
        });
        Self { stop, task }
    }

    async fn finish(self) -> HammerReport {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the client loop")
    }
}

fn version_of(body: &str) -> String {
    if body.contains("CV Matcher v2") {
        "v2".into()
    } else if body.contains("CV Matcher") {
        "v1".into()
    } else {
        format!("unknown: {body}")
    }
}

fn result_json(output: &Output) -> serde_json::Value {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find_map(|value| value.get("result").cloned())
        .unwrap_or_else(|| panic!("no result line in {}", text(output)))
}

#[tokio::test(flavor = "multi_thread")]
async fn local_releases_switch_without_failed_requests_roll_back_and_stop_cleanly() {
    require_docker();
    let mut project = LocalProject::new();
    let port = project.port;

    // v1: the whole pipeline, then the fixed URL answers.
    let first = project.tugboat(&["deploy", "--env", "local"]).await;
    assert_exit(&first, 0);
    let first_text = text(&first);
    assert!(
        first_text.contains(&format!("serving on {}", project.url())),
        "{first_text}"
    );
    for stage in ["test: done", "build: done", "push: done", "deploy: done"] {
        assert!(first_text.contains(stage), "{stage}: {first_text}");
    }
    assert_eq!(get(port, "/health").await, Ok((200, "ok\n".to_string())));
    assert_eq!(version_of(&get(port, "/").await.expect("GET /").1), "v1");
    let env_line = docker(&[
        "inspect",
        "--format",
        "{{range .Config.Env}}{{println .}}{{end}}",
        &format!("tugboat-{}-local-1-cv-matcher", project.app),
    ])
    .expect("inspect the release container");
    assert!(env_line.contains("APP_ENV=local"), "{env_line}");
    assert!(
        env_line.contains(&format!("JWT_SECRET_KEY={SECRET_VALUE}")),
        "the secret reaches the container"
    );

    // The read-only commands work for a local environment.
    let status = project.tugboat(&["status", "--env", "local"]).await;
    assert_exit(&status, 0);
    let status_text = text(&status);
    assert!(
        status_text.contains("revision cv-matcher:1, running 1/1"),
        "{status_text}"
    );
    assert!(
        status_text.contains(&format!("proxy on {}", project.url())),
        "{status_text}"
    );
    let plan = project.tugboat(&["plan", "--env", "local"]).await;
    assert_exit(&plan, 0);
    assert!(
        text(&plan).contains("on failure: roll back to cv-matcher:1"),
        "{}",
        text(&plan)
    );
    let verify = project.tugboat(&["verify", "--env", "local"]).await;
    assert_exit(&verify, 0);

    // v2: a changed page; a client on its own task sees no failed request.
    let page = std::fs::read_to_string(project.dir.join("app/www/index.html")).expect("page");
    project.write(
        "app/www/index.html",
        &page.replace("<h1>CV Matcher</h1>", "<h1>CV Matcher v2</h1>"),
    );
    project.commit("v2");
    let hammer = Hammer::start(port, version_of);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let second = project.tugboat(&["deploy", "--env", "local"]).await;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = hammer.finish().await;
    assert_exit(&second, 0);
    let second_text = text(&second);
    let switch_line = second_text
        .lines()
        .find(|line| line.contains("switched from cv-matcher:1"))
        .unwrap_or_else(|| panic!("no switch line: {second_text}"))
        .to_string();
    eprintln!(
        "v1 -> v2: {} requests in {took:?}, {} failed, answers {:?}, gap between the last v1 and the first v2 answer {:?}; {switch_line}",
        report.requests,
        report.errors.len(),
        report.sequence,
        report.switch_gap
    );
    assert!(
        report.errors.is_empty(),
        "requests failed during the switch: {:?}",
        report.errors
    );
    let versions: Vec<&str> = report.sequence.iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(
        versions,
        ["v1", "v2"],
        "answers switched once, from v1 to v2"
    );
    assert_eq!(version_of(&get(port, "/").await.expect("GET /").1), "v2");
    let containers = project.containers();
    assert_eq!(
        containers.len(),
        1,
        "only the new release runs: {containers:?}"
    );
    assert!(containers[0].contains(" 2 running"), "{containers:?}");

    // v3: a health check that always fails; v2 keeps serving, exit 1.
    let definition_file = project.dir.join(".aws/task-definition.json");
    let mut definition: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&definition_file).expect("read")).expect("json");
    definition["containerDefinitions"][0]["healthCheck"] = serde_json::json!({
        "command": ["CMD", "/bin/busybox", "false"],
        "interval": 5, "timeout": 2, "retries": 1
    });
    std::fs::write(
        &definition_file,
        serde_json::to_vec_pretty(&definition).expect("encode"),
    )
    .expect("write");
    project.commit("v3: a health check that fails");
    let hammer = Hammer::start(port, version_of);
    let third = project
        .tugboat(&["deploy", "--env", "local", "--output", "json"])
        .await;
    let report = hammer.finish().await;
    assert_exit(&third, 1);
    let result = result_json(&third);
    assert_eq!(result["outcome"], "failed_restored", "{result}");
    let message = result["message"].as_str().unwrap_or_default();
    assert!(message.contains("unhealthy"), "{message}");
    assert!(message.contains("cv-matcher:2 again"), "{message}");
    assert!(
        report.errors.is_empty(),
        "requests failed during the failed release: {:?}",
        report.errors
    );
    let versions: Vec<&str> = report.sequence.iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(versions, ["v2"], "v2 served throughout");
    let containers = project.containers();
    assert_eq!(
        containers.len(),
        1,
        "the failed release's containers are gone: {containers:?}"
    );
    assert!(containers[0].contains(" 2 running"), "{containers:?}");

    // A manual rollback goes to the last good release before v2: v1.
    let rollback = project.tugboat(&["rollback", "--env", "local"]).await;
    assert_exit(&rollback, 0);
    assert!(
        text(&rollback).contains("back from cv-matcher:2 to cv-matcher:1"),
        "{}",
        text(&rollback)
    );
    assert_eq!(version_of(&get(port, "/").await.expect("GET /").1), "v1");
    let history = project.tugboat(&["history", "--env", "local"]).await;
    assert_exit(&history, 0);
    assert_eq!(
        text(&history).matches("succeeded").count(),
        3,
        "{}",
        text(&history)
    );
    assert!(text(&history).contains("rolled_back"), "{}", text(&history));

    // Stop: no container, no proxy, nothing on the port.
    let pid = project.proxy_pid().expect("the proxy wrote proxy.json");
    assert!(alive(pid), "the proxy runs after the tugboat runs ended");
    let stop = project.tugboat(&["stop", "--env", "local"]).await;
    assert_exit(&stop, 0);
    assert!(
        project.containers().is_empty(),
        "{:?}",
        project.containers()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(pid), "the proxy stopped");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).await.is_err(),
        "nothing listens on {port}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_image_names_never_reach_the_engine_socket() {
    require_docker();
    let project = LocalProject::new();
    let before = project.containers();
    for hostile in [
        "busybox\r\nPOST /containers/create HTTP/1.1",
        "busybox latest",
        "../../containers/create",
        "busybox?x=1",
    ] {
        let output = project
            .tugboat(&["deploy", "--env", "local", "--image", hostile])
            .await;
        assert_exit(&output, 2);
        assert!(
            text(&output).contains("not an image reference"),
            "{hostile:?}: {}",
            text(&output)
        );
    }
    assert_eq!(project.containers(), before, "nothing was created");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_local_migration_ends_the_release_with_the_serving_one_untouched() {
    require_docker();
    let mut project = LocalProject::new();
    let port = project.port;
    // The service's command as ECS has it (entryPoint + command), so that a one-off
    // task's command replaces only the command.
    let definition_file = project.dir.join(".aws/task-definition.json");
    let mut definition: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&definition_file).expect("read")).expect("json");
    definition["containerDefinitions"][0]["entryPoint"] = serde_json::json!(["/bin/busybox"]);
    definition["containerDefinitions"][0]["command"] =
        serde_json::json!(["httpd", "-f", "-p", "8000", "-h", "/www"]);
    std::fs::write(
        &definition_file,
        serde_json::to_vec_pretty(&definition).expect("encode"),
    )
    .expect("write");
    project.commit("v1: entryPoint and command");
    let first = project.tugboat(&["deploy", "--env", "local"]).await;
    assert_exit(&first, 0);
    assert_eq!(version_of(&get(port, "/").await.expect("GET /").1), "v1");

    // `tugboat run` with the serving revision: on its network, the serving container
    // answers by its name; the task's exit code is the run's.
    let run = project
        .tugboat(&[
            "run",
            "--env",
            "local",
            "--",
            "sh",
            "-c",
            "wget -q -Y off -O- http://cv-matcher:8000/health; exit 4",
        ])
        .await;
    eprintln!("{}", text(&run));
    assert_exit(&run, 4);
    assert!(text(&run).contains("run | ok"), "{}", text(&run));

    // v2: a migration that fails, logging the secret it was given.
    let config = std::fs::read_to_string(project.dir.join("tugboat.toml")).expect("config");
    project.write(
        "tugboat.toml",
        &format!(
            "{config}\n[[environments.local.before_deploy]]\nname = \"migrate\"\n\
             command = [\"sh\", \"-c\", \"echo applying 0002_add_users; echo connecting with $JWT_SECRET_KEY; \
             sleep 0.3; echo 'fatal: relation users does not exist' >&2; exit 3\"]\n\
             timeout_seconds = 60\n"
        ),
    );
    let page = std::fs::read_to_string(project.dir.join("app/www/index.html")).expect("page");
    project.write(
        "app/www/index.html",
        &page.replace("<h1>CV Matcher</h1>", "<h1>CV Matcher v2</h1>"),
    );
    project.commit("v2 with a migration that fails");

    let second = project.tugboat(&["deploy", "--env", "local"]).await;
    let second_text = text(&second);
    eprintln!("{second_text}");
    assert_exit(&second, 1);
    for expected in [
        "migrate | applying 0002_add_users",
        "migrate | connecting with <redacted>",
        "migrate | fatal: relation users does not exist",
        "one-off task migrate exited with code 3",
        "nothing was deployed",
    ] {
        assert!(second_text.contains(expected), "{expected}: {second_text}");
    }
    // The serving release is untouched, and nothing of the task is left.
    assert_eq!(version_of(&get(port, "/").await.expect("GET /").1), "v1");
    let containers = project.containers();
    assert_eq!(containers.len(), 1, "{containers:?}");
    assert!(containers[0].contains(" 1 running"), "{containers:?}");
    let networks = docker(&[
        "network",
        "ls",
        "--filter",
        &format!("label=tugboat.app={}", project.app),
        "--format",
        "{{.Name}}",
    ])
    .unwrap_or_default();
    assert_eq!(
        networks,
        format!("tugboat-{}-local-1", project.app),
        "the serving release's network only"
    );

    // The same release again, as JSON (the image is found, not rebuilt).
    let again = project
        .tugboat(&["deploy", "--env", "local", "--output", "json"])
        .await;
    assert_exit(&again, 1);
    let result = result_json(&again);
    eprintln!("{result:#}");
    let message = result["message"].as_str().unwrap_or_default();
    assert!(message.contains("exited with code 3"), "{result}");
    assert!(
        message.contains("fatal: relation users does not exist"),
        "{result}"
    );
    let history = project.tugboat(&["history", "--env", "local"]).await;
    assert_exit(&history, 0);
    assert_eq!(
        text(&history).matches("failed_unchanged").count(),
        2,
        "{}",
        text(&history)
    );
    assert_eq!(version_of(&get(port, "/").await.expect("GET /").1), "v1");
}
