//! `tugboat deploy` of a fleet (a tugboat.toml with `[services]`): the front end's part
//! of [`Orchestrator::deploy_fleet`] (stages per service, clients shared per region),
//! and the services `status` and `history` show.

use crate::output::Reporter;
use crate::wiring;
use crate::Exit;
use async_trait::async_trait;
use aws_adapters::{AwsClients, ServicePoller};
use pipeline_core::config::FleetUnit;
use pipeline_core::{
    CancellationToken, FleetReport, FleetRequest, FleetWiring, GitInfo, Orchestrator, Outcome,
    Project, ReleaseSource, StageError, Stages,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// The CLI's stages for each service: one set of AWS clients, and so one
/// `DescribeServices` poller, per region.
#[derive(Default)]
struct CliFleetWiring {
    clients: Mutex<BTreeMap<Option<String>, (AwsClients, ServicePoller)>>,
}

#[async_trait]
impl FleetWiring for CliFleetWiring {
    async fn stages(&self, unit: &FleetUnit, build: bool) -> Result<Stages, StageError> {
        let env = unit
            .project
            .environment(&unit.environment)
            .map_err(|err| StageError::bad_input(err.to_string()))?;
        let mut clients = self.clients.lock().await;
        let region = env.region.clone();
        if !clients.contains_key(&region) {
            let made = wiring::clients(region.clone()).await;
            let interval = Duration::from_secs_f64(env.deploy.poll_interval_seconds);
            let poller = ServicePoller::new(made.ecs.clone(), interval);
            clients.insert(region.clone(), (made, poller));
        }
        let Some((clients, poller)) = clients.get(&region) else {
            return Err(StageError::failed("no AWS clients for the region"));
        };
        wiring::aws_stages(
            &unit.project,
            &unit.environment,
            build,
            clients,
            Some(poller.clone()),
        )
        .map_err(|exit| StageError::bad_input(exit.message))
    }
}

/// What `tugboat deploy` was asked for a fleet.
pub struct FleetDeploy {
    pub environment: String,
    pub services: Vec<String>,
    pub parallel: usize,
    pub source: ReleaseSource,
    pub git: GitInfo,
    pub actor: String,
    pub scan_override: Option<String>,
}

pub async fn deploy(
    project: &Project,
    deploy: FleetDeploy,
    reporter: Arc<Reporter>,
) -> Result<u8, Exit> {
    let cancel = CancellationToken::new();
    crate::signals::cancel_on_signals(cancel.clone(), reporter.clone())?;
    let events = wiring::events(reporter.clone());
    let report = Orchestrator::deploy_fleet(
        project,
        &CliFleetWiring::default(),
        &events,
        FleetRequest {
            environment: deploy.environment,
            services: deploy.services,
            source: deploy.source,
            git: deploy.git,
            actor: deploy.actor,
            parallel: deploy.parallel,
            scan_override: deploy.scan_override,
            cancel,
        },
    )
    .await;
    Ok(finish(&reporter, &report))
}

fn finish(reporter: &Reporter, report: &FleetReport) -> u8 {
    let code = report.outcome.exit_code();
    let json = serde_json::json!({"result": {
        "outcome": report.outcome,
        "exit_code": code,
        "message": report.message,
        "fleet": report.record,
    }});
    let human = match report.outcome {
        Outcome::Succeeded => report.message.clone(),
        Outcome::FailedNotRestored => format!("error: NOT RESTORED: {}", report.message),
        _ => format!("error: {}", report.message),
    };
    reporter.finish(json, &human, report.outcome != Outcome::Succeeded);
    u8::try_from(code).unwrap_or(1)
}

/// The (project, environment) pairs `status` and `history` show: the environment
/// itself without `[services]`, else each service (of `only`, or all) in each region.
pub fn scopes(
    project: &Project,
    environment: &str,
    only: &[String],
) -> Result<Vec<(Project, String)>, Exit> {
    if !project.is_fleet() {
        if !only.is_empty() {
            return Err(Exit::bad_input(format!(
                "{}: --service needs [services] in tugboat.toml; this app is one service",
                project.config_file.display()
            )));
        }
        return Ok(vec![(project.clone(), environment.to_string())]);
    }
    Ok(project
        .fleet_units(environment, only)?
        .into_iter()
        .map(|unit| (unit.project, unit.environment))
        .collect())
}

/// What `plan`, `diff` and `render` show: the environment itself without `[services]`;
/// for a fleet, each service (× region) `--service` names (`web` is every region of it,
/// `web@eu-west-1` one), all of them when none is named, each with its label.
pub fn named_scopes(
    project: &Project,
    environment: &str,
    services: &[String],
) -> Result<Vec<(Option<String>, Project, String)>, Exit> {
    if !project.is_fleet() {
        let (project, environment) = one_scope(project, environment, services)?;
        return Ok(vec![(None, project, environment)]);
    }
    let all = project.fleet_units(environment, &[])?;
    let mut named: Vec<FleetUnit> = Vec::new();
    for wanted in services {
        let matching = units_named(&all, wanted);
        if matching.is_empty() {
            return Err(Exit::bad_input(format!(
                "{}: --service {wanted:?}: {environment} has no such service\n  help: one of: {}",
                project.config_file.display(),
                all.iter()
                    .map(FleetUnit::label)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        for unit in matching {
            if !named.iter().any(|n| n.label() == unit.label()) {
                named.push(unit.clone());
            }
        }
    }
    let units = if services.is_empty() { all } else { named };
    Ok(units
        .into_iter()
        .map(|unit| (Some(unit.label()), unit.project, unit.environment))
        .collect())
}

/// The one (project, environment) a single-service command acts on: the environment
/// itself without `[services]`; for a fleet, the unit `--service NAME` (or
/// `NAME@REGION`) names. Bad input, naming what there is, otherwise.
pub fn one_scope(
    project: &Project,
    environment: &str,
    services: &[String],
) -> Result<(Project, String), Exit> {
    let file = project.config_file.display();
    if !project.is_fleet() {
        if !services.is_empty() {
            return Err(Exit::bad_input(format!(
                "{file}: --service needs [services] in tugboat.toml; this app is one service"
            )));
        }
        return Ok((project.clone(), environment.to_string()));
    }
    let all = project.fleet_units(environment, &[])?;
    let labels: Vec<String> = all.iter().map(FleetUnit::label).collect();
    let [wanted] = services else {
        let problem = if services.is_empty() {
            "name the service this command acts on".to_string()
        } else {
            format!(
                "this command acts on one service, and {} were named",
                services.len()
            )
        };
        return Err(Exit::bad_input(format!(
            "{file}: {environment} is a fleet: {problem}\n  help: pass --service NAME, one of: {}",
            labels.join(", ")
        )));
    };
    let matching = units_named(&all, wanted);
    match matching.as_slice() {
        [unit] => Ok((unit.project.clone(), unit.environment.clone())),
        [] => Err(Exit::bad_input(format!(
            "{file}: --service {wanted:?}: {environment} has no such service\n  help: one of: {}",
            labels.join(", ")
        ))),
        _ => Err(Exit::bad_input(format!(
            "{file}: --service {wanted:?} runs in several regions of {environment}\n  help: name one: {}",
            matching.iter().map(|unit| unit.label()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// The units `--service wanted` names: `web` is every region of it, `web@eu-west-1` one.
fn units_named<'a>(all: &'a [FleetUnit], wanted: &str) -> Vec<&'a FleetUnit> {
    let (name, region) = match wanted.split_once('@') {
        Some((name, region)) => (name, Some(region)),
        None => (wanted, None),
    };
    all.iter()
        .filter(|unit| {
            unit.service == name && region.is_none_or(|r| unit.region.as_deref() == Some(r))
        })
        .collect()
}
