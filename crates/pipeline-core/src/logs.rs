//! `tugboat logs`: the log lines of a service's tasks (or of one release's), merged by
//! time, each with its task and container, secrets removed; and the follow loop that
//! keeps reading them. Pure rules and the loop live here; the platform only says which
//! tasks and streams there are and what a stream holds after a point ([`TaskLogs`]).
//!
//! ```
//! use pipeline_core::logs::TaskLogLine;
//! let line = TaskLogLine {
//!     at: chrono::DateTime::from_timestamp(1_796_227_201, 0),
//!     task_id: "1f88c3215e2a4f0e9d1c".into(),
//!     container: "web".into(),
//!     message: "listening on :8000".into(),
//! };
//! assert_eq!(line.to_string(), "2026-12-02T16:00:01Z 1f88c321 web | listening on :8000");
//! ```

use crate::diagnosis::{redact_text, LogLine, LogStream};
use crate::model::DeployTarget;
use crate::stages::StageError;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How many characters of a task id a line shows.
pub const SHORT_TASK_ID: usize = 8;
/// How often `--follow` reads again.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(2);

/// Whose tasks to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogScope {
    /// The service's running tasks.
    Running,
    /// Every task (running and stopped) one deployment started (ECS: `startedBy` its id).
    StartedBy(String),
}

/// One container of one task, and where its lines are.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LogSource {
    pub task_id: String,
    pub container: String,
    pub stream: LogStream,
}

/// What a stream held after a point: its lines, oldest first, and where to go on from
/// (ECS: the `nextForwardToken`); `None` when the stream does not exist (yet).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogPage {
    pub lines: Vec<LogLine>,
    pub next: Option<String>,
}

/// Finds a service's tasks and reads their streams. Reads only.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait TaskLogs: Send + Sync {
    /// The containers with a known log stream of the tasks in `scope`.
    async fn sources(
        &self,
        target: &DeployTarget,
        scope: &LogScope,
    ) -> Result<Vec<LogSource>, StageError>;

    /// The lines of `source` at or after `since`, or after `token` (a page's `next`);
    /// a stream that does not exist is an empty page, not an error.
    async fn read(
        &self,
        source: &LogSource,
        since: DateTime<Utc>,
        token: Option<String>,
    ) -> Result<LogPage, StageError>;
}

/// One line of one container of one task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLogLine {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
    pub task_id: String,
    pub container: String,
    pub message: String,
}

impl fmt::Display for TaskLogLine {
    /// `2026-12-02T16:00:01Z 1f88c321 web | message`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some(at) => write!(f, "{}", at.format("%Y-%m-%dT%H:%M:%SZ"))?,
            None => f.write_str("-")?,
        }
        write!(
            f,
            " {} {} | {}",
            short_task_id(&self.task_id),
            self.container,
            self.message
        )
    }
}

/// The first [`SHORT_TASK_ID`] characters of a task id.
pub fn short_task_id(task_id: &str) -> &str {
    match task_id.char_indices().nth(SHORT_TASK_ID) {
        Some((end, _)) => &task_id[..end],
        None => task_id,
    }
}

/// Lines of several streams in time order; lines without a time keep their place
/// after the timed ones read with them (stable).
pub fn merge_by_time(mut lines: Vec<TaskLogLine>) -> Vec<TaskLogLine> {
    lines.sort_by_key(|line| line.at.map_or(i64::MAX, |t| t.timestamp_millis()));
    lines
}

/// What to read: whose tasks, from when, which container, which secrets to remove.
#[derive(Clone, Debug)]
pub struct LogRequest {
    pub scope: LogScope,
    pub since: DateTime<Utc>,
    pub container: Option<String>,
    pub secrets: Vec<String>,
}

/// Reads a scope's lines again and again, each stream from where the last read ended,
/// finding tasks that started since.
pub struct LogTail<'a> {
    logs: &'a dyn TaskLogs,
    target: &'a DeployTarget,
    request: LogRequest,
    tokens: HashMap<LogSource, Option<String>>,
}

impl<'a> LogTail<'a> {
    pub fn new(logs: &'a dyn TaskLogs, target: &'a DeployTarget, request: LogRequest) -> Self {
        Self {
            logs,
            target,
            request,
            tokens: HashMap::new(),
        }
    }

    /// The lines that are new since the last call (all since `since` the first time),
    /// merged by time and redacted. Finding the tasks failing is an error; one stream
    /// that cannot be read is skipped this time and read again next time.
    pub async fn next_lines(&mut self) -> Result<Vec<TaskLogLine>, StageError> {
        let mut sources = self.logs.sources(self.target, &self.request.scope).await?;
        if let Some(container) = &self.request.container {
            sources.retain(|s| &s.container == container);
        }
        let mut lines = Vec::new();
        for source in sources {
            let token = self.tokens.get(&source).cloned().flatten();
            let Ok(page) = self
                .logs
                .read(&source, self.request.since, token.clone())
                .await
            else {
                continue;
            };
            lines.extend(page.lines.into_iter().map(|line| TaskLogLine {
                at: line.at,
                task_id: source.task_id.clone(),
                container: source.container.clone(),
                message: redact_text(&line.message, &self.request.secrets),
            }));
            self.tokens.insert(source, page.next.or(token));
        }
        Ok(merge_by_time(lines))
    }
}

/// Hands every line of the request to `print`; with `follow`, reads again every
/// `follow` until `cancel`, handing over new lines as they come. Ends `Ok` when
/// cancelled: stopping to follow is how following ends.
pub async fn follow_logs(
    logs: &dyn TaskLogs,
    target: &DeployTarget,
    request: LogRequest,
    follow: Option<Duration>,
    cancel: &CancellationToken,
    print: &mut (dyn FnMut(&TaskLogLine) + Send),
) -> Result<(), StageError> {
    let mut tail = LogTail::new(logs, target, request);
    let first = tokio::select! {
        lines = tail.next_lines() => lines?,
        () = cancel.cancelled() => return Ok(()),
    };
    first.iter().for_each(&mut *print);
    let Some(every) = follow else {
        return Ok(());
    };
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = cancel.cancelled() => return Ok(()),
        }
        let lines = tokio::select! {
            lines = tail.next_lines() => lines,
            () = cancel.cancelled() => return Ok(()),
        };
        // A failed look while following is tried again at the next tick.
        if let Ok(lines) = lines {
            lines.iter().for_each(&mut *print);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(1_796_227_200 + secs, 0)
    }

    fn line(secs: Option<i64>, task: &str, message: &str) -> TaskLogLine {
        TaskLogLine {
            at: secs.and_then(at),
            task_id: task.into(),
            container: "web".into(),
            message: message.into(),
        }
    }

    fn source(task: &str, container: &str) -> LogSource {
        LogSource {
            task_id: task.into(),
            container: container.into(),
            stream: LogStream {
                group: "/ecs/cv".into(),
                stream: format!("ecs/{container}/{task}"),
                region: None,
            },
        }
    }

    fn target() -> DeployTarget {
        DeployTarget {
            app: "cv".into(),
            environment: "production".into(),
            cluster: "c".into(),
            service: "s".into(),
            region: None,
        }
    }

    #[test]
    fn lines_read_time_task_container_message() {
        assert_eq!(
            line(Some(1), "1f88c3215e2a4f0e", "up").to_string(),
            "2026-12-02T16:00:01Z 1f88c321 web | up"
        );
        assert_eq!(line(None, "abc", "x").to_string(), "- abc web | x");
        assert_eq!(short_task_id("ééééééééé"), "éééééééé");
    }

    #[test]
    fn merged_by_time_stable_untimed_last() {
        let merged = merge_by_time(vec![
            line(Some(3), "b", "b3"),
            line(None, "a", "a?"),
            line(Some(1), "a", "a1"),
            line(Some(3), "a", "a3"),
            line(Some(2), "b", "b2"),
        ]);
        let order: Vec<&str> = merged.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(order, ["a1", "b2", "b3", "a3", "a?"]);
    }

    #[tokio::test]
    async fn the_tail_reads_on_from_each_streams_token_filters_and_redacts() {
        let mut logs = MockTaskLogs::new();
        let mut calls = 0;
        logs.expect_sources().returning(move |_, scope| {
            assert_eq!(scope, &LogScope::Running);
            calls += 1;
            // A task that started between the two looks is found.
            let mut found = vec![source("t1", "web"), source("t1", "sidecar")];
            if calls > 1 {
                found.push(source("t2", "web"));
            }
            Ok(found)
        });
        logs.expect_read().returning(|source, _, token| {
            assert_ne!(source.container, "sidecar", "filtered before reading");
            let (lines, next) = match (source.task_id.as_str(), token.as_deref()) {
                ("t1", None) => (vec![(2, "password=hunter2")], "t1-a"),
                ("t1", Some("t1-a")) => (vec![(5, "t1 later")], "t1-b"),
                ("t2", None) => (vec![(4, "t2 first")], "t2-a"),
                other => panic!("unexpected read {other:?}"),
            };
            Ok(LogPage {
                lines: lines
                    .into_iter()
                    .map(|(s, m)| LogLine::new(at(s), m))
                    .collect(),
                next: Some(next.into()),
            })
        });
        let target = target();
        let mut tail = LogTail::new(
            &logs,
            &target,
            LogRequest {
                scope: LogScope::Running,
                since: at(0).unwrap_or_default(),
                container: Some("web".into()),
                secrets: vec!["hunter2".into()],
            },
        );
        let first = tail.next_lines().await.unwrap_or_default();
        let messages: Vec<&str> = first.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(messages, ["password=<redacted>"]);
        assert_eq!(first[0].task_id, "t1");
        let second = tail.next_lines().await.unwrap_or_default();
        let messages: Vec<&str> = second.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(messages, ["t2 first", "t1 later"]);
    }

    #[tokio::test]
    async fn follow_ends_ok_when_cancelled() {
        let mut logs = MockTaskLogs::new();
        logs.expect_sources().returning(|_, _| Ok(vec![]));
        let cancel = CancellationToken::new();
        cancel.cancel();
        let target = target();
        let mut printed = 0;
        let ended = follow_logs(
            &logs,
            &target,
            LogRequest {
                scope: LogScope::Running,
                since: Utc::now(),
                container: None,
                secrets: vec![],
            },
            Some(Duration::from_millis(10)),
            &cancel,
            &mut |_| printed += 1,
        )
        .await;
        assert_eq!(ended, Ok(()));
        assert_eq!(printed, 0);
    }
}
