use crate::support::{error_text, example_copy, output_lines, recorded, TempDir};
use host_adapters::ShellTestRunner;
use pipeline_core::{PipelineEvent, Stage, StageErrorKind, TestRunner, TestSpec};
use std::time::{Duration, Instant};

/// Waits until process `pid` is gone (or a zombie waiting for init to reap it).
async fn assert_process_gone(pid: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
        if stat.is_empty() || state == Some(Some('Z')) {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} survived: {stat}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spec(dir: &TempDir, commands: &[&str], artifacts: &[&str]) -> TestSpec {
    TestSpec {
        pass_env: Vec::new(),
        env: Default::default(),
        commands: commands.iter().map(|c| c.to_string()).collect(),
        workdir: dir.path().to_path_buf(),
        timeout: Duration::from_secs(60),
        artifacts: artifacts.iter().map(|a| a.to_string()).collect(),
    }
}

#[tokio::test]
async fn commands_run_in_order_in_the_workdir_streaming_both_outputs() {
    let dir = TempDir::new("runner-order");
    let spec = spec(
        &dir,
        &[
            "echo first",
            "echo 'to stderr' >&2",
            "echo second > order.txt; pwd",
            "cat order.txt; printf '<report/>' > report.xml",
        ],
        &["report.xml"],
    );
    let (events, recorder) = recorded();
    let report = ShellTestRunner::new().run_tests(&spec, &events).await;
    let report = match report {
        Ok(report) => report,
        Err(err) => panic!("the tests should pass: {}", error_text(&err)),
    };
    assert_eq!(report.artifacts.len(), 1);
    assert_eq!(report.artifacts[0].name, "report.xml");
    assert_eq!(report.artifacts[0].bytes, b"<report/>");

    let events = recorder.take();
    assert!(events.iter().all(
        |event| !matches!(event, PipelineEvent::Output { stage, .. } if *stage != Stage::Test)
    ));
    let lines = output_lines(&events);
    let workdir = dir.path().display().to_string();
    assert_eq!(
        lines,
        vec!["first", "to stderr", workdir.as_str(), "second"]
    );
}

#[tokio::test]
async fn a_failing_command_names_itself_its_status_and_its_output_tail_and_stops_the_run() {
    let dir = TempDir::new("runner-fail");
    let failing =
        "for i in $(seq 1 30); do echo line-$i; done; echo 'boom: assertion failed' >&2; exit 3";
    let spec = spec(
        &dir,
        &["true", failing, "touch should-not-exist"],
        &["coverage.xml"],
    );
    let (events, recorder) = recorded();
    let error = match ShellTestRunner::new().run_tests(&spec, &events).await {
        Ok(_) => panic!("the run should fail"),
        Err(error) => error,
    };
    assert_eq!(error.kind, StageErrorKind::Failed);
    let text = error_text(&error);
    assert!(text.contains(failing), "names the command: {text}");
    assert!(
        text.contains("exited with status 3"),
        "names the status: {text}"
    );
    assert!(
        text.contains("boom: assertion failed"),
        "quotes the output: {text}"
    );
    assert!(
        text.contains("line-30") && text.contains("line-12"),
        "the last 20 lines: {text}"
    );
    assert!(!text.contains("line-11"), "only the tail: {text}");
    assert!(
        !dir.path().join("should-not-exist").exists(),
        "nothing ran after the failure"
    );
    // Every line was streamed, not just the tail.
    assert_eq!(output_lines(&recorder.take()).len(), 31);
}

#[tokio::test]
async fn a_command_past_its_time_limit_is_killed_with_everything_it_started() {
    let dir = TempDir::new("runner-timeout");
    let mut spec = spec(
        &dir,
        &["sleep 300 & echo $! > background.pid; echo started; sleep 300"],
        &[],
    );
    spec.timeout = Duration::from_secs(1);
    let (events, _recorder) = recorded();
    let started = Instant::now();
    let error = match ShellTestRunner::new().run_tests(&spec, &events).await {
        Ok(_) => panic!("the run should time out"),
        Err(error) => error,
    };
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    let text = error_text(&error);
    assert!(text.contains("did not finish within 1s"), "{text}");
    assert!(text.contains("started"), "{text}");

    let pid = std::fs::read_to_string(dir.path().join("background.pid")).unwrap_or_default();
    let pid = pid.trim();
    assert!(
        !pid.is_empty(),
        "the background process should have started"
    );
    // The background sleep was in the command's process group.
    assert_process_gone(pid).await;
}

#[tokio::test]
async fn a_missing_artifact_after_passing_tests_is_an_error_naming_the_file() {
    let dir = TempDir::new("runner-artifact");
    let spec = spec(&dir, &["echo tests pass"], &["coverage.xml"]);
    let (events, _recorder) = recorded();
    let error = match ShellTestRunner::new().run_tests(&spec, &events).await {
        Ok(_) => panic!("a missing artifact should fail the run"),
        Err(error) => error,
    };
    assert_eq!(error.kind, StageErrorKind::Failed);
    let text = error_text(&error);
    assert!(text.contains("coverage.xml"), "{text}");
    assert!(
        text.contains(&dir.path().join("coverage.xml").display().to_string()),
        "{text}"
    );
}

#[tokio::test]
async fn a_missing_workdir_is_bad_input() {
    let spec = TestSpec {
        pass_env: Vec::new(),
        env: Default::default(),
        commands: vec!["true".into()],
        workdir: "/nonexistent/tugboat/app".into(),
        timeout: Duration::from_secs(5),
        artifacts: vec![],
    };
    let (events, _recorder) = recorded();
    let error = ShellTestRunner::new().run_tests(&spec, &events).await.err();
    assert!(
        matches!(&error, Some(e) if e.kind == StageErrorKind::BadInput && e.message.contains("/nonexistent/tugboat/app"))
    );
}

/// The example app's own CI steps, as tugboat.toml configures them.
#[tokio::test]
async fn the_example_apps_lint_and_tests_pass_and_leave_a_cobertura_report() {
    let app = example_copy();
    let spec = TestSpec {
        pass_env: Vec::new(),
        env: Default::default(),
        commands: vec!["make lint".into(), "make test".into()],
        workdir: app.path().to_path_buf(),
        timeout: Duration::from_secs(120),
        artifacts: vec!["coverage.xml".into()],
    };
    let (events, recorder) = recorded();
    let report = match ShellTestRunner::new().run_tests(&spec, &events).await {
        Ok(report) => report,
        Err(err) => panic!("the example's tests should pass: {}", error_text(&err)),
    };
    let coverage = String::from_utf8_lossy(&report.artifacts[0].bytes).to_string();
    assert!(coverage.contains("<coverage "), "{coverage}");
    assert!(coverage.contains("line-rate=\"1.0000\""), "{coverage}");
    assert!(coverage.contains("filename=\"health\""), "{coverage}");
    let lines = output_lines(&recorder.take());
    assert!(lines.iter().any(|line| line == "lint: ok"), "{lines:?}");
    assert!(
        lines.iter().any(|line| line == "test: GET /health -> ok"),
        "{lines:?}"
    );

    // A broken health page fails `make test` with the reason in the error.
    std::fs::write(app.path().join("app/www/health"), "not ok\n").unwrap_or_default();
    let error = match ShellTestRunner::new().run_tests(&spec, &events).await {
        Ok(_) => panic!("a broken health page should fail the tests"),
        Err(error) => error,
    };
    let text = error_text(&error);
    assert!(
        text.contains("`make lint`") || text.contains("`make test`"),
        "{text}"
    );
    assert!(
        text.contains("must contain exactly: ok") || text.contains("expected 'ok'"),
        "{text}"
    );
}

/// The orchestrator cancels a stage by dropping its future: nothing may keep running.
#[tokio::test]
async fn a_cancelled_run_leaves_no_process_behind() {
    let dir = TempDir::new("runner-cancel");
    let spec = spec(
        &dir,
        &["sleep 300 & echo $! > background.pid; sleep 300"],
        &[],
    );
    let (events, _recorder) = recorded();
    let runner = ShellTestRunner::new();
    let cancelled =
        tokio::time::timeout(Duration::from_secs(1), runner.run_tests(&spec, &events)).await;
    assert!(
        cancelled.is_err(),
        "the run should still be going when cancelled"
    );

    let pid = std::fs::read_to_string(dir.path().join("background.pid")).unwrap_or_default();
    let pid = pid.trim().to_string();
    assert!(
        !pid.is_empty(),
        "the background process should have started"
    );
    assert_process_gone(&pid).await;
}

#[test]
fn test_commands_see_an_allowlisted_environment_only() {
    let mut spec = TestSpec {
        pass_env: vec!["PYTEST_*".into(), "AWS_SECRET_ACCESS_KEY".into()],
        env: [("APP_ENV".to_string(), "test".to_string())].into(),
        commands: Vec::new(),
        workdir: ".".into(),
        timeout: Duration::from_secs(1),
        artifacts: Vec::new(),
    };
    let parent = [
        ("PATH", "/usr/bin"),
        ("HOME", "/home/ci"),
        ("LC_ALL", "C.UTF-8"),
        ("GITHUB_SHA", "abc"),
        ("PYTEST_ADDOPTS", "-q"),
        ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "listed but never passed"),
        ("AWS_SESSION_TOKEN", "token"),
        ("SLACK_BOT_TOKEN", "xoxb-secret"),
        ("TUGBOAT_CONFIG", "tugboat.toml"),
        ("DATABASE_URL", "postgres://secret"),
        ("APP_ENV", "production"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let mut names: Vec<String> = host_adapters::test_environment(&spec, parent.clone().into_iter())
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "APP_ENV=test",
            "GITHUB_SHA=abc",
            "HOME=/home/ci",
            "LC_ALL=C.UTF-8",
            "PATH=/usr/bin",
            "PYTEST_ADDOPTS=-q"
        ]
    );
    spec.pass_env.clear();
    let names: Vec<String> = host_adapters::test_environment(&spec, parent.into_iter())
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(!names.contains(&"PYTEST_ADDOPTS".to_string()), "{names:?}");
}
