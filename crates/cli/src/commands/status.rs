//! `tugboat status`: the service, its deployments and events, and the release serving.

use crate::output::Reporter;
use crate::wiring::{reader_and_records, target};
use crate::Exit;
use pipeline_core::Project;

pub async fn status(project: &Project, environment: &str, reporter: &Reporter) -> Result<(), Exit> {
    let target = target(project, environment)?;
    let (reader, stores) = reader_and_records(project, environment).await?;
    let status = reader.status(&target).await?;
    let records = stores.records.history(&target.app, environment, 20).await?;
    let release = records
        .iter()
        .find(|r| r.revision.is_some() && r.revision == status.revision);
    let json = serde_json::json!({"result": {"outcome": "succeeded", "exit_code": 0, "status": status, "release": release}});
    let mut text = format!(
        "{} ({}): revision {}, running {}/{} (pending {})\nrelease: {}\ndeployments:\n",
        target,
        environment,
        status
            .revision
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| "none".into()),
        status.running,
        status.desired,
        status.pending,
        release
            .map(|r| format!(
                "{} ({}, {})",
                r.release_id,
                r.git.short_sha(),
                r.git.git_ref
            ))
            .unwrap_or_else(|| "not deployed by tugboat".into()),
    );
    for d in &status.deployments {
        text.push_str(&format!(
            "  {} {} {} {} running {}/{} pending {} failed {}\n",
            d.id,
            d.status,
            d.rollout_state.as_deref().unwrap_or("-"),
            d.revision,
            d.running,
            d.desired,
            d.pending,
            d.failed_tasks
        ));
    }
    text.push_str("events:\n");
    for e in status.events.iter().take(10) {
        text.push_str(&format!(
            "  {} {}\n",
            e.at.format("%Y-%m-%dT%H:%M:%SZ"),
            e.message
        ));
    }
    reporter.finish(json, text.trim_end(), false);
    Ok(())
}
