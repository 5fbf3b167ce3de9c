//! The deploy lock as a lease: renewed every third of it while the run holds the lock.
//!
//! A run that died stops renewing, and the next run takes the lock over once the lease ran
//! out. So a run keeps going only while it is sure it still holds the lock: when a renewal
//! is refused (taken over, removed) or the lease may have run out without one, the lease
//! is lost and the run's cancellation token is cancelled, so it stops changing things.

use crate::events::Events;
use crate::model::{DeployLock, LockHolder};
use crate::stages::{DeployLocks, StageErrorKind};
use std::convert::Infallible;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

/// Why a run no longer holds its lock for sure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct LeaseLost {
    /// Another run took the lock over, or it was removed: this run must not touch the
    /// service any more, not even to roll back.
    pub taken_over: bool,
    pub reason: String,
}

/// A held deploy lock and the state of its lease.
#[derive(Debug)]
pub(super) struct Lease {
    lock: Mutex<DeployLock>,
    lost: Mutex<Option<LeaseLost>>,
    /// When the last successful write of the lock began (taking it, a renewal).
    confirmed: Mutex<Instant>,
    /// Cancelled when the lease is lost; a child of the run's own token.
    pub cancel: CancellationToken,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Lease {
    /// The lease of `lock`, whose write began at `taken_at`.
    pub fn new(lock: DeployLock, taken_at: Instant, run: &CancellationToken) -> Self {
        Self {
            lock: Mutex::new(lock),
            lost: Mutex::new(None),
            confirmed: Mutex::new(taken_at),
            cancel: run.child_token(),
        }
    }

    /// The lock as last written, to give back.
    pub fn lock(&self) -> DeployLock {
        locked(&self.lock).clone()
    }

    pub fn lost(&self) -> Option<LeaseLost> {
        locked(&self.lost).clone()
    }

    /// Set when another run took the lock over (or it was removed).
    pub fn taken_over(&self) -> Option<String> {
        self.lost().filter(|l| l.taken_over).map(|l| l.reason)
    }

    fn duration(&self) -> Duration {
        let seconds = locked(&self.lock)
            .holder
            .lease_seconds
            .unwrap_or(LockHolder::DEFAULT_LEASE_SECONDS);
        Duration::from_secs(seconds.max(1))
    }

    fn lose(&self, events: &Events, taken_over: bool, reason: String) {
        {
            let mut lost = locked(&self.lost);
            if lost.as_ref().is_some_and(|l| l.taken_over || !taken_over) {
                return;
            }
            *lost = Some(LeaseLost {
                taken_over,
                reason: reason.clone(),
            });
        }
        events.warn(format!(
            "{reason}; this run stops before changing anything more{}",
            if taken_over {
                " and leaves the service to the run that holds the lock now"
            } else {
                ""
            }
        ));
        self.cancel.cancel();
    }

    /// Renews the lease every third of it, for as long as it is polled (the caller drops
    /// it when the run gives the lock back). Never ends on its own.
    pub async fn keep(&self, locks: &dyn DeployLocks, events: &Events) -> Infallible {
        let lease = self.duration();
        let every = lease / 3;
        let retry = (every / 4).max(Duration::from_millis(250));
        // Others judge the lease by their clocks: stop a sixth of it early.
        let sure_for = lease - lease / 6;
        let mut next = *locked(&self.confirmed) + every;
        loop {
            let deadline = *locked(&self.confirmed) + sure_for;
            if self.lost().is_none() && deadline < next {
                sleep_until(deadline).await;
                if Instant::now() < next {
                    self.lose(events, false, self.ran_out(lease));
                }
            }
            sleep_until(next).await;
            let attempt = Instant::now();
            let current = self.lock();
            let renewal = locks.renew_lock(&current);
            tokio::pin!(renewal);
            let give_up = attempt + every;
            let result = loop {
                let deadline = *locked(&self.confirmed) + sure_for;
                let watching = self.lost().is_none();
                tokio::select! {
                    result = &mut renewal => break Some(result),
                    () = sleep_until(deadline), if watching => {
                        self.lose(events, false, self.ran_out(lease));
                    }
                    () = sleep_until(give_up) => break None,
                }
            };
            match result {
                Some(Ok(renewed)) => {
                    *locked(&self.lock) = renewed;
                    *locked(&self.confirmed) = attempt;
                    next = attempt + every;
                }
                Some(Err(err)) if err.kind == StageErrorKind::LockHeld => {
                    self.lose(
                        events,
                        true,
                        format!("lost the deploy lock: {}", err.message),
                    );
                    return std::future::pending().await;
                }
                failed => {
                    let why = match failed {
                        Some(Err(err)) => err.message,
                        _ => format!("no answer within {}s", every.as_secs_f32()),
                    };
                    if self.lost().is_none() {
                        let left = (*locked(&self.confirmed) + sure_for)
                            .saturating_duration_since(Instant::now());
                        events.warn(format!(
                            "could not renew the deploy lock's lease ({why}); retrying, and this run stops in {}s unless a renewal goes through",
                            left.as_secs()
                        ));
                    }
                    next = Instant::now() + retry;
                }
            }
        }
    }

    fn ran_out(&self, lease: Duration) -> String {
        let lock = self.lock();
        format!(
            "the deploy lock of {}/{} was not renewed for {}s of its {}s lease; another run may take it over",
            lock.app,
            lock.environment,
            (lease - lease / 6).as_secs(),
            lease.as_secs()
        )
    }
}

/// Runs `work` while `lease` is renewed; the renewal stops when `work` ends.
pub(super) async fn while_renewing<F: std::future::Future>(
    lease: &Lease,
    locks: &dyn DeployLocks,
    events: &Events,
    work: F,
) -> F::Output {
    tokio::select! {
        output = work => output,
        never = lease.keep(locks, events) => match never {},
    }
}
