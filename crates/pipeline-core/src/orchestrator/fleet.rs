//! A fleet release: the app's image built and pushed once, then every service of the
//! environment (in every region) released by its own [`Orchestrator::deploy`] run, with
//! bounded concurrency, each under its own lock and with its own record and rollback;
//! then the environment's `on_failure` policy, and a fleet record naming them all. The
//! image is resolved and scan-gated once per region, not once per service.

use super::*;
use crate::config::{FailurePolicy, FleetUnit};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// How the front end gives each service of a fleet its stages.
#[async_trait]
pub trait FleetWiring: Send + Sync {
    /// The stages one service in one region runs with (`build`: it also tests, builds
    /// and pushes the image). Bad input here stops the fleet before anything changed.
    async fn stages(&self, unit: &FleetUnit, build: bool) -> Result<Stages, StageError>;
}

/// A request to release every service of a fleet environment.
#[derive(Clone, Debug)]
pub struct FleetRequest {
    /// The fleet's environment (`production`).
    pub environment: String,
    /// Only these `[services]` (`--service`); all of the environment's when empty.
    pub services: Vec<String>,
    pub source: ReleaseSource,
    pub git: GitInfo,
    pub actor: String,
    /// How many services roll out at once (`--parallel`, at least 1).
    pub parallel: usize,
    /// Who accepted deploying images the scan gate refuses.
    pub scan_override: Option<String>,
    /// Cancels every service's run (each rolls back what it changed).
    pub cancel: CancellationToken,
}

/// Where one service of a fleet is after the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// On the new release.
    Released,
    /// Back on the revision that served before (its own rollback or the fleet's).
    RolledBack,
    /// Never changed (failed or refused before its update).
    Unchanged,
    /// Not started: the fleet stopped first.
    Skipped,
    /// Changed and NOT restored: the message says what it is on.
    NotRestored,
}

impl ServiceState {
    pub fn label(self) -> &'static str {
        match self {
            Self::Released => "released",
            Self::RolledBack => "rolled back",
            Self::Unchanged => "unchanged",
            Self::Skipped => "not started",
            Self::NotRestored => "NOT RESTORED",
        }
    }
}

/// One service in the fleet record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetServiceRecord {
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The environment its own lock and records are under (`production.web`).
    pub environment: String,
    pub state: ServiceState,
    /// Its own release's record, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_id: Option<ReleaseId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<Revision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_revision: Option<Revision>,
    /// Why it failed, or what the fleet's rollback did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The record of a fleet release (`fleet.json` with the release's artifacts).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetRecord {
    pub release_id: ReleaseId,
    pub app: String,
    pub environment: String,
    pub git: GitInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<PinnedImage>,
    pub on_failure: FailurePolicy,
    pub outcome: Outcome,
    pub services: Vec<FleetServiceRecord>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

/// What a fleet release did: the outcome (the exit code), each service's state, and a
/// message for people with one line per service.
#[derive(Clone, Debug)]
pub struct FleetReport {
    pub outcome: Outcome,
    /// `None` when the fleet stopped before any service ran (bad input, failed build).
    pub record: Option<FleetRecord>,
    pub message: String,
}

/// One service's run as the fleet follows it.
struct UnitRun {
    unit: FleetUnit,
    report: Option<DeployReport>,
    /// When its run ended: the fleet's rollback goes newest first.
    ended: Option<Instant>,
    state: ServiceState,
    reason: Option<String>,
}

impl UnitRun {
    fn record(&self) -> Option<&DeployRecord> {
        self.report.as_ref().and_then(|r| r.record.as_ref())
    }
}

impl Orchestrator {
    /// Releases every service of a fleet environment (see the module docs). Never panics;
    /// the outcome is 0 when every service is on the release, 1 when some failed and
    /// every changed service is back (or, with `rollback_failed`, on the release, as the
    /// message lists), 2 when nothing changed for bad input, 3 when any service was not
    /// restored.
    pub async fn deploy_fleet(
        project: &Project,
        wiring: &dyn FleetWiring,
        events: &Events,
        request: FleetRequest,
    ) -> FleetReport {
        let bad_input = |message: String| FleetReport {
            outcome: Outcome::BadInput,
            record: None,
            message,
        };
        let policy = match project.failure_policy(&request.environment) {
            Ok(policy) => policy,
            Err(err) => return bad_input(err.to_string()),
        };
        let units = match project.fleet_units(&request.environment, &request.services) {
            Ok(units) => units,
            Err(err) => return bad_input(err.to_string()),
        };
        let Some(first) = units.first() else {
            return bad_input(format!(
                "environment {} releases no service",
                request.environment
            ));
        };
        // Every service's stages before anything runs: bad input changes nothing.
        let mut orchestrators = Vec::with_capacity(units.len());
        let mut image_checks: HashMap<Option<String>, Arc<SharedImageCheck>> = HashMap::new();
        for (index, unit) in units.iter().enumerate() {
            let build = index == 0 && request.source == ReleaseSource::Build;
            let stages = match wiring.stages(unit, build).await {
                Ok(stages) => stages,
                Err(err) => {
                    return bad_input(format!("{}: {}", unit.label(), describe_error(&err)))
                }
            };
            let mut orchestrator = Orchestrator::new(
                unit.project.clone(),
                stages,
                events.for_service(&unit.label()),
            );
            if let Some(who) = &request.scan_override {
                orchestrator = orchestrator.override_scan_gate(who.clone());
            }
            // One region's registry answers the same for each of its services.
            let check = image_checks.entry(unit.region.clone()).or_default().clone();
            orchestrators.push(orchestrator.sharing_image_check(check));
        }
        let clock = orchestrators[0].clock.clone();
        let started_at = clock.now();
        let release_id = ReleaseId::new(started_at, &request.git);
        events.info(format!(
            "fleet release {release_id} to {}: {} service(s), {} at a time, on_failure = \"{}\"",
            request.environment,
            units.len(),
            request.parallel.max(1),
            policy_name(policy)
        ));

        // The image, once: built here, or the one named, pinned by digest for everyone.
        let builder = &orchestrators[0];
        let unit_request = |unit: &FleetUnit, source: ReleaseSource, cancel| DeployRequest {
            environment: unit.environment.clone(),
            source,
            git: request.git.clone(),
            actor: request.actor.clone(),
            cancel,
        };
        let image = match &request.source {
            ReleaseSource::Build => {
                let build = unit_request(first, ReleaseSource::Build, request.cancel.child_token());
                builder.build_release(&build).await
            }
            ReleaseSource::Image(reference) => builder
                .stages
                .registry
                .resolve(&project.config.image.repository, reference)
                .await
                .map_err(|err| DeployReport {
                    outcome: if err.kind == StageErrorKind::BadInput {
                        Outcome::BadInput
                    } else {
                        Outcome::FailedRestored
                    },
                    record: None,
                    message: format!("nothing was deployed: {}", describe_error(&err)),
                }),
        };
        let image = match image {
            Ok(image) => image,
            Err(report) => {
                return FleetReport {
                    outcome: report.outcome,
                    record: None,
                    message: report.message,
                }
            }
        };
        events.info(format!("fleet image {}", image.reference()));
        let source = ReleaseSource::Image(ImageReference::Digest(image.digest.clone()));

        // Each service, at most `parallel` at once; with rollback_all, the first failure
        // stops services that have not started.
        let permits = tokio::sync::Semaphore::new(request.parallel.max(1));
        let stop = CancellationToken::new();
        let runs = units
            .iter()
            .zip(&orchestrators)
            .map(|(unit, orchestrator)| {
                let permits = &permits;
                let stop = &stop;
                let source = source.clone();
                let unit_request = &unit_request;
                let request = &request;
                async move {
                    let mut run = UnitRun {
                        unit: unit.clone(),
                        report: None,
                        ended: None,
                        state: ServiceState::Skipped,
                        reason: None,
                    };
                    let Ok(_permit) = permits.acquire().await else {
                        return run;
                    };
                    if stop.is_cancelled() || request.cancel.is_cancelled() {
                        return run;
                    }
                    let report = orchestrator
                        .deploy(unit_request(unit, source, request.cancel.child_token()))
                        .await;
                    run.ended = Some(Instant::now());
                    let outcome = report
                        .record
                        .as_ref()
                        .map(|r| r.outcome)
                        .unwrap_or(RecordOutcome::Refused);
                    run.state = match outcome {
                        RecordOutcome::Succeeded | RecordOutcome::InProgress => {
                            ServiceState::Released
                        }
                        RecordOutcome::RolledBack => ServiceState::RolledBack,
                        RecordOutcome::FailedUnchanged | RecordOutcome::Refused => {
                            ServiceState::Unchanged
                        }
                        RecordOutcome::NotRestored => ServiceState::NotRestored,
                    };
                    if run.state != ServiceState::Released {
                        run.reason = Some(first_line(&report.message));
                        if policy == FailurePolicy::RollbackAll {
                            stop.cancel();
                        }
                    }
                    orchestrator.events.emit(PipelineEvent::ServiceFinished {
                        state: run.state.label().to_string(),
                        detail: first_line(&report.message),
                    });
                    run.report = Some(report);
                    run
                }
            });
        let mut runs: Vec<UnitRun> = futures_util::future::join_all(runs).await;

        let failed: Vec<String> = runs
            .iter()
            .filter(|r| r.state != ServiceState::Released)
            .map(|r| r.unit.label())
            .collect();
        if !failed.is_empty() && policy == FailurePolicy::RollbackAll {
            Self::roll_back_released(&mut runs, &orchestrators, &request, &failed, events).await;
        }
        let outcome = fleet_outcome(&runs);
        let message = fleet_message(&request.environment, policy, &runs, &failed, outcome);
        let record = FleetRecord {
            release_id: release_id.clone(),
            app: project.config.app.name.clone(),
            environment: request.environment.clone(),
            git: request.git.clone(),
            image: Some(image),
            on_failure: policy,
            outcome,
            services: runs
                .iter()
                .map(|run| FleetServiceRecord {
                    service: run.unit.service.clone(),
                    region: run.unit.region.clone(),
                    environment: run.unit.environment.clone(),
                    state: run.state,
                    release_id: run.record().map(|r| r.release_id.clone()),
                    revision: run.record().and_then(|r| r.revision.clone()),
                    previous_revision: run.record().and_then(|r| r.previous_revision.clone()),
                    reason: run.reason.clone(),
                })
                .collect(),
            started_at,
            finished_at: clock.now(),
        };
        Self::keep_fleet_record(&orchestrators[0], &record, events).await;
        FleetReport {
            outcome,
            record: Some(record),
            message,
        }
    }

    /// `rollback_all`: every service this run released goes back to the revision that
    /// served before, newest release first.
    async fn roll_back_released(
        runs: &mut [UnitRun],
        orchestrators: &[Orchestrator],
        request: &FleetRequest,
        failed: &[String],
        events: &Events,
    ) {
        let mut released: Vec<usize> = (0..runs.len())
            .filter(|&i| runs[i].state == ServiceState::Released)
            .collect();
        released.sort_by_key(|&i| std::cmp::Reverse(runs[i].ended));
        if !released.is_empty() {
            events.warn(format!(
                "on_failure = \"rollback_all\": rolling back {} released service(s), newest first",
                released.len()
            ));
        }
        for index in released {
            let run = &mut runs[index];
            let (revision, previous) = match run.record() {
                Some(record) => (record.revision.clone(), record.previous_revision.clone()),
                None => (None, None),
            };
            let Some(previous) = previous else {
                run.state = ServiceState::NotRestored;
                run.reason = Some(
                    "released, and no revision that served before is known to roll back to".into(),
                );
                continue;
            };
            if revision
                .as_ref()
                .is_some_and(|r| same_revision(r, &previous))
            {
                run.state = ServiceState::Unchanged;
                run.reason = Some(format!("the release kept {previous}; nothing to roll back"));
                continue;
            }
            let report = orchestrators[index]
                .rollback(RollbackRequest {
                    environment: run.unit.environment.clone(),
                    to: Some(RollbackTo::Revision(previous.id.clone())),
                    actor: request.actor.clone(),
                    reason: Some(format!(
                        "on_failure = \"rollback_all\": rolled back with the fleet because {} failed",
                        failed.join(", ")
                    )),
                    cancel: request.cancel.child_token(),
                })
                .await;
            if report.outcome == Outcome::Succeeded {
                run.state = ServiceState::RolledBack;
                run.reason = Some(format!("rolled back with the fleet to {previous}"));
            } else {
                run.state = ServiceState::NotRestored;
                run.reason = Some(format!(
                    "released, and the fleet's rollback to {previous} did not complete: {}",
                    first_line(&report.message)
                ));
            }
            orchestrators[index]
                .events
                .emit(PipelineEvent::ServiceFinished {
                    state: run.state.label().to_string(),
                    detail: run.reason.clone().unwrap_or_default(),
                });
        }
    }

    async fn keep_fleet_record(first: &Orchestrator, record: &FleetRecord, events: &Events) {
        let bytes = match serde_json::to_vec_pretty(record) {
            Ok(bytes) => bytes,
            Err(err) => {
                events.warn(format!("the fleet record was not written: {err}"));
                return;
            }
        };
        let artifact = crate::model::Artifact {
            name: "fleet.json".into(),
            bytes,
        };
        match first
            .stages
            .artifacts
            .put_artifact(
                &record.app,
                &record.environment,
                &record.release_id,
                &artifact,
            )
            .await
        {
            Ok(location) => events.info(format!("fleet record kept at {location}")),
            Err(err) => events.warn(format!("the fleet record was not written: {}", err.message)),
        }
    }
}

fn policy_name(policy: FailurePolicy) -> &'static str {
    match policy {
        FailurePolicy::RollbackAll => "rollback_all",
        FailurePolicy::RollbackFailed => "rollback_failed",
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_string()
}

fn fleet_outcome(runs: &[UnitRun]) -> Outcome {
    let states = || runs.iter().map(|r| r.state);
    if states().all(|s| s == ServiceState::Released) {
        return Outcome::Succeeded;
    }
    if states().any(|s| s == ServiceState::NotRestored) {
        return Outcome::FailedNotRestored;
    }
    let nothing_changed = runs.iter().all(|r| {
        matches!(r.state, ServiceState::Unchanged | ServiceState::Skipped)
            && r.record().is_none_or(|rec| rec.revision.is_none())
    });
    let refused = runs.iter().any(|r| {
        r.report
            .as_ref()
            .is_some_and(|rep| rep.outcome == Outcome::BadInput)
    });
    if nothing_changed && refused {
        Outcome::BadInput
    } else {
        Outcome::FailedRestored
    }
}

fn fleet_message(
    environment: &str,
    policy: FailurePolicy,
    runs: &[UnitRun],
    failed: &[String],
    outcome: Outcome,
) -> String {
    let mut message = if outcome == Outcome::Succeeded {
        format!("released {} service(s) of {environment}", runs.len())
    } else {
        let on_new: Vec<String> = runs
            .iter()
            .filter(|r| r.state == ServiceState::Released)
            .map(|r| r.unit.label())
            .collect();
        let mut head = format!(
            "fleet release to {environment} failed: {} of {} service(s) failed ({}); on_failure = \"{}\"",
            failed.len(),
            runs.len(),
            failed.join(", "),
            policy_name(policy)
        );
        if !on_new.is_empty() {
            head.push_str(&format!("; on the new release: {}", on_new.join(", ")));
        }
        let not_restored: Vec<String> = runs
            .iter()
            .filter(|r| r.state == ServiceState::NotRestored)
            .map(|r| r.unit.label())
            .collect();
        if !not_restored.is_empty() {
            head.push_str(&format!(
                "; NOT RESTORED: {} (run `tugboat status --env {environment} --service NAME`)",
                not_restored.join(", ")
            ));
        }
        head
    };
    let width = runs.iter().map(|r| r.unit.label().len()).max().unwrap_or(0);
    for run in runs {
        let detail = match (run.state, run.record()) {
            (ServiceState::Released, Some(record)) => record
                .revision
                .as_ref()
                .map(|r| format!("on {r}"))
                .unwrap_or_default(),
            _ => run.reason.clone().unwrap_or_default(),
        };
        message.push_str(&format!(
            "\n  {:<width$}  {:<12}  {detail}",
            run.unit.label(),
            run.state.label()
        ));
    }
    message
}
