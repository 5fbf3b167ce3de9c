//! `tugboat`: commit to a verified, roll-back-safe ECS release.
//!
//! Exit codes: 0 success; 1 failed and the service is on the release that served
//! before; 2 bad input (config, task definition, flags) or lock held, nothing changed;
//! 3 failed and NOT restored (the message says what state the service is in).

mod commands;
mod fleet_table;
mod git;
mod output;
mod signals;
mod wiring;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};
use output::{OutputFormat, Reporter, Verbosity};
use pipeline_core::{
    CancellationToken, DeployRequest, GitInfo, ImageReference, Orchestrator, Outcome, Project,
    ReleaseSource, RollbackRequest, RollbackTo,
};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

const EXIT_CODES: &str = "Exit codes:
  0  success
  1  failed; the service is on the release that served before (rolled back or never changed)
  2  bad input (config, task definition, flags) or deploy lock held; nothing was changed
  3  failed and NOT restored; the message says what state the service is in and what to run";

#[derive(Parser, Debug)]
#[command(
    name = "tugboat",
    version,
    about = "Test, build, push, deploy and verify a container release on AWS ECS, with automatic rollback",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    global: Global,
}

#[derive(clap::Args, Debug, Clone)]
struct Global {
    /// Path of tugboat.toml.
    #[arg(
        long,
        global = true,
        default_value = "tugboat.toml",
        env = "TUGBOAT_CONFIG_FILE"
    )]
    config: PathBuf,
    /// Environment to act on; defaults to the one the git ref deploys to.
    #[arg(long = "env", global = true)]
    environment: Option<String>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value = "human")]
    output: OutputFormat,
    /// Only warnings, errors and the result.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Also every line of test and build output.
    #[arg(short, long, global = true)]
    verbose: bool,
    /// A fleet ([services]): the service to act on, `web` or `web@eu-west-1` for one
    /// region of it. Repeatable for deploy, status, history, plan, diff and render (all of
    /// the environment's by default); rollback, verify, infra, unlock, logs and run act on one.
    #[arg(long = "service", global = true, value_name = "NAME")]
    services: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the pipeline (test, build, push, deploy, verify), or deploy a pushed image.
    #[command(
        after_help = "Examples:\n  tugboat deploy --env staging\n  tugboat deploy --env production --image v1.2.0\n  GITHUB_REF=refs/tags/v1.2.0 tugboat deploy   # environment from the tag rule"
    )]
    Deploy {
        /// Deploy this image (tag or sha256 digest) already in the repository: no test, build or push.
        #[arg(long)]
        image: Option<String>,
        /// Deploy even if the security-scan gate finds blocking vulnerabilities; who did it is recorded.
        #[arg(long)]
        override_scan: bool,
        /// If the service is rolling out a deployment that is not tugboat's, wait for it to
        /// finish instead of refusing (deploy.wait_for_other_deployments).
        #[arg(long)]
        wait_for_deployment: bool,
        /// A fleet: how many services roll out at once.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
        parallel: u16,
    },
    /// Show what deploy would do, with the task definition diff; changes nothing.
    #[command(after_help = "Example:\n  tugboat plan --env production --image v1.2.0")]
    Plan {
        #[arg(long)]
        image: Option<String>,
    },
    /// Put the service back on an earlier release (default: the last good one before the current).
    #[command(
        after_help = "Examples:\n  tugboat rollback --env production\n  tugboat rollback --env production --to cv-matcher:41\n  tugboat rollback --env production --to r20261126-141500-abc1234"
    )]
    Rollback {
        /// A revision (`family:number` or task definition ARN) or a release id from `tugboat history`.
        #[arg(long)]
        to: Option<String>,
    },
    /// Deployments, counts, current revision and release, last service events.
    #[command(after_help = "Example:\n  tugboat status --env staging")]
    Status,
    /// Deploy records, newest first.
    #[command(after_help = "Example:\n  tugboat history --env production --limit 5")]
    History {
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// The rendered task definition against the registered one.
    #[command(after_help = "Example:\n  tugboat diff --env staging --image 3f2a9c1")]
    Diff {
        #[arg(long)]
        image: Option<String>,
    },
    /// Print the task definition a release would register.
    #[command(
        after_help = "Example:\n  tugboat render --env production --image v1.2.0 > rendered.json"
    )]
    Render {
        #[arg(long)]
        image: Option<String>,
    },
    /// Preflight checks before a first deploy, each ok or with the fix.
    #[command(after_help = "Example:\n  tugboat verify --env production --image v1.2.0")]
    Verify {
        #[arg(long)]
        image: Option<String>,
    },
    /// Write tugboat.toml and the task definition file from an existing service.
    #[command(
        after_help = "--service names the ECS service to read (required).\n\nExample:\n  tugboat init --cluster cv-matcher-cluster --service cv-matcher-service --region us-east-1 --app cv-matcher --repository cv_matcher"
    )]
    Init {
        #[arg(long)]
        cluster: String,
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        app: String,
        #[arg(long)]
        repository: String,
        /// Environment name to write.
        #[arg(long, default_value = "production")]
        name: String,
    },
    /// Monitoring and scaling as code: the log group, alarms and auto scaling of tugboat.toml.
    #[command(
        after_help = "Examples:\n  tugboat infra plan --env production    # what differs, changes nothing\n  tugboat infra apply --env production   # make it so; a second apply changes nothing"
    )]
    Infra {
        #[command(subcommand)]
        action: InfraAction,
    },
    /// Show who holds an environment's deploy lock and remove it (when that run died).
    #[command(
        after_help = "Examples:\n  tugboat unlock --env production         # shows the holder, asks before removing\n  tugboat unlock --env production --yes   # in scripts: no question"
    )]
    Unlock {
        /// Remove the lock without asking (needed without a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// Run a one-off task (a migration, a shell command) as the service runs its tasks;
    /// exits with its exit code.
    #[command(after_help = commands::run::EXAMPLES)]
    Run(commands::run::RunArgs),
    /// An ECS environment's task log lines, merged by time, with task and container.
    #[command(after_help = commands::logs::EXAMPLES)]
    Logs(commands::logs::LogsArgs),
    /// The delivery report: DORA metrics and the release timeline from the deploy records.
    #[command(after_help = commands::report::EXAMPLES)]
    Report(commands::report::ReportArgs),
    /// Shell completions.
    #[command(
        after_help = "Example:\n  tugboat completions bash > /etc/bash_completion.d/tugboat"
    )]
    Completions { shell: clap_complete::Shell },
    /// Stop a local environment (target = "local"): remove its containers, stop its proxy.
    #[command(after_help = "Example:\n  tugboat stop --env local")]
    Stop,
    /// The local target's proxy; `deploy` starts it, detached. Not for direct use.
    #[command(name = "__proxy", hide = true)]
    Proxy {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        control: PathBuf,
        #[arg(long = "state-file")]
        state_file: PathBuf,
    },
}

#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
enum InfraAction {
    /// Show what differs from tugboat.toml; changes nothing.
    #[command(after_help = "Example:\n  tugboat infra plan --env production")]
    Plan,
    /// Create or update what differs; reports each change.
    #[command(after_help = "Example:\n  tugboat infra apply --env production")]
    Apply,
}

/// A failure with the exit code it maps to.
struct Exit {
    code: u8,
    message: String,
}

impl Exit {
    fn bad_input(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
        }
    }
}

impl From<anyhow::Error> for Exit {
    fn from(error: anyhow::Error) -> Self {
        Self {
            code: 1,
            message: format!("{error:#}"),
        }
    }
}

impl From<pipeline_core::ConfigError> for Exit {
    fn from(error: pipeline_core::ConfigError) -> Self {
        Self::bad_input(error.to_string())
    }
}

impl From<pipeline_core::StageError> for Exit {
    fn from(error: pipeline_core::StageError) -> Self {
        let code = match error.kind {
            pipeline_core::StageErrorKind::BadInput | pipeline_core::StageErrorKind::LockHeld => 2,
            _ => 1,
        };
        let message = match &error.help {
            Some(help) => format!("{}\n  help: {help}", error.message),
            None => error.message.clone(),
        };
        Self { code, message }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let verbosity = if cli.global.quiet {
        Verbosity::Quiet
    } else if cli.global.verbose {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };
    let reporter = Arc::new(Reporter::new(cli.global.output, verbosity));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli, reporter.clone())) {
        Ok(code) => ExitCode::from(code),
        Err(exit) => {
            let json = serde_json::json!({"result": {"outcome": "error", "exit_code": exit.code, "message": exit.message}});
            reporter.finish(json, &format!("error: {}", exit.message), true);
            ExitCode::from(exit.code)
        }
    }
}

fn load(global: &Global) -> Result<Project, Exit> {
    Ok(Project::load(&global.config)?)
}

/// The environment from `--env`, else from the git ref's branch and tag rules.
fn environment(global: &Global, project: &Project, git: &GitInfo) -> Result<String, Exit> {
    if let Some(name) = &global.environment {
        project.environment(name)?;
        return Ok(name.clone());
    }
    let known: Vec<&str> = project
        .config
        .environments
        .keys()
        .map(String::as_str)
        .collect();
    project
        .config
        .environment_for_ref(&git.git_ref)
        .map(str::to_string)
        .ok_or_else(|| {
            Exit::bad_input(format!(
                "{}: no environment deploys git ref {:?} (no `branches` or `tags` rule matches)\n  help: pass --env {}",
                global.config.display(),
                git.git_ref,
                known.join("|")
            ))
        })
}

/// The one environment a command acts on: `--env` (or the git ref's), or for a fleet the
/// one service (and region) `--service` names, as its own project and environment.
fn one_scope(global: &Global) -> Result<(Project, String), Exit> {
    let project = load(global)?;
    let git = git::current();
    let env = environment(global, &project, &git)?;
    let scope = commands::fleet::one_scope(&project, &env, &global.services)?;
    Ok(scope)
}

fn source(image: Option<&String>) -> ReleaseSource {
    match image {
        Some(image) => ReleaseSource::Image(ImageReference::parse(image)),
        None => ReleaseSource::Build,
    }
}

async fn run(cli: Cli, reporter: Arc<Reporter>) -> Result<u8, Exit> {
    let global = cli.global.clone();
    match cli.command {
        Command::Infra { action } => {
            let (project, env) = one_scope(&global)?;
            commands::infra::infra(&project, &env, action == InfraAction::Apply, &reporter).await?;
            Ok(0)
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "tugboat",
                &mut std::io::stdout(),
            );
            Ok(0)
        }
        Command::Init {
            cluster,
            region,
            app,
            repository,
            name,
        } => {
            let [service] = global.services.as_slice() else {
                return Err(Exit::bad_input(
                    "tugboat init needs --service NAME (once): the ECS service to write tugboat.toml from\n  help: tugboat init --cluster C --service S --app A --repository R",
                ));
            };
            commands::init::init(
                &global.config,
                &cluster,
                service,
                region,
                &app,
                &repository,
                &name,
            )
            .await?;
            reporter.finish(
                serde_json::json!({"result": {"outcome": "succeeded", "exit_code": 0, "config": global.config}}),
                &format!("wrote {} and its task definition", global.config.display()),
                false,
            );
            Ok(0)
        }
        Command::Deploy {
            image,
            override_scan,
            wait_for_deployment,
            parallel,
        } => {
            let services = global.services.clone();
            let mut project = load(&global)?;
            let git = git::current();
            let env = environment(&global, &project, &git)?;
            if wait_for_deployment {
                if let Some(settings) = project.config.environments.get_mut(&env) {
                    settings.deploy.wait_for_other_deployments = true;
                }
            }
            let source = source(image.as_ref());
            if project.is_fleet() {
                let deploy = commands::fleet::FleetDeploy {
                    environment: env,
                    services,
                    parallel: usize::from(parallel),
                    source,
                    git,
                    actor: git::actor(),
                    scan_override: override_scan.then(git::actor),
                };
                return commands::fleet::deploy(&project, deploy, reporter).await;
            }
            if !services.is_empty() {
                return Err(Exit::bad_input(format!(
                    "{}: --service needs [services] in tugboat.toml; this app is one service",
                    global.config.display()
                )));
            }
            let stages = wiring::stages(&project, &env, source == ReleaseSource::Build).await?;
            let url = wiring::local_url(&project, &env)?;
            let mut orchestrator =
                Orchestrator::new(project, stages, wiring::events(reporter.clone()))
                    .with_redaction(wiring::held_secrets());
            if override_scan {
                orchestrator = orchestrator.override_scan_gate(git::actor());
            }
            let cancel = CancellationToken::new();
            signals::cancel_on_signals(cancel.clone(), reporter.clone())?;
            let mut report = orchestrator
                .deploy(DeployRequest {
                    environment: env,
                    source,
                    git,
                    actor: git::actor(),
                    cancel,
                })
                .await;
            serving_note(&mut report, url.as_deref());
            Ok(finish_report(&reporter, &report))
        }
        Command::Rollback { to } => {
            let (project, env) = one_scope(&global)?;
            let stages = wiring::stages(&project, &env, false).await?;
            let url = wiring::local_url(&project, &env)?;
            let orchestrator = Orchestrator::new(project, stages, wiring::events(reporter.clone()))
                .with_redaction(wiring::held_secrets());
            let to = to.map(|text| {
                let looks_like_release = text.starts_with('r')
                    && text.len() > 17
                    && text.as_bytes().get(9) == Some(&b'-');
                if looks_like_release {
                    RollbackTo::Release(pipeline_core::ReleaseId(text))
                } else {
                    RollbackTo::Revision(text)
                }
            });
            let cancel = CancellationToken::new();
            signals::cancel_on_signals(cancel.clone(), reporter.clone())?;
            let mut report = orchestrator
                .rollback(RollbackRequest {
                    environment: env,
                    to,
                    actor: git::actor(),
                    reason: None,
                    cancel,
                })
                .await;
            serving_note(&mut report, url.as_deref());
            Ok(finish_report(&reporter, &report))
        }
        Command::Plan { image } => show_plan(&global, image, &reporter, PlanView::Plan).await,
        Command::Diff { image } => show_plan(&global, image, &reporter, PlanView::Diff).await,
        Command::Render { image } => show_plan(&global, image, &reporter, PlanView::Render).await,
        Command::Verify { image } => {
            let (project, env) = one_scope(&global)?;
            let stages = wiring::stages(&project, &env, false).await?;
            commands::preflight::preflight(&project, &env, &stages, image.as_deref(), &reporter)
                .await
        }
        Command::Status => {
            let services = global.services.clone();
            let project = load(&global)?;
            let git = git::current();
            let env = environment(&global, &project, &git)?;
            for (project, env) in commands::fleet::scopes(&project, &env, &services)? {
                commands::status::status(&project, &env, &reporter).await?;
            }
            Ok(0)
        }
        Command::Stop => {
            let project = load(&global)?;
            let git = git::current();
            let env = environment(&global, &project, &git)?;
            commands::stop::stop(&project, &env, &reporter).await?;
            Ok(0)
        }
        Command::Proxy {
            listen,
            control,
            state_file,
        } => run_proxy(listen, control, state_file).await,
        Command::Unlock { yes } => {
            let (project, env) = one_scope(&global)?;
            commands::unlock::unlock(&project, &env, yes, &reporter).await
        }
        Command::Report(args) => commands::report::run(&global, args, &reporter).await,
        Command::Logs(args) => {
            let (project, env) = one_scope(&global)?;
            commands::logs::logs(&project, &env, args, &reporter).await
        }
        Command::Run(args) => {
            let (project, env) = one_scope(&global)?;
            let git = git::current();
            let build = false;
            let stages = wiring::stages(&project, &env, build).await?;
            let orchestrator = Orchestrator::new(project, stages, wiring::events(reporter.clone()))
                .with_redaction(wiring::held_secrets());
            let cancel = CancellationToken::new();
            signals::cancel_on_signals(cancel.clone(), reporter.clone())?;
            commands::run::run(&orchestrator, env, args, git, cancel, &reporter).await
        }
        Command::History { limit } => {
            let services = global.services.clone();
            let project = load(&global)?;
            let git = git::current();
            let env = environment(&global, &project, &git)?;
            for (project, env) in commands::fleet::scopes(&project, &env, &services)? {
                commands::history::history(&project, &env, limit, &reporter).await?;
            }
            Ok(0)
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PlanView {
    Plan,
    Diff,
    Render,
}

/// `plan`, `diff` and `render` show parts of the same plan; none changes anything.
async fn show_plan(
    global: &Global,
    image: Option<String>,
    reporter: &Reporter,
    view: PlanView,
) -> Result<u8, Exit> {
    let project = load(global)?;
    let git = git::current();
    let environment = environment(global, &project, &git)?;
    let scopes = commands::fleet::named_scopes(&project, &environment, &global.services)?;
    let source = source(image.as_ref());
    let mut shown = Vec::with_capacity(scopes.len());
    for (label, project, env) in scopes {
        let stages = wiring::stages(&project, &env, false).await?;
        let orchestrator = Orchestrator::new(project, stages, pipeline_core::Events::new());
        let plan = orchestrator.plan(&env, &source, &git).await?;
        shown.push((label, plan));
    }
    let json_of = |plan: &pipeline_core::Plan| {
        serde_json::json!({"steps": plan.steps, "diff": plan.diff,
            "task_definition": plan.rendered.definition, "tags": plan.rendered.tags})
    };
    let human_of = |plan: &pipeline_core::Plan| match view {
        PlanView::Render => plan.rendered.definition.to_json_pretty(),
        PlanView::Diff if plan.diff.is_empty() => "no changes".to_string(),
        PlanView::Diff => plan.diff.clone(),
        PlanView::Plan => plan.to_string(),
    };
    // One environment (or one service of a fleet): as it always was.
    if let [(_, plan)] = shown.as_slice() {
        let mut result = serde_json::json!({"outcome": "succeeded", "exit_code": 0});
        if let (Some(result), serde_json::Value::Object(parts)) =
            (result.as_object_mut(), json_of(plan))
        {
            result.extend(parts);
        }
        reporter.finish(
            serde_json::json!({ "result": result }),
            human_of(plan).trim_end(),
            false,
        );
        return Ok(0);
    }
    // A fleet: each service under its name, in the order the fleet releases them.
    let services: Vec<serde_json::Value> = shown
        .iter()
        .map(|(label, plan)| {
            let mut json = json_of(plan);
            json["service"] = label.clone().unwrap_or_default().into();
            json
        })
        .collect();
    let human: Vec<String> = shown
        .iter()
        .map(|(label, plan)| {
            format!(
                "== {} ==\n{}",
                label.as_deref().unwrap_or_default(),
                human_of(plan).trim_end()
            )
        })
        .collect();
    reporter.finish(
        serde_json::json!({"result": {"outcome": "succeeded", "exit_code": 0, "services": services}}),
        &human.join("\n\n"),
        false,
    );
    Ok(0)
}

/// A local environment's release (or the one restored) serves on a fixed URL: say it.
fn serving_note(report: &mut pipeline_core::DeployReport, url: Option<&str>) {
    let serving = matches!(report.outcome, Outcome::Succeeded | Outcome::FailedRestored);
    if let (true, Some(url)) = (serving, url) {
        report.message.push_str(&format!("\nserving on {url}"));
    }
}

/// `tugboat __proxy`: the local target's proxy, until `tugboat stop`, SIGTERM or SIGINT.
/// SIGHUP is ignored, so closing the terminal that started a deploy leaves it running.
async fn run_proxy(
    listen: std::net::SocketAddr,
    control: PathBuf,
    state_file: PathBuf,
) -> Result<u8, Exit> {
    use tokio::signal::unix::{signal, SignalKind};
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let mut hangup = signal(SignalKind::hangup()).map_err(|e| anyhow::anyhow!("signals: {e}"))?;
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|e| anyhow::anyhow!("signals: {e}"))?;
    tokio::spawn(async move { while hangup.recv().await.is_some() {} });
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    let options = local_target::ProxyOptions {
        listen,
        control,
        state_file,
    };
    local_target::run_proxy(options, shutdown).await?;
    Ok(0)
}

fn finish_report(reporter: &Reporter, report: &pipeline_core::DeployReport) -> u8 {
    let code = report.outcome.exit_code();
    let outcome = match report.outcome {
        Outcome::Succeeded => "succeeded",
        Outcome::FailedRestored => "failed_restored",
        Outcome::BadInput => "bad_input",
        Outcome::FailedNotRestored => "failed_not_restored",
    };
    let json = serde_json::json!({"result": {
        "outcome": outcome,
        "exit_code": code,
        "message": report.message,
        "record": report.record,
    }});
    let human = match report.outcome {
        Outcome::Succeeded => report.message.clone(),
        Outcome::FailedNotRestored => format!("error: NOT RESTORED: {}", report.message),
        _ => format!("error: {}", report.message),
    };
    reporter.finish(json, &human, report.outcome != Outcome::Succeeded);
    u8::try_from(code).unwrap_or(1)
}
