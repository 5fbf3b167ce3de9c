use crate::support::{
    docker, error_text, intermediate_images, output_lines, recorded, require_docker, unique,
    Images, TempDir,
};
use host_adapters::{DockerHost, DockerImageBuilder};
use pipeline_core::{BuildSpec, ImageBuilder, StageErrorKind};
use std::collections::BTreeMap;
use std::path::Path;

fn spec(context: &Path, tag: &str) -> BuildSpec {
    BuildSpec {
        context: context.to_path_buf(),
        dockerfile: context.join("Dockerfile"),
        platform: None,
        build_args: BTreeMap::new(),
        secrets: Vec::new(),
        tags: vec![tag.to_string()],
        labels: BTreeMap::new(),
        cache_from: vec![],
    }
}

#[tokio::test]
async fn a_failing_dockerfile_step_is_a_build_error_with_the_output_tail_and_tags_nothing() {
    require_docker();
    let context = TempDir::new("build-run-false");
    let _ = std::fs::copy("/bin/busybox", context.path().join("busybox"));
    // A destination of its own, so no other test's build shares this cached layer.
    context.write(
        "Dockerfile",
        "FROM scratch\nCOPY busybox /failing-step-busybox\nRUN [\"/failing-step-busybox\", \"false\"]\n",
    );
    let tag = format!("host-adapters-it-failing:{}", unique("t"));
    let (events, recorder) = recorded();
    let result = DockerImageBuilder::from_env()
        .build(&spec(context.path(), &tag), &events)
        .await;
    let events = recorder.take();
    let mut images = Images::default();
    for id in intermediate_images(&events) {
        images.add(id);
    }
    images.add(tag.clone());

    let error = match result {
        Ok(image) => panic!("the build should fail, got {image:?}"),
        Err(error) => error,
    };
    assert_eq!(error.kind, StageErrorKind::Failed);
    let text = error_text(&error);
    assert!(
        text.contains(&context.path().join("Dockerfile").display().to_string()),
        "{text}"
    );
    assert!(text.contains("exited with status"), "{text}");
    assert!(
        text.contains("returned a non-zero code: 1"),
        "the tail of the output: {text}"
    );
    assert!(
        !output_lines(&events).is_empty(),
        "the build output is streamed"
    );
    assert!(
        docker(&["image", "inspect", &tag]).is_err(),
        "nothing is tagged after a failed build"
    );
}

#[tokio::test]
async fn a_missing_copy_source_is_a_build_error_naming_it() {
    require_docker();
    let context = TempDir::new("build-missing-copy");
    context.write(
        "Dockerfile",
        "FROM scratch\nCOPY not-in-the-context.txt /x\n",
    );
    let tag = format!("host-adapters-it-missing:{}", unique("t"));
    let _images = {
        let mut images = Images::default();
        images.add(tag.clone());
        images
    };
    let (events, _recorder) = recorded();
    let error = match DockerImageBuilder::from_env()
        .build(&spec(context.path(), &tag), &events)
        .await
    {
        Ok(image) => panic!("the build should fail, got {image:?}"),
        Err(error) => error,
    };
    assert_eq!(error.kind, StageErrorKind::Failed);
    let text = error_text(&error);
    assert!(text.contains("not-in-the-context.txt"), "{text}");
    assert!(text.contains("image build of"), "{text}");
}

#[tokio::test]
async fn a_missing_dockerfile_is_bad_input_naming_the_path() {
    // No engine call is made: the path is checked first.
    let context = TempDir::new("build-no-dockerfile");
    let (events, _recorder) = recorded();
    let mut spec = spec(context.path(), "host-adapters-it-none:1");
    spec.dockerfile = context.path().join("docker/Dockerfile.prod");
    let error = match DockerImageBuilder::from_env().build(&spec, &events).await {
        Ok(image) => panic!("the build should fail, got {image:?}"),
        Err(error) => error,
    };
    assert_eq!(error.kind, StageErrorKind::BadInput);
    assert!(
        error
            .message
            .contains(&spec.dockerfile.display().to_string()),
        "{}",
        error_text(&error)
    );
}

#[tokio::test]
async fn an_engine_that_does_not_answer_is_unavailable_naming_the_address_tried() {
    let context = TempDir::new("build-no-engine");
    context.write("Dockerfile", "FROM scratch\n");
    let builder = DockerImageBuilder::new(DockerHost::new("unix:///tmp/nonexistent.sock"));
    let (events, _recorder) = recorded();
    let error = match builder
        .build(&spec(context.path(), "host-adapters-it-none:1"), &events)
        .await
    {
        Ok(image) => panic!("the build should fail, got {image:?}"),
        Err(error) => error,
    };
    assert_eq!(error.kind, StageErrorKind::Unavailable);
    let text = error_text(&error);
    assert!(text.contains("unix:///tmp/nonexistent.sock"), "{text}");
    assert!(text.contains("not reachable"), "{text}");
    assert!(
        error
            .help
            .as_deref()
            .is_some_and(|help| help.contains("start the Docker engine")),
        "{text}"
    );
}

/// `DOCKER_HOST` from the real environment is what the builder and the pusher try, and
/// their errors say so. The test runs itself again with `DOCKER_HOST` set, so that no
/// other test sees the changed environment.
#[tokio::test]
async fn docker_host_from_the_environment_is_the_engine_tried() {
    const CHILD: &str = "HOST_ADAPTERS_IT_DOCKER_HOST_CHILD";
    const NAME: &str = "docker_image_builder::docker_host_from_the_environment_is_the_engine_tried";
    if std::env::var_os(CHILD).is_none() {
        let exe = match std::env::current_exe() {
            Ok(exe) => exe,
            Err(err) => panic!("no test executable: {err}"),
        };
        let output = std::process::Command::new(exe)
            .args(["--exact", NAME, "--test-threads", "1"])
            .env(CHILD, "1")
            .env("DOCKER_HOST", "unix:///tmp/nonexistent.sock")
            .output();
        let output = match output {
            Ok(output) => output,
            Err(err) => panic!("could not run the test again: {err}"),
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        return;
    }

    let context = TempDir::new("build-env-host");
    context.write("Dockerfile", "FROM scratch\n");
    let (events, _recorder) = recorded();
    let builder = DockerImageBuilder::from_env();
    let error = builder
        .build(&spec(context.path(), "host-adapters-it-none:1"), &events)
        .await
        .err();
    let expected = "unix:///tmp/nonexistent.sock (from DOCKER_HOST)";
    assert!(
        matches!(&error, Some(e) if e.kind == StageErrorKind::Unavailable
            && e.message.contains(expected)
            && e.help.as_deref().is_some_and(|help| help.contains("fix DOCKER_HOST"))),
        "{error:?}"
    );

    let pusher = host_adapters::DockerEnginePusher::from_env();
    let image = pipeline_core::BuiltImage {
        image_id: format!("sha256:{}", "2".repeat(64)),
        local_tags: vec![],
    };
    let credentials = pipeline_core::RegistryCredentials {
        server: "127.0.0.1:5000".into(),
        username: "u".into(),
        password: "not-a-real-password".into(),
    };
    let error =
        pipeline_core::ImagePusher::push(&pusher, &image, &credentials, "cv_matcher", "x", &events)
            .await
            .err();
    assert!(
        matches!(&error, Some(e) if e.kind == StageErrorKind::Unavailable && e.message.contains(expected)),
        "{error:?}"
    );
}

#[tokio::test]
async fn build_secrets_without_buildkit_are_refused_and_secret_looking_args_warned_about() {
    require_docker();
    let context = TempDir::new("build-secrets");
    context.write("Dockerfile", "FROM scratch\n");
    let tag = format!("host-adapters-it-secrets:{}", unique("t"));
    let spec = BuildSpec {
        secrets: vec!["TUGBOAT_IT_NPM_TOKEN".into()],
        build_args: BTreeMap::from([("API_TOKEN".to_string(), "not-a-good-idea".to_string())]),
        ..spec(context.path(), &tag)
    };
    let (events, recorder) = recorded();
    let result = DockerImageBuilder::from_env().build(&spec, &events).await;
    let warnings: Vec<String> = recorder
        .take()
        .into_iter()
        .filter_map(|event| match event {
            pipeline_core::PipelineEvent::Warning { message } => Some(message),
            _ => None,
        })
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("API_TOKEN looks like a secret")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().all(|w| !w.contains("not-a-good-idea")),
        "a warning shows the value: {warnings:?}"
    );
    // This machine's Docker has no buildx (the classic builder cannot take secrets); with
    // buildx, the secret's variable is unset here: either way a clear refusal, nothing built.
    let err = result.expect_err("a build with an unusable secret");
    assert_eq!(err.kind, StageErrorKind::BadInput, "{err:?}");
    assert!(
        err.message.contains("BuildKit") || err.message.contains("has no value"),
        "{}",
        err.message
    );
    assert!(
        docker(&["image", "inspect", &tag]).is_err(),
        "the image was built"
    );
}
