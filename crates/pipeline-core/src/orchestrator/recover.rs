//! After the service changed and the release failed or was cancelled: the rollback and its wait.

use super::*;

impl Orchestrator {
    /// After the service changed and the release failed: roll back to `previous` and
    /// check that the rollback itself completed.
    pub(super) async fn recover(
        &self,
        run: &mut Run,
        env: &EnvironmentConfig,
        previous: Option<&Revision>,
        reason: &str,
    ) -> Ending {
        let environment = run.target.environment.clone();
        let new = run
            .record
            .revision
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| "the new revision".into());
        if let Some(why) = run.lease.as_ref().and_then(|lease| lease.taken_over()) {
            return Ending {
                outcome: RecordOutcome::NotRestored,
                reason: Some(format!("{reason}; {why}")),
                message: format!(
                    "{reason}; {why}. Not rolling back: another run holds the deploy lock of {environment} now, and a rollback would undo its release. \
                     The service {} may still be on {new}; check `tugboat status --env {environment}`.",
                    run.target
                ),
            };
        }
        let Some(previous) = previous else {
            return Ending {
                outcome: RecordOutcome::NotRestored,
                reason: Some(reason.to_string()),
                message: format!(
                    "{reason}. The service {} had no earlier revision, so there is nothing to roll back to: \
                     it is on {new}, not working. Fix the release and run `tugboat deploy --env {environment}` again, \
                     or scale it down with `aws ecs update-service --cluster {} --service {} --desired-count 0`.",
                    run.target, run.target.cluster, run.target.service
                ),
            };
        };
        if !env.rollback.automatic {
            return Ending {
                outcome: RecordOutcome::NotRestored,
                reason: Some(reason.to_string()),
                message: format!(
                    "{reason}. Automatic rollback is off for {environment}: the service {} is on {new}. \
                     Run `tugboat rollback --env {environment} --to {previous}` to restore the release that served before.",
                    run.target
                ),
            };
        }
        if run.cancel.is_cancelled() {
            return self.roll_back_cancelled(run, env, previous, reason).await;
        }
        let started = self.begin(Stage::Rollback);
        self.events.emit(PipelineEvent::RollbackStarted {
            to: previous.clone(),
            reason: reason.to_string(),
        });
        let from = run.record.revision.clone();
        let result = self
            .roll_back_and_wait(&run.target, previous, from.as_ref(), env, &run.cancel)
            .await;
        self.end(run, Stage::Rollback, started, result.is_ok());
        match result {
            Ok(restored) => Ending {
                outcome: RecordOutcome::RolledBack,
                reason: Some(reason.to_string()),
                message: if same_revision(&restored, previous) {
                    format!(
                        "{reason}. Rolled back: the service {} is on {previous} again, as before this release.",
                        run.target
                    )
                } else {
                    format!(
                        "{reason}. Rolled back: the service {} runs the task definition of {previous} again, \
                         registered anew as {restored} because {previous} had been deregistered.",
                        run.target
                    )
                },
            },
            Err(rollback_failure) => Ending {
                outcome: RecordOutcome::NotRestored,
                reason: Some(format!("{reason}; rollback failed: {rollback_failure}")),
                message: format!(
                    "{reason}. THE ROLLBACK TO {previous} FAILED TOO ({rollback_failure}). The service {} may be running \
                     {new}, {previous}, or both. Run `tugboat status --env {environment}` to see its deployments, then \
                     `tugboat rollback --env {environment} --to {previous}`.",
                    run.target
                ),
            },
        }
    }

    /// The run was cancelled (a signal) after the service changed: the rollback is issued
    /// at once, recorded as "cancelled, rolling back to X (deployment D)" before anything
    /// else, and followed only for `deploy.cancel_grace_seconds`; a runner that kills the
    /// process after that finds the record already written.
    pub(super) async fn roll_back_cancelled(
        &self,
        run: &mut Run,
        env: &EnvironmentConfig,
        previous: &Revision,
        reason: &str,
    ) -> Ending {
        let environment = run.target.environment.clone();
        let started = self.begin(Stage::Rollback);
        self.events.emit(PipelineEvent::RollbackStarted {
            to: previous.clone(),
            reason: reason.to_string(),
        });
        let to = match self.restorable(&run.target, previous).await {
            Ok(to) => to,
            Err(why) => {
                self.events.warn(why);
                previous.clone()
            }
        };
        let request = RestoreRequest {
            to,
            from: run.record.revision.clone(),
        };
        let deployment = match self.stages.deployer.roll_back(&run.target, &request).await {
            Ok(deployment) => deployment,
            Err(err) => {
                self.end(run, Stage::Rollback, started, false);
                return Ending {
                    outcome: RecordOutcome::NotRestored,
                    reason: Some(format!(
                        "cancelled; the rollback to {previous} failed: {}",
                        err.message
                    )),
                    message: format!(
                        "cancelled. THE ROLLBACK TO {previous} FAILED ({}): the service {} may be running the new release. \
                         Run `tugboat rollback --env {environment} --to {previous}` now.",
                        err.message, run.target
                    ),
                };
            }
        };
        let rolling_back = format!(
            "cancelled, rolling back to {previous} (deployment {})",
            deployment.id
        );
        self.events.warn(rolling_back.clone());
        run.record.outcome = RecordOutcome::RolledBack;
        run.record.reason = Some(rolling_back.clone());
        if let Err(err) = self.stages.records.put_record(&run.record).await {
            self.events.warn(format!(
                "could not record the cancellation of {}: {}",
                run.record.release_id, err.message
            ));
        }
        let grace = cancel_grace(env);
        // Within the grace, look often: the runner may kill the process any moment.
        let options = WaitOptions {
            timeout: grace,
            poll_interval: wait_options(env)
                .poll_interval
                .min(Duration::from_millis(500)),
        };
        let waited = tokio::time::timeout(
            grace,
            follow_rollout(
                self.stages.deployer.as_ref(),
                &run.target,
                &deployment,
                &options,
                &self.events,
            ),
        )
        .await;
        let completed = matches!(waited, Ok(Ok(RolloutOutcome::Completed)));
        self.end(run, Stage::Rollback, started, completed);
        let message = if completed {
            format!(
                "{reason}. Rolled back: the service {} is on {previous} again (deployment {}).",
                run.target, deployment.id
            )
        } else {
            format!(
                "{reason}. The rollback to {previous} was issued (deployment {}) and ECS carries it on; it was not \
                 followed past the {}s grace. Check it with `tugboat status --env {environment}`.",
                deployment.id,
                grace.as_secs_f64()
            )
        };
        Ending {
            outcome: RecordOutcome::RolledBack,
            reason: Some(if completed {
                format!(
                    "cancelled; rolled back to {previous} (deployment {})",
                    deployment.id
                )
            } else {
                rolling_back
            }),
            message,
        }
    }

    /// Rolls `target` back to `to` (registered again first if the platform lost it) and
    /// waits for that rollout; then checks that the service really is on it, and points
    /// it there with a plain update if not. Returns the revision the service is on.
    pub(super) async fn roll_back_and_wait(
        &self,
        target: &DeployTarget,
        to: &Revision,
        from: Option<&Revision>,
        env: &EnvironmentConfig,
        cancel: &CancellationToken,
    ) -> Result<Revision, String> {
        let to = self.restorable(target, to).await?;
        let request = RestoreRequest {
            to: to.clone(),
            from: from.cloned(),
        };
        for attempt in 0..2 {
            let deployment: DeploymentHandle = self
                .stages
                .deployer
                .roll_back(target, &request)
                .await
                .map_err(|err| err.message)?;
            let options = self.within_deadline(wait_options(env));
            let wait = follow_rollout(
                self.stages.deployer.as_ref(),
                target,
                &deployment,
                &options,
                &self.events,
            );
            tokio::pin!(wait);
            // Cancelled while following the rollback: it was issued and ECS carries it on;
            // it is followed only for the grace period.
            let outcome = tokio::select! {
                outcome = &mut wait => outcome,
                () = cancel.cancelled() => match tokio::time::timeout(cancel_grace(env), &mut wait).await {
                    Ok(outcome) => outcome,
                    Err(_) => return Err(format!(
                        "cancelled: the rollback to {to} was issued (deployment {}) and not followed past the grace period",
                        deployment.id
                    )),
                },
            }
            .map_err(|err| err.message)?;
            if !outcome.is_success() {
                return Err(outcome.describe());
            }
            let now = self
                .stages
                .deployer
                .current_revision(target)
                .await
                .map_err(|err| err.message)?;
            match now {
                Some(now) if same_revision(&now, &to) => return Ok(to),
                now if attempt == 0 => self.events.warn(format!(
                    "the rollback ended with the service on {}, not {to}; pointing it at {to}",
                    now.map(|n| n.to_string())
                        .unwrap_or_else(|| "nothing".into())
                )),
                now => {
                    return Err(format!(
                        "the service is on {}, not {to}, after rolling back twice",
                        now.map(|n| n.to_string())
                            .unwrap_or_else(|| "nothing".into())
                    ))
                }
            }
        }
        Err(format!("the service did not return to {to}"))
    }
}
