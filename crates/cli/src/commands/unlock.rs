//! `tugboat unlock`: the deploy lock shown, and removed after asking.

use crate::output::Reporter;
use crate::wiring::reader_and_records;
use crate::Exit;
use pipeline_core::Project;

/// `tugboat unlock`: shows the deploy lock's holder and removes the lock, after asking on
/// a terminal (or with `--yes`). Without a terminal and without `--yes` it refuses.
pub async fn unlock(
    project: &Project,
    environment: &str,
    yes: bool,
    reporter: &Reporter,
) -> Result<u8, Exit> {
    let app = &project.config.app.name;
    let (_, stores) = reader_and_records(project, environment).await?;
    let Some(lock) = stores.locks.read_lock(app, environment).await? else {
        let json = serde_json::json!({"result": {"outcome": "succeeded", "exit_code": 0, "removed": false, "holder": null}});
        reporter.finish(
            json,
            &format!("{app}/{environment} has no deploy lock; nothing to remove"),
            false,
        );
        return Ok(0);
    };
    let lease = project.environment(environment)?.lock_lease();
    let holder = &lock.holder;
    let secs =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let ends = holder.lease_ends_at(lease);
    let now = chrono::Utc::now();
    let lease_state = if ends < now {
        format!("ran out at {} (that run stopped renewing it)", secs(ends))
    } else {
        format!(
            "runs out at {} (in {}s) unless that run renews it",
            secs(ends),
            (ends - now).num_seconds()
        )
    };
    let description = format!(
        "deploy lock of {app}/{environment}:\n  held by      {}\n  release      {}\n  since        {}\n  last renewal {}\n  lease        {lease_state}",
        holder.who,
        holder.release_id,
        secs(holder.since),
        holder.renewed_at.map_or_else(|| "never (an old lock)".to_string(), secs),
    );
    if !yes {
        use std::io::{BufRead, IsTerminal, Write};
        if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
            return Err(Exit::bad_input(format!(
                "{description}\nnot removing the deploy lock without confirmation and there is no terminal to ask on: pass --yes (tugboat unlock --env {environment} --yes)"
            )));
        }
        let mut stderr = std::io::stderr();
        let _ = write!(
            stderr,
            "{description}\nIf that run is still going, removing its lock lets another run deploy over it.\nRemove the lock? [y/N] "
        );
        let _ = stderr.flush();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .map_err(|e| Exit::bad_input(format!("cannot read the answer: {e}")))?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            let json = serde_json::json!({"result": {"outcome": "failed", "exit_code": 1, "removed": false, "holder": holder}});
            reporter.finish(json, "left the deploy lock in place", true);
            return Ok(1);
        }
    }
    stores.locks.release_lock(&lock).await?;
    let json = serde_json::json!({"result": {"outcome": "succeeded", "exit_code": 0, "removed": true, "holder": holder}});
    reporter.finish(
        json,
        &format!("{description}\nremoved the deploy lock of {app}/{environment}"),
        false,
    );
    Ok(0)
}
