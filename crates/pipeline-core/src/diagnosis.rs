//! Why a release failed, in the platform's own words: the stopped tasks of the release's
//! deployment, their containers' exit codes and reasons, and the last lines each failed
//! container logged. Also what a one-off task (a migration) ended with.
//!
//! These are neutral: the ECS translation fills them (`aws-adapters` `ecs/diagnose.rs`,
//! `ecs/run_task.rs`), the local target from the engine (`local-target` `diagnose.rs`). The rules live here: which
//! container failed ([`StoppedContainer::failed`]), that secret values never show
//! ([`FailureDiagnosis::redact`]), and how a diagnosis reads for a person
//! ([`FailureDiagnosis`]'s `Display`) and in a chat message ([`FailureDiagnosis::summary`]).
//!
//! ```
//! use pipeline_core::diagnosis::{FailureDiagnosis, StoppedContainer, StoppedTask, LogLine};
//! let mut diagnosis = FailureDiagnosis {
//!     started_by: "ecs-svc/123".into(),
//!     stopped_tasks: 1,
//!     tasks: vec![StoppedTask {
//!         task_id: "1f88c321".into(),
//!         stopped_reason: Some("Essential container in task exited".into()),
//!         containers: vec![StoppedContainer {
//!             name: "web".into(),
//!             exit_code: Some(1),
//!             log_lines: vec![LogLine::new(None, "connecting to postgres://u:hunter2@db")],
//!             ..Default::default()
//!         }],
//!         ..Default::default()
//!     }],
//!     notes: vec![],
//! };
//! diagnosis.redact(&["hunter2".to_string()]);
//! assert!(!diagnosis.to_string().contains("hunter2"));
//! assert!(diagnosis.to_string().contains("exit code 1"));
//! ```

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// How many stopped tasks a diagnosis shows (the newest).
pub const DIAGNOSED_TASKS: usize = 3;
/// How many of a failed container's last log lines a diagnosis shows by default.
pub const DEFAULT_LOG_LINES: usize = 20;
/// What a secret value is replaced with.
pub const REDACTED: &str = "<redacted>";
/// The environment variables whose values a front end holds as credentials: it passes
/// their values to [`crate::Orchestrator::with_redaction`] (and `tugboat logs` redacts
/// them), so that they are never repeated from the platform's words.
pub const HELD_SECRET_VARIABLES: [&str; 3] = [
    "SLACK_BOT_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];
/// How many log lines of a container the short form ([`FailureDiagnosis::summary`]) keeps.
const SUMMARY_LOG_LINES: usize = 5;
/// The longest short form, in characters (a Slack block holds 3000).
const SUMMARY_MAX_CHARS: usize = 1500;

/// The stopped tasks of one deployment (ECS: `startedBy` the deployment id), newest
/// stopped first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureDiagnosis {
    /// Whose tasks these are: the deployment id (`ecs-svc/…`) or another started-by string.
    pub started_by: String,
    /// How many stopped tasks there were in all; `tasks` holds the newest of them.
    pub stopped_tasks: usize,
    pub tasks: Vec<StoppedTask>,
    /// What could not be found out (a log stream that does not exist, a call refused):
    /// the diagnosis is partial, not wrong.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// One stopped task.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoppedTask {
    /// The short id people see (the last part of the ARN).
    pub task_id: String,
    pub task_arn: String,
    /// The revision it ran (`family:revision`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// ECS: "Essential container in task exited", "Task failed container health checks", …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
    /// ECS: `EssentialContainerExited`, `TaskFailedToStart`, `UserInitiated`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<String>,
    pub containers: Vec<StoppedContainer>,
}

/// One container of a stopped task.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoppedContainer {
    pub name: String,
    /// `None`: it never ran, or the platform does not know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// ECS: `CannotPullContainerError: …`, `OutOfMemoryError: …`; usually none for a plain exit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<String>,
    /// Where its logs are, when its definition says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_stream: Option<LogStream>,
    /// Its last lines, oldest first (for a [failed](Self::failed) container only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_lines: Vec<LogLine>,
}

/// A log stream (CloudWatch Logs: group and stream in a region).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LogStream {
    pub group: String,
    pub stream: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// One line a container logged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
    pub message: String,
}

impl LogLine {
    pub fn new(at: Option<DateTime<Utc>>, message: impl Into<String>) -> Self {
        Self {
            at,
            message: message.into(),
        }
    }
}

/// What a one-off task (a `before_deploy` migration, `tugboat run`) ended with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OneOffTaskRun {
    pub task_arn: String,
    /// The container's exit code; `None` when it never ran (or ECS does not say).
    pub exit_code: Option<i32>,
    /// From the call that started it to the task stopped.
    pub millis: u64,
    /// Stopped by tugboat because its time limit passed.
    pub timed_out: bool,
    /// Stopped by tugboat because the run was cancelled (a signal); `exit_code` is then
    /// unknown, the task was not waited for.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<String>,
    /// Its last lines (at most [`DEFAULT_LOG_LINES`]), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_tail: Vec<LogLine>,
}

/// A one-off task a release ran, as its record keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedOneOffTask {
    /// Its name (`migrate`).
    pub name: String,
    pub container: String,
    pub command: Vec<String>,
    #[serde(flatten)]
    pub run: OneOffTaskRun,
}

impl RecordedOneOffTask {
    /// One line for a failure message: how it ended, how long it took, its task.
    pub fn ending(&self) -> String {
        let run = &self.run;
        let how = if run.cancelled {
            "was stopped because the run was cancelled".to_string()
        } else if run.timed_out {
            "ran out of time and was stopped".to_string()
        } else {
            match run.exit_code {
                Some(0) => "succeeded".to_string(),
                Some(code) => format!("exited with code {code}"),
                None => format!(
                    "stopped without an exit code ({})",
                    run.stopped_reason.as_deref().unwrap_or("no reason given")
                ),
            }
        };
        let id = run.task_arn.rsplit('/').next().unwrap_or(&run.task_arn);
        format!(
            "one-off task {} {how} after {:.1} s (task {id})",
            self.name,
            run.millis as f64 / 1000.0
        )
    }
}

impl OneOffTaskRun {
    /// Exit code 0, and not stopped for its time limit.
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out && !self.cancelled
    }

    /// Removes every secret value from its lines and reasons.
    pub fn redact(&mut self, secrets: &[String]) {
        redact_option(&mut self.stopped_reason, secrets);
        for line in &mut self.log_tail {
            line.message = redact_text(&line.message, secrets);
        }
    }
}

impl StoppedContainer {
    /// A container is failed when it exited non-zero, never exited (no exit code: it did
    /// not start, or was lost), or the platform gives a reason.
    pub fn failed(&self) -> bool {
        self.exit_code != Some(0) || self.reason.is_some()
    }
}

impl FailureDiagnosis {
    /// Replaces every known secret value (the longest first, so one that contains another
    /// goes whole) in every text the diagnosis holds.
    pub fn redact(&mut self, secrets: &[String]) {
        for task in &mut self.tasks {
            redact_option(&mut task.stopped_reason, secrets);
            for container in &mut task.containers {
                redact_option(&mut container.reason, secrets);
                for line in &mut container.log_lines {
                    line.message = redact_text(&line.message, secrets);
                }
            }
        }
        for note in &mut self.notes {
            *note = redact_text(note, secrets);
        }
    }

    /// The diagnosis with secrets removed (see [`FailureDiagnosis::redact`]).
    pub fn redacted(mut self, secrets: &[String]) -> Self {
        self.redact(secrets);
        self
    }

    /// Whether there is anything to tell.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty() && self.notes.is_empty()
    }

    /// The short form for a chat message: the newest task's reason, each failed
    /// container's exit code and its last few lines, at most 1500 characters.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let Some(task) = self.tasks.first() else {
            return if self.stopped_tasks == 0 {
                format!("no stopped tasks of {}", self.started_by)
            } else {
                format!(
                    "{} stopped tasks of {}",
                    self.stopped_tasks, self.started_by
                )
            };
        };
        if self.stopped_tasks <= 1 {
            out.push_str(&format!("1 stopped task: {}", task_reason(task)));
        } else {
            out.push_str(&format!(
                "{} stopped tasks, newest: {}",
                self.stopped_tasks,
                task_reason(task)
            ));
        }
        for container in task.containers.iter().filter(|c| c.failed()) {
            out.push_str(&format!("\n{}", container_line(container)));
            let tail = container.log_lines.len().saturating_sub(SUMMARY_LOG_LINES);
            for line in &container.log_lines[tail..] {
                out.push_str(&format!("\n> {}", line.message));
            }
        }
        truncate_chars(&out, SUMMARY_MAX_CHARS)
    }
}

impl fmt::Display for FailureDiagnosis {
    /// ```text
    /// 3 stopped tasks of ecs-svc/123, the newest 3:
    /// task 1f88c321 (cv-matcher:2), stopped 2026-12-02T16:02:53Z: Essential container in task exited (EssentialContainerExited)
    ///   container cv-matcher: exit code 1
    ///     2026-12-02T16:02:53Z cv-matcher: starting
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tasks.is_empty() {
            write!(f, "no stopped tasks of {} found", self.started_by)?;
        } else {
            write!(
                f,
                "{} of {}, the newest {}:",
                count_tasks(self.stopped_tasks),
                self.started_by,
                self.tasks.len()
            )?;
        }
        for task in &self.tasks {
            write!(f, "\ntask {}", task.task_id)?;
            if let Some(revision) = &task.revision {
                write!(f, " ({revision})")?;
            }
            if let Some(at) = task.stopped_at {
                write!(f, ", stopped {}", at.format("%Y-%m-%dT%H:%M:%SZ"))?;
            }
            write!(f, ": {}", task_reason(task))?;
            for container in &task.containers {
                write!(f, "\n  {}", container_line(container))?;
                if container.failed() && container.log_lines.is_empty() {
                    if let Some(stream) = &container.log_stream {
                        write!(
                            f,
                            "\n    (no log lines in {} {})",
                            stream.group, stream.stream
                        )?;
                    }
                }
                for line in &container.log_lines {
                    match line.at {
                        Some(at) => write!(
                            f,
                            "\n    {} {}",
                            at.format("%Y-%m-%dT%H:%M:%SZ"),
                            line.message
                        )?,
                        None => write!(f, "\n    {}", line.message)?,
                    }
                }
            }
        }
        for note in &self.notes {
            write!(f, "\nnote: {note}")?;
        }
        Ok(())
    }
}

/// `text` with every non-empty secret value replaced by [`REDACTED`], the longest first,
/// and the password of every URL that carries one (`postgres://user:<redacted>@db`): an
/// app that logs its `DATABASE_URL` does not leak it through tugboat.
pub fn redact_text(text: &str, secrets: &[String]) -> String {
    let mut ordered: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    ordered.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = mask_url_passwords(text);
    for secret in ordered {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), REDACTED);
        }
    }
    out
}

/// `scheme://user:password@host…` → `scheme://user:<redacted>@host…`, for every URL.
fn mask_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| {
                c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == '"' || c == '\''
            })
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@').and_then(|userinfo_end| {
            let userinfo = &authority[..userinfo_end];
            userinfo
                .find(':')
                .map(|colon| (&userinfo[..colon], &authority[userinfo_end..]))
        }) {
            Some((user, host)) => {
                out.push_str(user);
                out.push(':');
                out.push_str(REDACTED);
                out.push_str(host);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn redact_option(text: &mut Option<String>, secrets: &[String]) {
    if let Some(value) = text {
        *value = redact_text(value, secrets);
    }
}

fn count_tasks(n: usize) -> String {
    match n {
        1 => "1 stopped task".to_string(),
        n => format!("{n} stopped tasks"),
    }
}

fn task_reason(task: &StoppedTask) -> String {
    match (&task.stopped_reason, &task.stop_code) {
        (Some(reason), Some(code)) => format!("{reason} ({code})"),
        (Some(reason), None) => reason.clone(),
        (None, Some(code)) => code.clone(),
        (None, None) => "no reason given".to_string(),
    }
}

fn container_line(container: &StoppedContainer) -> String {
    let mut line = format!("container {}: ", container.name);
    match container.exit_code {
        Some(code) => line.push_str(&format!("exit code {code}")),
        None => line.push_str("no exit code"),
    }
    if let Some(reason) = &container.reason {
        line.push_str(&format!(", {reason}"));
    }
    if let Some(health) = container
        .health_status
        .as_deref()
        .filter(|h| *h != "UNKNOWN")
    {
        line.push_str(&format!(", health {health}"));
    }
    line
}

fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(secs: i64) -> Option<DateTime<Utc>> {
        Utc.timestamp_opt(1_796_227_000 + secs, 0).single()
    }

    fn crash(task_id: &str, lines: &[&str]) -> StoppedTask {
        StoppedTask {
            task_id: task_id.into(),
            task_arn: format!("arn:aws:ecs:us-east-1:1:task/c/{task_id}"),
            revision: Some("cv-matcher:2".into()),
            stopped_reason: Some("Essential container in task exited".into()),
            stop_code: Some("EssentialContainerExited".into()),
            started_at: at(0),
            stopped_at: at(1),
            health_status: Some("UNKNOWN".into()),
            containers: vec![StoppedContainer {
                name: "cv-matcher".into(),
                exit_code: Some(1),
                reason: None,
                health_status: Some("UNKNOWN".into()),
                log_stream: Some(LogStream {
                    group: "/ecs/cv-matcher".into(),
                    stream: format!("ecs/cv-matcher/{task_id}"),
                    region: Some("us-east-1".into()),
                }),
                log_lines: lines.iter().map(|l| LogLine::new(at(1), *l)).collect(),
            }],
        }
    }

    #[test]
    fn which_containers_failed() {
        let cases = [
            (Some(0), None, false),
            (Some(1), None, true),
            (Some(137), None, true),
            (None, None, true),
            (
                None,
                Some("CannotPullContainerError: pull access denied"),
                true,
            ),
            (Some(0), Some("OutOfMemoryError"), true),
        ];
        for (exit_code, reason, failed) in cases {
            let container = StoppedContainer {
                name: "c".into(),
                exit_code,
                reason: reason.map(str::to_string),
                ..Default::default()
            };
            assert_eq!(container.failed(), failed, "{exit_code:?} {reason:?}");
        }
    }

    #[test]
    fn redaction_takes_the_longest_secret_first_and_skips_empty_ones() {
        let secrets = ["pass".to_string(), "password1".to_string(), String::new()];
        assert_eq!(
            redact_text("password1 and pass", &secrets),
            "<redacted> and <redacted>"
        );
        assert_eq!(redact_text("nothing here", &secrets), "nothing here");
    }

    #[test]
    fn passwords_in_urls_are_redacted_whatever_tugboat_knows() {
        let cases = [
            (
                "DATABASE_URL=postgres://cv:pg-pass@db:5432/cv failed",
                "DATABASE_URL=postgres://cv:<redacted>@db:5432/cv failed",
            ),
            (
                "two: redis://:tok@r:6379 and amqp://u:p%40ss@mq/vh",
                "two: redis://:<redacted>@r:6379 and amqp://u:<redacted>@mq/vh",
            ),
            (
                "no password: https://user@host/x",
                "no password: https://user@host/x",
            ),
            (
                "plain https://example.com:8443/a:b@c",
                "plain https://example.com:8443/a:b@c",
            ),
            ("not a url: a://", "not a url: a://"),
        ];
        for (text, expected) in cases {
            assert_eq!(redact_text(text, &[]), expected, "{text}");
        }
    }

    #[test]
    fn redaction_reaches_every_text() {
        let mut task = crash("t1", &["DATABASE_URL=postgres://u:s3cr3t@db failed"]);
        task.stopped_reason = Some("exited with s3cr3t".into());
        task.containers[0].reason = Some("s3cr3t in reason".into());
        let mut diagnosis = FailureDiagnosis {
            started_by: "ecs-svc/1".into(),
            stopped_tasks: 1,
            tasks: vec![task],
            notes: vec!["note with s3cr3t".into()],
        };
        diagnosis.redact(&["s3cr3t".to_string()]);
        let json = serde_json::to_string(&diagnosis).unwrap_or_default();
        assert!(!json.is_empty());
        assert!(!json.contains("s3cr3t"), "{json}");
        assert_eq!(json.matches(REDACTED).count(), 4, "{json}");

        let mut run = OneOffTaskRun {
            stopped_reason: Some("s3cr3t".into()),
            log_tail: vec![LogLine::new(None, "token s3cr3t")],
            ..Default::default()
        };
        run.redact(&["s3cr3t".to_string()]);
        assert_eq!(run.log_tail[0].message, "token <redacted>");
        assert_eq!(run.stopped_reason.as_deref(), Some(REDACTED));
    }

    #[test]
    fn human_output_names_reason_exit_code_and_lines() {
        let diagnosis = FailureDiagnosis {
            started_by: "ecs-svc/1".into(),
            stopped_tasks: 5,
            tasks: vec![crash("t2", &["starting", "boom"]), crash("t1", &[])],
            notes: vec!["GetLogEvents failed: AccessDenied".into()],
        };
        insta::assert_snapshot!(diagnosis.to_string(), @r"
        5 stopped tasks of ecs-svc/1, the newest 2:
        task t2 (cv-matcher:2), stopped 2026-12-02T15:56:41Z: Essential container in task exited (EssentialContainerExited)
          container cv-matcher: exit code 1
            2026-12-02T15:56:41Z starting
            2026-12-02T15:56:41Z boom
        task t1 (cv-matcher:2), stopped 2026-12-02T15:56:41Z: Essential container in task exited (EssentialContainerExited)
          container cv-matcher: exit code 1
            (no log lines in /ecs/cv-matcher ecs/cv-matcher/t1)
        note: GetLogEvents failed: AccessDenied
        ");
    }

    #[test]
    fn short_form_keeps_the_newest_task_and_its_last_lines() {
        let lines: Vec<String> = (1..=8).map(|i| format!("line {i}")).collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mut task = crash("t9", &refs);
        task.containers.push(StoppedContainer {
            name: "sidecar".into(),
            exit_code: Some(0),
            ..Default::default()
        });
        task.containers[0].reason = Some("OutOfMemoryError: killed".into());
        task.containers[0].health_status = Some("UNHEALTHY".into());
        let diagnosis = FailureDiagnosis {
            started_by: "ecs-svc/1".into(),
            stopped_tasks: 3,
            tasks: vec![task, crash("t8", &["older"])],
            notes: Vec::new(),
        };
        insta::assert_snapshot!(diagnosis.summary(), @r"
        3 stopped tasks, newest: Essential container in task exited (EssentialContainerExited)
        container cv-matcher: exit code 1, OutOfMemoryError: killed, health UNHEALTHY
        > line 4
        > line 5
        > line 6
        > line 7
        > line 8
        ");

        let long = crash("t1", &[&"x".repeat(4000)]);
        let diagnosis = FailureDiagnosis {
            started_by: "ecs-svc/1".into(),
            stopped_tasks: 1,
            tasks: vec![long],
            notes: Vec::new(),
        };
        let summary = diagnosis.summary();
        assert_eq!(summary.chars().count(), SUMMARY_MAX_CHARS);
        assert!(summary.ends_with('…'));
        assert!(summary.starts_with("1 stopped task: Essential container"));
    }

    #[test]
    fn nothing_found_says_so() {
        let diagnosis = FailureDiagnosis {
            started_by: "ecs-svc/1".into(),
            ..Default::default()
        };
        assert!(diagnosis.is_empty());
        assert_eq!(diagnosis.to_string(), "no stopped tasks of ecs-svc/1 found");
        assert_eq!(diagnosis.summary(), "no stopped tasks of ecs-svc/1");
    }

    #[test]
    fn one_off_success_needs_exit_zero_in_time() {
        let run = |exit_code, timed_out| OneOffTaskRun {
            exit_code,
            timed_out,
            ..Default::default()
        };
        assert!(run(Some(0), false).succeeded());
        assert!(!run(Some(3), false).succeeded());
        assert!(!run(None, false).succeeded());
        assert!(!run(Some(0), true).succeeded());
        let cancelled = OneOffTaskRun {
            exit_code: Some(0),
            cancelled: true,
            ..Default::default()
        };
        assert!(!cancelled.succeeded());
    }
}
