//! Faults between tugboat and AWS (issue 13): throttling, 500s, connections reset before
//! a call reached AWS and answers lost after it was applied, injected by
//! [`FaultProxy`] with a fixed seed. Every run ends 0 with the service on the new
//! revision or 1 with it on the previous one, leaves no lock, writes one record, and
//! registers at most one revision.

use anyhow::Context;
use aws_adapters::{desired_infra, EcrRegistry, InfraReconciler};
use aws_sdk_ecs::types::TaskDefinitionStatus;
use pipeline_core::{Outcome, RecordOutcome, Registry};
use std::collections::BTreeMap;
use std::time::Instant;
use tugboat_tests::aws::AwsFixture;
use tugboat_tests::cv_matcher::{self as cv, CvMatcher, Run};
use tugboat_tests::fault_proxy::{FaultConfig, FaultKind, FaultProxy};

/// The suite's seed and fault rate.
const SEED: u64 = 13;
const FAULT_RATE: f64 = 0.10;
/// Deploys in the suite: every third one crash-loops.
const RUNS: usize = 21;
/// The repository whose images crash-loop in the emulator (the marker has to be in the
/// repository: a release pins `repository@sha256:…`).
const CRASHLOOP_REPOSITORY: &str = "cv_matcher-crashloop";

async fn cv_matcher(config: FaultConfig) -> anyhow::Result<(CvMatcher, FaultProxy)> {
    let (aws, proxy) =
        AwsFixture::start_with_faults(&[("TUGBOAT_MOTO_ROLLOUT_SECONDS", "0.3")], config).await?;
    Ok((CvMatcher::setup(aws).await?, proxy))
}

/// A commit sha whose short form (the release id's) is unique to `n`.
fn commit(n: usize) -> String {
    format!("{n:07x}{}", "e".repeat(33))
}

/// What the service runs: the PRIMARY deployment's revision and its rollout state.
async fn serving(cv: &CvMatcher) -> anyhow::Result<(String, Option<String>)> {
    let service = cv.service().await?;
    let primary = service
        .deployments()
        .iter()
        .find(|d| d.status() == Some("PRIMARY"))
        .context("the service has no PRIMARY deployment")?;
    Ok((
        primary.task_definition().unwrap_or_default().to_string(),
        primary.rollout_state().map(|s| s.as_str().to_string()),
    ))
}

/// The highest revision number of the family (ACTIVE or INACTIVE).
async fn highest_revision(cv: &CvMatcher) -> anyhow::Result<u64> {
    let mut highest = 0;
    for status in [TaskDefinitionStatus::Active, TaskDefinitionStatus::Inactive] {
        let arns: Vec<String> = cv
            .aws
            .clients
            .ecs
            .list_task_definitions()
            .family_prefix(&cv.project.task_definition.family)
            .status(status)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .context("ListTaskDefinitions")?;
        for arn in arns {
            if let Some(n) = arn.rsplit(':').next().and_then(|n| n.parse().ok()) {
                highest = highest.max(n);
            }
        }
    }
    Ok(highest)
}

/// Every revision of the family (ACTIVE and INACTIVE) with its `tugboat:release` tag.
async fn revisions(cv: &CvMatcher) -> anyhow::Result<Vec<(u64, Option<String>)>> {
    let ecs = &cv.aws.clients.ecs;
    let family = &cv.project.task_definition.family;
    let mut all = Vec::new();
    for status in [TaskDefinitionStatus::Active, TaskDefinitionStatus::Inactive] {
        let arns: Vec<String> = ecs
            .list_task_definitions()
            .family_prefix(family)
            .status(status)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .context("ListTaskDefinitions")?;
        for arn in arns {
            let number = arn
                .rsplit(':')
                .next()
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("no revision number in {arn}"))?;
            let described = ecs
                .describe_task_definition()
                .task_definition(&arn)
                .include(aws_sdk_ecs::types::TaskDefinitionField::Tags)
                .send()
                .await
                .with_context(|| format!("DescribeTaskDefinition {arn}"))?;
            let release = described
                .tags()
                .iter()
                .find(|t| t.key() == Some("tugboat:release"))
                .and_then(|t| t.value())
                .map(str::to_string);
            all.push((number, release));
        }
    }
    all.sort();
    Ok(all)
}

/// The record keys in the bucket.
async fn record_keys(cv: &CvMatcher) -> anyhow::Result<Vec<String>> {
    let keys: Vec<String> = cv
        .aws
        .clients
        .s3
        .list_objects_v2()
        .bucket(&cv.bucket)
        .prefix(format!("{}records/", cv.key_prefix()))
        .into_paginator()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .context("ListObjectsV2")?
        .iter()
        .flat_map(|page| page.contents())
        .filter_map(|o| o.key().map(str::to_string))
        .collect();
    Ok(keys)
}

/// What one run of the suite did, for the assertions and the report.
#[derive(Debug)]
struct Checked {
    outcome: Outcome,
    problems: Vec<String>,
}

/// Checks one run against AWS as it is after the run (faults off).
async fn check_run(
    cv: &CvMatcher,
    run: &Run,
    crashloop: bool,
    before: &str,
    records_before: &[String],
    highest_before: u64,
) -> anyhow::Result<Checked> {
    let mut problems = Vec::new();
    let outcome = run.report.outcome;
    let (now, rollout) = serving(cv).await?;
    let revision = run.record().ok().and_then(|r| r.revision.clone());
    match outcome {
        Outcome::Succeeded => {
            if crashloop {
                problems.push("a crash-looping release succeeded".to_string());
            }
            match &revision {
                Some(r) if cv::label(&r.id) == cv::label(&now) => {}
                _ => problems.push(format!(
                    "succeeded, but the service runs {} and the release registered {:?}",
                    cv::label(&now),
                    revision.as_ref().map(|r| r.label.clone())
                )),
            }
        }
        Outcome::FailedRestored => {
            if cv::label(&now) != cv::label(before) {
                problems.push(format!(
                    "failed and restored, but the service runs {} instead of {}",
                    cv::label(&now),
                    cv::label(before)
                ));
            }
        }
        other => problems.push(format!(
            "exit {} ({other:?}): {}",
            other.exit_code(),
            run.report.message
        )),
    }
    if rollout.as_deref() != Some("COMPLETED") {
        problems.push(format!(
            "the service's PRIMARY deployment is {rollout:?}, not COMPLETED"
        ));
    }
    if let Some(lock) = cv.stored_lock().await? {
        problems.push(format!("the deploy lock is still held: {lock:?}"));
    }
    let records = record_keys(cv).await?;
    let new: Vec<&String> = records
        .iter()
        .filter(|k| !records_before.contains(k))
        .collect();
    match (run.record(), new.as_slice()) {
        (Ok(record), [key]) if key.ends_with(&format!("records/{}.json", record.release_id)) => {
            let stored = cv.stored_record(&record.release_id.0).await?;
            let expected: &[RecordOutcome] = match outcome {
                Outcome::Succeeded => &[RecordOutcome::Succeeded],
                _ => &[RecordOutcome::RolledBack, RecordOutcome::FailedUnchanged],
            };
            if !expected.contains(&stored.outcome) {
                problems.push(format!(
                    "the stored record says {:?} for exit {}",
                    stored.outcome,
                    outcome.exit_code()
                ));
            }
        }
        _ => problems.push(format!(
            "records written: {new:?} for release {:?}",
            run.record().ok().map(|r| r.release_id.0.clone())
        )),
    }
    let highest = highest_revision(cv).await?;
    if highest > highest_before + 1 {
        problems.push(format!(
            "{} revisions registered (up to {highest})",
            highest - highest_before
        ));
    }
    Ok(Checked { outcome, problems })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_through_faults_end_consistent_with_aws() -> anyhow::Result<()> {
    let started = Instant::now();
    let (cv, proxy) = cv_matcher(FaultConfig::new(SEED, FAULT_RATE)).await?;
    let mut crashing = cv.project.clone();
    crashing.config.image.repository = CRASHLOOP_REPOSITORY.to_string();
    let mut releases = Vec::new();
    for n in 0..RUNS {
        let crashloop = n % 3 == 2;
        let tag = if crashloop {
            let tag = format!("crashloop-{n}");
            cv.put_image(CRASHLOOP_REPOSITORY, &tag).await?;
            tag
        } else {
            let tag = format!("v2.{n}.0");
            cv.put_image(cv::REPOSITORY, &tag).await?;
            tag
        };
        releases.push((tag, crashloop));
    }

    let mut results = Vec::new();
    for (n, (tag, crashloop)) in releases.iter().enumerate() {
        let (before, _) = serving(&cv).await?;
        let records_before = record_keys(&cv).await?;
        let highest_before = highest_revision(&cv).await?;
        let project = if *crashloop { &crashing } else { &cv.project };
        let faults_before = proxy.counts().total();
        proxy.set_faults(true);
        let run_started = Instant::now();
        let run = cv.deploy(project, tag, &commit(n + 1)).await;
        let took = run_started.elapsed();
        proxy.set_faults(false);
        let faults = proxy.counts().total() - faults_before;
        let checked = check_run(
            &cv,
            &run,
            *crashloop,
            &before,
            &records_before,
            highest_before,
        )
        .await
        .with_context(|| format!("checking run {n} ({tag})"))?;
        println!(
            "run {n:>2} {tag:<14} exit {} {:<14} {faults} fault(s) in {took:.1?}{}",
            checked.outcome.exit_code(),
            format!("{:?},", checked.outcome),
            if checked.problems.is_empty() {
                String::new()
            } else {
                format!(" PROBLEMS: {}", checked.problems.join("; "))
            }
        );
        if !checked.problems.is_empty() {
            println!("     message: {}", run.report.message);
        }
        results.push((n, tag.clone(), checked));
    }

    // One release, at most one revision: nothing registered twice behind a lost answer.
    let mut per_release: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (number, release) in revisions(&cv).await? {
        if let Some(release) = release {
            per_release.entry(release).or_default().push(number);
        }
    }
    let duplicates: Vec<_> = per_release.iter().filter(|(_, n)| n.len() > 1).collect();

    let counts = proxy.counts();
    let elapsed = started.elapsed();
    let outcomes: BTreeMap<String, usize> =
        results.iter().fold(BTreeMap::new(), |mut acc, (_, _, c)| {
            *acc.entry(format!("{:?}", c.outcome)).or_default() += 1;
            acc
        });
    println!("faults (seed {SEED}, rate {FAULT_RATE}):\n{counts}");
    println!("outcomes: {outcomes:?}; {RUNS} runs in {elapsed:.1?}");
    println!("API calls:\n{}", cv.aws.calls.snapshot());

    let failed: Vec<String> = results
        .iter()
        .filter(|(_, _, c)| !c.problems.is_empty())
        .map(|(n, tag, c)| format!("run {n} ({tag}): {}", c.problems.join("; ")))
        .collect();
    assert!(
        failed.is_empty(),
        "runs inconsistent with AWS:\n{}",
        failed.join("\n")
    );
    assert!(
        duplicates.is_empty(),
        "releases with more than one revision: {duplicates:?}"
    );
    // The suite is only worth something if every kind of fault happened.
    for kind in FaultKind::ALL {
        assert!(
            counts.of(kind) > 0,
            "no {} was injected:\n{counts}",
            kind.name()
        );
    }
    Ok(())
}

/// The answer to `RegisterTaskDefinition` is lost after ECS registered the revision: the
/// retry finds that revision by its release tag instead of registering a second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_register_answer_registers_one_revision() -> anyhow::Result<()> {
    let (cv, proxy) = cv_matcher(FaultConfig::new(SEED, 0.0)).await?;
    cv.put_image(cv::REPOSITORY, "v1.1.0").await?;
    proxy.script("ecs.RegisterTaskDefinition", FaultKind::AnswerLost, 1);

    let run = cv.deploy(&cv.project, "v1.1.0", &cv::sha('b')).await;

    assert_eq!(
        run.report.outcome,
        Outcome::Succeeded,
        "{}",
        run.report.message
    );
    assert_eq!(proxy.counts().of(FaultKind::AnswerLost), 1);
    let revisions = revisions(&cv).await?;
    assert_eq!(revisions.len(), 2, "{revisions:?}");
    let (now, _) = serving(&cv).await?;
    assert_eq!(cv::label(&now), "cv-matcher:2");
    Ok(())
}

/// The answer to `UpdateService` is lost after ECS started the deployment: the SDK's
/// retry asks for the same revision again, ECS starts nothing new and answers with the
/// deployment the first call started, which the waiter follows to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_update_answer_follows_the_release() -> anyhow::Result<()> {
    let (cv, proxy) = cv_matcher(FaultConfig::new(SEED, 0.0)).await?;
    cv.put_image(cv::REPOSITORY, "v1.1.0").await?;
    proxy.script("ecs.UpdateService", FaultKind::AnswerLost, 1);

    let run = cv.deploy(&cv.project, "v1.1.0", &cv::sha('b')).await;

    assert_eq!(
        run.report.outcome,
        Outcome::Succeeded,
        "{}",
        run.report.message
    );
    assert_eq!(proxy.counts().of(FaultKind::AnswerLost), 1);
    let (now, rollout) = serving(&cv).await?;
    assert_eq!(cv::label(&now), "cv-matcher:2");
    assert_eq!(rollout.as_deref(), Some("COMPLETED"));
    let started = cv
        .aws
        .moto
        .transitions()
        .await?
        .iter()
        .filter(|t| t["state"] == "COMPLETED")
        .count();
    assert_eq!(started, 1, "one deployment of the release, completed");
    Ok(())
}

/// The answers to `CreateRepository` and `CreateLogGroup` are lost after they were
/// applied: the SDK's retry is told the thing exists, which is what was asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_to_creates_leave_what_was_created() -> anyhow::Result<()> {
    let (cv, proxy) = cv_matcher(FaultConfig::new(SEED, 0.0)).await?;
    proxy.script("ecr.CreateRepository", FaultKind::AnswerLost, 1);
    proxy.script("logs.CreateLogGroup", FaultKind::AnswerLost, 1);

    let uri = EcrRegistry::new(cv.aws.clients.ecr.clone())
        .ensure_repository("cv_matcher-new")
        .await
        .map_err(|err| anyhow::anyhow!("ensure_repository: {err}"))?;
    assert_eq!(uri, cv::repository_uri("cv_matcher-new"));
    let env = cv.project.environment(cv::ENVIRONMENT)?;
    let desired = desired_infra(&cv.project.config.app.name, &cv.target, env);
    InfraReconciler::new(&cv.aws.clients)
        .apply(&desired)
        .await
        .map_err(|err| anyhow::anyhow!("apply: {err}"))?;
    assert!(InfraReconciler::new(&cv.aws.clients)
        .plan(&desired)
        .await
        .map_err(|err| anyhow::anyhow!("plan: {err}"))?
        .is_empty());
    assert_eq!(
        proxy.counts().of(FaultKind::AnswerLost),
        2,
        "{}",
        proxy.counts()
    );
    Ok(())
}
