//! ECR as the [`Registry`]: the control plane here (repositories, credentials, digests),
//! the layers through an [`ImagePusher`].

use crate::errors::stage_error;
use async_trait::async_trait;
use aws_sdk_ecr::types::{ImageIdentifier, ImageScanningConfiguration, ImageTagMutability};
use base64::Engine;
use pipeline_core::{
    BuiltImage, Events, Finding, ImagePusher, ImageReference, PinnedImage, Registry,
    RegistryCredentials, ScanReport, Severity, StageError,
};
use std::sync::Arc;

/// [`Registry`] on ECR.
#[derive(Clone)]
pub struct EcrRegistry {
    client: aws_sdk_ecr::Client,
    pusher: Option<Arc<dyn ImagePusher>>,
    data_plane: Option<String>,
}

impl std::fmt::Debug for EcrRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcrRegistry")
            .field("data_plane", &self.data_plane)
            .field("pusher", &self.pusher.is_some())
            .finish()
    }
}

impl EcrRegistry {
    pub fn new(client: aws_sdk_ecr::Client) -> Self {
        Self {
            client,
            pusher: None,
            data_plane: None,
        }
    }

    /// Lets the registry push images (without a pusher it only resolves them).
    pub fn with_pusher(mut self, pusher: Arc<dyn ImagePusher>) -> Self {
        self.pusher = Some(pusher);
        self
    }

    /// Sends layers to (and reads digests from) this `host:port` instead of the ECR
    /// endpoint, for a local registry standing in for ECR's data plane.
    pub fn with_data_plane(mut self, server: impl Into<String>) -> Self {
        self.data_plane = Some(server.into());
        self
    }

    fn pusher(&self) -> Result<&Arc<dyn ImagePusher>, StageError> {
        self.pusher.as_ref().ok_or_else(|| {
            StageError::bad_input("this front end cannot push images (no Docker engine configured)")
        })
    }

    /// Push credentials from `GetAuthorizationToken`. Never logged.
    async fn credentials(&self) -> Result<RegistryCredentials, StageError> {
        let output = self
            .client
            .get_authorization_token()
            .send()
            .await
            .map_err(|err| stage_error("GetAuthorizationToken", &err))?;
        let data = output.authorization_data().first().ok_or_else(|| {
            StageError::failed("GetAuthorizationToken returned no authorization data")
        })?;
        let token = data.authorization_token().unwrap_or_default();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| {
                StageError::failed(
                    "GetAuthorizationToken returned a token that is not base64 user:password",
                )
            })?;
        let (username, password) = decoded.split_once(':').ok_or_else(|| {
            StageError::failed("GetAuthorizationToken returned a token without user:password")
        })?;
        let server = match &self.data_plane {
            Some(server) => server.clone(),
            None => data
                .proxy_endpoint()
                .unwrap_or_default()
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string(),
        };
        Ok(RegistryCredentials {
            server,
            username: username.to_string(),
            password: password.to_string(),
        })
    }

    async fn repository_uri(&self, repository: &str) -> Result<Option<String>, StageError> {
        let result = self
            .client
            .describe_repositories()
            .repository_names(repository)
            .send()
            .await;
        match result {
            Ok(output) => {
                let repo = output.repositories().first();
                if let Some(repo) = repo {
                    if repo.image_tag_mutability() != Some(&ImageTagMutability::Immutable) {
                        tracing::warn!(
                            repository,
                            "ECR repository has mutable tags; releases still pin digests"
                        );
                    }
                }
                let uri = repo.and_then(|r| r.repository_uri()).map(str::to_string);
                Ok(match &self.data_plane {
                    Some(server) => uri.map(|_| format!("{server}/{repository}")),
                    None => uri,
                })
            }
            Err(err) if is_code(&err, "RepositoryNotFoundException") => Ok(None),
            Err(err) => Err(stage_error("DescribeRepositories", &err)),
        }
    }
}

fn is_code<E: aws_smithy_types::error::metadata::ProvideErrorMetadata, R>(
    error: &aws_sdk_ecr::error::SdkError<E, R>,
    code: &str,
) -> bool {
    matches!(error, aws_sdk_ecr::error::SdkError::ServiceError(e) if e.err().code() == Some(code))
}

#[async_trait]
impl Registry for EcrRegistry {
    async fn ensure_repository(&self, repository: &str) -> Result<String, StageError> {
        if let Some(uri) = self.repository_uri(repository).await? {
            return Ok(uri);
        }
        let created = self
            .client
            .create_repository()
            .repository_name(repository)
            .image_tag_mutability(ImageTagMutability::Immutable)
            .image_scanning_configuration(
                ImageScanningConfiguration::builder()
                    .scan_on_push(true)
                    .build(),
            )
            .send()
            .await;
        let output = match created {
            Ok(output) => output,
            // A retry whose first try created it (the answer was lost), or a run that
            // created it in between: it is there.
            Err(err) if is_code(&err, "RepositoryAlreadyExistsException") => {
                return self.repository_uri(repository).await?.ok_or_else(|| {
                    StageError::failed(format!(
                        "CreateRepository said {repository} exists, DescribeRepositories does not find it"
                    ))
                });
            }
            Err(err) => return Err(stage_error("CreateRepository", &err)),
        };
        let uri = output
            .repository()
            .and_then(|r| r.repository_uri())
            .ok_or_else(|| StageError::failed("CreateRepository returned no repository URI"))?;
        Ok(match &self.data_plane {
            Some(server) => format!("{server}/{repository}"),
            None => uri.to_string(),
        })
    }

    async fn push(
        &self,
        image: &BuiltImage,
        repository: &str,
        tags: &[String],
        events: &Events,
    ) -> Result<PinnedImage, StageError> {
        let pusher = self.pusher()?;
        if tags.is_empty() {
            return Err(StageError::bad_input("no tag to push the image with")
                .with_help("run from a git checkout so the commit sha can be the tag"));
        }
        let credentials = self.credentials().await?;
        let uri = self.ensure_repository(repository).await?;
        let mut digest: Option<String> = None;
        for tag in tags {
            let existing = pusher.remote_digest(&credentials, repository, tag).await?;
            let pushed = match existing {
                Some(existing) if pusher.holds_image(&credentials, repository, tag, image).await? => {
                    events.info(format!("{uri}:{tag} already holds this image ({existing}); push skipped"));
                    existing
                }
                Some(existing) if digest.as_deref() == Some(existing.as_str()) => existing,
                Some(existing) => {
                    return Err(StageError::bad_input(format!(
                        "tag {tag} of repository {repository} already holds another image ({existing}) and ECR tags are immutable"
                    ))
                    .with_help(format!(
                        "deploy that image with `tugboat deploy --image {tag}`, or commit a change so the release gets a new tag"
                    )))
                }
                None => pusher.push(image, &credentials, repository, tag, events).await?,
            };
            if let Some(first) = &digest {
                if first != &pushed {
                    return Err(StageError::failed(format!(
                        "tags of one release point at different digests: {first} and {pushed} ({tag})"
                    )));
                }
            }
            digest = Some(pushed);
        }
        let digest = digest.unwrap_or_default();
        // Read back what the registry holds: the digest a release pins must be the
        // registry's, not what we believe we sent.
        let first_tag = &tags[0];
        let held = pusher
            .remote_digest(&credentials, repository, first_tag)
            .await?;
        if held.as_deref() != Some(digest.as_str()) {
            return Err(StageError::failed(format!(
                "after the push {uri}:{first_tag} holds {} instead of {digest}",
                held.as_deref().unwrap_or("nothing")
            )));
        }
        Ok(PinnedImage {
            repository_uri: uri,
            digest,
            tags: tags.to_vec(),
        })
    }

    async fn scan_findings(
        &self,
        repository: &str,
        image: &PinnedImage,
    ) -> Result<ScanReport, StageError> {
        let result = self
            .client
            .describe_image_scan_findings()
            .repository_name(repository)
            .image_id(
                ImageIdentifier::builder()
                    .image_digest(&image.digest)
                    .build(),
            )
            .into_paginator()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await;
        let pages = match result {
            Ok(pages) => pages,
            // Scan on push registers the scan a little after the push: until then ECR
            // answers ScanNotFoundException, so this is "not started (yet)", not a refusal.
            Err(err) if is_code(&err, "ScanNotFoundException") => {
                return Ok(ScanReport::NotStarted {
                    how_to_start: start_scan_help(repository, &image.digest),
                })
            }
            Err(err) if is_code(&err, "ImageNotFoundException") => {
                return Ok(ScanReport::Unavailable {
                    reason: format!("ECR repository {repository} does not hold it"),
                    help: format!("push the image to {repository} first, or check the repository name and digest"),
                })
            }
            Err(err) => return Err(stage_error("DescribeImageScanFindings", &err)),
        };
        let status = pages.first().and_then(|p| p.image_scan_status());
        match status.and_then(|s| s.status()).map(|s| s.as_str()) {
            Some("IN_PROGRESS" | "PENDING") => return Ok(ScanReport::InProgress),
            Some("COMPLETE" | "ACTIVE") | None => {}
            Some(other) => {
                let why = status
                    .and_then(|s| s.description())
                    .unwrap_or("no description");
                return Ok(ScanReport::Unavailable {
                    reason: format!("the scan is {other}: {why}"),
                    help: scan_status_help(other, repository, &image.digest),
                });
            }
        }
        let mut findings = Vec::new();
        for scan in pages.iter().filter_map(|p| p.image_scan_findings()) {
            for finding in scan.findings() {
                let attribute = |key: &str| {
                    finding
                        .attributes()
                        .iter()
                        .find(|a| a.key() == key)
                        .and_then(|a| a.value())
                };
                let package = match (attribute("package_name"), attribute("package_version")) {
                    (Some(name), Some(version)) => Some(format!("{name} {version}")),
                    (Some(name), None) => Some(name.to_string()),
                    _ => None,
                };
                findings.push(Finding {
                    name: finding.name().unwrap_or("unnamed").to_string(),
                    severity: Severity::parse(
                        finding
                            .severity()
                            .map(|s| s.as_str())
                            .unwrap_or("UNDEFINED"),
                    ),
                    package,
                });
            }
            for finding in scan.enhanced_findings() {
                let details = finding.package_vulnerability_details();
                let package = details
                    .and_then(|d| d.vulnerable_packages().first())
                    .map(|p| format!("{} {}", p.name().unwrap_or("?"), p.version().unwrap_or("?")));
                findings.push(Finding {
                    name: details
                        .map(|d| d.vulnerability_id().unwrap_or("unnamed").to_string())
                        .unwrap_or_else(|| "unnamed".into()),
                    severity: Severity::parse(finding.severity().unwrap_or("UNDEFINED")),
                    package,
                });
            }
        }
        Ok(ScanReport::Complete(findings))
    }

    async fn find_tag(
        &self,
        repository: &str,
        tag: &str,
    ) -> Result<Option<PinnedImage>, StageError> {
        match self
            .resolve(repository, &ImageReference::Tag(tag.to_string()))
            .await
        {
            Ok(image) => Ok(Some(image)),
            Err(err) if err.kind == pipeline_core::StageErrorKind::BadInput => Ok(None),
            Err(err) => Err(err),
        }
    }

    async fn resolve(
        &self,
        repository: &str,
        reference: &ImageReference,
    ) -> Result<PinnedImage, StageError> {
        let not_found = |registry: &str| {
            StageError::bad_input(format!(
                "image {reference} is not in repository {repository} ({registry})"
            ))
            .with_help("push it first (tugboat deploy without --image builds and pushes), or check the tag with `aws ecr describe-images`")
        };
        if let Some(server) = &self.data_plane {
            let pusher = self.pusher()?;
            let credentials = self.credentials().await?;
            let wanted = match reference {
                ImageReference::Tag(tag) => tag.clone(),
                ImageReference::Digest(digest) => digest.clone(),
            };
            let digest = pusher
                .remote_digest(&credentials, repository, &wanted)
                .await?
                .ok_or_else(|| not_found(server))?;
            return Ok(PinnedImage {
                repository_uri: format!("{server}/{repository}"),
                digest,
                tags: match reference {
                    ImageReference::Tag(tag) => vec![tag.clone()],
                    ImageReference::Digest(_) => Vec::new(),
                },
            });
        }
        let id = match reference {
            ImageReference::Tag(tag) => ImageIdentifier::builder().image_tag(tag).build(),
            ImageReference::Digest(digest) => {
                ImageIdentifier::builder().image_digest(digest).build()
            }
        };
        let output = self
            .client
            .describe_images()
            .repository_name(repository)
            .image_ids(id)
            .send()
            .await;
        let output = match output {
            Ok(output) => output,
            Err(err)
                if is_code(&err, "ImageNotFoundException")
                    || is_code(&err, "RepositoryNotFoundException") =>
            {
                return Err(not_found("ECR"))
            }
            Err(err) => return Err(stage_error("DescribeImages", &err)),
        };
        let detail = output
            .image_details()
            .first()
            .ok_or_else(|| not_found("ECR"))?;
        let digest = detail.image_digest().ok_or_else(|| {
            StageError::failed("DescribeImages returned an image without a digest")
        })?;
        let uri = self
            .repository_uri(repository)
            .await?
            .ok_or_else(|| not_found("ECR"))?;
        Ok(PinnedImage {
            repository_uri: uri,
            digest: digest.to_string(),
            tags: detail.image_tags().to_vec(),
        })
    }
}

/// How to start a basic scan of one image, for when none exists.
fn start_scan_help(repository: &str, digest: &str) -> String {
    format!(
        "start one with `aws ecr start-image-scan --repository-name {repository} --image-id imageDigest={digest}`, or turn on scan on push with `aws ecr put-image-scanning-configuration --repository-name {repository} --image-scanning-configuration scanOnPush=true`, and release again"
    )
}

/// What to do about a scan that ended without findings to judge.
fn scan_status_help(status: &str, repository: &str, digest: &str) -> String {
    match status {
        "UNSUPPORTED_IMAGE" => "basic scanning does not support this image's operating system or packages: build on a base image it supports, turn on enhanced scanning (Amazon Inspector), or remove scan.block_at for this environment".to_string(),
        "FAILED" | "SCAN_ELIGIBILITY_EXPIRED" | "FINDINGS_UNAVAILABLE" => format!(
            "scan it again with `aws ecr start-image-scan --repository-name {repository} --image-id imageDigest={digest}` (basic scanning allows one scan per image a day) and release again"
        ),
        _ => format!("check the image's scan in the ECR console ({repository}@{digest}) and release again"),
    }
}
