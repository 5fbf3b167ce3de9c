//! tugboat's core: the domain model, `tugboat.toml`, task-definition rendering and
//! diffing, the stage traits and the orchestrator.
//!
//! This crate does not talk to the outside world: no AWS SDK, no HTTP client, no
//! process spawning. Every effect goes through a stage trait ([`TestRunner`],
//! [`ImageBuilder`], [`Registry`], [`Deployer`], [`ServiceReader`], [`Verifier`],
//! [`SecretStore`], [`DeployLocks`], [`ReleaseRecords`], [`ArtifactStore`], [`Notifier`]) implemented in an adapter crate.
//!
//! ```no_run
//! # async fn example(stages: pipeline_core::Stages) -> Result<(), Box<dyn std::error::Error>> {
//! use pipeline_core::{DeployRequest, Events, GitInfo, Orchestrator, Project, ReleaseSource};
//! let project = Project::load(std::path::Path::new("tugboat.toml"))?;
//! let orchestrator = Orchestrator::new(project, stages, Events::new());
//! let report = orchestrator
//!     .deploy(DeployRequest {
//!         environment: "staging".into(),
//!         source: ReleaseSource::Build,
//!         git: GitInfo { sha: "0123abc".into(), git_ref: "refs/heads/develop".into(), committed_at: None },
//!         actor: "me".into(),
//!         cancel: Default::default(),
//!     })
//!     .await;
//! std::process::exit(report.outcome.exit_code());
//! # }
//! ```

pub mod alarms;
pub mod config;
pub mod diagnosis;
pub mod events;
pub mod logs;
pub mod model;
pub mod orchestrator;
pub mod preflight;
pub mod report;
pub mod stages;
pub mod task_definition;

pub use alarms::{
    firing_before_release_warning, judge_alarm, judge_alarms, AlarmFindings, AlarmState,
    AlarmVerdict,
};
pub use config::{Config, ConfigError, EnvironmentConfig, OneOffTaskConfig, Project};
pub use diagnosis::{
    redact_text, FailureDiagnosis, LogLine, LogStream, OneOffTaskRun, RecordedOneOffTask,
    StoppedContainer, StoppedTask,
};
pub use events::{EventSubscriber, Events, PipelineEvent, RecordedEvents};
pub use model::*;
pub use orchestrator::{
    follow_rollout, judge_rollout, one_off_client_token, Clock, DeployReport, DeployRequest,
    DeploymentResult, EventOutcome, FleetRecord, FleetReport, FleetRequest, FleetServiceRecord,
    FleetWiring, Orchestrator, Plan, ReleaseSource, RollbackRequest, RollbackTo, RunRequest,
    ServiceState, Stages, SystemClock,
};
pub use preflight::{preflight, PreflightCheck};
pub use stages::*;
pub use task_definition::{TaskDefinition, TaskDefinitionError};
pub use tokio_util::sync::CancellationToken;
