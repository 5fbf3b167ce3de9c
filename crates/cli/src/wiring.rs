//! Builds the stages an environment runs with, and the read-only commands.

use crate::output::{OutputFormat, Reporter};
use crate::Exit;
use aws_adapters::{
    AlarmWatch, AwsClients, ClientOptions, EcrRegistry, EcsDeployer, ParameterStore,
    S3ArtifactStore, TargetHealthCheck,
};
use host_adapters::{
    DockerEnginePusher, DockerHost, DockerImageBuilder, FileArtifactStore, HttpHealthCheck,
    LocalDeployer, LocalRegistry, LocalSecretStore, ShellTestRunner, SlackNotifier,
};
use pipeline_core::config::TargetKind;
use pipeline_core::{
    ArtifactStore, DeployTarget, Events, ImageReference, Project, SecretsSpec, ServiceReader,
    Stages,
};
use pipeline_core::{EnvironmentConfig, Notifier, Verifier};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub fn events(reporter: Arc<Reporter>) -> Events {
    Events::new().with(reporter)
}

async fn clients(region: Option<String>) -> AwsClients {
    AwsClients::load(&ClientOptions {
        region,
        profile: None,
    })
    .await
}

fn target(project: &Project, environment: &str) -> Result<DeployTarget, Exit> {
    Ok(project.target(environment)?)
}

fn artifact_store(
    project: &Project,
    environment: &str,
    clients: &AwsClients,
) -> Result<Arc<dyn ArtifactStore>, Exit> {
    let env = project.environment(environment)?;
    Ok(match &env.records {
        Some(records) => Arc::new(S3ArtifactStore::new(
            clients.s3.clone(),
            &records.bucket,
            &records.prefix,
        )),
        None => Arc::new(FileArtifactStore::new(project.root.join(".tugboat"))),
    })
}

/// Whether an environment runs on this machine's Docker engine (`target = "local"`).
pub fn is_local(project: &Project, environment: &str) -> Result<bool, Exit> {
    Ok(project.environment(environment)?.target == TargetKind::Local)
}

/// The deployer of a local environment: state under `.tugboat/<app>/<env>/`, the proxy
/// started as `tugboat __proxy`, the front door checked at the verify health path.
pub fn local_deployer(project: &Project, environment: &str) -> Result<LocalDeployer, Exit> {
    let env = project.environment(environment)?;
    let state_dir = project
        .root
        .join(".tugboat")
        .join(&project.config.app.name)
        .join(environment);
    Ok(
        LocalDeployer::new(DockerHost::from_env(), state_dir, &env.local)
            .with_secrets_file(
                env.local
                    .secrets_file
                    .as_ref()
                    .map(|f| project.root.join(f)),
            )
            .with_health_path(Some(env.verify.health_path.clone()))
            .with_front_container(project.config.task_definition.containers.first().cloned()),
    )
}

/// The URL a local environment serves on.
pub fn local_url(project: &Project, environment: &str) -> Result<Option<String>, Exit> {
    let env = project.environment(environment)?;
    Ok((env.target == TargetKind::Local).then(|| format!("http://127.0.0.1:{}", env.local.port)))
}

/// The stages of a local environment: the host's tests and Docker build, images kept in
/// the engine (or a loopback registry), containers behind a local proxy, secrets from
/// a file, records in `.tugboat/`.
fn local_stages(project: &Project, environment: &str, build: bool) -> Result<Stages, Exit> {
    let env = project.environment(environment)?;
    let deployer = Arc::new(local_deployer(project, environment)?);
    let mut registry = LocalRegistry::from_env();
    if let Some(server) = &env.local.registry {
        registry = registry.with_registry(server.clone());
    }
    Ok(Stages {
        test_runner: build.then(|| Arc::new(ShellTestRunner::new()) as _),
        image_builder: build.then(|| Arc::new(DockerImageBuilder::from_env()) as _),
        registry: Arc::new(registry),
        deployer: deployer.clone(),
        service_reader: deployer,
        verifiers: verifiers(env, None),
        secrets: Arc::new(LocalSecretStore::new(
            env.local
                .secrets_file
                .as_ref()
                .map(|f| project.root.join(f)),
        )),
        artifacts: Arc::new(FileArtifactStore::new(project.root.join(".tugboat"))),
        notifiers: notifiers(env),
    })
}

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

/// The checks a release of `env` must pass after its rollout, cheapest first: load
/// balancer targets, the HTTP health check, then the alarms over the bake time.
pub fn verifiers(env: &EnvironmentConfig, clients: Option<&AwsClients>) -> Vec<Arc<dyn Verifier>> {
    let mut checks: Vec<Arc<dyn Verifier>> = Vec::new();
    let window = Duration::from_secs(env.verify.timeout_seconds);
    if let (Some(clients), true) = (clients, env.verify.target_health) {
        checks.push(Arc::new(TargetHealthCheck::new(
            clients.ecs.clone(),
            clients.elbv2.clone(),
            window,
        )));
    }
    if let Some(http) = HttpHealthCheck::from_settings(&env.verify) {
        checks.push(Arc::new(http));
    }
    if let Some(clients) = clients {
        if let Some(alarms) = AlarmWatch::for_settings(clients.cloudwatch.clone(), &env.verify) {
            checks.push(Arc::new(alarms));
        }
    }
    checks
}

/// Slack, when `SLACK_BOT_TOKEN` and a channel are set.
pub fn notifiers(env: &EnvironmentConfig) -> Vec<Arc<dyn Notifier>> {
    SlackNotifier::from_env(&env.notify)
        .map(|slack| Arc::new(slack) as Arc<dyn Notifier>)
        .into_iter()
        .collect()
}

/// The AWS stages of one environment (or the local ones, for `target = "local"`); with
/// `build`, also the host's test runner and Docker builder.
pub async fn stages(project: &Project, environment: &str, build: bool) -> Result<Stages, Exit> {
    let env = project.environment(environment)?;
    if env.target == TargetKind::Local {
        return local_stages(project, environment, build);
    }
    let clients = clients(env.region.clone()).await;
    let ecs = Arc::new(
        EcsDeployer::new(clients.ecs.clone())
            .with_strategy(env.strategy.clone())
            .with_autoscaling(clients.autoscaling.clone()),
    );
    let mut registry =
        EcrRegistry::new(clients.ecr.clone()).with_pusher(Arc::new(DockerEnginePusher::from_env()));
    // A registry on this machine standing in for ECR's data plane (tests, rehearsals).
    if let Ok(server) = std::env::var("TUGBOAT_ECR_DATA_PLANE") {
        host_adapters::check_credential_endpoint("TUGBOAT_ECR_DATA_PLANE", &server)
            .map_err(Exit::bad_input)?;
        registry = registry.with_data_plane(server);
    }
    if let Ok(api) = std::env::var("TUGBOAT_SLACK_API_URL") {
        host_adapters::check_credential_endpoint("TUGBOAT_SLACK_API_URL", &api)
            .map_err(Exit::bad_input)?;
    }
    Ok(Stages {
        test_runner: build.then(|| Arc::new(ShellTestRunner::new()) as _),
        image_builder: build.then(|| Arc::new(DockerImageBuilder::from_env()) as _),
        registry: Arc::new(registry),
        deployer: ecs.clone(),
        service_reader: ecs,
        verifiers: verifiers(env, Some(&clients)),
        secrets: Arc::new(ParameterStore::new(
            clients.ssm.clone(),
            clients.sts.clone(),
        )),
        artifacts: artifact_store(project, environment, &clients)?,
        notifiers: notifiers(env),
    })
}

/// The service reader and record store of an environment, without AWS for a local one.
async fn reader_and_records(
    project: &Project,
    environment: &str,
) -> Result<(Arc<dyn ServiceReader>, Arc<dyn ArtifactStore>), Exit> {
    if is_local(project, environment)? {
        return Ok((
            Arc::new(local_deployer(project, environment)?),
            Arc::new(FileArtifactStore::new(project.root.join(".tugboat"))),
        ));
    }
    let env = project.environment(environment)?;
    let clients = clients(env.region.clone()).await;
    Ok((
        Arc::new(EcsDeployer::new(clients.ecs.clone())),
        artifact_store(project, environment, &clients)?,
    ))
}

/// The record store of an environment (`tugboat report`), without AWS for a local one.
pub async fn record_store(
    project: &Project,
    environment: &str,
) -> Result<Arc<dyn ArtifactStore>, Exit> {
    Ok(reader_and_records(project, environment).await?.1)
}

pub async fn status(project: &Project, environment: &str, reporter: &Reporter) -> Result<(), Exit> {
    let target = target(project, environment)?;
    let (reader, records) = reader_and_records(project, environment).await?;
    let status = reader.status(&target).await?;
    let records = records.history(&target.app, environment, 20).await?;
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

pub async fn history(
    project: &Project,
    environment: &str,
    limit: usize,
    reporter: &Reporter,
) -> Result<(), Exit> {
    let (_, records) = reader_and_records(project, environment).await?;
    let records = records
        .history(&project.config.app.name, environment, limit)
        .await?;
    let json =
        serde_json::json!({"result": {"outcome": "succeeded", "exit_code": 0, "records": records}});
    let mut text = String::from("RELEASE                    OUTCOME          REVISION            IMAGE                 BY\n");
    for r in &records {
        text.push_str(&format!(
            "{:<26} {:<16} {:<19} {:<21} {}\n",
            r.release_id.0,
            serde_json::to_value(r.outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            r.revision
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_else(|| "-".into()),
            r.image
                .as_ref()
                .map(|i| i.digest.chars().take(19).collect::<String>())
                .unwrap_or_else(|| "-".into()),
            r.actor
        ));
    }
    if records.is_empty() {
        text.push_str("(no releases recorded yet)\n");
    }
    reporter.finish(json, text.trim_end(), false);
    Ok(())
}

/// `tugboat unlock`: shows the deploy lock's holder and removes the lock, after asking on
/// a terminal (or with `--yes`). Without a terminal and without `--yes` it refuses.
pub async fn unlock(
    project: &Project,
    environment: &str,
    yes: bool,
    reporter: &Reporter,
) -> Result<u8, Exit> {
    let app = &project.config.app.name;
    let (_, records) = reader_and_records(project, environment).await?;
    let Some(lock) = records.read_lock(app, environment).await? else {
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
    records.release_lock(&lock).await?;
    let json = serde_json::json!({"result": {"outcome": "succeeded", "exit_code": 0, "removed": true, "holder": holder}});
    reporter.finish(
        json,
        &format!("{description}\nremoved the deploy lock of {app}/{environment}"),
        false,
    );
    Ok(0)
}

/// Preflight checks before a first deploy; each is ok or says how to fix it.
pub async fn preflight(
    project: &Project,
    environment: &str,
    stages: &Stages,
    image: Option<&str>,
    reporter: &Reporter,
) -> Result<u8, Exit> {
    let env = project.environment(environment)?;
    let target = target(project, environment)?;
    let mut checks: Vec<(String, Result<String, String>)> = Vec::new();
    let fix = |e: pipeline_core::StageError| match e.help {
        Some(help) => format!("{} (fix: {help})", e.message),
        None => e.message,
    };
    checks.push((
        "service".into(),
        stages
            .service_reader
            .status(&target)
            .await
            .map(|s| format!("{target} exists, running {}/{}", s.running, s.desired))
            .map_err(fix),
    ));
    checks.push((
        "image".into(),
        match image {
            Some(image) => stages
                .registry
                .resolve(
                    &project.config.image.repository,
                    &ImageReference::parse(image),
                )
                .await
                .map(|p| p.reference())
                .map_err(fix),
            None => Ok("not checked (pass --image TAG to check one)".into()),
        },
    ));
    let secrets = match &env.secrets_path {
        Some(path) => stages
            .secrets
            .resolve(&SecretsSpec {
                path: path.clone(),
                names: env.secrets.clone(),
            })
            .await
            .map(|refs| format!("{} parameter(s) under {path} exist", refs.len()))
            .map_err(fix),
        None => Ok("no secrets_path configured".into()),
    };
    checks.push(("parameters".into(), secrets));
    let sources = project.task_definition.secret_sources();
    if !sources.is_empty() {
        checks.push((
            "task definition secrets".into(),
            stages
                .secrets
                .ensure_exist(&sources)
                .await
                .map(|unchecked| {
                    let checked = sources.len() - unchecked.len();
                    if unchecked.is_empty() {
                        format!("{checked} exist")
                    } else {
                        format!(
                            "{checked} exist; warning: {}",
                            pipeline_core::unchecked_secrets(&unchecked)
                        )
                    }
                })
                .map_err(fix),
        ));
    }
    let has_role = project
        .task_definition
        .extra
        .contains_key("executionRoleArn")
        || env.execution_role_arn.is_some();
    // Local environments have no IAM: the engine gets the secrets' values itself.
    let needs_role = env.target == TargetKind::Aws
        && (env.secrets_path.is_some()
            || !sources.is_empty()
            || project.task_definition.to_json_pretty().contains("awslogs"));
    checks.push((
        "execution role".into(),
        if has_role || !needs_role {
            Ok("set".into())
        } else {
            Err(format!(
                "the task needs an execution role (it reads secrets or writes awslogs) (fix: set environments.{environment}.execution_role_arn or \"executionRoleArn\" in the task definition)"
            ))
        },
    ));
    checks.push((
        "records".into(),
        stages
            .artifacts
            .history(&target.app, environment, 1)
            .await
            .map(|r| format!("readable ({} record(s) seen)", r.len()))
            .map_err(fix),
    ));
    let log_group = project
        .task_definition
        .container_definitions
        .iter()
        .find_map(|c| {
            c.extra
                .get("logConfiguration")?
                .get("options")?
                .get("awslogs-group")?
                .as_str()
                .map(str::to_string)
        });
    checks.push((
        "log group".into(),
        Ok(match log_group {
            Some(group) => {
                format!("{group} is named; its existence is not checked by this version")
            }
            None => "no awslogs group configured".into(),
        }),
    ));
    let failed = checks.iter().filter(|(_, r)| r.is_err()).count();
    let mut text = String::new();
    for (name, result) in &checks {
        match result {
            Ok(ok) => text.push_str(&format!("ok    {name}: {ok}\n")),
            Err(err) => text.push_str(&format!("FAIL  {name}: {err}\n")),
        }
    }
    let code = if failed == 0 { 0 } else { 2 };
    let json = serde_json::json!({"result": {"outcome": if failed == 0 { "succeeded" } else { "bad_input" }, "exit_code": code,
        "checks": checks.iter().map(|(n, r)| serde_json::json!({"check": n, "ok": r.is_ok(), "detail": r.as_ref().unwrap_or_else(|e| e)})).collect::<Vec<_>>()}});
    if reporter.format() == OutputFormat::Json || failed == 0 {
        reporter.finish(json, text.trim_end(), false);
    } else {
        reporter.finish(
            json,
            &format!("{}\n{failed} check(s) failed", text.trim_end()),
            true,
        );
    }
    Ok(code)
}

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
