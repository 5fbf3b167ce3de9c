//! `tugboat init`: tugboat.toml and the task definition file from an existing service.

use crate::wiring::clients;
use crate::Exit;
use aws_adapters::EcsDeployer;
use pipeline_core::DeployTarget;
use pipeline_core::ServiceReader;
use std::path::Path;

/// Writes tugboat.toml and `.aws/task-definition.json` from an existing service.
pub async fn init(
    config: &Path,
    cluster: &str,
    service: &str,
    region: Option<String>,
    app: &str,
    repository: &str,
    name: &str,
) -> Result<(), Exit> {
    let root = config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let task_file = root.join(".aws/task-definition.json");
    for path in [config, task_file.as_path()] {
        if path.exists() {
            return Err(Exit::bad_input(format!(
                "{} exists already; init does not overwrite files\n  help: move it away or pass --config to write elsewhere",
                path.display()
            )));
        }
    }
    let clients = clients(region.clone()).await;
    let ecs = EcsDeployer::new(clients.ecs.clone());
    let target = DeployTarget {
        app: app.to_string(),
        environment: name.to_string(),
        cluster: cluster.to_string(),
        service: service.to_string(),
        region: region.clone(),
    };
    let status = ecs.status(&target).await?;
    let revision = status.revision.ok_or_else(|| {
        Exit::bad_input(format!(
            "service {service} has no task definition to start from"
        ))
    })?;
    let definition = ecs.registered_definition(&revision).await?;
    let containers: Vec<String> = definition
        .container_definitions
        .iter()
        .map(|c| format!("{:?}", c.name))
        .collect();
    std::fs::create_dir_all(root.join(".aws"))
        .map_err(|e| anyhow::anyhow!("creating .aws: {e}"))?;
    std::fs::write(&task_file, definition.to_json_pretty() + "\n")
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", task_file.display()))?;
    let region_line = region
        .map(|r| format!("region = \"{r}\"\n"))
        .unwrap_or_default();
    let toml = format!(
        "[app]\nname = \"{app}\"\n\n[image]\nrepository = \"{repository}\"\n\n[task_definition]\nfile = \".aws/task-definition.json\"\ncontainers = [{}]\n\n[environments.{name}]\ncluster = \"{cluster}\"\nservice = \"{service}\"\n{region_line}",
        containers.first().cloned().unwrap_or_default()
    );
    std::fs::write(config, toml)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", config.display()))?;
    Ok(())
}
