//! `EcrRegistry` pushing the example image: the ECR control plane from moto
//! (repository, credentials), the layers through the Docker engine to a real
//! `docker-registry` standing in for ECR's data plane (moto does not serve it).

use anyhow::Context;
use aws_adapters::EcrRegistry;
use aws_sdk_ecr::types::ImageTagMutability;
use host_adapters::DockerEnginePusher;
use pipeline_core::{
    BuiltImage, Events, ImageReference, PipelineEvent, RecordedEvents, Registry, StageErrorKind,
};
use std::sync::Arc;
use std::time::Duration;
use tugboat_tests::aws::AwsFixture;
use tugboat_tests::docker::{build_image, example_copy, require_docker, unique, Images, TempDir};
use tugboat_tests::registry::{sha256_digest, LocalRegistry, MANIFEST_V2};

const REPOSITORY: &str = "cv_matcher";

/// A git-sha-like tag (40 hex) no other run uses.
fn sha_tag() -> String {
    sha256_digest(unique("sha").as_bytes())["sha256:".len()..][..40].to_string()
}

/// ECR from moto with the push redirected to `registry`.
fn ecr_registry(aws: &AwsFixture, registry: &LocalRegistry) -> EcrRegistry {
    EcrRegistry::new(aws.clients.ecr.clone())
        .with_pusher(Arc::new(DockerEnginePusher::from_env()))
        .with_data_plane(registry.address())
}

fn recorded() -> (Events, Arc<RecordedEvents>) {
    let recorder = RecordedEvents::new();
    (Events::new().with(recorder.clone()), recorder)
}

fn infos(events: &[PipelineEvent]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|event| match event {
            PipelineEvent::Info { message } => Some(message.as_str()),
            _ => None,
        })
        .collect()
}

/// The registry's access log is written a moment after the request: wait that long
/// before counting uploads.
async fn settled_uploads(registry: &LocalRegistry) -> usize {
    tokio::time::sleep(Duration::from_millis(300)).await;
    registry.blob_uploads(REPOSITORY)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_image_is_pushed_once_pinned_by_the_registry_digest_and_its_tag_is_immutable(
) -> anyhow::Result<()> {
    require_docker()?;
    let aws = AwsFixture::start().await?;
    let registry = LocalRegistry::start_fresh();
    let ecr = ecr_registry(&aws, &registry);
    let mut images = Images::default();
    let app = example_copy()?;
    let built = build_image(
        app.path(),
        &format!("tugboat-tests-cv_matcher:{}", unique("t")),
        &mut images,
    )
    .await?;
    let tag = sha_tag();
    images.add(format!("{}/{REPOSITORY}:{tag}", registry.address()));

    // The repository is created in ECR with immutable tags and scan on push.
    let before = aws
        .clients
        .ecr
        .describe_repositories()
        .repository_names(REPOSITORY)
        .send()
        .await;
    assert!(before.is_err(), "moto already has {REPOSITORY}: {before:?}");
    let uri = ecr
        .ensure_repository(REPOSITORY)
        .await
        .map_err(|err| anyhow::anyhow!("ensure_repository: {err}"))?;
    assert_eq!(uri, format!("{}/{REPOSITORY}", registry.address()));
    let described = aws
        .clients
        .ecr
        .describe_repositories()
        .repository_names(REPOSITORY)
        .send()
        .await
        .context("DescribeRepositories after ensure_repository")?;
    let repository = described
        .repositories()
        .first()
        .context("moto has no repository")?;
    assert_eq!(
        repository.image_tag_mutability(),
        Some(&ImageTagMutability::Immutable),
        "{repository:?}"
    );
    assert_eq!(
        repository
            .image_scanning_configuration()
            .map(|scanning| scanning.scan_on_push()),
        Some(true),
        "{repository:?}"
    );
    assert_eq!(
        ecr.ensure_repository(REPOSITORY).await.ok().as_deref(),
        Some(uri.as_str()),
        "a second ensure_repository finds the same repository"
    );

    // First push: the layers go up and the release is pinned by the registry's digest.
    let (events, _recorder) = recorded();
    let pinned = ecr
        .push(&built, REPOSITORY, std::slice::from_ref(&tag), &events)
        .await
        .map_err(|err| {
            anyhow::anyhow!("first push: {err}\nregistry log:\n{}", registry.log_text())
        })?;
    assert_eq!(pinned.repository_uri, uri);
    assert_eq!(pinned.tags, vec![tag.clone()]);
    let uploads_after_first = settled_uploads(&registry).await;
    assert!(
        uploads_after_first >= 2,
        "busybox and www layers (and the config) are uploaded: {uploads_after_first}\n{}",
        registry.log_text()
    );

    // The digest is the sha256 of the manifest the registry serves for it.
    let manifest = registry.get(
        &format!("/v2/{REPOSITORY}/manifests/{}", pinned.digest),
        &[("Accept", MANIFEST_V2)],
    )?;
    assert_eq!(
        manifest.status,
        200,
        "{}",
        String::from_utf8_lossy(&manifest.body)
    );
    assert_eq!(sha256_digest(&manifest.body), pinned.digest);
    assert_eq!(
        manifest.header("docker-content-digest"),
        Some(pinned.digest.as_str())
    );
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.body)?;
    assert_eq!(
        manifest["config"]["digest"].as_str(),
        Some(built.image_id.as_str()),
        "the manifest is the built image's"
    );

    // Second push of the unchanged image: skipped, nothing uploaded.
    let (events, recorder) = recorded();
    let again = ecr
        .push(&built, REPOSITORY, std::slice::from_ref(&tag), &events)
        .await
        .map_err(|err| anyhow::anyhow!("second push: {err}"))?;
    assert_eq!(again, pinned);
    let events = recorder.take();
    let messages = infos(&events);
    assert!(
        messages.iter().any(|message| message
            .contains(&format!("{uri}:{tag} already holds this image"))
            && message.contains(&pinned.digest)
            && message.ends_with("push skipped")),
        "{messages:?}"
    );
    assert!(
        !messages
            .iter()
            .any(|message| message.starts_with("pushing ")),
        "the engine was asked to push: {messages:?}"
    );
    assert_eq!(
        settled_uploads(&registry).await,
        uploads_after_first,
        "the second push uploaded blobs:\n{}",
        registry.log_text()
    );

    // Another image under the same tag: refused, the tag keeps the first image.
    let changed = TempDir::new("cv-matcher-changed")?;
    std::fs::create_dir_all(changed.path().join("app/www"))?;
    for item in ["Dockerfile", "app/www/health"] {
        std::fs::copy(app.path().join(item), changed.path().join(item))?;
    }
    std::fs::create_dir_all(changed.path().join("app/bin"))?;
    std::fs::copy(
        app.path().join("app/bin/busybox"),
        changed.path().join("app/bin/busybox"),
    )?;
    std::fs::write(
        changed.path().join("app/www/index.html"),
        format!("<p>another release {}</p>\n", unique("page")),
    )?;
    let other: BuiltImage = build_image(
        changed.path(),
        &format!("tugboat-tests-cv_matcher:{}", unique("other")),
        &mut images,
    )
    .await?;
    assert_ne!(other.image_id, built.image_id);
    let (events, _recorder) = recorded();
    let error = match ecr
        .push(&other, REPOSITORY, std::slice::from_ref(&tag), &events)
        .await
    {
        Ok(pinned) => panic!("pushing another image under {tag} should fail, got {pinned:?}"),
        Err(error) => error,
    };
    assert_eq!(error.kind, StageErrorKind::BadInput, "{error}");
    assert!(error.message.contains(&tag), "{error}");
    assert!(error.message.contains("immutable"), "{error}");
    assert!(error.message.contains(&pinned.digest), "{error}");
    assert_eq!(
        settled_uploads(&registry).await,
        uploads_after_first,
        "the refused push uploaded blobs:\n{}",
        registry.log_text()
    );

    // The tag resolves to what the first push pinned.
    let resolved = ecr
        .resolve(REPOSITORY, &ImageReference::Tag(tag.clone()))
        .await
        .map_err(|err| anyhow::anyhow!("resolve: {err}"))?;
    assert_eq!(resolved.digest, pinned.digest);
    assert_eq!(resolved.repository_uri, uri);
    assert_eq!(resolved.tags, vec![tag.clone()]);
    assert_eq!(
        ecr.find_tag(REPOSITORY, &tag)
            .await
            .map_err(|err| anyhow::anyhow!("find_tag: {err}"))?,
        Some(resolved)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolving_a_tag_the_registry_does_not_hold_is_bad_input_naming_repository_and_tag(
) -> anyhow::Result<()> {
    let aws = AwsFixture::start().await?;
    let registry = LocalRegistry::start_fresh();
    let ecr = ecr_registry(&aws, &registry);
    ecr.ensure_repository(REPOSITORY)
        .await
        .map_err(|err| anyhow::anyhow!("ensure_repository: {err}"))?;
    let tag = sha_tag();

    let error = match ecr
        .resolve(REPOSITORY, &ImageReference::Tag(tag.clone()))
        .await
    {
        Ok(pinned) => panic!("{REPOSITORY}:{tag} should not resolve, got {pinned:?}"),
        Err(error) => error,
    };
    assert_eq!(error.kind, StageErrorKind::BadInput, "{error}");
    assert!(error.message.contains(REPOSITORY), "{error}");
    assert!(error.message.contains(&tag), "{error}");
    assert!(error.message.contains(&registry.address()), "{error}");
    assert_eq!(
        ecr.find_tag(REPOSITORY, &tag)
            .await
            .map_err(|err| anyhow::anyhow!("find_tag: {err}"))?,
        None
    );
    Ok(())
}
