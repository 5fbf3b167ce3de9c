//! A release: lock, start (image, secrets, render, register, update), follow the rollout, verify, record.

use super::*;

impl Orchestrator {
    /// Runs a release. Never panics on a failed stage: every path ends in a report whose
    /// outcome maps to the exit code.
    pub async fn deploy(&self, request: DeployRequest) -> DeployReport {
        let env = match self.project.environment(&request.environment) {
            Ok(env) => env.clone(),
            Err(err) => return DeployReport::bad_input(err.to_string()),
        };
        let mut run = self.new_run(&request, &env);
        let lease = match self.take_lease(&run, &env, &request.cancel).await {
            Ok(lease) => lease,
            Err(ending) => return self.finish(run, ending, false).await,
        };
        run.lease = Some(lease.clone());
        // A lost lease cancels the run as a signal would.
        let request = DeployRequest {
            cancel: lease.cancel.clone(),
            ..request
        };
        self.notify(&run, NotificationKind::Started, None).await;
        let work = self.execute(&mut run, &env, &request);
        let ending = lease::while_renewing(&lease, &*self.stages.locks, &self.events, work)
            .await
            .with_lease(lease.lost());
        self.give_back(&lease.lock()).await;
        self.finish(run, ending, true).await
    }

    /// A new run for a request, announced with [`PipelineEvent::ReleaseStarted`].
    pub(super) fn new_run(&self, request: &DeployRequest, env: &EnvironmentConfig) -> Run {
        let started_at = self.clock.now();
        let release_id = ReleaseId::new(started_at, &request.git);
        let target = env.target(&self.project.config.app.name, &request.environment);
        self.events.emit(PipelineEvent::ReleaseStarted {
            release_id: release_id.0.clone(),
            app: target.app.clone(),
            environment: target.environment.clone(),
        });
        Run {
            record: DeployRecord {
                release_id,
                app: target.app.clone(),
                environment: target.environment.clone(),
                git: request.git.clone(),
                image: None,
                revision: None,
                previous_revision: None,
                outcome: RecordOutcome::InProgress,
                reason: None,
                stages: Vec::new(),
                actor: request.actor.clone(),
                started_at,
                finished_at: None,
                rollback_of: None,
                deployment_id: None,
                trigger: None,
                scan_override: None,
                task_definition: None,
                warnings: Vec::new(),
                rollback_deployment_id: None,
                rollback_started_at: None,
                concluding: None,
                one_off_tasks: Vec::new(),
            },
            target,
            started: Instant::now(),
            cancel: request.cancel.clone(),
            lease: None,
            seen_at_start: None,
        }
    }

    pub(super) async fn execute(
        &self,
        run: &mut Run,
        env: &EnvironmentConfig,
        request: &DeployRequest,
    ) -> Ending {
        let cancel = &request.cancel;
        let started = match self.start(run, env, request).await {
            Ok(started) => started,
            Err(ending) => return ending,
        };
        let options = wait_options(env);
        let waited = tokio::select! {
            waited = follow_rollout(self.stages.deployer.as_ref(), &run.target, &started.deployment, &options, &self.events) => Some(waited),
            () = cancel.cancelled() => None,
        };
        let platform_ended_it = matches!(waited, Some(Ok(_)));
        let failure = match waited {
            Some(Ok(RolloutOutcome::Completed)) => None,
            Some(Ok(outcome)) => Some(outcome.describe()),
            Some(Err(err)) => Some(format!("could not follow the rollout: {}", err.message)),
            None => Some("the run was cancelled during the rollout".to_string()),
        };
        self.end(run, Stage::Deploy, started.clock, failure.is_none());
        if let Some(reason) = failure {
            // A rollout that failed or ran out of time: why its tasks stopped.
            let reason = if platform_ended_it {
                self.with_diagnosis(run, &started.deployment, reason).await
            } else {
                reason
            };
            return self
                .recover(
                    run,
                    env,
                    run.record.previous_revision.clone().as_ref(),
                    &reason,
                )
                .await;
        }
        self.after_rollout(run, env, cancel).await
    }

    /// A named image resolved to its digest and through the scan gate: once for every
    /// orchestrator sharing the check (a fleet's services in one region), the later ones
    /// getting the first one's answer or refusal.
    async fn checked_image(
        &self,
        env: &EnvironmentConfig,
        reference: &ImageReference,
    ) -> Result<CheckedImage, Ending> {
        let Some(shared) = &self.shared_image else {
            return self.check_image(env, reference).await;
        };
        let mut checked = shared.checked.lock().await;
        if let Some(result) = &*checked {
            if let Ok(done) = result {
                self.events.info(format!(
                    "image {} (resolved and scan-gated once for the region)",
                    done.image.reference()
                ));
            }
            return result.clone();
        }
        let result = self.check_image(env, reference).await;
        *checked = Some(result.clone());
        result
    }

    /// A named image resolved to its digest and through the scan gate.
    async fn check_image(
        &self,
        env: &EnvironmentConfig,
        reference: &ImageReference,
    ) -> Result<CheckedImage, Ending> {
        let image = self
            .stages
            .registry
            .resolve(&self.project.config.image.repository, reference)
            .await
            .map_err(|err| Ending::unchanged(Stage::Deploy, &err))?;
        self.events.info(format!("image {}", image.reference()));
        let scan_override = self.scan_gate(env, &image).await?;
        Ok(CheckedImage {
            image,
            scan_override,
        })
    }

    /// `reason` followed by why the deployment's tasks stopped, when the stages can tell;
    /// the whole diagnosis goes to the events (the terminal, the JSON events).
    async fn with_diagnosis(
        &self,
        run: &Run,
        deployment: &crate::model::DeploymentHandle,
        reason: String,
    ) -> String {
        let Some(diagnostics) = &self.stages.diagnostics else {
            return reason;
        };
        let diagnosis = diagnostics
            .diagnose(&run.target, deployment)
            .await
            .redacted(&self.redact);
        if diagnosis.is_empty() {
            return reason;
        }
        self.events
            .warn(format!("why the tasks stopped:\n{diagnosis}"));
        format!("{reason}; {}", diagnosis.summary())
    }

    /// Everything up to and including the service update: the image (tested, built and
    /// pushed, or resolved), secrets, rendering, registration, `update_service`.
    pub(super) async fn start(
        &self,
        run: &mut Run,
        env: &EnvironmentConfig,
        request: &DeployRequest,
    ) -> Result<Started, Ending> {
        let cancel = &request.cancel;
        self.check_one_off_stage(env)?;
        let image = match &request.source {
            ReleaseSource::Image(reference) => {
                let done = self.checked_image(env, reference).await?;
                run.record.scan_override = done.scan_override;
                done.image
            }
            ReleaseSource::Build => {
                let image = self.test_build_push(run, request, cancel).await?;
                self.events.info(format!("image {}", image.reference()));
                run.record.scan_override = self.scan_gate(env, &image).await?;
                image
            }
        };
        run.record.image = Some(image.clone());

        // Everything up to the service update only reads or registers: a failure here
        // leaves the service as it was.
        let started = self.begin(Stage::Deploy);
        let prepared = self
            .prepare_release(
                &run.target,
                &run.record.release_id,
                &run.record.git,
                env,
                &image,
            )
            .await;
        let rendered = match prepared {
            Ok(rendered) => rendered,
            Err(err) => {
                self.end(run, Stage::Deploy, started, false);
                return Err(Ending::unchanged(Stage::Deploy, &err));
            }
        };
        let status = match self.service_before_release(run, env, cancel).await {
            Ok(status) => status,
            Err(ending) => {
                self.end(run, Stage::Deploy, started, false);
                return Err(ending);
            }
        };
        let history = self
            .records_of(&run.target, history_depth(env.rollback.keep_revisions))
            .await;
        self.report_unfinished(run, &status, &history);
        let previous = restore_point(&status, &history);
        let serving_before = status.revision.clone();
        run.record.previous_revision = previous.clone();
        run.seen_at_start = Some(SeenAtStart {
            status: status.clone(),
            history,
        });
        if cancel.is_cancelled() {
            self.end(run, Stage::Deploy, started, false);
            return Err(cancelled_before_change());
        }
        run.record.task_definition = Some(rendered.clone());
        let revision = match self.stages.deployer.register(&run.target, &rendered).await {
            Ok(revision) => revision,
            Err(err) => {
                self.end(run, Stage::Deploy, started, false);
                return Err(Ending::unchanged(Stage::Deploy, &err));
            }
        };
        self.events.info(format!("registered {revision}"));
        run.record.revision = Some(revision.clone());

        // The record says what is about to change before it changes: a run that dies
        // from here on leaves an in-progress record naming both revisions.
        run.record.outcome = RecordOutcome::InProgress;
        if let Err(err) = self.stages.records.put_record(&run.record).await {
            self.events.warn(format!(
                "could not record release {} as in progress: {}",
                run.record.release_id, err.message
            ));
        }
        if let Err(ending) = self.before_deploy(run, env, &revision, cancel).await {
            self.end(run, Stage::Deploy, started, false);
            return Err(ending);
        }
        let desired =
            desired_count_for_release(env.desired_count, env.scaling.is_some(), Some(&status));
        self.events.info(desired.reason().to_string());
        if cancel.is_cancelled() {
            self.end(run, Stage::Deploy, started, false);
            return Err(cancelled_before_change());
        }
        let update = UpdateRequest {
            revision: revision.clone(),
            desired_count: desired.count(),
            force_new_deployment: env.deploy.force_new_deployment,
        };
        let deployment = match self
            .stages
            .deployer
            .update_service(&run.target, &update)
            .await
        {
            Ok(deployment) => deployment,
            Err(err) => {
                self.end(run, Stage::Deploy, started, false);
                // The call failed, but it may have reached the service: look before
                // claiming nothing changed.
                let now = self.stages.deployer.current_revision(&run.target).await;
                return Err(match now {
                    Ok(current) if current == serving_before => {
                        Ending::unchanged(Stage::Deploy, &err)
                    }
                    _ => {
                        let reason = format!("updating the service failed: {}", err.message);
                        self.recover(run, env, previous.as_ref(), &reason).await
                    }
                });
            }
        };
        run.record.deployment_id = Some(deployment.id.clone());
        Ok(Started {
            deployment,
            clock: started,
        })
    }

    /// The service as a release finds it. A deployment still rolling out (not
    /// tugboat's: this run holds the lock) is refused, or waited for when the
    /// environment says so.
    pub(super) async fn service_before_release(
        &self,
        run: &Run,
        env: &EnvironmentConfig,
        cancel: &CancellationToken,
    ) -> Result<crate::model::ServiceStatus, Ending> {
        let read = || async {
            self.stages
                .service_reader
                .status(&run.target)
                .await
                .map_err(|err| Ending::unchanged(Stage::Deploy, &err))
        };
        let status = read().await?;
        let Some(foreign) = rollout_in_progress(&status).cloned() else {
            return Ok(status);
        };
        if !env.deploy.wait_for_other_deployments {
            return Err(Ending::refused(
                &StageError::bad_input(format!(
                    "the service {} is rolling out deployment {} ({}) that is not this release's; nothing was changed",
                    run.target, foreign.id, foreign.revision
                ))
                .with_help(format!(
                    "wait for it to finish (`tugboat status --env {}`), or deploy with --wait-for-deployment \
                     (deploy.wait_for_other_deployments = true) to wait for it",
                    run.target.environment
                )),
            ));
        }
        self.events.warn(format!(
            "waiting for deployment {} ({}) to finish before releasing",
            foreign.id, foreign.revision
        ));
        let handle = DeploymentHandle {
            id: foreign.id.clone(),
            revision: foreign.revision.clone(),
        };
        let options = wait_options(env);
        let waited = tokio::select! {
            waited = follow_rollout(self.stages.deployer.as_ref(), &run.target, &handle, &options, &self.events) => waited,
            () = cancel.cancelled() => return Err(cancelled_before_change()),
        };
        match waited {
            Ok(outcome) => self.events.info(format!(
                "deployment {} finished: {}",
                foreign.id,
                outcome.describe()
            )),
            Err(err) => return Err(Ending::unchanged(Stage::Deploy, &err)),
        }
        let status = read().await?;
        match rollout_in_progress(&status) {
            Some(still) => Err(Ending::refused(&StageError::bad_input(format!(
                "the service {} is still rolling out deployment {}; nothing was changed",
                run.target, still.id
            )))),
            None => Ok(status),
        }
    }

    /// After the release's own deployment completed: verification, then revision
    /// clean-up; a failed verification rolls back.
    pub(super) async fn after_rollout(
        &self,
        run: &mut Run,
        env: &EnvironmentConfig,
        cancel: &CancellationToken,
    ) -> Ending {
        let previous = run.record.previous_revision.clone();
        let (Some(revision), Some(image)) = (run.record.revision.clone(), run.record.image.clone())
        else {
            return Ending {
                outcome: RecordOutcome::NotRestored,
                reason: Some("the release record names no revision or image".into()),
                message: "internal error: a completed release without a revision or image; run `tugboat status`".into(),
            };
        };
        if let Some(reason) = self.verify(run, &revision, &image, cancel).await {
            return self.recover(run, env, previous.as_ref(), &reason).await;
        }

        let keep = env.rollback.keep_revisions;
        let lease_held = run
            .lease
            .as_ref()
            .is_none_or(|lease| lease.lost().is_none());
        if keep > 0 && lease_held {
            self.prune(run, keep).await;
        }
        Ending {
            outcome: RecordOutcome::Succeeded,
            reason: None,
            message: format!(
                "released {} to {} ({}): {revision} with {}",
                run.record.release_id,
                run.target.environment,
                run.target,
                image.reference()
            ),
        }
    }

    /// Secrets resolved and checked, the task definition rendered: all before any change.
    pub(super) async fn prepare_release(
        &self,
        target: &DeployTarget,
        release_id: &ReleaseId,
        git: &GitInfo,
        env: &EnvironmentConfig,
        image: &PinnedImage,
    ) -> Result<RenderedTaskDefinition, StageError> {
        let secrets = match &env.secrets_path {
            Some(path) => {
                let spec = SecretsSpec {
                    path: path.clone(),
                    names: env.secrets.clone(),
                };
                self.stages.secrets.resolve(&spec).await?
            }
            None => Vec::new(),
        };
        let rendered = self.render(target, release_id, git, env, image, &secrets)?;
        // Parameters `resolve` just found exist; check only the ones the file names.
        let sources: Vec<String> = rendered
            .definition
            .secret_sources()
            .into_iter()
            .filter(|source| !secrets.iter().any(|s| &s.value_from == source))
            .collect();
        if !sources.is_empty() {
            let unchecked = self.stages.secrets.ensure_exist(&sources).await?;
            if !unchecked.is_empty() {
                self.events
                    .warn(crate::stages::unchecked_secrets(&unchecked));
            }
        }
        Ok(rendered)
    }

    pub(super) fn render(
        &self,
        target: &DeployTarget,
        release_id: &ReleaseId,
        git: &GitInfo,
        env: &EnvironmentConfig,
        image: &PinnedImage,
        secrets: &[crate::model::SecretRef],
    ) -> Result<RenderedTaskDefinition, StageError> {
        let mut tags = target_tags(target);
        tags.extend([
            ResourceTag {
                key: "tugboat:release".into(),
                value: release_id.0.clone(),
            },
            ResourceTag {
                key: "tugboat:git-sha".into(),
                value: if git.sha.is_empty() {
                    "unknown".into()
                } else {
                    git.sha.clone()
                },
            },
        ]);
        let inputs = ReleaseInputs {
            image,
            containers: &self.project.config.task_definition.containers,
            environment: &env.environment,
            secrets,
            execution_role_arn: env.execution_role_arn.as_deref(),
            task_role_arn: env.task_role_arn.as_deref(),
            tags,
        };
        self.project
            .task_definition
            .render(&inputs)
            .map_err(StageError::bad_input)
    }

    pub(super) async fn verify(
        &self,
        run: &mut Run,
        revision: &Revision,
        image: &PinnedImage,
        cancel: &CancellationToken,
    ) -> Option<String> {
        if self.stages.verifiers.is_empty() {
            return None;
        }
        let started = self.begin(Stage::Verify);
        let context = VerifyContext {
            target: run.target.clone(),
            release_id: run.record.release_id.clone(),
            revision: revision.clone(),
            image: Some(image.clone()),
            release_started_at: run.record.started_at,
        };
        // A verifier's warnings go into the record as well as to the subscribers.
        let seen = RecordedEvents::new();
        let events = self.events.clone().with(seen.clone());
        let mut failure = None;
        for verifier in &self.stages.verifiers {
            let result = cancellable(verifier.verify(&context, &events), cancel).await;
            if let Err(err) = result {
                failure = Some(format!(
                    "verification {} failed: {}",
                    verifier.name(),
                    err.message
                ));
                break;
            }
        }
        for event in seen.take() {
            if let PipelineEvent::Warning { message } = event {
                if !run.record.warnings.contains(&message) {
                    run.record.warnings.push(message);
                }
            }
        }
        self.end(run, Stage::Verify, started, failure.is_none());
        failure
    }
}
