//! `tugboat infra plan|apply`: monitoring and scaling reconciled with tugboat.toml.

use crate::output::Reporter;
use crate::wiring::clients;
use crate::Exit;
use pipeline_core::config::TargetKind;
use pipeline_core::Project;

/// `tugboat infra plan|apply`: the monitoring and scaling of an environment reconciled
/// with tugboat.toml; only what differs is written.
pub async fn infra(
    project: &Project,
    environment: &str,
    apply: bool,
    reporter: &Reporter,
) -> Result<(), Exit> {
    let env = project.environment(environment)?;
    if env.target == TargetKind::Local {
        return Err(Exit::bad_input(format!(
            "environment {environment} runs on the local Docker engine: it has no CloudWatch alarms or auto scaling"
        )));
    }
    let target = project.target(environment)?;
    let clients = clients(env.region.clone()).await;
    let desired = aws_adapters::desired_infra(&project.config.app.name, &target, env);
    let reconciler = aws_adapters::InfraReconciler::new(&clients);
    let changes = if apply {
        reconciler.apply(&desired).await?
    } else {
        reconciler.plan(&desired).await?
    };
    let lines: Vec<String> = changes.iter().map(ToString::to_string).collect();
    let verb = if apply { "applied" } else { "would change" };
    let human = if lines.is_empty() {
        format!("{target} ({environment}): monitoring and scaling match tugboat.toml; nothing to change")
    } else {
        format!(
            "{target} ({environment}): {verb} {}:\n{}",
            lines.len(),
            lines.join("\n")
        )
    };
    let json = serde_json::json!({"result": {"outcome": "succeeded", "exit_code": 0, "applied": apply, "changes": changes}});
    reporter.finish(json, &human, false);
    Ok(())
}
