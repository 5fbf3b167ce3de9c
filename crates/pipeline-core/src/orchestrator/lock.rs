//! Taking, renewing and giving back the deploy lock of a run.

use super::*;

impl Orchestrator {
    /// Takes the run's deploy lock and the lease a renewer keeps ([`lease::while_renewing`]);
    /// losing it cancels a child of `cancel`.
    pub(super) async fn take_lease(
        &self,
        run: &Run,
        env: &EnvironmentConfig,
        cancel: &CancellationToken,
    ) -> Result<Arc<lease::Lease>, Ending> {
        let taken_at = tokio::time::Instant::now();
        let lock = self.take_lock(run, env.lock_lease()).await?;
        Ok(Arc::new(lease::Lease::new(lock, taken_at, cancel)))
    }

    /// Takes the run's deploy lock as a lease of `lease`, or says how the run ends
    /// without it.
    pub(super) async fn take_lock(&self, run: &Run, lease: Duration) -> Result<DeployLock, Ending> {
        self.try_lock(run, lease)
            .await
            .map_err(|err| match err.kind {
                StageErrorKind::LockHeld | StageErrorKind::BadInput => Ending::refused(&err),
                _ => Ending {
                    outcome: RecordOutcome::FailedUnchanged,
                    reason: Some(err.message.clone()),
                    message: format!(
                        "could not take the deploy lock, nothing was changed: {}",
                        describe_error(&err)
                    ),
                },
            })
    }

    /// Takes the run's deploy lock as a lease of `lease`, with the store's error.
    pub(super) async fn try_lock(
        &self,
        run: &Run,
        lease: Duration,
    ) -> Result<DeployLock, StageError> {
        let holder = LockHolder {
            who: run.record.actor.clone(),
            release_id: run.record.release_id.clone(),
            since: run.record.started_at,
            run_token: uuid::Uuid::new_v4().to_string(),
            renewed_at: None,
            lease_seconds: Some(lease.as_secs().max(1)),
        };
        self.stages
            .locks
            .acquire_lock(&run.target.app, &run.target.environment, &holder)
            .await
    }

    /// Releases a deploy lock; a failure is a warning (the lease runs out on its own).
    pub(super) async fn give_back(&self, lock: &DeployLock) {
        if let Err(err) = self.stages.locks.release_lock(lock).await {
            self.events.warn(format!(
                "could not release the deploy lock of {}/{}: {}; its lease runs out on its own, or run `tugboat unlock --env {}`",
                lock.app, lock.environment, err.message, lock.environment
            ));
        }
    }
}
