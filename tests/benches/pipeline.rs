//! `cargo xtask bench` (or `cargo bench -p tugboat-tests --bench pipeline`): what the
//! push and the rollout wait cost against real local back ends, printed as a table.
//!
//! - Push: the example image built once, then per repetition pushed to a fresh
//!   `docker-registry` twice: straight through the Docker engine
//!   ([`DockerEnginePusher::push_with_summary`]) and as tugboat pushes a release
//!   ([`EcrRegistry::push`] with moto's ECR control plane), where the second push of
//!   the unchanged image is skipped.
//! - Rollout: the delay between moto's deployment turning COMPLETED (its transitions
//!   log) and [`pipeline_core::follow_rollout`] on [`EcsDeployer`] returning, polling every 0.2 s and 1 s.
//! - Report: `tugboat report`'s work over 1,000 deploy records in moto's S3
//!   ([`ArtifactStore::records_since`]: list, then 16 `GetObject`s at a time; then
//!   [`DeliveryReport::compute`]). `cargo xtask bench report` runs only this one.
//!
//! - Fleet: wall time of a fleet release of 1, 10 and 50 services (all at once, moto's
//!   rollouts 3 s, polling every 1 s, one `DescribeServices` poller; the median of 3
//!   runs), against one service, the requests, and the `DescribeServices` calls: in all,
//!   and per poll interval while every service rolls out. `cargo xtask bench fleet` runs
//!   only this one.
//!
//! Every back end must be there (`.ci/setup-backends`); a missing one is an error.

use anyhow::{bail, ensure, Context};
use aws_adapters::{EcrRegistry, EcsDeployer, S3ArtifactStore};
use host_adapters::DockerEnginePusher;
use pipeline_core::report::{DeliveryReport, ReportRequest};
use pipeline_core::{
    BuiltImage, Deployer, Events, PipelineEvent, RecordedEvents, Registry, RegistryCredentials,
    ReleaseRecords, Revision, RolloutOutcome, UpdateRequest, WaitOptions,
};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tugboat_tests::aws::AwsFixture;
use tugboat_tests::cv_matcher::{self as cv, CvMatcher};
use tugboat_tests::docker::{build_image, example_copy, require_docker, unique, Images};
use tugboat_tests::fleet::{Fleet, FleetSpec};
use tugboat_tests::records::{put_records, sample_records};
use tugboat_tests::registry::LocalRegistry;

/// Pushes of each kind (each to a fresh registry).
const PUSH_REPETITIONS: usize = 3;
/// Rollouts per poll interval.
const ROLLOUT_REPETITIONS: usize = 4;
const POLL_INTERVALS: [f64; 2] = [0.2, 1.0];
const REPOSITORY: &str = "cv_matcher";
/// Records the report reads, and how often it is timed.
const REPORT_RECORDS: u32 = 1_000;
const REPORT_REPETITIONS: usize = 3;

/// Timings of one measurement, with what the registry saw.
struct Row {
    name: String,
    times: Vec<Duration>,
    /// Blob uploads the registry logged, per run.
    uploads: Vec<usize>,
    /// What the push reported about layers (`pushed 2 layers, 0 already present`).
    layers: String,
}

impl Row {
    fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            times: Vec::new(),
            uploads: Vec::new(),
            layers: String::new(),
        }
    }
}

fn millis(duration: Duration) -> String {
    format!("{:.0} ms", duration.as_secs_f64() * 1000.0)
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    match sorted.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
    }
}

fn print_table(title: &str, rows: &[Row], with_uploads: bool) {
    let mut lines = vec![if with_uploads {
        "| measurement | runs | median | min | max | blob uploads per run | layers (engine) |"
            .to_string()
    } else {
        "| measurement | runs | median | min | max |".to_string()
    }];
    lines.push(if with_uploads {
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |".to_string()
    } else {
        "| --- | ---: | ---: | ---: | ---: |".to_string()
    });
    for row in rows {
        let min = row.times.iter().min().copied().unwrap_or_default();
        let max = row.times.iter().max().copied().unwrap_or_default();
        let mut line = format!(
            "| {} | {} | {} | {} | {} |",
            row.name,
            row.times.len(),
            millis(median(&row.times)),
            millis(min),
            millis(max)
        );
        if with_uploads {
            let uploads: Vec<String> = row.uploads.iter().map(usize::to_string).collect();
            line.push_str(&format!(" {} | {} |", uploads.join(", "), row.layers));
        }
        lines.push(line);
    }
    println!("\n{title}\n\n{}", lines.join("\n"));
}

/// The registry's access log is written a moment after each request.
async fn settled_uploads(registry: &LocalRegistry) -> usize {
    tokio::time::sleep(Duration::from_millis(300)).await;
    registry.blob_uploads(REPOSITORY)
}

/// The layer summary a push reported, or that it was skipped.
fn reported_layers(events: &[PipelineEvent]) -> String {
    events
        .iter()
        .find_map(|event| match event {
            PipelineEvent::Info { message } if message.contains("push skipped") => {
                Some("push skipped".to_string())
            }
            PipelineEvent::Info { message }
                if message.starts_with("pushed ") && message.contains("already present") =>
            {
                Some(
                    message
                        .split(" (")
                        .next()
                        .unwrap_or(message.as_str())
                        .to_string(),
                )
            }
            _ => None,
        })
        .unwrap_or_else(|| "?".to_string())
}

async fn bench_engine_push(
    image: &BuiltImage,
    first: &mut Row,
    second: &mut Row,
) -> anyhow::Result<()> {
    let registry = LocalRegistry::start_fresh();
    let mut images = Images::default();
    let tag = unique("bench");
    images.add(format!("{}/{REPOSITORY}:{tag}", registry.address()));
    let credentials = RegistryCredentials {
        server: registry.address(),
        username: "bench".into(),
        password: "unused".into(),
    };
    let pusher = DockerEnginePusher::from_env();
    let mut before = 0;
    for row in [first, second] {
        let started = Instant::now();
        let outcome = pusher
            .push_with_summary(image, &credentials, REPOSITORY, &tag, &Events::new())
            .await
            .map_err(|err| anyhow::anyhow!("engine push: {err}"))?;
        row.times.push(started.elapsed());
        let after = settled_uploads(&registry).await;
        row.uploads.push(after - before);
        row.layers = outcome.layers.summary();
        before = after;
    }
    Ok(())
}

async fn bench_release_push(
    aws: &AwsFixture,
    image: &BuiltImage,
    first: &mut Row,
    second: &mut Row,
) -> anyhow::Result<()> {
    let registry = LocalRegistry::start_fresh();
    let ecr = EcrRegistry::new(aws.clients.ecr.clone())
        .with_pusher(Arc::new(DockerEnginePusher::from_env()))
        .with_data_plane(registry.address());
    let mut images = Images::default();
    let tag = unique("bench");
    images.add(format!("{}/{REPOSITORY}:{tag}", registry.address()));
    let mut before = 0;
    let mut digests = Vec::new();
    for row in [first, second] {
        let recorder = RecordedEvents::new();
        let events = Events::new().with(recorder.clone());
        let started = Instant::now();
        let pinned = ecr
            .push(image, REPOSITORY, std::slice::from_ref(&tag), &events)
            .await
            .map_err(|err| anyhow::anyhow!("EcrRegistry::push: {err}"))?;
        row.times.push(started.elapsed());
        let after = settled_uploads(&registry).await;
        row.uploads.push(after - before);
        row.layers = reported_layers(&recorder.take());
        before = after;
        digests.push(pinned.digest);
    }
    ensure!(
        digests.windows(2).all(|pair| pair[0] == pair[1]),
        "the two pushes pinned different digests: {digests:?}"
    );
    Ok(())
}

async fn bench_pushes() -> anyhow::Result<Vec<Row>> {
    require_docker()?;
    let mut images = Images::default();
    let app = example_copy()?;
    let image = build_image(
        app.path(),
        &format!("tugboat-bench-cv_matcher:{}", unique("t")),
        &mut images,
    )
    .await?;
    let aws = AwsFixture::start().await?;
    let mut rows = vec![
        Row::new("engine push, first (fresh registry)"),
        Row::new("engine push, second (unchanged image)"),
        Row::new("EcrRegistry::push, first (fresh registry)"),
        Row::new("EcrRegistry::push, second (unchanged image)"),
    ];
    for repetition in 1..=PUSH_REPETITIONS {
        eprintln!("bench: push repetition {repetition}/{PUSH_REPETITIONS}");
        let [engine_first, engine_second, release_first, release_second] = &mut rows[..] else {
            bail!("four rows expected");
        };
        bench_engine_push(&image, engine_first, engine_second).await?;
        bench_release_push(&aws, &image, release_first, release_second).await?;
    }
    Ok(rows)
}

/// One rollout: a new revision, `update_service`, then `follow_rollout` started
/// `offset` later. Returns how long after moto completed the deployment the wait returned.
async fn rollout_delay(
    cv: &CvMatcher,
    deployer: &EcsDeployer,
    poll_interval: Duration,
    offset: Duration,
) -> anyhow::Result<Duration> {
    let arn = cv.register_plain(&cv.initial_image.reference()).await?;
    let revision = Revision::new(arn.clone(), cv::label(&arn));
    let handle = deployer
        .update_service(
            &cv.target,
            &UpdateRequest {
                revision,
                desired_count: None,
                force_new_deployment: false,
            },
        )
        .await
        .map_err(|err| anyhow::anyhow!("update_service: {err}"))?;
    tokio::time::sleep(offset).await;
    let outcome = pipeline_core::follow_rollout(
        deployer,
        &cv.target,
        &handle,
        &WaitOptions {
            timeout: Duration::from_secs(cv::TIMEOUT_SECONDS),
            poll_interval,
        },
        &Events::new(),
    )
    .await
    .map_err(|err| anyhow::anyhow!("follow_rollout: {err}"))?;
    let returned_at = SystemTime::now();
    ensure!(
        outcome == RolloutOutcome::Completed,
        "deployment {} ended {outcome:?}",
        handle.id
    );
    let transitions = cv.aws.moto.transitions().await?;
    let completed_at = transitions
        .iter()
        .find(|t| t["deploymentId"] == handle.id.as_str() && t["state"] == "COMPLETED")
        .and_then(|t| t["at"].as_f64())
        .with_context(|| {
            format!(
                "moto has no COMPLETED transition of {}: {transitions:?}",
                handle.id
            )
        })?;
    let completed_at = UNIX_EPOCH + Duration::from_secs_f64(completed_at);
    returned_at
        .duration_since(completed_at)
        .context("follow_rollout returned before moto completed the deployment")
}

async fn bench_rollouts() -> anyhow::Result<Vec<Row>> {
    let cv = CvMatcher::setup(AwsFixture::start().await?).await?;
    let deployer = EcsDeployer::new(cv.aws.clients.ecs.clone());
    let mut rows = Vec::new();
    for poll in POLL_INTERVALS {
        let poll_interval = Duration::from_secs_f64(poll);
        let mut row = Row::new(format!(
            "deployment COMPLETED in moto -> follow_rollout returned, poll {poll} s"
        ));
        for repetition in 0..ROLLOUT_REPETITIONS {
            eprintln!(
                "bench: rollout {}/{ROLLOUT_REPETITIONS}, poll {poll} s",
                repetition + 1
            );
            // moto's rollouts always take the same time, real ones do not: starting the
            // wait at offsets spread over one interval samples every phase between the
            // completion and the next look.
            let offset = poll_interval.mul_f64(repetition as f64 / ROLLOUT_REPETITIONS as f64);
            row.times
                .push(rollout_delay(&cv, &deployer, poll_interval, offset).await?);
        }
        rows.push(row);
    }
    Ok(rows)
}

/// `tugboat report`'s reading and computing over [`REPORT_RECORDS`] records in S3, all
/// inside the 30-day window (one every 40 minutes).
async fn bench_report() -> anyhow::Result<Vec<Row>> {
    let aws = AwsFixture::start().await?;
    let bucket = "cv-matcher-deployments";
    aws.clients.s3.create_bucket().bucket(bucket).send().await?;
    let store = Arc::new(S3ArtifactStore::new(
        aws.clients.s3.clone(),
        bucket,
        "tugboat",
    ));
    let now = chrono::Utc::now();
    let records = sample_records(
        "cv-matcher",
        "production",
        REPORT_RECORDS,
        now - chrono::Duration::minutes(5),
        chrono::Duration::minutes(40),
    );
    eprintln!("bench: writing {REPORT_RECORDS} records to moto's S3");
    put_records(store.clone(), records, 16).await?;
    let request = ReportRequest {
        app: "cv-matcher".into(),
        environments: vec!["production".into()],
        since: now - chrono::Duration::days(30),
        until: now,
    };
    let mut row = Row::new(format!(
        "report over {REPORT_RECORDS} records in moto's S3 (list, 16 GetObjects at a time, compute)"
    ));
    for repetition in 1..=REPORT_REPETITIONS {
        eprintln!("bench: report {repetition}/{REPORT_REPETITIONS}");
        let started = Instant::now();
        let read = store
            .records_since("cv-matcher", "production", request.since)
            .await
            .map_err(|err| anyhow::anyhow!("records_since: {err}"))?;
        let report = DeliveryReport::compute(&request, &read);
        row.times.push(started.elapsed());
        ensure!(
            report.counts.releases == REPORT_RECORDS as usize,
            "the report counted {} releases of {REPORT_RECORDS}",
            report.counts.releases
        );
    }
    Ok(vec![row])
}

/// Fleet sizes the fleet row measures, the emulator's rollout and the poll interval.
const FLEET_SIZES: [usize; 3] = [1, 10, 50];
const FLEET_ROLLOUT_SECONDS: &str = "3";
const FLEET_POLL_SECONDS: f64 = 1.0;
/// Releases per size, each on a fresh emulator: the row is the median one. When the
/// last rollout completes against the poller's rounds moves a run by up to a poll
/// interval, so one run per size says little.
const FLEET_REPETITIONS: usize = 3;

/// One measured fleet release.
struct FleetSample {
    wall: Duration,
    /// The last `UpdateService` and the last rollout's completion, since the start.
    last_update: f64,
    last_completed: f64,
    requests: usize,
    polling: tugboat_tests::fleet::Polling,
}

async fn fleet_sample(size: usize) -> anyhow::Result<FleetSample> {
    let aws =
        AwsFixture::start_with_env(&[("TUGBOAT_MOTO_ROLLOUT_SECONDS", FLEET_ROLLOUT_SECONDS)])
            .await?;
    let mut spec = FleetSpec::new(size, 0);
    spec.poll_seconds = FLEET_POLL_SECONDS;
    let fleet = Fleet::setup(aws, &spec).await?;
    fleet.put_image_everywhere("v2").await?;
    fleet.aws.calls.reset();
    let run = fleet.deploy("v2", size, &[]).await;
    // Which calls a fleet's services make (`TUGBOAT_BENCH_CALLS=1`).
    if std::env::var_os("TUGBOAT_BENCH_CALLS").is_some() {
        eprintln!("{}", fleet.aws.calls.snapshot());
    }
    ensure!(
        run.report.outcome == pipeline_core::Outcome::Succeeded,
        "the fleet of {size} failed: {}",
        run.report.message
    );
    let polling = fleet.polling().await?;
    let start = run
        .started_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    Ok(FleetSample {
        wall: run.wall,
        last_update: polling.last_update - start,
        last_completed: polling.last_completed - start,
        requests: fleet.aws.calls.snapshot().total_calls(),
        polling,
    })
}

/// Fleet releases of each size: the median wall time (and the range), when the last
/// service was updated and the last rollout completed, the requests, and DescribeServices
/// in all and per poll interval while every service rolls out.
async fn bench_fleet() -> anyhow::Result<()> {
    let interval = Duration::from_secs_f64(FLEET_POLL_SECONDS);
    let mut lines = vec![
        format!("| services | wall (median of {FLEET_REPETITIONS}; range) | × 1 service | last update / last rollout done | requests in all | DescribeServices in all | during the rollout, per poll interval (goal ≤ 5) | largest call |"),
        "|---|---|---|---|---|---|---|---|".to_string(),
    ];
    let mut one = None;
    for size in FLEET_SIZES {
        let mut samples = Vec::with_capacity(FLEET_REPETITIONS);
        for repetition in 1..=FLEET_REPETITIONS {
            eprintln!("bench: fleet of {size}, run {repetition} of {FLEET_REPETITIONS}");
            samples.push(fleet_sample(size).await?);
        }
        samples.sort_by_key(|s| s.wall);
        let (fastest, slowest) = (samples[0].wall, samples[samples.len() - 1].wall);
        let median = &samples[samples.len() / 2];
        let base = *one.get_or_insert(median.wall);
        lines.push(format!(
            "| {size} | {:.2} s ({:.2}–{:.2}) | {:.2} | {:.2} s / {:.2} s | {} | {} | {:.1} ({} calls in {:.1} s) | {} services |",
            median.wall.as_secs_f64(),
            fastest.as_secs_f64(),
            slowest.as_secs_f64(),
            median.wall.as_secs_f64() / base.as_secs_f64(),
            median.last_update,
            median.last_completed,
            median.requests,
            median.polling.total_calls,
            median.polling.per_interval(interval),
            median.polling.calls,
            median.polling.window.as_secs_f64(),
            median.polling.largest_call
        ));
    }
    println!(
        "\nFleet release on moto (rollouts {FLEET_ROLLOUT_SECONDS} s, polling every {FLEET_POLL_SECONDS} s, all services at once)\n\n{}",
        lines.join("\n")
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|arg| arg == "fleet") {
        return bench_fleet().await;
    }
    // `cargo bench` passes `--bench` (and any filter): `report` runs only the report's
    // row, anything else every benchmark. Each table is printed as soon as it is measured.
    let report = bench_report().await?;
    print_table(
        &format!("tugboat report over {REPORT_RECORDS} deploy records, {REPORT_REPETITIONS} runs"),
        &report,
        false,
    );
    if std::env::args().any(|arg| arg == "report") {
        return Ok(());
    }
    let pushes = bench_pushes().await?;
    print_table(
        &format!(
            "Pushing the example image (cv-matcher) to a local docker-registry, {PUSH_REPETITIONS} runs each"
        ),
        &pushes,
        true,
    );
    let rollouts = bench_rollouts().await?;
    print_table(
        &format!(
            "Noticing a completed rollout (moto rollout 1.5 s), {ROLLOUT_REPETITIONS} runs per poll interval"
        ),
        &rollouts,
        false,
    );
    bench_fleet().await
}
