//! Running a child process in its own process group while streaming its output lines
//! as [`PipelineEvent::Output`] events and keeping the tail for error messages.

use pipeline_core::{Events, PipelineEvent, Stage};
use std::collections::VecDeque;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How many output lines an error message quotes.
pub(crate) const TAIL_LINES: usize = 20;

/// How long to wait for the output pipes to close after the process exited (a grandchild
/// that left the process group could hold them open forever).
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// How a streamed command ended.
#[derive(Debug)]
pub(crate) struct Finished {
    /// `None` when the time limit passed and the process group was killed.
    pub status: Option<ExitStatus>,
    /// The last [`TAIL_LINES`] lines of stdout and stderr, interleaved as they arrived.
    pub tail: Vec<String>,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|status| status.success())
    }

    pub fn tail_text(&self) -> String {
        format_tail(&self.tail)
    }
}

/// `exited with status 2`, `was killed by signal 9`.
pub(crate) fn describe_status(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => "ended without an exit status".to_string(),
    }
}

pub(crate) fn format_tail(tail: &[String]) -> String {
    if tail.is_empty() {
        return "(no output)".to_string();
    }
    let mut text = format!("last {} lines of output:", tail.len());
    for line in tail {
        text.push_str("\n  ");
        text.push_str(line);
    }
    text
}

/// Kills the whole process group when dropped, so that a cancelled or timed-out run
/// leaves nothing behind (`sh -c 'make test'` starts grandchildren).
struct GroupGuard {
    pgid: Option<rustix::process::Pid>,
}

impl GroupGuard {
    fn kill(&self) {
        if let Some(pgid) = self.pgid {
            // ESRCH (the group is already gone) is the normal case after a clean exit.
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns `command` in a new process group with stdin closed, emits every output line
/// as an `Output` event of `stage`, and waits for it, at most `timeout`. On timeout the
/// process group is killed. Whatever the command leaves running in its group when it
/// exits is killed too.
pub(crate) async fn run_streaming(
    mut command: Command,
    stage: Stage,
    events: &Events,
    timeout: Option<Duration>,
) -> io::Result<Finished> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn()?;
    let mut guard = GroupGuard {
        pgid: child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(rustix::process::Pid::from_raw),
    };

    let (sender, mut lines) = mpsc::channel::<String>(256);
    let mut readers = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        readers.push(tokio::spawn(forward_lines(stdout, sender.clone())));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.push(tokio::spawn(forward_lines(stderr, sender.clone())));
    }
    drop(sender);

    let mut tail = Tail::new(TAIL_LINES);
    let mut emit = |line: String| {
        tail.push(line.clone());
        events.emit(PipelineEvent::Output { stage, line });
    };

    let deadline = timeout.map(|timeout| Instant::now() + timeout);
    let status = loop {
        tokio::select! {
            Some(line) = lines.recv() => emit(line),
            status = child.wait() => break Some(status?),
            () = sleep_until(deadline) => {
                guard.kill();
                // Reap the killed process; its status says nothing useful.
                let _ = child.wait().await;
                break None;
            }
        }
    };
    // Anything the command left running in its group goes too; then the pipes close.
    // Once the group is empty its id may be reused: never signal it again.
    guard.kill();
    guard.pgid = None;
    let drain_until = Instant::now() + DRAIN_GRACE;
    loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some(line) => emit(line),
                None => break,
            },
            () = tokio::time::sleep_until(drain_until) => {
                for reader in &readers {
                    reader.abort();
                }
                break;
            }
        }
    }
    Ok(Finished {
        status,
        tail: tail.into_vec(),
    })
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn forward_lines(stream: impl AsyncRead + Unpin, sender: mpsc::Sender<String>) {
    let mut reader = BufReader::new(stream);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buffer);
                let line = line.trim_end_matches(['\n', '\r']).to_string();
                if sender.send(line).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The last `capacity` lines.
#[derive(Debug)]
pub(crate) struct Tail {
    capacity: usize,
    lines: VecDeque<String>,
}

impl Tail {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            lines: VecDeque::with_capacity(capacity),
        }
    }

    pub fn push(&mut self, line: String) {
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    pub fn into_vec(self) -> Vec<String> {
        self.lines.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        let mut tail = Tail::new(3);
        for n in 0..10 {
            tail.push(n.to_string());
        }
        assert_eq!(tail.into_vec(), vec!["7", "8", "9"]);
    }

    #[test]
    fn tail_text_is_indented() {
        assert_eq!(
            format_tail(&["a".to_string(), "b".to_string()]),
            "last 2 lines of output:\n  a\n  b"
        );
        assert_eq!(format_tail(&[]), "(no output)");
    }
}
