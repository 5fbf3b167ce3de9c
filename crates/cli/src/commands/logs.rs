//! `tugboat logs --env NAME [--release ID] [--container C] [--since 10m] [--follow]`: an
//! ECS environment's task log lines, merged by time, each with its task and container,
//! known secret values redacted (`pipeline_core::logs`). `--follow` reads on every 2 s
//! until SIGINT/SIGTERM/SIGHUP, then exits 0.

use crate::output::Reporter;
use crate::{wiring, Exit};
use chrono::{DateTime, Utc};
use pipeline_core::logs::{follow_logs, LogRequest, LogScope, TaskLogLine, FOLLOW_EVERY};
use pipeline_core::{CancellationToken, Project, ReleaseId};
use std::io::Write;

pub const EXAMPLES: &str = "Examples:
  tugboat logs --env production                        # the running tasks, the last 10 minutes
  tugboat logs --env production --since 2h --container cv-matcher
  tugboat logs --env production --release r20261202-160000-abc1234   # stopped tasks too
  tugboat logs --env staging --follow                  # until Ctrl-C (exit 0)

Each line: TIME TASK CONTAINER | MESSAGE. ECS environments only (for target = \"local\",
`docker logs` the containers `docker ps --filter label=tugboat.app` lists).";

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// Only this release's tasks (a release id from `tugboat history`), stopped ones too.
    #[arg(long, value_name = "ID")]
    pub release: Option<String>,
    /// Only this container's lines.
    #[arg(long, value_name = "C")]
    pub container: Option<String>,
    /// From when: `10m`, `2h`, `1d` back from now, or an RFC 3339 time.
    #[arg(long, default_value = "10m", value_name = "10m|TIME")]
    pub since: String,
    /// Keep reading (every 2 s), new tasks too, until Ctrl-C or SIGTERM.
    #[arg(long, short)]
    pub follow: bool,
}

/// `--since`'s time, or the message of exit 2.
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    let bad = |why: &str| {
        format!(
            "--since {text:?}: {why}\n  help: pass a span back from now (10m, 2h, 1d) or an RFC 3339 time (2026-12-02T16:00:00Z)"
        )
    };
    const UNITS: [(char, i64); 4] = [('s', 1), ('m', 60), ('h', 3600), ('d', 86_400)];
    if let Some(span) = super::since::span_back(text, now, &UNITS, &bad) {
        return span;
    }
    let at = DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| bad("not a span (10m) nor an RFC 3339 time"))?;
    if at > now {
        return Err(bad("that is in the future"));
    }
    Ok(at)
}

pub async fn logs(
    project: &Project,
    environment: &str,
    args: LogsArgs,
    reporter: &Reporter,
) -> Result<u8, Exit> {
    let since = parse_since(&args.since, Utc::now()).map_err(Exit::bad_input)?;
    if wiring::is_local(project, environment)? {
        return Err(Exit::bad_input(format!(
            "environment {environment} is local (target = \"local\"); `tugboat logs` reads ECS environments' CloudWatch Logs\n  help: `docker logs CONTAINER` for a local one (`docker ps --filter label=tugboat.app={}` lists them)",
            project.config.app.name
        )));
    }
    let target = wiring::target(project, environment)?;
    let (logs, records) = wiring::task_logs(project, environment).await?;
    let scope = match &args.release {
        None => LogScope::Running,
        Some(release) => {
            let history = records.history(&target.app, environment, 200).await?;
            let Some(record) = history
                .iter()
                .find(|r| r.release_id == ReleaseId(release.clone()))
            else {
                return Err(Exit::bad_input(format!(
                    "--release {release:?}: no such release of {} in {environment}'s records\n  help: pass a release id from `tugboat history --env {environment}`",
                    target.app
                )));
            };
            let Some(deployment) = record.deployment_id.clone() else {
                return Err(Exit::bad_input(format!(
                    "--release {release:?}: that release never reached the service (no deployment), so it has no tasks\n  help: pass a release that deployed, from `tugboat history --env {environment}`"
                )));
            };
            LogScope::StartedBy(deployment)
        }
    };
    let cancel = CancellationToken::new();
    if args.follow {
        crate::signals::stop_on_signals(cancel.clone())?;
    }
    let request = LogRequest {
        scope,
        since,
        container: args.container,
        secrets: wiring::held_secrets(),
    };
    let follow = args.follow.then_some(FOLLOW_EVERY);
    let json = reporter.format() == crate::output::OutputFormat::Json;
    let mut print = |line: &TaskLogLine| print_line(line, json);
    follow_logs(logs.as_ref(), &target, request, follow, &cancel, &mut print).await?;
    Ok(0)
}

/// One line on stdout as it comes (a JSON object per line with `--output json`).
fn print_line(line: &TaskLogLine, json: bool) {
    let mut out = std::io::stdout().lock();
    let text = if json {
        serde_json::to_string(line).unwrap_or_default()
    } else {
        line.to_string()
    };
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-02T16:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn since_takes_spans_and_times() {
        for (text, expected) in [
            ("10m", "2026-12-02T15:50:00+00:00"),
            ("2h", "2026-12-02T14:00:00+00:00"),
            ("1d", "2026-12-01T16:00:00+00:00"),
            ("30s", "2026-12-02T15:59:30+00:00"),
            ("2026-12-02T16:30:00+01:00", "2026-12-02T15:30:00+00:00"),
        ] {
            let since = parse_since(text, now()).map(|t| t.to_rfc3339());
            assert_eq!(since.as_deref(), Ok(expected), "{text}");
        }
    }

    #[test]
    fn a_bad_since_names_the_flag_the_value_and_a_fix() {
        for (text, why) in [
            ("10x", "the unit is s, m, h or d"),
            ("0m", "longer than nothing"),
            ("yesterday", "not a span"),
            ("2026-12-02", "not a span"),
            ("2027-01-01T00:00:00Z", "in the future"),
        ] {
            let message = parse_since(text, now()).err().unwrap_or_default();
            assert!(
                message.starts_with(&format!("--since {text:?}: ")),
                "{message}"
            );
            assert!(message.contains(why), "{text}: {message}");
            assert!(message.contains("help: pass a span"), "{message}");
        }
    }
}
