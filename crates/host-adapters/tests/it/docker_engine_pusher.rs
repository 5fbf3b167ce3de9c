use crate::support::{
    error_text, example_copy, make_certificates, output_lines, recorded, require_docker,
    sha256_digest, unique, Images, LocalRegistry, TempDir, MANIFEST_V2,
};
use host_adapters::{
    DockerEnginePusher, DockerHost, DockerImageBuilder, LayerCounts, ShellTestRunner,
};
use pipeline_core::{
    BuildSpec, BuiltImage, ImageBuilder, ImagePusher, PipelineEvent, RegistryCredentials,
    StageErrorKind, TestRunner, TestSpec,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn credentials(server: String, password: &str) -> RegistryCredentials {
    RegistryCredentials {
        server,
        username: "tugboat-ci".into(),
        password: password.into(),
    }
}

/// A recognisable fake password; the registry has no auth and ignores it.
fn fake_password() -> String {
    format!("FAKE-PASSWORD-{}", unique("x"))
}

fn assert_no_secret(events: &[PipelineEvent], password: &str) {
    for event in events {
        let json = serde_json::to_string(event).unwrap_or_default();
        let debug = format!("{event:?}");
        assert!(
            !json.contains(password) && !debug.contains(password),
            "an event shows the password: {debug}"
        );
    }
}

/// A small image built from a scratch context, for the tests that need any image.
async fn build_small_image(images: &mut Images) -> BuiltImage {
    let context = TempDir::new("small-image");
    context.write("hello.txt", unique("hello"));
    context.write("Dockerfile", "FROM scratch\nCOPY hello.txt /hello.txt\n");
    let tag = format!("host-adapters-it-small:{}", unique("t"));
    images.add(tag.clone());
    let spec = BuildSpec {
        context: context.path().to_path_buf(),
        dockerfile: context.path().join("Dockerfile"),
        platform: None,
        build_args: BTreeMap::new(),
        secrets: Vec::new(),
        tags: vec![tag],
        labels: BTreeMap::new(),
        cache_from: vec![],
    };
    let (events, _recorder) = recorded();
    match DockerImageBuilder::from_env().build(&spec, &events).await {
        Ok(image) => {
            images.add(image.image_id.clone());
            image
        }
        Err(err) => panic!("the small image should build: {}", error_text(&err)),
    }
}

/// The whole host side of a release on the example app: its tests, its image build,
/// a push to a real registry, the digest read back, and a second push that moves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_app_is_tested_built_pushed_and_pushed_again_without_uploads() {
    require_docker();
    let app = example_copy();
    let storage = TempDir::new("registry-storage");
    let registry = LocalRegistry::start(storage.path(), None);
    let mut images = Images::default();
    let password = fake_password();
    let (events, recorder) = recorded();

    // Test: `make lint` and `make test` also put the static busybox into the context.
    let test_spec = TestSpec {
        pass_env: Vec::new(),
        env: Default::default(),
        commands: vec!["make lint".into(), "make test".into()],
        workdir: app.path().to_path_buf(),
        timeout: Duration::from_secs(300),
        artifacts: vec!["coverage.xml".into()],
    };
    if let Err(err) = ShellTestRunner::new().run_tests(&test_spec, &events).await {
        panic!("the example's tests should pass: {}", error_text(&err));
    }

    // Build, as the orchestrator asks for it.
    let sha = unique("sha");
    let local_tag = format!("cv_matcher:{sha}");
    images.add(local_tag.clone());
    let build_spec = BuildSpec {
        context: app.path().to_path_buf(),
        dockerfile: app.path().join("Dockerfile"),
        platform: Some("linux/amd64".into()),
        build_args: BTreeMap::from([("UNUSED_ARG".to_string(), "1".to_string())]),
        secrets: Vec::new(),
        tags: vec![local_tag.clone()],
        labels: BTreeMap::from([("org.opencontainers.image.revision".to_string(), sha.clone())]),
        cache_from: vec![format!("cv_matcher:latest-build-{sha}")],
    };
    let image = match DockerImageBuilder::from_env()
        .build(&build_spec, &events)
        .await
    {
        Ok(image) => image,
        Err(err) => panic!("the example should build: {}", error_text(&err)),
    };
    images.add(image.image_id.clone());
    assert!(image.image_id.starts_with("sha256:"), "{image:?}");
    assert_eq!(image.local_tags, vec![local_tag.clone()]);
    let label = crate::support::docker(&[
        "image",
        "inspect",
        "--format",
        "{{index .Config.Labels \"org.opencontainers.image.revision\"}}|{{json .Config.ExposedPorts}}",
        &local_tag,
    ]);
    assert_eq!(label, Ok(format!("{sha}|{{\"8000/tcp\":{{}}}}")));

    // First push: every layer goes up.
    let pusher = DockerEnginePusher::from_env();
    let credentials = credentials(registry.address(), &password);
    let remote_tag = unique("r");
    images.add(format!("{}/cv_matcher:{remote_tag}", registry.address()));
    assert_eq!(
        pusher
            .remote_digest(&credentials, "cv_matcher", &remote_tag)
            .await,
        Ok(None)
    );
    let started = Instant::now();
    let first = match pusher
        .push_with_summary(&image, &credentials, "cv_matcher", &remote_tag, &events)
        .await
    {
        Ok(outcome) => outcome,
        Err(err) => panic!(
            "the push should work: {}\nregistry log:\n{}",
            error_text(&err),
            registry.log_text()
        ),
    };
    let first_push = started.elapsed();
    assert!(first.digest.starts_with("sha256:"), "{first:?}");
    assert_eq!(first.layers.already_present, 0, "{first:?}");
    assert!(
        first.layers.uploaded >= 2,
        "busybox and www layers: {first:?}"
    );
    let uploads_after_first = registry.blob_uploads("cv_matcher");
    assert!(
        uploads_after_first >= first.layers.uploaded,
        "{}",
        registry.log_text()
    );

    // The registry holds that manifest under that digest.
    let manifest = match registry.get(
        &format!("/v2/cv_matcher/manifests/{}", first.digest),
        &[("Accept", MANIFEST_V2)],
    ) {
        Ok(response) => response,
        Err(err) => panic!("GET manifest: {err}"),
    };
    assert_eq!(
        manifest.status,
        200,
        "{}",
        String::from_utf8_lossy(&manifest.body)
    );
    assert_eq!(
        manifest.header("docker-content-digest"),
        Some(first.digest.as_str())
    );
    assert_eq!(sha256_digest(&manifest.body), first.digest);
    assert_eq!(
        pusher
            .remote_digest(&credentials, "cv_matcher", &remote_tag)
            .await,
        Ok(Some(first.digest.clone()))
    );

    // The tag holds this very image (its config digest is the engine's image id), and
    // not another one.
    assert_eq!(
        pusher
            .holds_image(&credentials, "cv_matcher", &remote_tag, &image)
            .await,
        Ok(true)
    );
    let other = BuiltImage {
        image_id: format!("sha256:{}", "3".repeat(64)),
        local_tags: vec![],
    };
    assert_eq!(
        pusher
            .holds_image(&credentials, "cv_matcher", &remote_tag, &other)
            .await,
        Ok(false)
    );
    assert_eq!(
        pusher
            .holds_image(&credentials, "cv_matcher", "no-such-tag", &image)
            .await,
        Ok(false)
    );

    // Second push of the unchanged image: the registry starts no upload.
    let started = Instant::now();
    let (second_events, second_recorder) = recorded();
    let second = match pusher
        .push_with_summary(
            &image,
            &credentials,
            "cv_matcher",
            &remote_tag,
            &second_events,
        )
        .await
    {
        Ok(outcome) => outcome,
        Err(err) => panic!("the second push should work: {}", error_text(&err)),
    };
    let second_push = started.elapsed();
    assert_eq!(second.digest, first.digest);
    assert_eq!(second.layers.uploaded, 0, "{second:?}");
    assert_eq!(
        second.layers.already_present, first.layers.uploaded,
        "{second:?}"
    );
    // Give the registry a moment to write its access log, then count again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        registry.blob_uploads("cv_matcher"),
        uploads_after_first,
        "the second push uploaded blobs:\n{}",
        registry.log_text()
    );
    let second_events = second_recorder.take();
    let statuses: Vec<String> = output_lines(&second_events)
        .into_iter()
        .filter(|line| line.ends_with(": Pushed") || line.ends_with(": Layer already exists"))
        .collect();
    assert!(
        !statuses.is_empty()
            && statuses
                .iter()
                .all(|line| line.ends_with(": Layer already exists")),
        "{statuses:?}"
    );
    assert_eq!(
        LayerCounts::from_push_output(&output_lines(&second_events).join("\n")),
        second.layers
    );
    assert!(
        second_events.iter().any(|event| matches!(event, PipelineEvent::Info { message }
            if message.starts_with(&format!("pushed 0 layers, {} already present", second.layers.already_present)))),
        "{second_events:?}"
    );
    println!(
        "push timings: first push {first_push:?} ({}), second push of the unchanged image {second_push:?} ({})",
        first.layers.summary(),
        second.layers.summary()
    );

    let all_events = recorder.take();
    assert!(
        all_events.iter().any(|event| matches!(event, PipelineEvent::Info { message } if message.starts_with(&first.layers.summary()))),
        "{all_events:?}"
    );
    assert_no_secret(&all_events, &password);
    assert_no_secret(&second_events, &password);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_the_engine_cannot_complete_is_an_error_without_the_password() {
    require_docker();
    let mut images = Images::default();
    let image = build_small_image(&mut images).await;
    let password = fake_password();
    // Nothing listens on this port: the engine fails to reach the registry.
    let port = match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(address) => address.port(),
        Err(err) => panic!("no free port: {err}"),
    };
    let server = format!("127.0.0.1:{port}");
    images.add(format!("{server}/cv_matcher:nowhere"));
    let (events, recorder) = recorded();
    let pusher = DockerEnginePusher::from_env();
    let error = match pusher
        .push(
            &image,
            &credentials(server.clone(), &password),
            "cv_matcher",
            "nowhere",
            &events,
        )
        .await
    {
        Ok(digest) => panic!("the push should fail, got {digest}"),
        Err(error) => error,
    };
    assert_eq!(error.kind, StageErrorKind::Failed);
    let text = error_text(&error);
    assert!(
        text.contains(&format!("{server}/cv_matcher:nowhere")),
        "{text}"
    );
    assert!(!text.contains(&password), "{text}");
    assert_no_secret(&recorder.take(), &password);

    // The registry is not there for remote_digest either.
    let error = pusher
        .remote_digest(
            &credentials(server.clone(), &password),
            "cv_matcher",
            "nowhere",
        )
        .await
        .err();
    assert!(
        matches!(&error, Some(e) if e.kind == StageErrorKind::Unavailable && e.message.contains(&server) && !error_text(e).contains(&password)),
        "{error:?}"
    );

    // An image the engine does not have is bad input.
    let missing = BuiltImage {
        image_id: format!("sha256:{}", "0".repeat(64)),
        local_tags: vec![],
    };
    let error = pusher
        .push(
            &missing,
            &credentials(server, &password),
            "cv_matcher",
            "x",
            &events,
        )
        .await
        .err();
    assert!(
        matches!(&error, Some(e) if e.kind == StageErrorKind::BadInput),
        "{error:?}"
    );
}

#[tokio::test]
async fn an_engine_that_does_not_answer_is_unavailable_naming_the_address_tried() {
    let pusher = DockerEnginePusher::new(DockerHost::new("unix:///tmp/nonexistent.sock"));
    let password = fake_password();
    let image = BuiltImage {
        image_id: format!("sha256:{}", "1".repeat(64)),
        local_tags: vec!["cv_matcher:x".into()],
    };
    let (events, recorder) = recorded();
    let error = match pusher
        .push(
            &image,
            &credentials("127.0.0.1:5000".into(), &password),
            "cv_matcher",
            "x",
            &events,
        )
        .await
    {
        Ok(digest) => panic!("the push should fail, got {digest}"),
        Err(error) => error,
    };
    assert_eq!(error.kind, StageErrorKind::Unavailable);
    let text = error_text(&error);
    assert!(text.contains("unix:///tmp/nonexistent.sock"), "{text}");
    assert!(text.contains("not reachable"), "{text}");
    assert!(!text.contains(&password), "{text}");
    assert_no_secret(&recorder.take(), &password);
}

/// `remote_digest` over HTTPS: a second registry serves the same storage with a
/// certificate from a throwaway CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_digest_reads_tags_over_https_with_a_private_ca() {
    require_docker();
    let mut images = Images::default();
    let image = build_small_image(&mut images).await;
    let storage = TempDir::new("registry-storage-tls");
    let plain = LocalRegistry::start(storage.path(), None);
    let certificates_dir = TempDir::new("certificates");
    let certificates = make_certificates(certificates_dir.path());
    let secure = LocalRegistry::start(storage.path(), Some(&certificates));

    let password = fake_password();
    let pusher = DockerEnginePusher::from_env();
    let tag = unique("tls");
    images.add(format!("{}/small:{tag}", plain.address()));
    let (events, _recorder) = recorded();
    let digest = match pusher
        .push(
            &image,
            &credentials(plain.address(), &password),
            "small",
            &tag,
            &events,
        )
        .await
    {
        Ok(digest) => digest,
        Err(err) => panic!("the push should work: {}", error_text(&err)),
    };

    let https = credentials(format!("https://{}", secure.address()), &password);
    let trusting =
        match DockerEnginePusher::from_env().with_root_certificates_pem(&certificates.ca_pem) {
            Ok(pusher) => pusher,
            Err(err) => panic!("the CA should load: {}", error_text(&err)),
        };
    assert_eq!(
        trusting.remote_digest(&https, "small", &tag).await,
        Ok(Some(digest.clone()))
    );
    assert_eq!(
        trusting.remote_digest(&https, "small", "no-such-tag").await,
        Ok(None)
    );
    assert_eq!(
        trusting.remote_digest(&https, "small", &digest).await,
        Ok(Some(digest.clone()))
    );

    assert_eq!(
        trusting.holds_image(&https, "small", &tag, &image).await,
        Ok(true)
    );

    // Without the CA the certificate is not trusted: a clear error, no password.
    let error = pusher.remote_digest(&https, "small", &tag).await.err();
    assert!(
        matches!(&error, Some(e) if e.message.contains("TLS handshake failed") && e.message.contains(&secure.address()) && !error_text(e).contains(&password)),
        "{error:?}"
    );
}
