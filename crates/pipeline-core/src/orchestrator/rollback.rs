//! `tugboat rollback`: an environment back on an earlier release, under the lock, recorded.

use super::*;

impl Orchestrator {
    /// Puts an environment back on an earlier release, under the deploy lock, and
    /// records it.
    pub async fn rollback(&self, request: RollbackRequest) -> DeployReport {
        let env = match self.project.environment(&request.environment) {
            Ok(env) => env.clone(),
            Err(err) => {
                return DeployReport {
                    outcome: Outcome::BadInput,
                    record: None,
                    message: err.to_string(),
                }
            }
        };
        let target = env.target(&self.project.config.app.name, &request.environment);
        let refuse = |message: String| DeployReport {
            outcome: Outcome::BadInput,
            record: None,
            message,
        };
        let history = match self
            .stages
            .records
            .history(&target.app, &target.environment, 100)
            .await
        {
            Ok(history) => history,
            Err(err) => {
                return refuse(format!(
                    "cannot read the deploy history: {}",
                    describe_error(&err)
                ))
            }
        };
        let current = match self.stages.deployer.current_revision(&target).await {
            Ok(current) => current,
            Err(err) => {
                return refuse(format!("cannot read the service: {}", describe_error(&err)))
            }
        };
        let mut served_before: Option<ReleaseId> = None;
        let chosen = match &request.to {
            Some(RollbackTo::Release(id)) => match history.iter().find(|r| &r.release_id == id) {
                Some(record) => record.revision.clone().map(|rev| (rev, Some(record.release_id.clone()))),
                None => return refuse(format!(
                    "release {id} is not in the history of {}/{}; run `tugboat history --env {}` to list releases",
                    target.app, target.environment, target.environment
                )),
            },
            Some(RollbackTo::Revision(text)) => {
                let known = history.iter().find_map(|r| {
                    r.revision
                        .as_ref()
                        .filter(|rev| &rev.label == text || &rev.id == text)
                        .map(|rev| (rev.clone(), Some(r.release_id.clone())))
                });
                Some(known.unwrap_or_else(|| (Revision::new(text.clone(), text.clone()), None)))
            }
            None => {
                // The release serving now is the newest record that put the current
                // revision in place; when that was a manual rollback, the release it
                // restored. "Before" counts from there, so a second rollback goes
                // further back instead of forward to the release just rolled back from.
                let serving = history
                    .iter()
                    .position(|r| r.revision.is_some() && r.revision == current);
                let origin = serving.and_then(|index| match &history[index].rollback_of {
                    Some(id) => history.iter().position(|r| &r.release_id == id),
                    None => Some(index),
                });
                let older = origin.map_or(&history[..], |index| &history[index + 1..]);
                let candidates: Vec<DeployRecord> = older
                    .iter()
                    .filter(|r| r.revision.is_some() && r.revision != current)
                    .cloned()
                    .collect();
                last_good_release(&candidates, None)
                    .and_then(|r| r.revision.clone().map(|rev| (rev, Some(r.release_id.clone()))))
                    .or_else(|| {
                        // No earlier good release (tugboat was adopted one release ago): the
                        // revision that served before the current release, from its record.
                        let record = &history[origin?];
                        let before = record.previous_revision.clone()?;
                        served_before = Some(record.release_id.clone());
                        Some((before, None))
                    })
            }
        };
        let Some((revision, release)) = chosen else {
            return refuse(format!(
                "no earlier good release of {}/{} to roll back to; pass --to <revision> (for example {}:<number>)",
                target.app, target.environment, self.project.task_definition.family
            ));
        };
        // A revision typed by hand may not exist: find out before touching the service.
        if release.is_none() {
            if let Err(err) = self
                .stages
                .service_reader
                .registered_definition(&revision)
                .await
            {
                return refuse(format!(
                    "cannot roll back to {revision}: {}; nothing was changed\n  help: `tugboat history --env {}` lists the releases and their revisions",
                    err.message, target.environment
                ));
            }
        }
        // A revision typed by hand has its text as both id and label: match either.
        let already_serving = current
            .as_ref()
            .is_some_and(|c| c.id == revision.id || c.label == revision.label);
        if already_serving {
            return refuse(format!(
                "the service {target} already runs {revision}; nothing to roll back"
            ));
        }

        let started_at = self.clock.now();
        let git = release
            .as_ref()
            .and_then(|id| history.iter().find(|r| &r.release_id == id))
            .map(|r| r.git.clone())
            .unwrap_or_default();
        let mut run = Run {
            record: DeployRecord {
                release_id: ReleaseId::new(started_at, &git),
                app: target.app.clone(),
                environment: target.environment.clone(),
                git,
                image: release
                    .as_ref()
                    .and_then(|id| history.iter().find(|r| &r.release_id == id))
                    .and_then(|r| r.image.clone()),
                revision: Some(revision.clone()),
                previous_revision: current.clone(),
                outcome: RecordOutcome::InProgress,
                reason: None,
                stages: Vec::new(),
                actor: request.actor.clone(),
                started_at,
                finished_at: None,
                rollback_of: release,
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
        };
        let reason = request
            .reason
            .clone()
            .unwrap_or_else(|| format!("manual rollback by {}", request.actor));
        let result = match self.perform_rollback(&mut run, &env, &reason).await {
            Ok(result) => result,
            Err(ending) => return self.finish(run, ending, false).await,
        };
        let from = current
            .map(|c| c.to_string())
            .unwrap_or_else(|| "nothing".into());
        let ending = match result {
            Ok(()) => {
                let restored = run.record.revision.clone().unwrap_or(revision.clone());
                let mut message = format!("rolled {} back from {from} to {restored}", run.target);
                if !same_revision(&restored, &revision) {
                    message.push_str(&format!(
                        " (the task definition of {revision}, registered again: {revision} had been deregistered)"
                    ));
                }
                if let Some(release) = &served_before {
                    message.push_str(&format!(
                        "; no earlier good release is recorded, so this is the revision that served before release {release}"
                    ));
                }
                Ending {
                    outcome: RecordOutcome::Succeeded,
                    reason: None,
                    message,
                }
            }
            Err(failure) => Ending {
                outcome: RecordOutcome::NotRestored,
                reason: Some(failure.clone()),
                message: format!(
                    "the rollback of {} to {revision} did not complete ({failure}); the service may still be on {from}. \
                     Run `tugboat status --env {}` to see its deployments.",
                    run.target, run.target.environment
                ),
            },
        };
        self.finish(run, ending, true).await
    }

    /// Rolls `run.target` back to `run.record.revision` under the deploy lock and waits
    /// for that rollout; `Err` when the lock could not be taken (nothing changed).
    pub(super) async fn perform_rollback(
        &self,
        run: &mut Run,
        env: &EnvironmentConfig,
        reason: &str,
    ) -> Result<Result<(), String>, Ending> {
        let Some(revision) = run.record.revision.clone() else {
            return Ok(Err("no revision to roll back to".to_string()));
        };
        let lease = self.take_lease(run, env, &CancellationToken::new()).await?;
        let started = self.begin(Stage::Rollback);
        self.events.emit(PipelineEvent::RollbackStarted {
            to: revision.clone(),
            reason: reason.to_string(),
        });
        let from = run.record.previous_revision.clone();
        let work = self.roll_back_and_wait(&run.target, &revision, from.as_ref(), env, &run.cancel);
        let result = lease::while_renewing(&lease, &*self.stages.locks, &self.events, work).await;
        self.end(run, Stage::Rollback, started, result.is_ok());
        self.give_back(&lease.lock()).await;
        Ok(result.map(|restored| {
            run.record.revision = Some(restored);
        }))
    }
}
