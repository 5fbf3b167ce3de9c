//! [`LocalRegistry`]: images stay in the engine and are pinned by image id; or, with a
//! registry on loopback, pushed there by [`DockerEnginePusher`].

use super::engine::Engine;
use async_trait::async_trait;
use host_adapters::docker_host::DockerHost;
use host_adapters::DockerEnginePusher;
use pipeline_core::{
    BuiltImage, Events, ImagePusher, ImageReference, PinnedImage, Registry, RegistryCredentials,
    StageError,
};

/// [`Registry`] for the local target.
///
/// Without a registry, "pushing" tags the built image `repository:tag` in the engine and
/// pins it by the engine's image id (`sha256:…` of its config): the rendered task
/// definition then names `repository@<image id>`, which the local deployer runs by id.
/// With [`LocalRegistry::with_registry`] (`LocalSettings.registry`, e.g.
/// `127.0.0.1:5000`), pushes go to that registry through [`DockerEnginePusher`] and
/// images are pinned by the manifest digest the registry holds, as with ECR.
///
/// ```no_run
/// # async fn example(image: pipeline_core::BuiltImage) -> Result<(), pipeline_core::StageError> {
/// use local_target::LocalRegistry;
/// use pipeline_core::{Events, Registry};
/// let registry = LocalRegistry::from_env();
/// let pinned = registry.push(&image, "cv_matcher", &["0123abc".into()], &Events::new()).await?;
/// assert_eq!(pinned.digest, image.image_id);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct LocalRegistry {
    engine: Engine,
    registry: Option<String>,
}

impl LocalRegistry {
    /// The engine named by `DOCKER_HOST`, or the default socket.
    pub fn from_env() -> Self {
        Self::new(DockerHost::from_env())
    }

    pub fn new(host: DockerHost) -> Self {
        Self {
            engine: Engine::new(host),
            registry: None,
        }
    }

    /// Pushes to the registry at `server` (`127.0.0.1:5000`) instead of keeping images in
    /// the engine only.
    pub fn with_registry(mut self, server: impl Into<String>) -> Self {
        self.registry = Some(server.into());
        self
    }

    fn pusher(&self) -> DockerEnginePusher {
        DockerEnginePusher::new(self.engine.host().clone())
    }

    fn credentials(server: &str) -> RegistryCredentials {
        RegistryCredentials {
            server: server.to_string(),
            username: String::new(),
            password: String::new(),
        }
    }

    fn missing(repository: &str, reference: &ImageReference) -> StageError {
        StageError::bad_input(format!(
            "repository {repository} has no image with {reference} in the Docker engine"
        ))
        .with_help(format!(
            "run `docker image ls {repository}` to see its tags, or deploy without --image to build one"
        ))
    }

    /// The tags of `repository` an image carries.
    fn tags_in(repository: &str, repo_tags: Option<&Vec<String>>) -> Vec<String> {
        repo_tags
            .into_iter()
            .flatten()
            .filter_map(|full| full.strip_prefix(&format!("{repository}:")))
            .map(str::to_string)
            .collect()
    }

    async fn find_local(
        &self,
        repository: &str,
        reference: &ImageReference,
    ) -> Result<Option<PinnedImage>, StageError> {
        let name = match reference {
            ImageReference::Tag(tag) => format!("{repository}:{tag}"),
            ImageReference::Digest(digest) => digest.clone(),
        };
        let Some(info) = self.engine.image(&name).await? else {
            return Ok(None);
        };
        let tags = Self::tags_in(repository, info.repo_tags.as_ref());
        // An image id names an image whatever its tags: it must be in this repository.
        if matches!(reference, ImageReference::Digest(_)) && tags.is_empty() {
            return Ok(None);
        }
        Ok(Some(PinnedImage {
            repository_uri: repository.to_string(),
            digest: info.id,
            tags,
        }))
    }
}

#[async_trait]
impl Registry for LocalRegistry {
    async fn scan_findings(
        &self,
        _repository: &str,
        _image: &PinnedImage,
    ) -> Result<pipeline_core::ScanReport, StageError> {
        Ok(pipeline_core::ScanReport::Unavailable {
            reason: "images of the local target are not scanned".into(),
            help: "remove scan.block_at from this local environment".into(),
        })
    }

    async fn ensure_repository(&self, repository: &str) -> Result<String, StageError> {
        Ok(match &self.registry {
            Some(server) => format!("{server}/{repository}"),
            None => repository.to_string(),
        })
    }

    async fn push(
        &self,
        image: &BuiltImage,
        repository: &str,
        tags: &[String],
        events: &Events,
    ) -> Result<PinnedImage, StageError> {
        if let Some(server) = &self.registry {
            let credentials = Self::credentials(server);
            let pusher = self.pusher();
            let mut digest = None;
            for tag in tags {
                digest = Some(
                    pusher
                        .push(image, &credentials, repository, tag, events)
                        .await?,
                );
            }
            let digest = digest.ok_or_else(|| {
                StageError::bad_input(format!(
                    "nothing to push to {server}/{repository}: the release has no tag (no git sha, no configured tag)"
                ))
                .with_help("commit the project, or add image.tags in tugboat.toml")
            })?;
            return Ok(PinnedImage {
                repository_uri: format!("{server}/{repository}"),
                digest,
                tags: tags.to_vec(),
            });
        }
        if self.engine.image(&image.image_id).await?.is_none() {
            return Err(StageError::failed(format!(
                "the built image {} is not in the Docker engine at {}",
                image.image_id,
                self.engine.host().describe()
            )));
        }
        for tag in tags {
            self.engine
                .tag_image(&image.image_id, repository, tag)
                .await?;
        }
        events.info(format!(
            "kept {} in the engine as {}",
            image.image_id,
            tags.iter()
                .map(|tag| format!("{repository}:{tag}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Ok(PinnedImage {
            repository_uri: repository.to_string(),
            digest: image.image_id.clone(),
            tags: tags.to_vec(),
        })
    }

    async fn find_tag(
        &self,
        repository: &str,
        tag: &str,
    ) -> Result<Option<PinnedImage>, StageError> {
        if let Some(server) = &self.registry {
            let digest = self
                .pusher()
                .remote_digest(&Self::credentials(server), repository, tag)
                .await?;
            return Ok(digest.map(|digest| PinnedImage {
                repository_uri: format!("{server}/{repository}"),
                digest,
                tags: vec![tag.to_string()],
            }));
        }
        self.find_local(repository, &ImageReference::Tag(tag.to_string()))
            .await
    }

    async fn resolve(
        &self,
        repository: &str,
        reference: &ImageReference,
    ) -> Result<PinnedImage, StageError> {
        if let Some(server) = &self.registry {
            let found = match reference {
                ImageReference::Tag(tag) => self.find_tag(repository, tag).await?,
                // The engine knows a pushed image by its repository digest.
                ImageReference::Digest(digest) => {
                    let uri = format!("{server}/{repository}");
                    self.engine
                        .image(&format!("{uri}@{digest}"))
                        .await?
                        .map(|_| PinnedImage {
                            repository_uri: uri,
                            digest: digest.clone(),
                            tags: Vec::new(),
                        })
                }
            };
            return found
                .ok_or_else(|| Self::missing(&format!("{server}/{repository}"), reference));
        }
        self.find_local(repository, reference)
            .await?
            .ok_or_else(|| Self::missing(repository, reference))
    }
}
