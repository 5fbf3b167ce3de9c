//! `on_failure = "rollback_all"` when a fleet is released by events (the Lambda): each
//! service of a push concludes on its own ECS event, so when one of them fails, the
//! front end asks every other service of the fleet to go back if the same push released
//! it.

use super::super::release_safety::same_revision;
use super::*;

impl Orchestrator {
    /// Rolls this environment's release by push `push` back, because another service
    /// of its fleet failed (`reason`). A release of that push still rolling out is
    /// concluded with a rollback; one that succeeded is rolled back to the revision that
    /// served before it. Anything else (no release of that push, a rollback already
    /// under way, an event handled already) is `Ignored` and changes nothing.
    pub async fn roll_back_with_fleet(
        &self,
        environment: &str,
        push: &str,
        reason: &str,
        trigger: Option<String>,
    ) -> EventOutcome {
        let env = match self.project.environment(environment) {
            Ok(env) => env.clone(),
            Err(err) => return EventOutcome::report(DeployReport::bad_input(err.to_string())),
        };
        let recent = self.recent(environment).await;
        if Self::handled(&recent, trigger.as_deref()) {
            return EventOutcome::Ignored(format!(
                "event {} was handled already",
                trigger.unwrap_or_default()
            ));
        }
        let by = format!("fleet:{push}");
        if let Some(current) = self.release_in_progress(environment).await {
            if current.record.trigger.as_deref() != Some(push) {
                return EventOutcome::Ignored(format!(
                    "{environment}'s release in progress {} is not of push {push}",
                    current.record.release_id
                ));
            }
            if let Some(taken) = Self::taken(&current.record) {
                return EventOutcome::Ignored(taken);
            }
            return self
                .conclude(current, &env, Some(reason.to_string()), by)
                .await;
        }
        let released = recent
            .iter()
            .find(|r| r.outcome != RecordOutcome::Refused)
            .filter(|r| {
                r.trigger.as_deref() == Some(push)
                    && r.outcome == RecordOutcome::Succeeded
                    && r.rollback_of.is_none()
            });
        let Some(latest) = released.cloned() else {
            return EventOutcome::Ignored(format!("{environment} runs no release of push {push}"));
        };
        let Some(previous) = latest.previous_revision.clone() else {
            return EventOutcome::Notified(format!(
                "{reason}; release {} of {environment} stays: no revision that served before it is known",
                latest.release_id
            ));
        };
        if latest
            .revision
            .as_ref()
            .is_some_and(|r| same_revision(r, &previous))
        {
            return EventOutcome::Ignored(format!(
                "release {} kept {previous}: nothing to roll back",
                latest.release_id
            ));
        }
        self.roll_back_to(
            environment,
            &env,
            previous,
            Some(latest.release_id.clone()),
            by,
            reason.to_string(),
            trigger,
        )
        .await
    }
}
