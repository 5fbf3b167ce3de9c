//! The local target's pieces against the real engine: `LocalRegistry` pins images by
//! id, `LocalSecretStore` names what is missing (never a value), the proxy switches
//! upstreams without a failed connection and drains the old one, and `LocalDeployer`
//! honours `dependsOn`, `essential` and health checks. The whole pipeline through the
//! CLI (with the proxy process) is in `crates/cli/tests/cli/local_target.rs`.

use crate::support::{docker, error_text, recorded, require_docker, unique, Images, TempDir};
use local_target::{run_proxy, LocalDeployer, LocalRegistry, LocalSecretStore, ProxyOptions};
use pipeline_core::config::LocalSettings;
use pipeline_core::task_definition::RenderedTaskDefinition;
use pipeline_core::{
    BuiltImage, DeployTarget, Deployer, Events, ImageReference, Registry, RolloutOutcome,
    SecretStore, SecretsSpec, ServiceReader, StageErrorKind, TaskDefinition, UpdateRequest,
    WaitOptions,
};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixStream};

/// A `FROM scratch` image with a static busybox, tagged `tag`; removed with `images`.
fn busybox_image(tag: &str, images: &mut Images) -> String {
    let context = TempDir::new("local-image");
    if let Err(err) = std::fs::copy("/bin/busybox", context.path().join("busybox")) {
        panic!("these tests need a static /bin/busybox (busybox-static): {err}");
    }
    context.write("Dockerfile", "FROM scratch\nCOPY busybox /bin/busybox\n");
    let context_path = context.path().display().to_string();
    images.add(tag.to_string());
    if let Err(err) = docker(&["build", "-q", "-t", tag, &context_path]) {
        panic!("docker build: {err}");
    }
    match docker(&["image", "inspect", "--format", "{{.Id}}", tag]) {
        Ok(id) => id,
        Err(err) => panic!("docker image inspect: {err}"),
    }
}

#[tokio::test]
async fn the_local_registry_pins_images_by_engine_id_and_names_what_is_missing() {
    require_docker();
    let mut images = Images::default();
    let repository = unique("host-adapters-it-local-repo");
    let id = busybox_image(&format!("{repository}:built"), &mut images);
    images.add(format!("{repository}:v1"));
    images.add(format!("{repository}:0123abc"));
    let registry = LocalRegistry::from_env();
    assert_eq!(
        registry.ensure_repository(&repository).await.ok(),
        Some(repository.clone())
    );
    let built = BuiltImage {
        image_id: id.clone(),
        local_tags: vec![format!("{repository}:built")],
    };
    let pinned = match registry
        .push(
            &built,
            &repository,
            &["0123abc".into(), "v1".into()],
            &Events::new(),
        )
        .await
    {
        Ok(pinned) => pinned,
        Err(err) => panic!("push: {}", error_text(&err)),
    };
    assert_eq!(pinned.digest, id);
    assert_eq!(pinned.repository_uri, repository);
    assert_eq!(pinned.reference(), format!("{repository}@{id}"));

    let found = registry.find_tag(&repository, "v1").await.ok().flatten();
    assert_eq!(found.map(|image| image.digest), Some(id.clone()));
    assert_eq!(
        registry.find_tag(&repository, "nope").await.ok(),
        Some(None)
    );
    let by_digest = registry
        .resolve(&repository, &ImageReference::Digest(id.clone()))
        .await;
    assert_eq!(by_digest.ok().map(|image| image.digest), Some(id.clone()));

    let missing = registry
        .resolve(&repository, &ImageReference::Tag("v9.9.9".into()))
        .await;
    let err = match missing {
        Ok(image) => panic!("resolved a tag that does not exist: {image:?}"),
        Err(err) => err,
    };
    assert_eq!(err.kind, StageErrorKind::BadInput);
    assert!(err.message.contains(&repository), "{}", err.message);
    assert!(err.message.contains("v9.9.9"), "{}", err.message);
    // An image id of another repository is not in this one.
    let elsewhere = registry
        .resolve("host-adapters-it-other", &ImageReference::Digest(id))
        .await;
    assert!(elsewhere.is_err_and(|err| err.kind == StageErrorKind::BadInput));
}

#[tokio::test]
async fn the_local_secret_store_names_missing_secrets_and_never_their_values() {
    let dir = TempDir::new("local-secrets");
    let file = dir.write(
        "secrets.env",
        "# dummy\nDATABASE_URL=postgres://x:hunter2-value@db/x\n/cv-matcher/local/JWT_SECRET_KEY=jwt-value-42\nOTHER=other-value\n",
    );
    let store = LocalSecretStore::new(Some(file.clone()));
    let named = SecretsSpec {
        path: "/cv-matcher/local/".into(),
        names: Some(vec!["DATABASE_URL".into(), "JWT_SECRET_KEY".into()]),
    };
    let refs = store
        .resolve(&named)
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    let pairs: Vec<(String, String)> = refs.into_iter().map(|r| (r.name, r.value_from)).collect();
    assert_eq!(
        pairs,
        vec![
            ("DATABASE_URL".to_string(), "local:DATABASE_URL".to_string()),
            (
                "JWT_SECRET_KEY".to_string(),
                "local:JWT_SECRET_KEY".to_string()
            ),
        ]
    );
    let all = SecretsSpec {
        path: "/cv-matcher/local/".into(),
        names: None,
    };
    assert_eq!(store.resolve(&all).await.map(|r| r.len()).ok(), Some(3));
    assert!(store
        .ensure_exist(&["local:OTHER".into(), "DATABASE_URL".into()])
        .await
        .is_ok());

    let missing = SecretsSpec {
        path: "/cv-matcher/local/".into(),
        names: Some(vec![
            "DATABASE_URL".into(),
            "S3_BUCKET_NAME".into(),
            "API_KEY".into(),
        ]),
    };
    let err = match store.resolve(&missing).await {
        Ok(refs) => panic!("resolved missing secrets: {refs:?}"),
        Err(err) => err,
    };
    assert_eq!(err.kind, StageErrorKind::BadInput);
    let text = error_text(&err);
    assert!(text.contains("S3_BUCKET_NAME, API_KEY"), "{text}");
    assert!(text.contains(&file.display().to_string()), "{text}");
    let arn = "arn:aws:ssm:us-east-1:123456789012:parameter/cv-matcher/prod/X";
    let err = store.ensure_exist(&[arn.into()]).await.err();
    let text = err.as_ref().map(error_text).unwrap_or_default();
    assert!(text.contains(arn), "{text}");
    for value in ["hunter2-value", "jwt-value-42", "other-value"] {
        assert!(!text.contains(value));
    }

    let nowhere = LocalSecretStore::new(None).resolve(&all).await;
    assert!(
        nowhere.is_err_and(|err| err.kind == StageErrorKind::BadInput
            && err.help.unwrap_or_default().contains("secrets_file"))
    );
}

/// A TCP server that answers every connection with `name` and closes it; with `hold`,
/// it waits for the client to close first.
async fn upstream(name: &'static str) -> SocketAddr {
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(err) => panic!("bind: {err}"),
    };
    let address = listener.local_addr().unwrap_or_else(|err| panic!("{err}"));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 64];
                let read = stream.read(&mut buffer).await.unwrap_or(0);
                if &buffer[..read] == b"hold" {
                    // Answer only when the client has gone.
                    let _ = stream.read(&mut buffer).await;
                    return;
                }
                let _ = stream.write_all(name.as_bytes()).await;
            });
        }
    });
    address
}

async fn control(socket: &Path, line: &str) -> String {
    let mut stream = match UnixStream::connect(socket).await {
        Ok(stream) => stream,
        Err(err) => panic!("control socket {}: {err}", socket.display()),
    };
    let _ = stream.write_all(format!("{line}\n").as_bytes()).await;
    let mut reply = String::new();
    let _ = BufReader::new(stream).read_line(&mut reply).await;
    reply.trim().to_string()
}

async fn ask(proxy: SocketAddr) -> Result<String, String> {
    let mut stream = TcpStream::connect(proxy).await.map_err(|e| e.to_string())?;
    stream.write_all(b"hi").await.map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    if answer.is_empty() {
        Err("empty answer".into())
    } else {
        Ok(answer)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_switches_upstreams_without_a_failed_connection_and_drains_the_old_one() {
    let dir = TempDir::new("local-proxy");
    let a = upstream("A").await;
    let b = upstream("B").await;
    let listen: SocketAddr = match std::net::TcpListener::bind("127.0.0.1:0") {
        Ok(listener) => listener.local_addr().unwrap_or_else(|err| panic!("{err}")),
        Err(err) => panic!("bind: {err}"),
    };
    let options = ProxyOptions {
        listen,
        control: dir.path().join("proxy.sock"),
        state_file: dir.path().join("proxy.json"),
    };
    let proxy = tokio::spawn(run_proxy(options.clone(), std::future::pending()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !options.state_file.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(control(&options.control, "PING")
        .await
        .ends_with(&format!("{listen} -")));
    assert_eq!(
        control(&options.control, &format!("SWITCH {a} 1000")).await,
        "OK - 0"
    );
    assert_eq!(ask(listen).await, Ok("A".to_string()));

    // A client loop across switches back and forth: not one failed connection.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let answers = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, failures, answers) = (stop.clone(), failures.clone(), answers.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match ask(listen).await {
                    Ok(_) => answers.fetch_add(1, Ordering::SeqCst),
                    Err(_) => failures.fetch_add(1, Ordering::SeqCst),
                };
            }
        }));
    }
    for round in 0..10 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let to = if round % 2 == 0 { b } else { a };
        assert!(control(&options.control, &format!("SWITCH {to} 1000"))
            .await
            .starts_with("OK "));
    }
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        let _ = client.await;
    }
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "connections failed during switches"
    );
    assert!(answers.load(Ordering::SeqCst) > 20);
    assert_eq!(ask(listen).await, Ok("A".to_string()));

    // A switch waits for the old upstream's open connection, up to the drain time.
    let mut held = match TcpStream::connect(listen).await {
        Ok(stream) => stream,
        Err(err) => panic!("{err}"),
    };
    let _ = held.write_all(b"hold").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    assert_eq!(
        control(&options.control, &format!("SWITCH {b} 300")).await,
        format!("OK {a} 1")
    );
    assert!(started.elapsed() >= Duration::from_millis(290));
    assert_eq!(ask(listen).await, Ok("B".to_string()));
    let mut held_b = match TcpStream::connect(listen).await {
        Ok(stream) => stream,
        Err(err) => panic!("{err}"),
    };
    let _ = held_b.write_all(b"hold").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let closer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(held_b);
    });
    assert_eq!(
        control(&options.control, &format!("SWITCH {a} 5000")).await,
        format!("OK {b} 0"),
        "the switch answered once the held connection closed"
    );
    let _ = closer.await;
    drop(held);
    assert!(control(&options.control, "SWITCH 10.1.2.3:80 10")
        .await
        .starts_with("ERR"));

    assert_eq!(control(&options.control, "STOP").await, "OK");
    let stopped = tokio::time::timeout(Duration::from_secs(5), proxy).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
    assert!(TcpStream::connect(listen).await.is_err());
    assert!(!options.control.exists() && !options.state_file.exists());
}

fn rendered(definition: serde_json::Value) -> RenderedTaskDefinition {
    let definition = match TaskDefinition::parse(Path::new("td.json"), &definition.to_string()) {
        Ok(definition) => definition,
        Err(err) => panic!("{err}"),
    };
    RenderedTaskDefinition {
        definition,
        tags: Vec::new(),
    }
}

fn target(app: &str) -> DeployTarget {
    DeployTarget {
        app: app.to_string(),
        environment: "it".into(),
        cluster: "local".into(),
        service: format!("{app}-it"),
        region: None,
    }
}

fn state_of(container: &str) -> String {
    docker(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}}",
        container,
    ])
    .unwrap_or_else(|err| format!("gone: {err}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_local_deployer_honours_depends_on_essential_and_health_checks() {
    require_docker();
    let mut images = Images::default();
    let image = busybox_image(
        &format!("{}:bb", unique("host-adapters-it-local-bb")),
        &mut images,
    );
    let app = unique("hait");
    let dir = TempDir::new("local-deployer");
    // No port mappings: nothing to put behind a proxy, so no proxy process is needed.
    let deployer = LocalDeployer::new(
        host_adapters::DockerHost::from_env(),
        dir.path().join("state"),
        &LocalSettings::default(),
    )
    .with_health_path(None);
    let target = target(&app);
    let wait = WaitOptions {
        timeout: Duration::from_secs(60),
        poll_interval: Duration::from_millis(250),
    };
    let (events, recorder) = recorded();
    let cleanup = Cleanup(app.clone());

    // migrate runs to success before web starts; the sidecar waits for web to be healthy,
    // then dies, which a non-essential container may do.
    let good = rendered(serde_json::json!({
        "family": "hait",
        "containerDefinitions": [
            { "name": "sidecar", "image": image, "essential": false,
              "command": ["/bin/busybox", "sh", "-c", "exit 3"],
              "dependsOn": [{ "containerName": "web", "condition": "HEALTHY" }] },
            { "name": "web", "image": image, "command": ["/bin/busybox", "sleep", "300"],
              "environment": [{ "name": "GREETING", "value": "hello" }],
              "healthCheck": { "command": ["CMD", "/bin/busybox", "true"], "interval": 5, "timeout": 2, "retries": 1 },
              "dependsOn": [{ "containerName": "migrate", "condition": "SUCCESS" }] },
            { "name": "migrate", "image": image, "essential": false, "command": ["/bin/busybox", "true"] }
        ]
    }));
    let revision = match deployer.register(&target, &good).await {
        Ok(revision) => revision,
        Err(err) => panic!("register: {}", error_text(&err)),
    };
    assert_eq!(revision.label, "hait:1");
    assert_eq!(deployer.current_revision(&target).await.ok(), Some(None));
    let request = UpdateRequest {
        revision: revision.clone(),
        desired_count: None,
        force_new_deployment: false,
    };
    let handle = match deployer.update_service(&target, &request).await {
        Ok(handle) => handle,
        Err(err) => panic!("update: {}", error_text(&err)),
    };
    let outcome = pipeline_core::follow_rollout(&deployer, &target, &handle, &wait, &events).await;
    let name = |n: u64, c: &str| format!("tugboat-{app}-it-{n}-{c}");
    assert_eq!(
        outcome.ok(),
        Some(RolloutOutcome::Completed),
        "{:?}",
        recorder.take()
    );
    assert_eq!(state_of(&name(1, "migrate")), "exited 0");
    assert_eq!(state_of(&name(1, "web")), "running 0");
    assert_eq!(state_of(&name(1, "sidecar")), "exited 3");
    let started = |c: &str| {
        let text = docker(&["inspect", "--format", "{{.State.StartedAt}}", &name(1, c)])
            .unwrap_or_default();
        chrono::DateTime::parse_from_rfc3339(&text).unwrap_or_else(|err| panic!("{text}: {err}"))
    };
    assert!(started("migrate") < started("web") && started("web") < started("sidecar"));
    let env = docker(&[
        "inspect",
        "--format",
        "{{json .Config.Env}}",
        &name(1, "web"),
    ])
    .unwrap_or_default();
    assert!(env.contains("GREETING=hello"), "{env}");
    assert_eq!(
        deployer.current_revision(&target).await.ok().flatten(),
        Some(revision.clone())
    );
    let status = deployer
        .status(&target)
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(status.revision, Some(revision.clone()));
    assert_eq!(status.desired, 3);
    assert!(status
        .events
        .iter()
        .any(|e| e.message.contains(&name(1, "web")) && e.message.contains("healthy")));

    // An essential container whose dependency fails can never start: the release fails,
    // its containers go, the first release keeps running.
    let bad = rendered(serde_json::json!({
        "family": "hait",
        "containerDefinitions": [
            { "name": "web", "image": image, "command": ["/bin/busybox", "sleep", "300"],
              "dependsOn": [{ "containerName": "migrate", "condition": "SUCCESS" }] },
            { "name": "migrate", "image": image, "essential": false,
              "command": ["/bin/busybox", "false"] }
        ]
    }));
    let second = deployer
        .register(&target, &bad)
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    let handle = deployer
        .update_service(
            &target,
            &UpdateRequest {
                revision: second,
                ..request.clone()
            },
        )
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    let outcome = pipeline_core::follow_rollout(&deployer, &target, &handle, &wait, &events).await;
    match outcome {
        Ok(RolloutOutcome::Failed { reason }) => {
            assert!(reason.contains("web can never start"), "{reason}");
            assert!(reason.contains("migrate"), "{reason}");
        }
        other => panic!("expected a failed rollout, got {other:?}"),
    }
    assert!(state_of(&name(2, "web")).starts_with("gone"));
    assert_eq!(state_of(&name(1, "web")), "running 0");
    let restore = deployer
        .roll_back(
            &target,
            &pipeline_core::RestoreRequest {
                to: revision.clone(),
                from: None,
            },
        )
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        pipeline_core::follow_rollout(&deployer, &target, &restore, &wait, &events)
            .await
            .ok(),
        Some(RolloutOutcome::Completed)
    );
    assert_eq!(
        state_of(&name(1, "web")),
        "running 0",
        "restored in place, not restarted"
    );

    // Revisions: the serving one is never pruned.
    let removed = deployer
        .prune_revisions(&target, "hait", 0, &[])
        .await
        .unwrap_or_default();
    assert_eq!(
        removed.iter().map(|r| r.label.as_str()).collect::<Vec<_>>(),
        ["hait:2"]
    );
    assert!(deployer.registered_definition(&revision).await.is_ok());

    let summary = deployer
        .stop(&target)
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(summary.containers_removed, 3);
    assert!(!summary.proxy_stopped);
    assert_eq!(deployer.current_revision(&target).await.ok(), Some(None));
    drop(cleanup);
}

/// Removes an app's containers and networks when dropped (also after a panic).
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let label = format!("label=tugboat.app={}", self.0);
        if let Ok(ids) = docker(&["ps", "-aq", "--filter", &label]) {
            for id in ids.lines() {
                let _ = docker(&["rm", "-f", id]);
            }
        }
        if let Ok(ids) = docker(&["network", "ls", "-q", "--filter", &label]) {
            for id in ids.lines() {
                let _ = docker(&["network", "rm", id]);
            }
        }
    }
}

#[tokio::test]
async fn an_engine_that_does_not_answer_is_unavailable_with_the_address() {
    let dir = TempDir::new("local-no-engine");
    let host = host_adapters::DockerHost::new("unix:///nonexistent/docker.sock");
    let deployer = LocalDeployer::new(host.clone(), dir.path(), &LocalSettings::default());
    let err = deployer.status(&target("nope")).await.err();
    let err = err.unwrap_or_else(|| panic!("status without an engine succeeded"));
    assert_eq!(err.kind, StageErrorKind::Unavailable);
    assert!(
        err.message.contains("/nonexistent/docker.sock"),
        "{}",
        err.message
    );
    let registry = LocalRegistry::new(host);
    let err = registry.find_tag("cv_matcher", "v1").await.err();
    assert!(err.is_some_and(|err| err.kind == StageErrorKind::Unavailable));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_local_release_is_diagnosed_with_exit_code_and_last_lines_redacted() {
    use pipeline_core::diagnosis::REDACTED;
    use pipeline_core::FailureDiagnostics;
    require_docker();
    let mut images = Images::default();
    let image = busybox_image(
        &format!("{}:bb", unique("host-adapters-it-local-diag")),
        &mut images,
    );
    let app = unique("hadiag");
    let dir = TempDir::new("local-diagnosis");
    let secret = "pg-local-s3cr3t-0042";
    dir.write("secrets.env", format!("DB_PASSWORD={secret}\n"));
    let deployer = LocalDeployer::new(
        host_adapters::DockerHost::from_env(),
        dir.path().join("state"),
        &LocalSettings::default(),
    )
    .with_secrets_file(Some(dir.path().join("secrets.env")))
    .with_health_path(None);
    let target = target(&app);
    let cleanup = Cleanup(app.clone());
    let script = "i=1; while [ $i -le 24 ]; do echo line $i; i=$((i+1)); done; \
                  echo connecting with password $DB_PASSWORD; \
                  sleep 0.3; echo 'fatal: cannot connect' >&2; sleep 1; exit 2";
    let crashing = rendered(serde_json::json!({
        "family": "hadiag",
        "containerDefinitions": [
            { "name": "web", "image": image,
              "command": ["/bin/busybox", "sh", "-c", script],
              "secrets": [{ "name": "DB_PASSWORD", "valueFrom": "local:DB_PASSWORD" }],
              // Not healthy before it exits: the release waits for it, then fails.
              "healthCheck": { "command": ["CMD", "/bin/busybox", "true"], "interval": 30, "timeout": 2, "retries": 1 } }
        ]
    }));
    let revision = deployer
        .register(&target, &crashing)
        .await
        .unwrap_or_else(|err| panic!("register: {}", error_text(&err)));
    let handle = deployer
        .update_service(
            &target,
            &UpdateRequest {
                revision,
                desired_count: None,
                force_new_deployment: false,
            },
        )
        .await
        .unwrap_or_else(|err| panic!("update: {}", error_text(&err)));
    let wait = WaitOptions {
        timeout: Duration::from_secs(60),
        poll_interval: Duration::from_millis(250),
    };
    let (events, _recorder) = recorded();
    let outcome = pipeline_core::follow_rollout(&deployer, &target, &handle, &wait, &events).await;
    match &outcome {
        Ok(RolloutOutcome::Failed { reason }) => {
            assert!(reason.contains("exited with code 2"), "{reason}")
        }
        other => panic!("expected a failed rollout, got {other:?}"),
    }
    // Its containers are gone, the diagnosis was read before.
    assert!(state_of(&format!("tugboat-{app}-it-1-web")).starts_with("gone"));

    let diagnosis = deployer.diagnose(&target, &handle).await;
    eprintln!(
        "{diagnosis}\n--- summary (joins the failure reason):\n{}",
        diagnosis.summary()
    );
    assert!(diagnosis.notes.is_empty(), "{:?}", diagnosis.notes);
    let [task] = diagnosis.tasks.as_slice() else {
        panic!("one release: {diagnosis}");
    };
    assert_eq!(task.revision.as_deref(), Some("hadiag:1"));
    let [web] = task.containers.as_slice() else {
        panic!("one container: {diagnosis}");
    };
    assert_eq!(web.name, "web");
    assert_eq!(web.exit_code, Some(2));
    let messages: Vec<&str> = web.log_lines.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(messages.len(), 20, "the last 20: {messages:?}");
    assert_eq!(messages[0], "line 7");
    assert_eq!(messages[18], format!("connecting with password {REDACTED}"));
    assert_eq!(messages[19], "fatal: cannot connect");
    assert!(web.log_lines.iter().all(|l| l.at.is_some()));
    for text in [diagnosis.to_string(), diagnosis.summary()] {
        assert!(!text.contains(secret), "{text}");
        assert!(text.contains("container web: exit code 2"), "{text}");
        assert!(text.contains("fatal: cannot connect"), "{text}");
    }
    drop(cleanup);
}

/// A registered revision of one `app` container (busybox), a secret from the secrets
/// file, and what the one-off tasks of these tests need.
struct OneOffSetup {
    deployer: LocalDeployer,
    target: DeployTarget,
    revision: pipeline_core::Revision,
    _images: Images,
    _dir: TempDir,
    _cleanup: Cleanup,
}

const ONE_OFF_SECRET: &str = "pg-oneoff-s3cr3t-0077";

async fn one_off_setup(prefix: &str) -> OneOffSetup {
    require_docker();
    let mut images = Images::default();
    let image = busybox_image(&format!("{}:bb", unique(prefix)), &mut images);
    let app = unique("haoneoff");
    let dir = TempDir::new("local-one-off");
    dir.write("secrets.env", format!("DB_PASSWORD={ONE_OFF_SECRET}\n"));
    let deployer = LocalDeployer::new(
        host_adapters::DockerHost::from_env(),
        dir.path().join("state"),
        &LocalSettings::default(),
    )
    .with_secrets_file(Some(dir.path().join("secrets.env")))
    .with_health_path(None);
    let target = target(&app);
    let cleanup = Cleanup(app.clone());
    let definition = rendered(serde_json::json!({
        "family": "haoneoff",
        "containerDefinitions": [
            { "name": "app", "image": image,
              "command": ["/bin/busybox", "sleep", "300"],
              "environment": [{ "name": "GREETING", "value": "hello" }],
              "secrets": [{ "name": "DB_PASSWORD", "valueFrom": "local:DB_PASSWORD" }],
              "portMappings": [{ "containerPort": 8080 }],
              "stopTimeout": 2 }
        ]
    }));
    let revision = deployer
        .register(&target, &definition)
        .await
        .unwrap_or_else(|err| panic!("register: {}", error_text(&err)));
    OneOffSetup {
        deployer,
        target,
        revision,
        _images: images,
        _dir: dir,
        _cleanup: cleanup,
    }
}

impl OneOffSetup {
    fn request(&self, script: &str, timeout: Duration) -> pipeline_core::OneOffRequest {
        pipeline_core::OneOffRequest {
            name: "migrate".into(),
            revision: self.revision.clone(),
            container: "app".into(),
            command: vec![
                "/bin/busybox".into(),
                "sh".into(),
                "-c".into(),
                script.into(),
            ],
            started_by: "tugboat/r1".into(),
            client_token: format!("{}-before-deploy-0", self.target.app),
            timeout,
        }
    }

    /// Runs `script`, collecting the lines handed over as they came.
    async fn run(
        &self,
        script: &str,
        timeout: Duration,
        cancel: &pipeline_core::CancellationToken,
    ) -> (
        Result<pipeline_core::diagnosis::OneOffTaskRun, pipeline_core::StageError>,
        Vec<String>,
    ) {
        use pipeline_core::OneOffTasks;
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = {
            let seen = seen.clone();
            pipeline_core::LineSink::new(move |line| {
                if let Ok(mut seen) = seen.lock() {
                    seen.push(line.message.clone());
                }
            })
        };
        let request = self.request(script, timeout);
        let run = self
            .deployer
            .run_one_off(&self.target, &request, &sink, cancel)
            .await;
        let lines = seen.lock().map(|l| l.clone()).unwrap_or_default();
        (run, lines)
    }

    /// The containers and networks of the app left behind.
    fn leftovers(&self) -> String {
        let label = format!("label=tugboat.app={}", self.target.app);
        let containers = docker(&["ps", "-aq", "--filter", &label]).unwrap_or_else(|e| e);
        let networks = docker(&["network", "ls", "-q", "--filter", &label]).unwrap_or_else(|e| e);
        format!("{}{}", containers.trim(), networks.trim())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_one_off_task_streams_its_lines_in_order_and_exits_0() {
    let setup = one_off_setup("host-adapters-it-oneoff-ok").await;
    // Lines over more than one read, the definition's environment, the network's name
    // as the container sees it (its own container name resolves on it), no ports.
    let script = "i=1; while [ $i -le 30 ]; do echo step $i; i=$((i+1)); \
                  [ $((i % 10)) -eq 0 ] && sleep 0.4; done; \
                  echo greeting $GREETING; sleep 0.3; echo done >&2";
    let started = Instant::now();
    let (run, lines) = setup
        .run(script, Duration::from_secs(60), &Default::default())
        .await;
    let run = run.unwrap_or_else(|err| panic!("run: {}", error_text(&err)));
    eprintln!("{run:?}\n{lines:?}");
    assert_eq!(run.exit_code, Some(0));
    assert!(!run.timed_out && !run.cancelled);
    assert!(run.succeeded());
    assert!(run.millis > 1000 && run.millis < started.elapsed().as_millis() as u64 + 1);
    let mut expected: Vec<String> = (1..=30).map(|i| format!("step {i}")).collect();
    expected.push("greeting hello".into());
    expected.push("done".into());
    assert_eq!(lines, expected, "every line once, in order");
    let tail: Vec<&str> = run.log_tail.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(
        tail,
        expected[12..]
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
    assert!(run.log_tail.iter().all(|l| l.at.is_some()));
    assert!(
        run.task_arn.starts_with(&format!(
            "tugboat-{}-it-1-oneoff-migrate-",
            setup.target.app
        )),
        "{}",
        run.task_arn
    );
    assert_eq!(
        setup.leftovers(),
        "",
        "the container and the network it made are gone"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_one_off_task_that_exits_3_says_so_with_its_last_lines_secrets_redacted() {
    use pipeline_core::diagnosis::REDACTED;
    let setup = one_off_setup("host-adapters-it-oneoff-fail").await;
    let script = "i=1; while [ $i -le 25 ]; do echo migration $i; i=$((i+1)); done; \
                  echo connecting with password $DB_PASSWORD; \
                  sleep 0.3; echo 'fatal: relation users does not exist' >&2; exit 3";
    // (stdout and stderr are two pipes: the engine logs lines in the order they reach
    // it, so the stderr line waits for the stdout ones.)
    let (run, lines) = setup
        .run(script, Duration::from_secs(60), &Default::default())
        .await;
    let run = run.unwrap_or_else(|err| panic!("run: {}", error_text(&err)));
    assert_eq!(run.exit_code, Some(3));
    assert!(!run.succeeded() && !run.timed_out && !run.cancelled);
    assert_eq!(lines.len(), 27);
    assert_eq!(
        lines[25],
        format!("connecting with password {REDACTED}"),
        "{lines:?}"
    );
    let tail: Vec<&str> = run.log_tail.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(tail.len(), 20);
    assert_eq!(tail[0], "migration 8");
    assert_eq!(tail[19], "fatal: relation users does not exist");
    let everything = format!("{run:?}{lines:?}");
    assert!(!everything.contains(ONE_OFF_SECRET), "{everything}");
    assert!(everything.contains(REDACTED));
    assert_eq!(setup.leftovers(), "");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_one_off_task_past_its_timeout_is_stopped_and_removed() {
    let setup = one_off_setup("host-adapters-it-oneoff-hang").await;
    let started = Instant::now();
    let (run, lines) = setup
        .run(
            "echo waiting for a lock; sleep 300",
            Duration::from_secs(2),
            &Default::default(),
        )
        .await;
    let run = run.unwrap_or_else(|err| panic!("run: {}", error_text(&err)));
    eprintln!("{run:?}");
    assert!(run.timed_out, "{run:?}");
    assert!(!run.succeeded());
    // SIGTERM (forwarded by the init process) or, after the 2 s stopTimeout, SIGKILL.
    assert!(matches!(run.exit_code, Some(143 | 137)), "{run:?}");
    assert_eq!(lines, ["waiting for a lock"]);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(run.millis >= 2000);
    assert_eq!(setup.leftovers(), "", "nothing left running");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_local_one_off_task_is_stopped_and_removed_at_once() {
    let setup = one_off_setup("host-adapters-it-oneoff-cancel").await;
    let cancel = pipeline_core::CancellationToken::new();
    let trigger = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            cancel.cancel();
            Instant::now()
        })
    };
    let (run, lines) = setup
        .run("echo started; sleep 300", Duration::from_secs(120), &cancel)
        .await;
    let returned = Instant::now();
    let run = run.unwrap_or_else(|err| panic!("run: {}", error_text(&err)));
    let cancelled_at = trigger.await.unwrap_or_else(|err| panic!("{err}"));
    assert!(run.cancelled && !run.timed_out, "{run:?}");
    assert_eq!(run.exit_code, None, "not waited for");
    assert_eq!(lines, ["started"]);
    assert!(
        returned.duration_since(cancelled_at) < Duration::from_secs(10),
        "returned {:?} after the cancel",
        returned.duration_since(cancelled_at)
    );
    assert_eq!(setup.leftovers(), "", "nothing left running");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_one_off_task_of_a_container_not_in_the_revision_is_bad_input() {
    use pipeline_core::OneOffTasks;
    let setup = one_off_setup("host-adapters-it-oneoff-bad").await;
    let mut request = setup.request("true", Duration::from_secs(10));
    request.container = "worker".into();
    let err = setup
        .deployer
        .run_one_off(
            &setup.target,
            &request,
            &pipeline_core::LineSink::new(|_| {}),
            &Default::default(),
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("ran a container that is not in the revision"));
    assert_eq!(err.kind, StageErrorKind::BadInput);
    assert!(
        err.message.contains("worker") && err.message.contains("app"),
        "{}",
        err.message
    );
    assert_eq!(setup.leftovers(), "");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_one_off_task_joins_the_releases_existing_network_and_leaves_it() {
    let setup = one_off_setup("host-adapters-it-oneoff-net").await;
    // What a serving release of revision 1 has: its network, a container on it by name.
    let app = &setup.target.app;
    let network = format!("tugboat-{app}-it-1");
    let label = format!("tugboat.app={app}");
    docker(&["network", "create", "--label", &label, &network])
        .unwrap_or_else(|err| panic!("network create: {err}"));
    let definition = setup
        .deployer
        .registered_definition(&setup.revision)
        .await
        .unwrap_or_else(|err| panic!("{}", error_text(&err)));
    let busybox = definition.container_definitions[0].image.clone();
    docker(&[
        "run",
        "-d",
        "--name",
        &format!("{network}-peer"),
        "--label",
        &label,
        "--network",
        &network,
        "--network-alias",
        "peer",
        &busybox,
        "/bin/busybox",
        "sleep",
        "300",
    ])
    .unwrap_or_else(|err| panic!("docker run: {err}"));
    let (run, lines) = setup
        .run(
            "/bin/busybox nslookup peer 127.0.0.11 >/dev/null && echo peer resolves",
            Duration::from_secs(60),
            &Default::default(),
        )
        .await;
    let run = run.unwrap_or_else(|err| panic!("run: {}", error_text(&err)));
    assert_eq!(run.exit_code, Some(0), "{lines:?}");
    assert_eq!(lines, ["peer resolves"]);
    let networks = docker(&[
        "network",
        "ls",
        "-q",
        "--filter",
        &format!("name=^{network}$"),
    ])
    .unwrap_or_default();
    assert!(
        !networks.is_empty(),
        "the network it did not create is kept"
    );
    let containers =
        docker(&["ps", "-aq", "--filter", &format!("label={label}")]).unwrap_or_default();
    assert_eq!(containers.lines().count(), 1, "only the peer is left");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_starting_leaves_a_running_one_off_task_alone() {
    let setup = Arc::new(one_off_setup("host-adapters-it-oneoff-beside").await);
    // `tugboat run` of revision 1 while revision 2 is deployed (a release removes what
    // earlier runs left of the environment, but not a one-off task).
    let running = {
        let setup = setup.clone();
        tokio::spawn(async move {
            setup
                .run(
                    "echo started; sleep 3; echo survived",
                    Duration::from_secs(60),
                    &Default::default(),
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let definition = setup
        .deployer
        .registered_definition(&setup.revision)
        .await
        .unwrap_or_else(|err| panic!("{}", error_text(&err)));
    let second = setup
        .deployer
        .register(
            &setup.target,
            &RenderedTaskDefinition {
                definition,
                tags: Vec::new(),
            },
        )
        .await
        .unwrap_or_else(|err| panic!("register: {}", error_text(&err)));
    setup
        .deployer
        .update_service(
            &setup.target,
            &UpdateRequest {
                revision: second,
                desired_count: None,
                force_new_deployment: false,
            },
        )
        .await
        .unwrap_or_else(|err| panic!("update: {}", error_text(&err)));
    let (run, lines) = running.await.unwrap_or_else(|err| panic!("{err}"));
    let run = run.unwrap_or_else(|err| panic!("run: {}", error_text(&err)));
    assert_eq!(run.exit_code, Some(0), "{run:?}");
    assert_eq!(lines, ["started", "survived"]);
    let _ = setup.deployer.stop(&setup.target).await;
    assert_eq!(setup.leftovers(), "");
}
