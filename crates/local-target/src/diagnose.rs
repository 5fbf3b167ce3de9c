//! Why a local release failed, from the engine, in the core's words
//! ([`FailureDiagnosis`]): each container's exit code, the engine's error, its health,
//! and the last lines it logged (`GET /containers/{id}/logs?tail=N`, the engine's
//! multiplexed stream), secret values of the secrets file redacted. Read when a release
//! fails, before its containers are removed.

use super::deployer::LocalDeployer;
use super::state::LocalDeployment;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pipeline_core::diagnosis::{
    FailureDiagnosis, LogLine, StoppedContainer, StoppedTask, DEFAULT_LOG_LINES,
};
use pipeline_core::{DeployTarget, DeploymentHandle, FailureDiagnostics};

impl LocalDeployer {
    /// The deployment's containers as the engine sees them now, with the last lines of
    /// each failed one; what cannot be read is a note.
    pub(super) async fn diagnosis_of(
        &self,
        deployment: &LocalDeployment,
        label: &str,
        reason: Option<&str>,
    ) -> FailureDiagnosis {
        let mut diagnosis = FailureDiagnosis {
            started_by: deployment.id.clone(),
            stopped_tasks: 1,
            ..FailureDiagnosis::default()
        };
        let mut task = StoppedTask {
            task_id: deployment.id.clone(),
            task_arn: deployment.network.clone(),
            revision: Some(label.to_string()),
            stopped_reason: reason.map(str::to_string),
            ..StoppedTask::default()
        };
        for container in &deployment.containers {
            let name = &container.docker_name;
            let info = match self.engine().inspect_container(name).await {
                Ok(Some(info)) => info,
                Ok(None) => {
                    diagnosis
                        .notes
                        .push(format!("container {name} was already removed"));
                    continue;
                }
                Err(err) => {
                    diagnosis.notes.push(format!(
                        "container {name} could not be inspected: {}",
                        err.message
                    ));
                    continue;
                }
            };
            let state = &info.state;
            let exited = matches!(state.status.as_str(), "exited" | "dead");
            let mut stopped = StoppedContainer {
                name: container.spec.name.clone(),
                exit_code: exited.then(|| i32::try_from(state.exit_code).unwrap_or(i32::MAX)),
                reason: if state.oom_killed {
                    Some("OutOfMemoryError: the container was killed for memory".to_string())
                } else {
                    Some(state.error.trim().to_string()).filter(|e| !e.is_empty())
                },
                health_status: state.health.as_ref().map(|h| h.status.to_uppercase()),
                ..StoppedContainer::default()
            };
            let unhealthy = stopped.health_status.as_deref() == Some("UNHEALTHY");
            // A running container that is not unhealthy did not fail.
            if !exited && !unhealthy && stopped.reason.is_none() {
                stopped.exit_code = Some(0);
            }
            if stopped.failed() || unhealthy {
                match self.engine().container_logs(name, DEFAULT_LOG_LINES).await {
                    Ok(bytes) => stopped.log_lines = log_lines(&bytes),
                    Err(err) => diagnosis.notes.push(format!(
                        "the logs of {name} could not be read: {}",
                        err.message
                    )),
                }
                if !exited {
                    stopped.exit_code = None;
                }
            }
            task.containers.push(stopped);
        }
        diagnosis.tasks.push(task);
        diagnosis.redacted(&self.secret_values())
    }
}

/// The orchestrator's view: the diagnosis read when the release failed (its containers
/// are gone since), else the containers as they are now.
#[async_trait]
impl FailureDiagnostics for LocalDeployer {
    async fn diagnose(
        &self,
        _target: &DeployTarget,
        deployment: &DeploymentHandle,
    ) -> FailureDiagnosis {
        if let Some(diagnosis) = self.take_diagnosis(&deployment.id) {
            return diagnosis;
        }
        let found = self.state.load().ok().and_then(|state| {
            state
                .deployments
                .iter()
                .find(|d| d.id == deployment.id)
                .cloned()
        });
        match found {
            Some(stored) => {
                self.diagnosis_of(
                    &stored,
                    &deployment.revision.label,
                    stored.reason.as_deref(),
                )
                .await
            }
            None => FailureDiagnosis {
                started_by: deployment.id.clone(),
                notes: vec![format!(
                    "no deployment {} in the local state",
                    deployment.id
                )],
                ..FailureDiagnosis::default()
            },
        }
    }
}

/// The engine's log stream as lines: frames of an 8-byte header (stream 0/1/2, three
/// zero bytes, a big-endian length) and their payload, or raw text for a TTY container;
/// each line `TIMESTAMP message` (`timestamps=1`).
pub(crate) fn log_lines(bytes: &[u8]) -> Vec<LogLine> {
    let text = String::from_utf8_lossy(&demultiplex(bytes)).into_owned();
    text.lines()
        .map(|line| {
            let line = line.trim_end_matches('\r');
            match line.split_once(' ') {
                Some((stamp, message)) => match DateTime::parse_from_rfc3339(stamp) {
                    Ok(at) => LogLine::new(Some(at.with_timezone(&Utc)), message),
                    Err(_) => LogLine::new(None, line),
                },
                None => match DateTime::parse_from_rfc3339(line) {
                    Ok(at) => LogLine::new(Some(at.with_timezone(&Utc)), ""),
                    Err(_) => LogLine::new(None, line),
                },
            }
        })
        .collect()
}

fn demultiplex(bytes: &[u8]) -> Vec<u8> {
    let framed = |rest: &[u8]| rest.len() >= 8 && rest[0] <= 2 && rest[1..4] == [0, 0, 0];
    if !framed(bytes) {
        return bytes.to_vec();
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while framed(rest) {
        let size = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        let end = (8 + size).min(rest.len());
        out.extend_from_slice(&rest[8..end]);
        rest = &rest[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(stream: u8, payload: &str) -> Vec<u8> {
        let mut out = vec![stream, 0, 0, 0];
        out.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(payload.as_bytes());
        out
    }

    #[test]
    fn the_multiplexed_stream_becomes_timed_lines() {
        let mut bytes = frame(1, "2026-12-02T16:00:01.123456789Z starting\n");
        bytes.extend(frame(2, "2026-12-02T16:00:02Z fatal: no database\n"));
        let lines = log_lines(&bytes);
        let seen: Vec<_> = lines
            .iter()
            .map(|l| (l.at.map(|t| t.timestamp_millis()), l.message.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                (Some(1_796_227_201_123), "starting"),
                (Some(1_796_227_202_000), "fatal: no database"),
            ]
        );
        // A TTY container's raw stream, and a line without a time.
        let raw = log_lines(b"plain line\r\nsecond\n");
        let messages: Vec<_> = raw.iter().map(|l| (l.at, l.message.as_str())).collect();
        assert_eq!(messages, [(None, "plain line"), (None, "second")]);
        assert!(log_lines(b"").is_empty());
    }
}
