//! Fleets in `tugboat.toml`: `[services]`, an environment's `services`, `regions` and
//! `on_failure`, the single-service views derived from them, and bad fleet configs
//! refused with the file, the key and a fix.

use crate::support::TempDir;
use pipeline_core::config::FailurePolicy;
use pipeline_core::{ConfigError, Project};

const FLEET: &str = r#"
[app]
name = "shop"

[image]
repository = "shop"

[task_definition]
file = "web.json"
containers = ["web"]

[services.web]
desired_count = 3

[services.worker]
task_definition = "worker.json"
containers = ["worker"]

[environments.staging]
cluster = "shop-staging"
service = "{app}-{service}-staging"
region = "us-east-1"
services = ["web"]

[environments.production]
cluster = "shop-{region}"
service = "{app}-{service}"
on_failure = "rollback_failed"
regions = ["us-east-1", { name = "eu-west-1", cluster = "shop-europe", services = ["worker"] }]
"#;

fn definition(family: &str, container: &str) -> String {
    format!(
        r#"{{"family": "{family}", "containerDefinitions": [{{"name": "{container}", "image": "x"}}]}}"#
    )
}

fn load(config: &str) -> (TempDir, Result<Project, ConfigError>) {
    let dir = TempDir::new("fleet");
    dir.write("web.json", &definition("shop-web", "web"));
    dir.write("worker.json", &definition("shop-worker", "worker"));
    let file = dir.write("tugboat.toml", config);
    let loaded = Project::load_with(&file, &|_| None);
    (dir, loaded)
}

#[test]
fn each_service_and_region_is_its_own_single_service_environment() {
    let (_dir, project) = load(FLEET);
    let project = project.expect("the fleet config loads");
    assert!(project.is_fleet());
    let units = project.fleet_units("production", &[]).expect("units");
    let seen: Vec<(String, String, String, Option<String>)> = units
        .iter()
        .map(|u| {
            let target = u.project.target(&u.environment).expect("target");
            (
                u.environment.clone(),
                target.cluster,
                target.service,
                target.region,
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                "production.web.us-east-1".into(),
                "shop-us-east-1".into(),
                "shop-web".into(),
                Some("us-east-1".into())
            ),
            (
                "production.worker.us-east-1".into(),
                "shop-us-east-1".into(),
                "shop-worker".into(),
                Some("us-east-1".into())
            ),
            (
                "production.worker.eu-west-1".into(),
                "shop-europe".into(),
                "shop-worker".into(),
                Some("eu-west-1".into())
            ),
        ]
    );
    let worker = &units[1].project;
    assert_eq!(worker.task_definition.family, "shop-worker");
    assert_eq!(worker.config.task_definition.containers, vec!["worker"]);
    assert!(!worker.is_fleet(), "a unit's project is one service");
    let web = &units[0].project;
    let web_env = web.environment("production.web.us-east-1").expect("env");
    assert_eq!(
        web_env.desired_count,
        Some(3),
        "the service's own desired count"
    );
    // Pruning of web's family looks at every environment that runs web.
    let mut envs: Vec<&String> = web.config.environments.keys().collect();
    envs.sort();
    assert_eq!(envs, vec!["production.web.us-east-1", "staging.web"]);
    assert_eq!(
        project.failure_policy("production").expect("policy"),
        FailurePolicy::RollbackFailed
    );
    assert_eq!(
        project.failure_policy("staging").expect("policy"),
        FailurePolicy::RollbackAll,
        "rollback_all is the fleet's default"
    );
    let only = project
        .fleet_units("production", &["worker".into()])
        .expect("units");
    assert_eq!(only.len(), 2);
    let unknown = project
        .fleet_units("staging", &["worker".into()])
        .expect_err("staging does not release worker")
        .to_string();
    assert!(unknown.contains("--service takes one of: web"), "{unknown}");
}

#[test]
fn a_config_without_services_is_one_service() {
    let (_dir, project) = load(
        r#"
[app]
name = "shop"
[image]
repository = "shop"
[task_definition]
file = "web.json"
containers = ["web"]
[environments.production]
cluster = "c"
service = "s"
"#,
    );
    let project = project.expect("loads");
    assert!(!project.is_fleet());
    assert!(project.services.is_empty());
}

#[test]
fn bad_fleet_configs_name_the_file_the_key_and_a_fix() {
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            "service = \"{app}-{service}\"",
            "service = \"shop\"",
            "environments.production.service",
            &["same ECS service", "put {service} in the pattern"],
        ),
        (
            "services = [\"web\"]",
            "services = [\"web\", \"api\"]",
            "environments.staging.services[1]",
            &[
                "names no [services] entry",
                "\"api\"",
                "the services are: web, worker",
            ],
        ),
        (
            "service = \"{app}-{service}-staging\"",
            "service = \"{app}-{svc}\"",
            "environments.staging.service",
            &["placeholder", "{app}, {service}, {region}, {environment}"],
        ),
        (
            "regions = [\"us-east-1\",",
            "regions = [\"us-east\",",
            "environments.production.regions[0]",
            &["is not an AWS region"],
        ),
        (
            "services = [\"worker\"] }",
            "services = [\"cron\"] }",
            "environments.production.regions[1].services[0]",
            &["names no service of this environment"],
        ),
        (
            "containers = [\"worker\"]",
            "containers = [\"wrker\"]",
            "services.worker.containers[0]",
            &[
                "names no container",
                "worker.json",
                "its containers are: worker",
            ],
        ),
        (
            "services = [\"worker\"] }]",
            "services = [\"worker\"] }]\n[[environments.production.before_deploy]]\ncommand = [\"migrate\"]",
            "environments.production.before_deploy",
            &["once for every service", "[[services.NAME.before_deploy]]"],
        ),
        (
            "containers = [\"worker\"]",
            "containers = [\"worker\"]\n[[services.worker.before_deploy]]\ncontainer = \"web\"\ncommand = [\"migrate\"]",
            "services.worker.before_deploy[0].container",
            &["names no container", "worker.json", "its containers are: worker"],
        ),
        (
            "containers = [\"worker\"]",
            "containers = [\"worker\"]\n[[services.worker.before_deploy]]\ncommand = []",
            "services.worker.before_deploy[0].command",
            &["must name a program"],
        ),
        (
            "on_failure = \"rollback_failed\"",
            "on_failure = \"rollback_some\"",
            "environments.production.on_failure",
            &["rollback_all", "rollback_failed"],
        ),
    ];
    for (from, to, key, says) in cases {
        assert!(FLEET.contains(from), "{from}");
        let (dir, loaded) = load(&FLEET.replacen(from, to, 1));
        let error = loaded.expect_err(&format!("{to} must be refused"));
        let text = error.to_string();
        assert!(
            text.starts_with(&dir.path().join("tugboat.toml").display().to_string()),
            "names the file: {text}"
        );
        assert!(text.contains(&format!("`{key}`")), "names {key}: {text}");
        for part in *says {
            assert!(text.contains(part), "says {part:?}: {text}");
        }
    }
}

#[test]
fn fleet_settings_without_services_are_refused() {
    let (_dir, loaded) = load(
        r#"
[app]
name = "shop"
[image]
repository = "shop"
[task_definition]
file = "web.json"
containers = ["web"]
[environments.production]
cluster = "c"
service = "s"
on_failure = "rollback_all"
"#,
    );
    let text = loaded.expect_err("refused").to_string();
    assert!(
        text.contains("`environments.production.on_failure`")
            && text.contains("no [services]")
            && text.contains("help: add a [services.NAME] table"),
        "{text}"
    );
}

#[test]
fn a_services_own_one_off_tasks_run_in_its_releases_only() {
    let config = FLEET.replacen(
        "containers = [\"worker\"]",
        "containers = [\"worker\"]\n[[services.worker.before_deploy]]\nname = \"migrate\"\ncommand = [\"alembic\", \"upgrade\", \"head\"]",
        1,
    );
    let (_dir, project) = load(&config);
    let project = project.expect("loads");
    let units = project.fleet_units("production", &[]).expect("units");
    for unit in &units {
        let env = unit.project.environment(&unit.environment).expect("env");
        let names: Vec<String> = env
            .before_deploy
            .iter()
            .enumerate()
            .map(|(i, t)| t.display_name(i))
            .collect();
        if unit.environment.starts_with("production.worker") {
            assert_eq!(names, ["migrate"], "{}", unit.environment);
        } else {
            assert!(names.is_empty(), "{}: {names:?}", unit.environment);
        }
    }
}
