//! `tugboat stop`: a local environment's containers and proxy removed.

use crate::output::Reporter;
use crate::wiring::{is_local, local_deployer, target};
use crate::Exit;
use pipeline_core::Project;

/// `tugboat stop`: a local environment's containers and proxy, gone.
pub async fn stop(project: &Project, environment: &str, reporter: &Reporter) -> Result<(), Exit> {
    if !is_local(project, environment)? {
        return Err(Exit::bad_input(format!(
            "environment {environment} is not local; `tugboat stop` only stops local environments (target = \"local\")"
        )));
    }
    let target = target(project, environment)?;
    let summary = local_deployer(project, environment)?.stop(&target).await?;
    let json = serde_json::json!({"result": {"outcome": "succeeded", "exit_code": 0,
        "containers_removed": summary.containers_removed, "proxy_stopped": summary.proxy_stopped}});
    reporter.finish(
        json,
        &format!(
            "stopped {target}: {} container(s) removed, proxy {}",
            summary.containers_removed,
            if summary.proxy_stopped {
                "stopped"
            } else {
                "was not running"
            }
        ),
        false,
    );
    Ok(())
}
