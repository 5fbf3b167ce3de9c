//! `tugboat run --env NAME [--image REF] [--container C] [--timeout 600] -- CMD…`: one
//! task with the service's revision (or a new one of the image), placed as the service,
//! its lines streamed; tugboat exits with the task's exit code.

use crate::output::Reporter;
use crate::Exit;
use pipeline_core::{Orchestrator, RecordedOneOffTask, RunRequest};

pub const EXAMPLES: &str = "Examples:
  tugboat run --env staging -- python -m alembic current
  tugboat run --env production --image v1.2.0 --timeout 1800 -- python -m alembic upgrade head

Exits with the task's exit code; 1 when it has none (it ran out of time, was stopped or
never started); 2 when nothing ran (bad flags, config, or no revision to run).";

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Run this image (tag or sha256 digest) already in the repository, in a new revision
    /// rendered as a release would; the service's current revision when absent.
    #[arg(long)]
    pub image: Option<String>,
    /// The container whose command is replaced (default: the first of task_definition.containers).
    #[arg(long)]
    pub container: Option<String>,
    /// Seconds after which the task is stopped.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=2_592_000))]
    pub timeout: u64,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<String>,
}

/// Runs it and maps how it ended to the exit code.
pub async fn run(
    orchestrator: &Orchestrator,
    environment: String,
    args: RunArgs,
    git: pipeline_core::GitInfo,
    cancel: pipeline_core::CancellationToken,
    reporter: &Reporter,
) -> Result<u8, Exit> {
    let request = RunRequest {
        environment,
        image: args
            .image
            .as_deref()
            .map(pipeline_core::ImageReference::parse),
        container: args.container,
        command: args.command,
        git,
        timeout: std::time::Duration::from_secs(args.timeout),
        cancel,
    };
    let ran = orchestrator.run_task(request).await?;
    let code = exit_code(&ran);
    let json = serde_json::json!({"result": {
        "outcome": if ran.run.succeeded() { "succeeded" } else { "failed" },
        "exit_code": code,
        "task": ran,
    }});
    reporter.finish(json, &ran.ending(), !ran.run.succeeded());
    Ok(code)
}

/// The task's exit code when it has one that fits, else 1.
fn exit_code(ran: &RecordedOneOffTask) -> u8 {
    if ran.run.timed_out || ran.run.cancelled {
        return 1;
    }
    ran.run
        .exit_code
        .and_then(|code| u8::try_from(code).ok())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline_core::OneOffTaskRun;

    #[test]
    fn the_tasks_exit_code_passes_through() {
        let ran = |exit_code: Option<i32>, timed_out: bool, cancelled: bool| RecordedOneOffTask {
            run: OneOffTaskRun {
                exit_code,
                timed_out,
                cancelled,
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(exit_code(&ran(Some(0), false, false)), 0);
        assert_eq!(exit_code(&ran(Some(3), false, false)), 3);
        assert_eq!(exit_code(&ran(Some(137), false, false)), 137);
        assert_eq!(exit_code(&ran(Some(-1), false, false)), 1);
        assert_eq!(exit_code(&ran(Some(300), false, false)), 1);
        assert_eq!(exit_code(&ran(None, false, false)), 1);
        assert_eq!(exit_code(&ran(Some(0), true, false)), 1, "timed out");
        assert_eq!(exit_code(&ran(None, false, true)), 1, "cancelled");
    }
}
