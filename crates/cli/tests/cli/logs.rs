//! `tugboat logs`: the service's task lines from CloudWatch Logs (moto, with the service's
//! tasks running: `TUGBOAT_MOTO_SERVICE_TASKS`), merged by time with task ids, a
//! container filter, a release's own (stopped) tasks, `--follow` seeing a line written
//! after it started and ending at SIGTERM with exit 0, secrets redacted.

use crate::common::{assert_exit, result, text, Seeded, CLUSTER, SERVICE};
use crate::{aws_env, example, tugboat};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

const GROUP: &str = "/ecs/cv-matcher";
/// Seeded as a credential tugboat holds (`SLACK_BOT_TOKEN`): never printed.
const HELD_SECRET: &str = "xoxb-seeded-secret-0042";

async fn seeded() -> Seeded {
    Seeded::start_with_env(&[("TUGBOAT_MOTO_SERVICE_TASKS", "1")]).await
}

/// The ids of the service's running tasks, as ECS lists them.
async fn running_tasks(seeded: &Seeded) -> Vec<String> {
    let listed = seeded
        .fixture
        .clients
        .ecs
        .list_tasks()
        .cluster(CLUSTER)
        .service_name(SERVICE)
        .send()
        .await
        .expect("list tasks");
    let mut ids: Vec<String> = listed
        .task_arns()
        .iter()
        .map(|arn| arn.rsplit('/').next().unwrap_or_default().to_string())
        .collect();
    ids.sort();
    ids
}

fn stream(task: &str) -> String {
    format!("ecs/cv-matcher/{task}")
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_merge_two_tasks_by_time_with_ids_filter_and_redact() {
    let seeded = seeded().await;
    let tasks = running_tasks(&seeded).await;
    let [a, b] = tasks.as_slice() else {
        panic!("the service runs 2 tasks: {tasks:?}");
    };
    let t = now_ms() - 60_000;
    let fixture = &seeded.fixture;
    fixture
        .put_log_lines(
            GROUP,
            &stream(a),
            &[(t, "a: first"), (t + 2000, "a: third")],
        )
        .await
        .expect("put a");
    let leaked = format!("b: second, token {HELD_SECRET} and postgres://cv:pw-0042@db/cv");
    fixture
        .put_log_lines(GROUP, &stream(b), &[(t + 1000, &leaked)])
        .await
        .expect("put b");
    // Written later than a's third line: merged after it.
    fixture
        .put_log_lines(GROUP, &stream(b), &[(t + 3000, "b: fourth")])
        .await
        .expect("put b");

    let env = [("SLACK_BOT_TOKEN", HELD_SECRET)];
    let output = seeded
        .run_in(
            &example(),
            &env,
            &["logs", "--env", "production", "--since", "5m"],
        )
        .await;
    assert_exit(&output, 0);
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    eprintln!("{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    let messages: Vec<&str> = lines
        .iter()
        .map(|l| l.split_once(" | ").map_or("", |(_, m)| m))
        .collect();
    assert_eq!(
        messages,
        [
            "a: first",
            "b: second, token <redacted> and postgres://cv:<redacted>@db/cv",
            "a: third",
            "b: fourth"
        ],
        "{stdout}"
    );
    let short = |id: &str| id.chars().take(8).collect::<String>();
    assert!(
        lines[0].ends_with(&format!(" {} cv-matcher | a: first", short(a))),
        "{stdout}"
    );
    assert!(
        lines[1].contains(&format!(" {} cv-matcher | b: second", short(b))),
        "{stdout}"
    );
    assert!(!text(&output).contains(HELD_SECRET), "{stdout}");
    assert!(!text(&output).contains("pw-0042"), "{stdout}");

    // The container filter: the one container, or nothing.
    let only = seeded
        .run(&[
            "logs",
            "--env",
            "production",
            "--container",
            "cv-matcher",
            "--output",
            "json",
        ])
        .await;
    assert_exit(&only, 0);
    let objects: Vec<serde_json::Value> = String::from_utf8_lossy(&only.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(objects.len(), 4, "{objects:?}");
    assert_eq!(objects[0]["task_id"], a.as_str());
    assert_eq!(objects[0]["container"], "cv-matcher");
    let none = seeded
        .run(&["logs", "--env", "production", "--container", "sidecar"])
        .await;
    assert_exit(&none, 0);
    assert!(none.stdout.is_empty(), "{}", text(&none));

    // --since 30s leaves the lines of a minute ago out.
    let recent = seeded
        .run(&["logs", "--env", "production", "--since", "30s"])
        .await;
    assert_exit(&recent, 0);
    assert!(recent.stdout.is_empty(), "{}", text(&recent));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_flags_exit_2_naming_the_flag_value_and_fix() {
    let seeded = seeded().await;
    let output = seeded
        .run(&["logs", "--env", "production", "--since", "10x"])
        .await;
    assert_exit(&output, 2);
    let all = text(&output);
    assert!(all.contains("--since \"10x\""), "{all}");
    assert!(all.contains("help: pass a span"), "{all}");
    let output = seeded
        .run(&[
            "logs",
            "--env",
            "production",
            "--release",
            "r20990101-000000-nope",
        ])
        .await;
    assert_exit(&output, 2);
    let all = text(&output);
    assert!(all.contains("--release \"r20990101-000000-nope\""), "{all}");
    assert!(all.contains("tugboat history"), "{all}");
    // A local environment: not read from CloudWatch, said so.
    let output = seeded.run(&["logs", "--env", "local"]).await;
    assert_exit(&output, 2);
    let all = text(&output);
    assert!(all.contains("environment local is local"), "{all}");
    assert!(all.contains("docker logs"), "{all}");
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_of_a_release_are_its_own_tasks_stopped_ones_too() {
    let seeded = seeded().await;
    let crash_line = "fatal: relation \"candidates\" does not exist";
    seeded
        .fixture
        .moto
        .post_json(
            "/tugboat-moto/crash-logs",
            &serde_json::json!({"lines": ["cv-matcher: starting", crash_line], "exitCode": 1}),
        )
        .await
        .expect("seed crash lines");
    let failed = seeded
        .run(&[
            "deploy",
            "--env",
            "production",
            "--image",
            "crashloop-v1.2.0",
        ])
        .await;
    assert_exit(&failed, 1);
    let history = seeded
        .run(&["history", "--env", "production", "--output", "json"])
        .await;
    let record = result(&history)["records"][0].clone();
    assert_eq!(record["outcome"], "rolled_back", "{record}");
    let release = record["release_id"].as_str().expect("a release id");

    let output = seeded
        .run(&[
            "logs",
            "--env",
            "production",
            "--release",
            release,
            "--since",
            "1h",
        ])
        .await;
    assert_exit(&output, 0);
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    eprintln!("{stdout}");
    let crashes = stdout.lines().filter(|l| l.ends_with(crash_line)).count();
    // The circuit breaker stopped it after 3 failed tasks; each logged the line.
    assert_eq!(crashes, 3, "{stdout}");
    let tasks: std::collections::BTreeSet<&str> =
        stdout.lines().filter_map(|l| l.split(' ').nth(1)).collect();
    assert_eq!(tasks.len(), 3, "{stdout}");

    // The service's running tasks now are the rollback's: none of those lines.
    let running = seeded
        .run(&["logs", "--env", "production", "--since", "1h"])
        .await;
    assert_exit(&running, 0);
    assert!(
        !String::from_utf8_lossy(&running.stdout).contains(crash_line),
        "{}",
        text(&running)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn follow_sees_a_line_written_after_it_started_and_ends_at_sigterm_with_0() {
    let seeded = seeded().await;
    let tasks = running_tasks(&seeded).await;
    let task = tasks.first().expect("a running task").clone();
    seeded
        .fixture
        .put_log_lines(GROUP, &stream(&task), &[(now_ms() - 5000, "before follow")])
        .await
        .expect("put");

    let mut command = tugboat();
    aws_env(&mut command, &seeded.endpoint);
    let mut child = command
        .current_dir(example())
        .args(["logs", "--env", "production", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn tugboat logs --follow");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut next_line = async || {
        tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("a line within 20 s")
            .expect("read stdout")
            .expect("stdout still open")
    };
    let first = next_line().await;
    assert!(first.ends_with("cv-matcher | before follow"), "{first}");

    seeded
        .fixture
        .put_log_lines(
            GROUP,
            &stream(&task),
            &[(now_ms(), "written while following")],
        )
        .await
        .expect("put");
    let written = Instant::now();
    let second = next_line().await;
    assert!(
        second.ends_with("cv-matcher | written while following"),
        "{second}"
    );
    eprintln!("seen {:?} after it was written", written.elapsed());

    let pid = child.id().expect("pid");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let signalled = Instant::now();
    let exited = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exits within 5 s of SIGTERM")
        .expect("wait");
    eprintln!("exited {:?} after SIGTERM", signalled.elapsed());
    assert_eq!(exited.code(), Some(0));
}
