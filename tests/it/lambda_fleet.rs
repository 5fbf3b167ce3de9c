//! The Lambda front end with a fleet config (`[services]`, two regions): a push releases
//! every service of the environment in the push's region, each under its own lock and
//! record; an ECS event reaches the one service it concerns; a failed service is rolled
//! back, and with `on_failure = "rollback_all"` the services the same push released are
//! rolled back with it.

use anyhow::{ensure, Context};
use aws_adapters::S3ArtifactStore;
use pipeline_core::{DeployRecord, RecordOutcome, ReleaseRecords};
use serde_json::{json, Value};
use std::time::Duration;
use tugboat_lambda::{Action, ConfigSource, Handler, InvocationResult, LoadedConfig};
use tugboat_tests::aws::{AwsFixture, REGION};
use tugboat_tests::cv_matcher::eventually;
use tugboat_tests::fleet::{
    cluster, service_name, Fleet, FleetSpec, Seeded, BUCKET, ENVIRONMENT, REPOSITORY, SECOND_REGION,
};

const ACCOUNT: &str = "123456789012";

/// The fleet with release tags (`v*`), as the function reads it from its package: the
/// config file and every service's task definition file next to it.
async fn setup(spec: FleetSpec) -> anyhow::Result<(Fleet, Handler)> {
    let fleet = Fleet::setup(AwsFixture::start().await?, &spec).await?;
    let file = fleet.dir.join("tugboat.toml");
    let text = std::fs::read_to_string(&file)?.replace(
        "on_failure =",
        "tags = [\"v*\"]\nimage_tags = [\"sha-*\"]\non_failure =",
    );
    std::fs::write(&file, &text)?;
    let loaded = LoadedConfig::from_text(&ConfigSource::File(file.clone()), &text)
        .map_err(|err| anyhow::anyhow!("the fleet config: {err}"))?;
    ensure!(
        loaded.service_definitions.len() == spec.primary + spec.second,
        "the package's task definitions were not loaded: {:?}",
        loaded.service_definitions.keys().collect::<Vec<_>>()
    );
    let handler = Handler::new(ConfigSource::File(file))
        .with_clients(fleet.aws.clients.clone())
        .with_region_clients(SECOND_REGION, fleet.second.clone())
        .with_config(loaded);
    Ok((fleet, handler))
}

fn unit(service: &Seeded) -> String {
    format!("{ENVIRONMENT}.{}.{}", service.name, service.region)
}

fn push_event(id: &str, region: &str, tag: &str, digest: &str) -> Value {
    json!({
        "version": "0", "id": id, "detail-type": "ECR Image Action", "source": "aws.ecr",
        "account": ACCOUNT, "time": "2026-12-02T10:00:00Z", "region": region, "resources": [],
        "detail": {
            "result": "SUCCESS", "repository-name": REPOSITORY, "image-digest": digest,
            "action-type": "PUSH", "image-tag": tag
        }
    })
}

fn deployment_event(id: &str, service: &Seeded, name: &str, deployment: &str) -> Value {
    json!({
        "version": "0", "id": id, "detail-type": "ECS Deployment State Change",
        "source": "aws.ecs", "account": ACCOUNT, "time": "2026-12-02T10:01:00Z",
        "region": service.region,
        "resources": [format!(
            "arn:aws:ecs:{}:{ACCOUNT}:service/{}/{}",
            service.region,
            cluster(&service.region),
            service_name(&service.name)
        )],
        "detail": {
            "eventType": if name.ends_with("FAILED") { "ERROR" } else { "INFO" },
            "eventName": name, "deploymentId": deployment,
            "updatedAt": "2026-12-02T10:01:00Z",
            "reason": format!("ECS deployment {deployment}: {name}")
        }
    })
}

async fn handle(
    fleet: &Fleet,
    handler: &Handler,
    event: Value,
) -> anyhow::Result<InvocationResult> {
    handler.handle(event).await.map_err(|err| {
        anyhow::anyhow!(
            "the handler failed: {err}\nmoto: {}",
            fleet.aws.moto.log_tail()
        )
    })
}

/// A unit's newest deploy record.
async fn newest(fleet: &Fleet, service: &Seeded) -> anyhow::Result<DeployRecord> {
    let prefix = fleet
        .project
        .config
        .environments
        .get(ENVIRONMENT)
        .and_then(|env| env.records.as_ref())
        .map(|records| records.prefix.clone())
        .context("the fleet keeps no records")?;
    let store = S3ArtifactStore::new(fleet.aws.clients.s3.clone(), BUCKET, &prefix);
    let history = store
        .history("shop", &unit(service), 5)
        .await
        .map_err(|err| anyhow::anyhow!("{}: {}", unit(service), err.message))?;
    history
        .into_iter()
        .next()
        .with_context(|| format!("{} has no record", unit(service)))
}

/// Waits until moto moved `deployment` to `state` (`COMPLETED`, `FAILED`).
async fn wait_for(
    fleet: &Fleet,
    service: &Seeded,
    deployment: &str,
    state: &str,
) -> anyhow::Result<()> {
    eventually(Duration::from_secs(30), || async {
        // Reading the service moves moto's model forward.
        fleet.running_revision(service).await?;
        let transitions = fleet.aws.moto.transitions().await?;
        Ok(transitions
            .iter()
            .any(|t| t["deploymentId"] == deployment && t["state"] == state))
    })
    .await
    .with_context(|| format!("deployment {deployment} never became {state}"))
}

fn in_region<'a>(fleet: &'a Fleet, region: &str) -> Vec<&'a Seeded> {
    fleet
        .services
        .iter()
        .filter(|s| s.region == region)
        .collect()
}

#[tokio::test]
async fn a_push_releases_each_service_of_its_region_and_events_reach_their_own(
) -> anyhow::Result<()> {
    let (fleet, handler) = setup(FleetSpec::new(3, 2)).await?;
    let digest = fleet.put_image_everywhere("v2").await?;

    let result = handle(
        &fleet,
        &handler,
        push_event("push-us", REGION, "v2", &digest),
    )
    .await?;
    let primary = in_region(&fleet, REGION);
    let second = in_region(&fleet, SECOND_REGION);
    ensure!(
        result.action == Action::StartRelease && result.outcome == "in_progress",
        "{result:?}"
    );
    let named: Vec<String> = primary.iter().map(|s| unit(s)).collect();
    ensure!(
        result.environment.as_deref() == Some(named.join(",").as_str()),
        "the push released {:?}, expected {named:?}",
        result.environment
    );
    for service in &primary {
        let record = newest(&fleet, service).await?;
        ensure!(
            record.outcome == RecordOutcome::InProgress
                && record.trigger.as_deref() == Some("push-us")
                && record.image.as_ref().is_some_and(|i| i.digest == digest),
            "{}: {record:?}",
            unit(service)
        );
        let running = fleet.running_revision(service).await?;
        ensure!(
            running != service.initial_revision
                && running.contains(&format!("shop-{}", service.name)),
            "{} runs {running}",
            unit(service)
        );
    }
    for service in &second {
        ensure!(
            fleet.running_revision(service).await? == service.initial_revision,
            "a push in {REGION} moved {}",
            unit(service)
        );
    }

    // Lambda delivers at least once: the same push again starts nothing.
    let again = handle(
        &fleet,
        &handler,
        push_event("push-us", REGION, "v2", &digest),
    )
    .await?;
    ensure!(again.outcome == "ignored", "a redelivery: {again:?}");

    // The second region's push releases its own services.
    let result = handle(
        &fleet,
        &handler,
        push_event("push-eu", SECOND_REGION, "v2", &digest),
    )
    .await?;
    ensure!(result.outcome == "in_progress", "{result:?}");
    for service in &second {
        let record = newest(&fleet, service).await?;
        ensure!(
            record.outcome == RecordOutcome::InProgress
                && record.trigger.as_deref() == Some("push-eu"),
            "{}: {record:?}",
            unit(service)
        );
    }

    // ECS's COMPLETED event of one service finishes that release only.
    let one = primary[1];
    let record = newest(&fleet, one).await?;
    let deployment = record.deployment_id.clone().context("no deployment id")?;
    wait_for(&fleet, one, &deployment, "COMPLETED").await?;
    let done = handle(
        &fleet,
        &handler,
        deployment_event("ecs-1", one, "SERVICE_DEPLOYMENT_COMPLETED", &deployment),
    )
    .await?;
    ensure!(
        done.action == Action::FinishRelease
            && done.outcome == "succeeded"
            && done.environment.as_deref() == Some(unit(one).as_str()),
        "{done:?}"
    );
    for service in primary.iter().chain(&second) {
        let outcome = newest(&fleet, service).await?.outcome;
        let expected = if service.name == one.name {
            RecordOutcome::Succeeded
        } else {
            RecordOutcome::InProgress
        };
        ensure!(outcome == expected, "{}: {outcome:?}", unit(service));
    }

    // An event for a service of the same name in the other region's cluster is no unit.
    let mut stray = deployment_event("ecs-2", one, "SERVICE_DEPLOYMENT_COMPLETED", &deployment);
    stray["resources"] = json!([format!(
        "arn:aws:ecs:{SECOND_REGION}:{ACCOUNT}:service/{}/{}",
        cluster(REGION),
        service_name(&one.name)
    )]);
    let ignored = handle(&fleet, &handler, stray).await?;
    ensure!(ignored.outcome == "ignored", "{ignored:?}");
    Ok(())
}

#[tokio::test]
async fn a_failed_service_rolls_back_what_the_same_push_released() -> anyhow::Result<()> {
    let mut spec = FleetSpec::new(3, 0);
    spec.crashing = vec!["s02".into()];
    let (fleet, handler) = setup(spec).await?;
    let digest = fleet.put_image_everywhere("v2").await?;
    let result = handle(
        &fleet,
        &handler,
        push_event("push-1", REGION, "v2", &digest),
    )
    .await?;
    ensure!(result.outcome == "in_progress", "{result:?}");
    let [good, finished, bad] = [&fleet.services[0], &fleet.services[1], &fleet.services[2]];

    // One good service completes and is released before the bad one fails.
    let record_of_finished = newest(&fleet, finished).await?;
    let deployment = record_of_finished
        .deployment_id
        .clone()
        .context("no deployment id")?;
    wait_for(&fleet, finished, &deployment, "COMPLETED").await?;
    let done = handle(
        &fleet,
        &handler,
        deployment_event(
            "ecs-ok",
            finished,
            "SERVICE_DEPLOYMENT_COMPLETED",
            &deployment,
        ),
    )
    .await?;
    ensure!(done.outcome == "succeeded", "{done:?}");

    let record = newest(&fleet, bad).await?;
    let deployment = record.deployment_id.clone().context("no deployment id")?;
    wait_for(&fleet, bad, &deployment, "FAILED").await?;
    let failed = handle(
        &fleet,
        &handler,
        deployment_event("ecs-bad", bad, "SERVICE_DEPLOYMENT_FAILED", &deployment),
    )
    .await?;
    println!("{}", failed.message);
    // moto's circuit breaker does not roll back here: tugboat does.
    ensure!(
        failed.action == Action::FinishRelease && failed.outcome == "in_progress",
        "{failed:?}"
    );
    ensure!(
        failed.message.contains(&unit(good)) && failed.message.contains(&unit(finished)),
        "the answer does not name the services rolled back with the fleet: {}",
        failed.message
    );
    let failing = newest(&fleet, bad).await?;
    ensure!(
        failing.outcome == RecordOutcome::InProgress && failing.rollback_deployment_id.is_some(),
        "the failed service is not rolling back: {failing:?}"
    );
    // rollback_all: the release still rolling out is concluded with a rollback ...
    let rolling = newest(&fleet, good).await?;
    ensure!(
        rolling.outcome == RecordOutcome::InProgress
            && rolling.rollback_deployment_id.is_some()
            && rolling.trigger.as_deref() == Some("push-1"),
        "{}: {rolling:?}",
        unit(good)
    );
    // ... and the one already released is rolled back by a release of its own.
    let released = newest(&fleet, finished).await?;
    ensure!(
        released.outcome == RecordOutcome::InProgress
            && released.rollback_of.as_ref() == Some(&record_of_finished.release_id)
            && released.revision.as_ref().map(|r| r.id.as_str())
                == Some(finished.initial_revision.as_str())
            && released.rollback_deployment_id.is_some(),
        "{}: {released:?}",
        unit(finished)
    );
    // The same failure reported again (a redelivery) rolls nothing back twice.
    let again = handle(
        &fleet,
        &handler,
        deployment_event("ecs-bad", bad, "SERVICE_DEPLOYMENT_FAILED", &deployment),
    )
    .await?;
    ensure!(again.outcome == "ignored", "a redelivery: {again:?}");
    ensure!(
        newest(&fleet, finished).await?.release_id == released.release_id,
        "a redelivery started another rollback"
    );
    // ECS's events of the rollbacks conclude them.
    for (service, record, id) in [
        (good, &rolling, "ecs-rb-1"),
        (finished, &released, "ecs-rb-2"),
    ] {
        let deployment = record
            .rollback_deployment_id
            .clone()
            .context("no rollback deployment")?;
        wait_for(&fleet, service, &deployment, "COMPLETED").await?;
        let done = handle(
            &fleet,
            &handler,
            deployment_event(id, service, "SERVICE_DEPLOYMENT_COMPLETED", &deployment),
        )
        .await?;
        ensure!(done.outcome == "rolled_back", "{}: {done:?}", unit(service));
    }
    for service in [good, finished, bad] {
        eventually(Duration::from_secs(30), || async {
            Ok(fleet.running_revision(service).await? == service.initial_revision)
        })
        .await
        .with_context(|| {
            format!(
                "{} is not back on {}",
                unit(service),
                service.initial_revision
            )
        })?;
    }
    Ok(())
}
