//! `tugboat plan`: what a deploy would do, changing nothing.

use super::*;

impl Orchestrator {
    /// What `deploy` would do, changing nothing: steps and the task definition diff.
    pub async fn plan(
        &self,
        environment: &str,
        source: &ReleaseSource,
        git: &GitInfo,
    ) -> Result<Plan, StageError> {
        let env = self
            .project
            .environment(environment)
            .map_err(|err| StageError::bad_input(err.to_string()))?
            .clone();
        let target = env.target(&self.project.config.app.name, environment);
        let config = &self.project.config;
        let mut steps = Vec::new();
        let image = match source {
            ReleaseSource::Build => {
                if !config.test.commands.is_empty() {
                    steps.push(format!(
                        "test: run {} in {}",
                        config
                            .test
                            .commands
                            .iter()
                            .map(|c| format!("`{c}`"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        config.test.workdir.display()
                    ));
                }
                let spec = self.build_spec(git);
                steps.push(format!(
                    "build: {} ({}) as {}",
                    config.image.dockerfile.display(),
                    config
                        .image
                        .platform
                        .as_deref()
                        .unwrap_or("engine's platform"),
                    spec.tags.join(", ")
                ));
                steps.push(format!(
                    "push: to repository {} with tags {}",
                    config.image.repository,
                    release_tags(&self.project, git).join(", ")
                ));
                PinnedImage {
                    repository_uri: config.image.repository.clone(),
                    digest: "<digest of the image built from this commit>".to_string(),
                    tags: Vec::new(),
                }
            }
            ReleaseSource::Image(reference) => {
                let image = self
                    .stages
                    .registry
                    .resolve(&config.image.repository, reference)
                    .await?;
                steps.push(format!(
                    "use the pushed image {} ({reference})",
                    image.reference()
                ));
                image
            }
        };
        let secrets = match &env.secrets_path {
            Some(path) => {
                let spec = SecretsSpec {
                    path: path.clone(),
                    names: env.secrets.clone(),
                };
                self.stages.secrets.resolve(&spec).await?
            }
            None => Vec::new(),
        };
        let release_id = ReleaseId("<release id>".into());
        let rendered = self.render(&target, &release_id, git, &env, &image, &secrets)?;
        let current = self.stages.deployer.current_revision(&target).await?;
        let diff = match &current {
            Some(revision) => {
                let registered = self
                    .stages
                    .service_reader
                    .registered_definition(revision)
                    .await?;
                task_definition::diff(&registered, &rendered.definition)
            }
            None => {
                let empty = crate::task_definition::TaskDefinition {
                    family: rendered.definition.family.clone(),
                    network_mode: None,
                    requires_compatibilities: Vec::new(),
                    cpu: None,
                    memory: None,
                    container_definitions: Vec::new(),
                    extra: serde_json::Map::new(),
                };
                task_definition::diff(&empty, &rendered.definition)
            }
        };
        if let Some(block_at) = env.scan.block_at {
            steps.push(format!(
                "scan gate: refuse the image if its scan has findings at or above {block_at:?}{}",
                if self.scan_override.is_some() {
                    " (overridden)"
                } else {
                    ""
                }
            ));
        }
        steps.push(format!(
            "register: a new revision of family {} ({} secrets from {})",
            rendered.definition.family,
            rendered.definition.secret_sources().len(),
            env.secrets_path.as_deref().unwrap_or("the task definition")
        ));
        let containers = &self.project.config.task_definition.containers;
        for (index, task) in env.before_deploy.iter().enumerate() {
            steps.push(format!(
                "before deploy: run one-off task {} (`{}` in container {} of the new revision, placed as the service, timeout {}s); if it fails, stop with nothing deployed",
                task.display_name(index),
                task.command.join(" "),
                task.container_in(containers).unwrap_or("?"),
                task.timeout_seconds
            ));
        }
        steps.push(format!(
            "update: service {target} from {} to the new revision{}",
            current
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_else(|| "nothing".into()),
            {
                let status = self.stages.service_reader.status(&target).await.ok();
                let decision = desired_count_for_release(
                    env.desired_count,
                    env.scaling.is_some(),
                    status.as_ref(),
                );
                format!("; {}", decision.reason())
            }
        ));
        steps.push(format!(
            "wait: for that deployment to complete (timeout {}s, polling every {}s)",
            env.deploy.timeout_seconds, env.deploy.poll_interval_seconds
        ));
        let mut checks = Vec::new();
        if let Some(url) = &env.verify.url {
            checks.push(format!(
                "GET {}{} expects {}",
                url.trim_end_matches('/'),
                env.verify.health_path,
                env.verify.expected_status
            ));
        }
        if !env.verify.alarms.is_empty() {
            checks.push(format!(
                "alarms {} stay out of ALARM for {}s",
                env.verify.alarms.join(", "),
                env.verify.bake_seconds
            ));
        }
        if !checks.is_empty() {
            steps.push(format!("verify: {}", checks.join("; ")));
        }
        steps.push(match (&current, env.rollback.automatic) {
            (Some(previous), true) => format!("on failure: roll back to {previous}"),
            (None, true) => "on failure: nothing to roll back to (first release)".to_string(),
            (_, false) => "on failure: stop (automatic rollback is off)".to_string(),
        });
        Ok(Plan {
            environment: environment.to_string(),
            target,
            current_revision: current,
            steps,
            rendered,
            diff,
        })
    }
}
