//! The real `bootstrap` executable end to end: started as Lambda starts it, against a
//! Runtime API this test serves on 127.0.0.1, with its config from a file and AWS on a
//! per-test moto (the CV Matcher example's production environment).

mod support {
    pub mod runtime_api;
}

use anyhow::{bail, Context};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::runtime_api::{FakeRuntimeApi, ReplyKind};
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tugboat_tests::aws::AwsFixture;
use tugboat_tests::cv_matcher::CvMatcher;

fn event(name: &str) -> anyhow::Result<serde_json::Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/events")
        .join(name);
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    Ok(serde_json::from_str(&text)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_answers_the_runtime_api() -> anyhow::Result<()> {
    let cv = CvMatcher::setup(AwsFixture::start().await?).await?;
    let api = FakeRuntimeApi::start().await?;
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/cv-matcher/tugboat.toml")
        .canonicalize()?;

    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bootstrap"))
        .env("AWS_LAMBDA_RUNTIME_API", api.address.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "tugboat")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/tugboat")
        .env(
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2026/11/26/[$LATEST]0123456789abcdef",
        )
        .env("TUGBOAT_CONFIG", &config)
        .env_remove("AWS_PROFILE")
        .envs(cv.aws.moto.env_for_sdk())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting bootstrap")?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let output = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text).await;
        text
    });

    let first_next = api.first_next(Duration::from_secs(30)).await;
    eprintln!(
        "cold start (this build): {:?}",
        first_next.map(|at| at.duration_since(started))
    );
    api.invoke("req-unknown", event("unknown-ec2-state-change.json")?);
    api.invoke(
        "req-malformed",
        event("malformed-ecr-push-no-repository.json")?,
    );
    let first = api.reply(Duration::from_secs(60)).await;
    let second = api.reply(Duration::from_secs(60)).await;

    child.start_kill()?;
    let _ = child.wait().await;
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr).await;
    }
    let log = output.await.unwrap_or_default();
    let context = || format!("bootstrap's stdout:\n{log}\nstderr:\n{stderr}");

    let Some(first) = first else {
        bail!("no reply to the first event; {}", context());
    };
    assert_eq!(first.request_id, "req-unknown", "{}", context());
    assert_eq!(first.kind, ReplyKind::Response, "{first:?}\n{}", context());
    assert_eq!(first.body["action"], "ignored", "{first:?}");
    assert_eq!(first.body["outcome"], "ignored", "{first:?}");

    let Some(second) = second else {
        bail!("no reply to the malformed event; {}", context());
    };
    assert_eq!(second.request_id, "req-malformed");
    assert_eq!(second.kind, ReplyKind::Error, "{second:?}\n{}", context());
    assert_eq!(second.body["errorType"], "MalformedEvent", "{second:?}");
    let message = second.body["errorMessage"].as_str().unwrap_or_default();
    assert!(
        message.contains("`detail.repository-name`"),
        "the error does not name the field: {message}"
    );
    // One plain line per event and result, and the config was loaded once.
    assert!(log.contains("config loaded"), "{}", context());
    assert_eq!(log.matches("config loaded").count(), 1, "{}", context());
    Ok(())
}
