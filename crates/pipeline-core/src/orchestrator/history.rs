//! What the records say: unfinished runs, the revisions every environment may need, what a rollback can restore, and pruning what none needs.

use super::*;

impl Orchestrator {
    /// Says what a run that died (it holds the lock no more, yet its record is still in
    /// progress) left behind: the service's revision and deployment, and whether that
    /// deployment finished. The note goes into this run's record too.
    pub(super) fn report_unfinished(
        &self,
        run: &mut Run,
        status: &crate::model::ServiceStatus,
        history: &[DeployRecord],
    ) {
        let unfinished = history.iter().take(10).filter(|r| {
            r.outcome == RecordOutcome::InProgress && r.release_id != run.record.release_id
        });
        for dead in unfinished {
            let primary = status.deployments.iter().find(|d| d.status == "PRIMARY");
            let left = match primary {
                Some(d) => format!(
                    "the service is on {} (deployment {}, {})",
                    d.revision,
                    d.id,
                    match d.rollout_state.as_deref() {
                        Some("COMPLETED") => "finished".to_string(),
                        Some(state) => format!("not finished: {state}"),
                        None => "state unknown".to_string(),
                    }
                ),
                None => format!(
                    "the service is on {}",
                    status
                        .revision
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_else(|| "nothing".into())
                ),
            };
            let note = format!(
                "release {} (by {}, started {}) never finished: its run died while moving the service from {} to {}; {left}",
                dead.release_id,
                dead.actor,
                dead.started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                dead.previous_revision
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "nothing".into()),
                dead.revision
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "a revision it had not registered yet".into()),
            );
            self.events.warn(note.clone());
            run.record.warnings.push(note);
        }
    }

    /// The records of an environment, newest first; an unreadable history is a warning
    /// (the service's own state still decides what a failure restores).
    pub(super) async fn records_of(
        &self,
        target: &DeployTarget,
        limit: usize,
    ) -> Vec<DeployRecord> {
        match self
            .stages
            .records
            .history(&target.app, &target.environment, limit)
            .await
        {
            Ok(history) => history,
            Err(err) => {
                self.events.warn(format!(
                    "could not read the deploy records of {}/{}: {}",
                    target.app, target.environment, err.message
                ));
                Vec::new()
            }
        }
    }

    /// Every revision some environment of this app may need: what each environment's
    /// service (same platform and region as the run's) runs or deploys, and its last good
    /// releases. `Err` when any of it could not be read: nothing is pruned then. The run's
    /// own environment, when the run read it under its lock before the update, is known
    /// without reading it again (what served before it, its records before it, and its
    /// own two revisions).
    pub(super) async fn revisions_needed(
        &self,
        run: &Run,
        keep: usize,
    ) -> Result<Vec<Revision>, String> {
        let this = &run.target;
        let this_env = self
            .project
            .environment(&this.environment)
            .map_err(|err| err.to_string())?;
        let mut needed = Vec::new();
        for (name, env) in &self.project.config.environments {
            if env.target != this_env.target {
                continue;
            }
            let target = env.target(&self.project.config.app.name, name);
            if target.region != this.region {
                continue;
            }
            let seen = run
                .seen_at_start
                .as_ref()
                .filter(|_| this.environment == target.environment);
            if let Some(seen) = seen {
                // Under the lock nothing but this release moved the service: it serves
                // this release's revision, or (rolled back) what served before.
                needed.extend(revisions_to_keep(Some(&seen.status), &seen.history, keep));
                needed.extend(run.record.revision.iter().cloned());
                needed.extend(run.record.previous_revision.iter().cloned());
                continue;
            }
            let status = match self.stages.service_reader.status(&target).await {
                Ok(status) => Some(status),
                // A service that does not exist runs nothing.
                Err(err) if err.kind == StageErrorKind::BadInput => None,
                Err(err) => return Err(format!("cannot read {target}: {}", err.message)),
            };
            let history = self
                .stages
                .records
                // The last `keep` good releases, with room for failed ones between them.
                .history(&target.app, &target.environment, history_depth(keep))
                .await
                .map_err(|err| format!("cannot read the records of {name}: {}", err.message))?;
            needed.extend(revisions_to_keep(status.as_ref(), &history, keep));
        }
        Ok(needed)
    }

    /// `to` when the platform can still deploy it; otherwise the same definition
    /// registered again (from the deploy record that registered it, else from the
    /// platform's own copy), so a rollback never depends on the platform keeping it.
    pub(super) async fn restorable(
        &self,
        target: &DeployTarget,
        to: &Revision,
    ) -> Result<Revision, String> {
        match self.stages.deployer.revision_active(to).await {
            Ok(true) => return Ok(to.clone()),
            Ok(false) => {}
            Err(err) => {
                self.events.warn(format!(
                    "could not tell whether {to} is still registered ({}); rolling back to it",
                    err.message
                ));
                return Ok(to.clone());
            }
        }
        let history = self.records_of(target, RECORDS_READ).await;
        let kept = history
            .iter()
            .filter(|r| {
                r.revision
                    .as_ref()
                    .is_some_and(|rev| same_revision(rev, to))
            })
            .find_map(|r| r.task_definition.clone());
        let (rendered, source) = match kept {
            Some(rendered) => (rendered, "its deploy record"),
            None => {
                let definition = self
                    .stages
                    .service_reader
                    .registered_definition(to)
                    .await
                    .map_err(|err| {
                        format!(
                            "{to} is deregistered and no deploy record keeps its task definition ({})",
                            err.message
                        )
                    })?;
                let mut tags = target_tags(target);
                tags.push(ResourceTag {
                    key: "tugboat:restored-from".into(),
                    value: to.label.clone(),
                });
                (
                    RenderedTaskDefinition { definition, tags },
                    "the deregistered revision",
                )
            }
        };
        let again = self
            .stages
            .deployer
            .register(target, &rendered)
            .await
            .map_err(|err| {
                format!(
                    "{to} is deregistered and registering it again failed: {}",
                    err.message
                )
            })?;
        self.events.warn(format!(
            "{to} was deregistered; registered its task definition again from {source} as {again}"
        ));
        Ok(again)
    }

    /// Deregisters old revisions that no environment may need (see `revisions_needed`).
    pub(super) async fn prune(&self, run: &Run, keep: usize) {
        let protected = match self.revisions_needed(run, keep).await {
            Ok(protected) => protected,
            Err(why) => {
                self.events
                    .warn(format!("old revisions were not cleaned up: {why}"));
                return;
            }
        };
        let family = &self.project.task_definition.family;
        match self
            .stages
            .deployer
            .prune_revisions(&run.target, family, keep.max(2), &protected)
            .await
        {
            Ok(removed) if !removed.is_empty() => {
                let labels: Vec<String> = removed.iter().map(ToString::to_string).collect();
                self.events
                    .info(format!("deregistered old revisions: {}", labels.join(", ")));
            }
            Ok(_) => {}
            Err(err) => self.events.warn(format!(
                "old revisions were not cleaned up: {}",
                err.message
            )),
        }
    }
}
