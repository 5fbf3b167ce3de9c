//! The test, build and push stages, and the security-scan gate on the pushed image.

use super::*;

impl Orchestrator {
    /// Tests, builds and pushes the release's image once, outside any lock, for a fleet
    /// whose services then each deploy it ([`Orchestrator::deploy_fleet`]). `Err` says
    /// why nothing was deployed (bad input: exit 2; a failed stage: exit 1).
    pub async fn build_release(
        &self,
        request: &DeployRequest,
    ) -> Result<PinnedImage, DeployReport> {
        let env = match self.project.environment(&request.environment) {
            Ok(env) => env.clone(),
            Err(err) => return Err(DeployReport::bad_input(err.to_string())),
        };
        let mut run = self.new_run(request, &env);
        self.test_build_push(&mut run, request, &request.cancel)
            .await
            .map_err(|ending| DeployReport {
                outcome: ending.outcome.outcome(),
                record: None,
                message: ending.message,
            })
    }

    pub(super) async fn test_build_push(
        &self,
        run: &mut Run,
        request: &DeployRequest,
        cancel: &CancellationToken,
    ) -> Result<PinnedImage, Ending> {
        let config = &self.project.config;
        let missing = |what: &str| {
            Ending::refused(
                &StageError::bad_input(format!(
                    "this front end has no {what}, so it cannot build a release"
                ))
                .with_help("deploy an image that is already pushed (--image TAG)"),
            )
        };
        // A commit's image is immutable once pushed: a rerun (a retried CI job, a deploy
        // of the same commit to another environment) deploys that image, not a rebuild.
        if !request.git.sha.is_empty() {
            match self
                .stages
                .registry
                .find_tag(&config.image.repository, &request.git.sha)
                .await
            {
                Ok(Some(image)) => {
                    self.events.info(format!(
                        "commit {} is already built and pushed as {}; skipping test, build and push",
                        request.git.short_sha(),
                        image.reference()
                    ));
                    return Ok(image);
                }
                Ok(None) => {}
                Err(err) => self.events.warn(format!(
                    "could not look for an image of commit {} ({}); building it",
                    request.git.short_sha(),
                    err.message
                )),
            }
        }
        if !config.test.commands.is_empty() {
            let runner = self
                .stages
                .test_runner
                .clone()
                .ok_or_else(|| missing("test runner"))?;
            let spec = TestSpec {
                commands: config.test.commands.clone(),
                workdir: self.project.root.join(&config.test.workdir),
                timeout: Duration::from_secs(config.test.timeout_seconds),
                artifacts: config.test.artifacts.clone(),
                pass_env: config.test.pass_env.clone(),
                env: config.test.env.clone(),
            };
            let started = self.begin(Stage::Test);
            let result = cancellable(runner.run_tests(&spec, &self.events), cancel).await;
            self.end(run, Stage::Test, started, result.is_ok());
            let report = result.map_err(|err| Ending::unchanged(Stage::Test, &err))?;
            for artifact in &report.artifacts {
                let stored = self
                    .stages
                    .artifacts
                    .put_artifact(
                        &run.target.app,
                        &run.target.environment,
                        &run.record.release_id,
                        artifact,
                    )
                    .await;
                match stored {
                    Ok(location) => self
                        .events
                        .info(format!("kept {} at {location}", artifact.name)),
                    Err(err) => self.events.warn(format!(
                        "test artifact {} was not kept: {}",
                        artifact.name, err.message
                    )),
                }
            }
        }

        let builder = self
            .stages
            .image_builder
            .clone()
            .ok_or_else(|| missing("image builder"))?;
        let spec = self.build_spec(&request.git);
        let started = self.begin(Stage::Build);
        let result = cancellable(builder.build(&spec, &self.events), cancel).await;
        self.end(run, Stage::Build, started, result.is_ok());
        let built: BuiltImage = result.map_err(|err| Ending::unchanged(Stage::Build, &err))?;

        let started = self.begin(Stage::Push);
        let repository = &config.image.repository;
        let tags = release_tags(&self.project, &request.git);
        let pushed = async {
            self.stages.registry.ensure_repository(repository).await?;
            self.stages
                .registry
                .push(&built, repository, &tags, &self.events)
                .await
        };
        let result = cancellable(pushed, cancel).await;
        self.end(run, Stage::Push, started, result.is_ok());
        result.map_err(|err| Ending::unchanged(Stage::Push, &err))
    }

    pub(super) fn build_spec(&self, git: &GitInfo) -> BuildSpec {
        let config = &self.project.config;
        let repository = &config.image.repository;
        let tags: Vec<String> = release_tags(&self.project, git)
            .iter()
            .map(|tag| format!("{repository}:{tag}"))
            .collect();
        let mut labels = BTreeMap::new();
        labels.insert(
            "org.opencontainers.image.revision".to_string(),
            git.sha.clone(),
        );
        labels.insert(
            "org.opencontainers.image.created".to_string(),
            self.clock
                .now()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
        labels.insert(
            "org.opencontainers.image.title".to_string(),
            config.app.name.clone(),
        );
        if let Some(source) = &config.app.source {
            labels.insert(
                "org.opencontainers.image.source".to_string(),
                source.clone(),
            );
        }
        if let Some(version) = git.tag() {
            labels.insert(
                "org.opencontainers.image.version".to_string(),
                version.to_string(),
            );
        }
        BuildSpec {
            context: self.project.root.join(&config.image.context),
            dockerfile: self.project.root.join(&config.image.dockerfile),
            platform: config.image.platform.clone(),
            build_args: config.image.build_args.clone(),
            secrets: config.image.secrets.clone(),
            tags,
            labels,
            cache_from: vec![format!("{repository}:latest-build")],
        }
    }

    /// Refuses an image whose scan has findings at or above the environment's
    /// `scan.block_at`, waiting up to `scan.wait_seconds` for a scan that is running or
    /// not registered yet (scan on push starts it shortly after the push). An override
    /// lets findings through and is recorded.
    pub(super) async fn scan_gate(
        &self,
        env: &EnvironmentConfig,
        image: &PinnedImage,
    ) -> Result<Option<String>, Ending> {
        use crate::stages::ScanReport;
        let Some(block_at) = env.scan.block_at else {
            return Ok(None);
        };
        let repository = &self.project.config.image.repository;
        // Validation keeps both in range; a config built in code cannot make this panic.
        let deadline = Instant::now().checked_add(Duration::from_secs(env.scan.wait_seconds));
        let poll = Duration::try_from_secs_f64(env.scan.poll_seconds.max(0.05))
            .unwrap_or(Duration::from_secs(5));
        let refuse = |message: String, help: String| {
            Ending::refused(&StageError::bad_input(message).with_help(help))
        };
        let mut waiting_said = false;
        let findings = loop {
            let report = match self.stages.registry.scan_findings(repository, image).await {
                Ok(report) => report,
                Err(err) => return Err(Ending::unchanged(Stage::Deploy, &err)),
            };
            let time_left = deadline.is_none_or(|d| Instant::now() < d);
            match report {
                ScanReport::Complete(findings) => break findings,
                ScanReport::InProgress | ScanReport::NotStarted { .. } if time_left => {
                    if !waiting_said {
                        self.events.info(format!(
                            "waiting up to {}s for the security scan of {}",
                            env.scan.wait_seconds, image.digest
                        ));
                        waiting_said = true;
                    }
                    tokio::time::sleep(poll).await;
                }
                ScanReport::InProgress => {
                    return Err(refuse(
                        format!(
                            "the security scan of {} did not finish within {}s",
                            image.reference(),
                            env.scan.wait_seconds
                        ),
                        format!("raise scan.wait_seconds (now {}) or release again once the scan has finished", env.scan.wait_seconds),
                    ))
                }
                ScanReport::NotStarted { how_to_start } => {
                    return Err(refuse(
                        format!(
                            "there is no security scan of {}: none started within {}s (scan.wait_seconds)",
                            image.reference(),
                            env.scan.wait_seconds
                        ),
                        how_to_start,
                    ))
                }
                ScanReport::Unavailable { reason, help } => {
                    return Err(refuse(
                        format!("no usable security scan of {}: {reason}", image.reference()),
                        help,
                    ))
                }
            }
        };
        let blocking: Vec<&crate::stages::Finding> =
            findings.iter().filter(|f| f.severity >= block_at).collect();
        if blocking.is_empty() {
            self.events.info(format!(
                "security scan: {} finding(s), none at or above {block_at:?}",
                findings.len()
            ));
            return Ok(None);
        }
        let listed: Vec<String> = blocking
            .iter()
            .map(|f| {
                format!(
                    "{} ({:?}{})",
                    f.name,
                    f.severity,
                    f.package
                        .as_ref()
                        .map(|p| format!(", {p}"))
                        .unwrap_or_default()
                )
            })
            .collect();
        match &self.scan_override {
            Some(who) => {
                self.events.warn(format!(
                    "{who} overrode the security-scan gate: {} finding(s) at or above {block_at:?}: {}",
                    blocking.len(),
                    listed.join(", ")
                ));
                Ok(Some(who.clone()))
            }
            None => Err(refuse(
                format!(
                    "the image {} has {} finding(s) at or above {block_at:?}: {}",
                    image.reference(),
                    blocking.len(),
                    listed.join(", ")
                ),
                "fix the findings and release again, or deploy anyway with --override-scan (recorded in the deploy record)".into(),
            )),
        }
    }
}
