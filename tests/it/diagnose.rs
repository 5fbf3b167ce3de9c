//! Why a release failed and one-off tasks, through the real SDK against the emulator:
//! [`TaskDiagnoser`] on a crash-looping release's stopped tasks and their awslogs lines,
//! and [`TaskRunner`] running commands that exit 0, exit 3, hang, or are replayed with
//! their client token (see `support/moto/README.md`, "Tasks").

use anyhow::Context;
use aws_adapters::{OneOffTask, TaskDiagnoser, TaskRunner};
use aws_sdk_ecs::types::{
    AwsVpcConfiguration, ContainerDefinition, DesiredStatus, LaunchType, LogConfiguration,
    LogDriver, NetworkConfiguration,
};
use pipeline_core::diagnosis::REDACTED;
use pipeline_core::{
    CancellationToken, FailureDiagnosis, LogLine, OneOffTaskRun, Outcome, StageError,
    StageErrorKind,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tugboat_tests::aws::{AwsFixture, REGION};
use tugboat_tests::cv_matcher::{self as cv, CvMatcher};

/// Seeds what every crash-looping task stopped from now on logs (`/tugboat-moto/crash-logs`).
async fn seed_crash_lines(aws: &AwsFixture, lines: &[&str]) -> anyhow::Result<()> {
    aws.moto
        .post_json(
            "/tugboat-moto/crash-logs",
            &serde_json::json!({ "lines": lines, "exitCode": 1 }),
        )
        .await
        .map(drop)
}

/// Deploys a crash-looping image of CV Matcher (the circuit breaker rolls it back) and
/// returns the id of the deployment that failed.
async fn failed_release(cv: &CvMatcher) -> anyhow::Result<String> {
    // A release pins `repository@sha256:…`: the marker is in the repository's name.
    let repository = "cv_matcher-crashloop";
    let mut project = cv.project.clone();
    project.config.image.repository = repository.to_string();
    cv.put_image(repository, "crashloop-1").await?;
    let run = cv.deploy(&project, "crashloop-1", &cv::sha('c')).await;
    assert_eq!(
        run.report.outcome,
        Outcome::FailedRestored,
        "{}\nmoto: {}",
        run.report.message,
        cv.aws.moto.log_tail()
    );
    run.record()?
        .deployment_id
        .clone()
        .context("the failed release's record has no deployment id")
}

fn diagnoser(aws: &AwsFixture) -> TaskDiagnoser {
    TaskDiagnoser::new(aws.clients.ecs.clone(), aws.clients.logs.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_release_is_diagnosed_with_reason_exit_code_and_its_lines(
) -> anyhow::Result<()> {
    let cv = CvMatcher::setup(AwsFixture::start().await?).await?;
    let last_line = "fatal: relation \"candidates\" does not exist";
    seed_crash_lines(
        &cv.aws,
        &["cv-matcher: connecting to the database", last_line],
    )
    .await?;
    let deployment = failed_release(&cv).await?;

    let started = Instant::now();
    let diagnosis = diagnoser(&cv.aws)
        .diagnose(&cv.target.cluster, &deployment)
        .await?;
    let took = started.elapsed();
    eprintln!("diagnosis in {took:?}:\n{diagnosis}");

    assert_eq!(diagnosis.started_by, deployment);
    // Desired 2: the circuit breaker's threshold is its minimum, 3 failed tasks.
    assert_eq!(diagnosis.stopped_tasks, 3, "{diagnosis}");
    assert_eq!(diagnosis.tasks.len(), 3, "{diagnosis}");
    assert!(diagnosis.notes.is_empty(), "{:?}", diagnosis.notes);
    let stopped_at: Vec<_> = diagnosis.tasks.iter().map(|t| t.stopped_at).collect();
    assert!(
        stopped_at.iter().all(Option::is_some) && stopped_at.windows(2).all(|w| w[0] > w[1]),
        "not newest stopped first: {stopped_at:?}"
    );
    for task in &diagnosis.tasks {
        assert_eq!(
            task.stopped_reason.as_deref(),
            Some("Essential container in task exited")
        );
        assert_eq!(task.stop_code.as_deref(), Some("EssentialContainerExited"));
        assert_eq!(task.revision.as_deref(), Some("cv-matcher:2"));
        let [container] = task.containers.as_slice() else {
            panic!("one container expected: {:?}", task.containers);
        };
        assert_eq!(container.name, cv::CONTAINER);
        assert_eq!(container.exit_code, Some(1));
        let stream = container.log_stream.clone().unwrap_or_default();
        assert_eq!(stream.group, "/ecs/cv-matcher");
        assert_eq!(stream.stream, format!("ecs/cv-matcher/{}", task.task_id));
        let messages: Vec<&str> = container
            .log_lines
            .iter()
            .map(|l| l.message.as_str())
            .collect();
        assert_eq!(
            messages,
            ["cv-matcher: connecting to the database", last_line]
        );
    }
    let text = diagnosis.to_string();
    assert!(
        text.contains("Essential container in task exited"),
        "{text}"
    );
    assert!(text.contains("exit code 1"), "{text}");
    assert!(text.contains(last_line), "{text}");
    assert!(diagnosis.summary().contains(last_line));

    // Only that deployment's tasks: the rollback that followed it has none stopped.
    let service = cv.service().await?;
    let rollback = service
        .deployments()
        .iter()
        .find(|d| d.status() == Some("PRIMARY"))
        .and_then(|d| d.id())
        .context("no PRIMARY deployment")?;
    assert_ne!(rollback, deployment);
    let none = diagnoser(&cv.aws)
        .diagnose(&cv.target.cluster, rollback)
        .await?;
    assert_eq!(none.stopped_tasks, 0, "{none}");
    assert!(none.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_release_says_why_without_a_secret_and_soon() -> anyhow::Result<()> {
    let cv = CvMatcher::setup(AwsFixture::start().await?).await?;
    let token = "xoxb-9911-held-slack-token";
    let password = "pg-crash-pass-77";
    let url_line = format!("connecting to postgres://cv:{password}@db:5432/cv");
    let token_line = format!("notifying with {token}");
    let last_line = "fatal: relation \"candidates\" does not exist";
    seed_crash_lines(&cv.aws, &[&url_line, &token_line, last_line]).await?;
    let repository = "cv_matcher-crashloop";
    let mut project = cv.project.clone();
    project.config.image.repository = repository.to_string();
    cv.put_image(repository, "crashloop-2").await?;
    let (orchestrator, recorder) = cv.orchestrator_for(&project, cv.stages());
    let orchestrator = orchestrator.with_redaction([token.to_string()]);
    let run = CvMatcher::deploy_using(
        orchestrator,
        recorder,
        "crashloop-2",
        &cv::sha('f'),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(
        run.report.outcome,
        Outcome::FailedRestored,
        "{}",
        run.report.message
    );
    eprintln!("failure output:\n{}", run.report.message);

    // The rollout's failure (its last look before the diagnosis), then the diagnosis:
    // the time between the two.
    let (told_at, whole) = run
        .events
        .iter()
        .find_map(|(at, e)| match e {
            pipeline_core::PipelineEvent::Warning { message }
                if message.starts_with("why the tasks stopped") =>
            {
                Some((*at, message.clone()))
            }
            _ => None,
        })
        .context("no diagnosis in the events")?;
    let failed_at = run
        .events
        .iter()
        .filter(|(at, e)| {
            *at <= told_at && matches!(e, pipeline_core::PipelineEvent::RolloutProgress { .. })
        })
        .map(|(at, _)| *at)
        .next_back()
        .context("no rollout progress before the diagnosis")?;
    let took = told_at.duration_since(failed_at).unwrap_or_default();
    eprintln!("from the last rollout look to the diagnosis printed: {took:?}\n{whole}");
    assert!(took < Duration::from_secs(5), "{took:?}");

    let record = run.record()?;
    let stored = serde_json::to_string(&cv.stored_record(&record.release_id.0).await?)?;
    let reason = record.reason.clone().unwrap_or_default();
    for (form, text) in [
        ("message", run.report.message.clone()),
        ("reason", reason.clone()),
        ("stored record", stored.clone()),
        ("diagnosis", whole.clone()),
    ] {
        assert!(!text.contains(token), "{form}: {text}");
        assert!(!text.contains(password), "{form}: {text}");
    }
    for (form, text) in [("message", &run.report.message), ("stored record", &stored)] {
        assert!(
            text.contains("Essential container in task exited"),
            "{form}: {text}"
        );
        assert!(text.contains("exit code 1"), "{form}: {text}");
        assert!(text.contains("candidates"), "{form}: {text}");
    }
    assert!(
        whole.contains("postgres://cv:<redacted>@db:5432/cv"),
        "{whole}"
    );
    assert!(whole.contains("notifying with <redacted>"), "{whole}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_value_in_a_logged_line_is_redacted() -> anyhow::Result<()> {
    let cv = CvMatcher::setup(AwsFixture::start().await?).await?;
    let secret = "pg-s3cr3t-password-0042".to_string();
    let line = format!("could not connect to postgres://cv:{secret}@db:5432/cv");
    seed_crash_lines(&cv.aws, &[&line]).await?;
    let deployment = failed_release(&cv).await?;

    let raw = diagnoser(&cv.aws)
        .with_tasks(1)
        .diagnose(&cv.target.cluster, &deployment)
        .await?;
    assert_eq!(raw.tasks.len(), 1);
    // The emulator did log it: without redaction it shows.
    assert!(raw.to_string().contains(&secret), "{raw}");

    let redacted = raw.redacted(std::slice::from_ref(&secret));
    let json = serde_json::to_string(&redacted)?;
    for (form, text) in [
        ("human", redacted.to_string()),
        ("slack", redacted.summary()),
        ("json", json),
    ] {
        assert!(!text.contains(&secret), "{form}: {text}");
        assert!(
            text.contains(&format!("postgres://cv:{REDACTED}@db:5432/cv")),
            "{form}: {text}"
        );
    }
    Ok(())
}

/// A cluster with an awsvpc Fargate service (`web`) and a `jobs` task definition whose
/// container `app` logs to `/ecs/jobs` with the stream prefix `ecs`.
struct Jobs {
    aws: AwsFixture,
    cluster: String,
    revision: String,
    subnets: Vec<String>,
}

const CONTAINER: &str = "app";

impl Jobs {
    /// The task as ECS describes it.
    async fn described(&self, task_arn: &str) -> anyhow::Result<aws_sdk_ecs::types::Task> {
        let described = self
            .aws
            .clients
            .ecs
            .describe_tasks()
            .cluster(&self.cluster)
            .tasks(task_arn)
            .send()
            .await?;
        described
            .tasks()
            .first()
            .cloned()
            .context("task not described")
    }

    async fn setup() -> anyhow::Result<Self> {
        let aws = AwsFixture::start().await?;
        let network = aws.moto.default_network().await?;
        let cluster = "jobs-cluster".to_string();
        let ecs = &aws.clients.ecs;
        ecs.create_cluster()
            .cluster_name(&cluster)
            .send()
            .await
            .context("CreateCluster")?;
        let logs = LogConfiguration::builder()
            .log_driver(LogDriver::Awslogs)
            .options("awslogs-group", "/ecs/jobs")
            .options("awslogs-region", REGION)
            .options("awslogs-stream-prefix", "ecs")
            .build()?;
        let revision = ecs
            .register_task_definition()
            .family("jobs")
            .network_mode(aws_sdk_ecs::types::NetworkMode::Awsvpc)
            .requires_compatibilities(aws_sdk_ecs::types::Compatibility::Fargate)
            .cpu("256")
            .memory("512")
            .container_definitions(
                ContainerDefinition::builder()
                    .name(CONTAINER)
                    .image("123456789012.dkr.ecr.us-east-1.amazonaws.com/jobs:v1")
                    .memory(512)
                    .essential(true)
                    .log_configuration(logs)
                    .build(),
            )
            .send()
            .await
            .context("RegisterTaskDefinition")?
            .task_definition()
            .and_then(|t| t.task_definition_arn())
            .map(str::to_string)
            .context("no task definition ARN")?;
        let subnets: Vec<String> = network.subnet_ids.iter().take(1).cloned().collect();
        ecs.create_service()
            .cluster(&cluster)
            .service_name("web")
            .task_definition(&revision)
            .desired_count(1)
            .launch_type(LaunchType::Fargate)
            .network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(
                        AwsVpcConfiguration::builder()
                            .set_subnets(Some(subnets.clone()))
                            .set_security_groups(Some(network.security_group_ids.clone()))
                            .build()?,
                    )
                    .build(),
            )
            .send()
            .await
            .context("CreateService")?;
        Ok(Self {
            aws,
            cluster,
            revision,
            subnets,
        })
    }

    fn task(&self, release: &str, script: &str, timeout: Duration) -> OneOffTask {
        OneOffTask {
            cluster: self.cluster.clone(),
            service: "web".into(),
            task_definition: self.revision.clone(),
            container: CONTAINER.into(),
            command: vec!["sh".into(), "-c".into(), script.into()],
            started_by: OneOffTask::started_by_for(release),
            client_token: format!("{release}-before-deploy-0"),
            timeout,
            poll_interval: Duration::from_millis(200),
        }
    }

    fn runner(&self) -> TaskRunner {
        TaskRunner::new(self.aws.clients.ecs.clone(), self.aws.clients.logs.clone())
    }

    /// Runs `task`, and says when each line was handed over.
    async fn run(
        &self,
        task: &OneOffTask,
        cancel: &CancellationToken,
    ) -> (Result<OneOffTaskRun, StageError>, Vec<(Instant, String)>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let mut on_line = move |line: &LogLine| {
            sink.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((Instant::now(), line.message.clone()));
        };
        let result = self.runner().run(task, &mut on_line, cancel).await;
        let lines = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (result, lines)
    }

    async fn stopped_tasks(&self, started_by: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .aws
            .clients
            .ecs
            .list_tasks()
            .cluster(&self.cluster)
            .desired_status(DesiredStatus::Stopped)
            .started_by(started_by)
            .send()
            .await?
            .task_arns()
            .to_vec())
    }
}

fn messages(lines: &[(Instant, String)]) -> Vec<&str> {
    lines.iter().map(|(_, m)| m.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_off_task_that_exits_0_streams_its_lines_as_they_come() -> anyhow::Result<()> {
    let jobs = Jobs::setup().await?;
    let task = jobs.task(
        "r-ok",
        "echo migrating; sleep 1.5; echo done",
        Duration::from_secs(30),
    );
    let (result, lines) = jobs.run(&task, &CancellationToken::new()).await;
    let ended = Instant::now();
    let run = result?;

    assert_eq!(run.exit_code, Some(0), "{run:?}");
    assert!(run.succeeded());
    assert!(!run.timed_out);
    assert_eq!(run.stop_code.as_deref(), Some("EssentialContainerExited"));
    assert!(run.millis >= 1500, "ran {} ms", run.millis);
    assert_eq!(messages(&lines), ["migrating", "done"]);
    // Live: the first line was handed over while the task still ran, not at the end.
    let first = lines.first().map(|(at, _)| *at).context("no lines")?;
    assert!(
        ended.duration_since(first) >= Duration::from_millis(1000),
        "the first line came {:?} before the end",
        ended.duration_since(first)
    );
    let tail: Vec<&str> = run.log_tail.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(tail, ["migrating", "done"]);

    // As ECS ran it: startedBy, the override, and the service's launch type and subnet.
    let ecs_task = jobs.described(&run.task_arn).await?;
    assert_eq!(ecs_task.started_by(), Some("tugboat/r-ok"));
    assert_eq!(ecs_task.launch_type(), Some(&LaunchType::Fargate));
    let command = ecs_task
        .overrides()
        .and_then(|o| o.container_overrides().first())
        .map(|o| o.command().to_vec())
        .unwrap_or_default();
    assert_eq!(command, task.command);
    let subnet = ecs_task
        .attachments()
        .iter()
        .flat_map(|a| a.details())
        .find(|d| d.name() == Some("subnetId"))
        .and_then(|d| d.value());
    assert_eq!(subnet, jobs.subnets.first().map(String::as_str));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_off_tasks_exit_code_comes_back_and_it_can_be_diagnosed() -> anyhow::Result<()> {
    let jobs = Jobs::setup().await?;
    let task = jobs.task(
        "r-three",
        "echo applying 0042_add_index; sleep 0.5; echo 'error: lock timeout'; exit 3",
        Duration::from_secs(30),
    );
    let (result, lines) = jobs.run(&task, &CancellationToken::new()).await;
    let run = result?;
    assert_eq!(run.exit_code, Some(3), "{run:?}");
    assert!(!run.succeeded());
    assert!(!run.timed_out);
    assert_eq!(
        messages(&lines),
        ["applying 0042_add_index", "error: lock timeout"]
    );

    // The same diagnosis as a release's: by its startedBy.
    let diagnosis: FailureDiagnosis = diagnoser(&jobs.aws)
        .diagnose(&jobs.cluster, "tugboat/r-three")
        .await?;
    assert_eq!(diagnosis.stopped_tasks, 1);
    let container = diagnosis
        .tasks
        .first()
        .and_then(|t| t.containers.first())
        .context("no container")?;
    assert_eq!(container.exit_code, Some(3));
    assert_eq!(
        container.log_lines.last().map(|l| l.message.as_str()),
        Some("error: lock timeout")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_off_task_that_hangs_is_stopped_after_its_timeout() -> anyhow::Result<()> {
    let jobs = Jobs::setup().await?;
    let timeout = Duration::from_millis(1500);
    let task = jobs.task("r-hang", "echo waiting for the lock; sleep 3600", timeout);
    let started = Instant::now();
    let (result, lines) = jobs.run(&task, &CancellationToken::new()).await;
    let took = started.elapsed();
    let run = result?;

    assert!(run.timed_out, "{run:?}");
    assert!(!run.succeeded());
    assert_eq!(run.exit_code, Some(137), "killed: {run:?}");
    assert_eq!(run.stop_code.as_deref(), Some("UserInitiated"));
    assert!(
        run.stopped_reason
            .as_deref()
            .is_some_and(|r| r.contains("1 s timeout")),
        "{:?}",
        run.stopped_reason
    );
    assert!(
        took >= timeout && took < timeout + Duration::from_secs(3),
        "returned after {took:?}"
    );
    assert_eq!(messages(&lines), ["waiting for the lock"]);
    assert_eq!(jobs.stopped_tasks("tugboat/r-hang").await?, [run.task_arn]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_stops_its_one_off_task() -> anyhow::Result<()> {
    let jobs = Jobs::setup().await?;
    let task = jobs.task("r-cancel", "sleep infinity", Duration::from_secs(60));
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(600)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let (result, _) = jobs.run(&task, &cancel).await;
    let run = result?;
    assert!(run.cancelled, "{run:?}");
    assert!(!run.succeeded());
    assert!(started.elapsed() < Duration::from_secs(5));
    let ecs_task = jobs.described(&run.task_arn).await?;
    assert_eq!(ecs_task.last_status(), Some("STOPPED"));
    assert_eq!(
        ecs_task.stop_code().map(|c| c.as_str()),
        Some("UserInitiated")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_client_token_gets_the_same_task() -> anyhow::Result<()> {
    let jobs = Jobs::setup().await?;
    let task = jobs.task("r-replay", "echo once; exit 0", Duration::from_secs(30));
    let (first, _) = jobs.run(&task, &CancellationToken::new()).await;
    let first = first?;
    // A rerun of the same step (say, after the answer to RunTask was lost).
    let (second, lines) = jobs.run(&task, &CancellationToken::new()).await;
    let second = second?;
    assert_eq!(second.task_arn, first.task_arn);
    assert_eq!(second.exit_code, Some(0));
    assert_eq!(messages(&lines), ["once"], "its lines are read again");
    assert_eq!(
        jobs.stopped_tasks("tugboat/r-replay").await?,
        std::slice::from_ref(&first.task_arn),
        "one task only"
    );

    // The same token for another command is ECS's ConflictException, not a second task.
    let mut other = task.clone();
    other.command = vec!["sh".into(), "-c".into(), "exit 1".into()];
    let (conflict, _) = jobs.run(&other, &CancellationToken::new()).await;
    let err = conflict.err().context("a conflicting token was accepted")?;
    assert_eq!(err.kind, StageErrorKind::Failed);
    assert!(err.message.contains("ConflictException"), "{err}");
    assert_eq!(jobs.stopped_tasks("tugboat/r-replay").await?.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_off_task_is_refused_before_it_runs() -> anyhow::Result<()> {
    let jobs = Jobs::setup().await?;
    // A container the task definition does not have: bad input, nothing started.
    let mut unknown = jobs.task("r-bad", "exit 0", Duration::from_secs(30));
    unknown.container = "migrate".into();
    let err = jobs
        .run(&unknown, &CancellationToken::new())
        .await
        .0
        .err()
        .context("an unknown container was accepted")?;
    assert_eq!(err.kind, StageErrorKind::BadInput);
    assert!(err.message.contains("it has: app"), "{err}");

    // A deregistered revision: ECS refuses to run it.
    jobs.aws
        .clients
        .ecs
        .deregister_task_definition()
        .task_definition(&jobs.revision)
        .send()
        .await?;
    let inactive = jobs.task("r-bad", "exit 0", Duration::from_secs(30));
    let err = jobs
        .run(&inactive, &CancellationToken::new())
        .await
        .0
        .err()
        .context("an INACTIVE revision was run")?;
    assert!(err.message.contains("inactive"), "{err}");
    assert!(jobs.stopped_tasks("tugboat/r-bad").await?.is_empty());
    let running = jobs
        .aws
        .clients
        .ecs
        .list_tasks()
        .cluster(&jobs.cluster)
        .send()
        .await?;
    assert!(running.task_arns().is_empty(), "{running:?}");
    Ok(())
}
