//! Cancellation by signal, as CI runners send it: GitHub Actions sends SIGINT, then
//! SIGTERM 7.5 s later, then kills the process tree; GitLab, systemd and Kubernetes send
//! SIGTERM; closing a terminal sends SIGHUP. The first of any of them cancels the run
//! (a changed service is rolled back at once, the record written, the lock released);
//! a second one ends the process at once, the record already written.

use crate::output::Reporter;
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// The exit code of a run ended by a second signal: its rollback was issued but not
/// confirmed, so the service's state is not known to be restored.
const SECOND_SIGNAL_EXIT: i32 = 3;

/// Cancels `cancel` on the first SIGINT, SIGTERM or SIGHUP and exits on the second.
pub fn cancel_on_signals(cancel: CancellationToken, reporter: Arc<Reporter>) -> anyhow::Result<()> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        for count in 0.. {
            let name = tokio::select! {
                Some(()) = interrupt.recv() => "SIGINT",
                Some(()) = terminate.recv() => "SIGTERM",
                Some(()) = hangup.recv() => "SIGHUP",
                else => return,
            };
            if count == 0 {
                reporter.line(&format!(
                    "{name}: cancelling; a changed service is rolled back at once (a second signal exits immediately)"
                ));
                cancel.cancel();
            } else {
                reporter.line(&format!(
                    "{name} again: exiting now; the deploy record is written, the rollback may still be running \
                     (check with `tugboat status`)"
                ));
                std::process::exit(SECOND_SIGNAL_EXIT);
            }
        }
    });
    Ok(())
}

/// Cancels `cancel` on the first SIGINT, SIGTERM or SIGHUP, quietly: for a command that
/// changes nothing (`tugboat logs --follow`), a signal is how it is meant to end.
pub fn stop_on_signals(cancel: CancellationToken) -> anyhow::Result<()> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        tokio::select! {
            Some(()) = interrupt.recv() => {}
            Some(()) = terminate.recv() => {}
            Some(()) = hangup.recv() => {}
            else => return,
        }
        cancel.cancel();
    });
    Ok(())
}
