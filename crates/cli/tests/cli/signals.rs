//! Cancellation as CI runners do it (SIGTERM, SIGINT): the `tugboat` binary against
//! moto. Once the service changed, the rollback is issued at once; the run records
//! "cancelled", gives the lock back and exits 1 within the grace period.

use crate::common::{Seeded, BUCKET, CLUSTER};
use crate::{aws_env, example, tugboat};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The revision label (`cv-matcher:N`) the production service runs.
async fn serving(seeded: &Seeded) -> String {
    let arn = seeded.task_definition(CLUSTER).await;
    arn.rsplit('/').next().unwrap_or_default().to_string()
}

async fn wait_until(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

fn send(signal: &str, pid: u32) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Deploys the image whose rollout never finishes, sends `signal` once the service is
/// on the new revision, and checks what a cancelled run must leave behind.
async fn cancelled_mid_rollout(signal: &str) {
    let seeded = Seeded::start_with_env(&[("TUGBOAT_MOTO_ROLLOUT_SECONDS", "0.5")]).await;
    assert_eq!(serving(&seeded).await, "cv-matcher:1");
    let mut command = tugboat();
    aws_env(&mut command, &seeded.endpoint);
    let child = command
        .current_dir(example())
        .args(["deploy", "--env", "production", "--image", "hang-v1.3.0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start tugboat");
    let pid = child.id().expect("a pid");

    let changed = wait_until(Duration::from_secs(30), async || {
        serving(&seeded).await != "cv-matcher:1"
    })
    .await;
    assert!(changed.is_some(), "the release never changed the service");
    send(signal, pid);
    let signalled = Instant::now();
    let restored = wait_until(Duration::from_secs(10), async || {
        serving(&seeded).await == "cv-matcher:1"
    })
    .await
    .expect("the rollback UpdateService was never issued");
    let output = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .expect("tugboat did not exit after the signal")
        .expect("wait for tugboat");
    let exited = signalled.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{signal}: rollback issued {restored:?} after the signal, exit after {exited:?}");

    assert!(
        restored < Duration::from_secs(1),
        "rollback issued {restored:?} after {signal}"
    );
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        exited < Duration::from_secs(5 + 2),
        "exit {exited:?} after {signal}"
    );
    assert!(
        stderr.contains(&format!("{signal}: cancelling")),
        "{stderr}"
    );
    let keys = seeded.record_keys().await;
    assert!(
        !keys.iter().any(|k| k.ends_with("lock.json")),
        "the lock was left: {keys:?}"
    );
    let records: Vec<&String> = keys.iter().filter(|k| k.contains("/records/")).collect();
    assert_eq!(records.len(), 1, "{keys:?}");
    let body = seeded
        .fixture
        .clients
        .s3
        .get_object()
        .bucket(BUCKET)
        .key(records[0])
        .send()
        .await
        .expect("get the record")
        .body
        .collect()
        .await
        .expect("read the record")
        .into_bytes();
    let record: serde_json::Value = serde_json::from_slice(&body).expect("record JSON");
    assert_eq!(record["outcome"], "rolled_back", "{record}");
    let reason = record["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("cancelled") && reason.contains("cv-matcher:1"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_rollout_rolls_back_at_once_and_exits_1() {
    cancelled_mid_rollout("TERM").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_mid_rollout_rolls_back_at_once_and_exits_1() {
    cancelled_mid_rollout("INT").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_the_tests_changes_nothing_and_exits_1() {
    let seeded = Seeded::start().await;
    // The example with a test command that takes long, in a folder of its own.
    let dir = crate::common::example_with_tests(r#"["sleep 30"]"#);
    let mut command = tugboat();
    aws_env(&mut command, &seeded.endpoint);
    let child = command
        .current_dir(dir.path())
        .args(["deploy", "--env", "production"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start tugboat");
    let pid = child.id().expect("a pid");
    // The test stage is running once its command is.
    let running = wait_until(Duration::from_secs(30), async || {
        std::process::Command::new("pgrep")
            // Anchored: another test's `sleep 300` (running alongside) is not this one.
            .args(["-f", "sleep 30$"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
    .await;
    assert!(running.is_some(), "the test command never started");
    send("TERM", pid);
    let signalled = Instant::now();
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("tugboat did not exit after SIGTERM")
        .expect("wait for tugboat");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "{:?}",
        signalled.elapsed()
    );
    assert_eq!(
        serving(&seeded).await,
        "cv-matcher:1",
        "nothing was deployed"
    );
    let keys = seeded.record_keys().await;
    assert!(
        !keys.iter().any(|k| k.ends_with("lock.json")),
        "the lock was left: {keys:?}"
    );
}
