//! Task definitions: unknown fields survive, `describe-task-definition` output is
//! accepted, rendering merges a release in, and the normalised diff ignores the defaults
//! AWS fills in but shows real changes.

use crate::support::{cv_matcher, pinned_image, read_data, TempDir};
use pipeline_core::task_definition::{self, ReleaseInputs, ResourceTag, READ_ONLY_FIELDS};
use pipeline_core::{Project, SecretRef, TaskDefinition};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

fn parse(name: &str, text: &str) -> TaskDefinition {
    TaskDefinition::parse(Path::new(name), text)
        .unwrap_or_else(|err| panic!("{name} should parse: {err}"))
}

fn parse_value(name: &str, value: &Value) -> TaskDefinition {
    parse(name, &value.to_string())
}

#[test]
fn fields_tugboat_does_not_model_survive_a_round_trip() {
    let text = read_data("round-trip.json");
    let original: Value = serde_json::from_str(&text).expect("round-trip.json is JSON");
    let definition = parse("round-trip.json", &text);

    let written: Value =
        serde_json::from_str(&definition.to_json_pretty()).expect("to_json_pretty writes JSON");
    assert_eq!(written, original);
    // Spot checks, so a failure says which kind of field went missing.
    for pointer in [
        "/runtimePlatform/cpuArchitecture",
        "/ephemeralStorage/sizeInGiB",
        "/futureField/nested/3",
        "/containerDefinitions/0/healthCheck/command/1",
        "/containerDefinitions/0/dependsOn/0/condition",
        "/containerDefinitions/0/containerFutureField",
        "/containerDefinitions/1/command",
    ] {
        assert_eq!(
            written.pointer(pointer),
            original.pointer(pointer),
            "{pointer} changed in the round trip"
        );
        assert!(
            original.pointer(pointer).is_some(),
            "{pointer} is in the test data"
        );
    }
}

#[test]
fn describe_task_definition_output_is_accepted_without_its_read_only_fields() {
    let definition = parse(
        "describe-cv-matcher-6.json",
        &read_data("describe-cv-matcher-6.json"),
    );
    let written = serde_json::to_value(&definition).expect("serialises");
    let object = written.as_object().expect("an object");
    for field in READ_ONLY_FIELDS {
        assert!(!object.contains_key(*field), "{field} was not stripped");
    }
    // The describe wrapper's `tags` belong to the revision, not to its definition.
    assert!(
        !object.contains_key("tags"),
        "the describe `tags` leaked in"
    );
    assert!(!object.contains_key("taskDefinition"));
    assert_eq!(definition.family, "cv-matcher");
    assert_eq!(
        object.get("executionRoleArn"),
        Some(&json!(
            "arn:aws:iam::123456789012:role/cv-matcher-task-execution"
        ))
    );
    assert_eq!(
        definition.secret_sources().len(),
        3,
        "the secrets are modelled: {:?}",
        definition.secret_sources()
    );

    // The inner object alone (`--query taskDefinition`) parses the same.
    let full: Value = serde_json::from_str(&read_data("describe-cv-matcher-6.json")).expect("JSON");
    assert_eq!(
        parse_value("inner.json", &full["taskDefinition"]),
        definition
    );
}

#[test]
fn a_project_can_name_a_describe_task_definition_file() {
    let dir = TempDir::new("describe-file");
    let config = std::fs::read_to_string(crate::support::cv_matcher_config())
        .expect("the example config")
        .replace(
            "file = \".aws/task-definition.json\"",
            "file = \"registered.json\"",
        );
    let config = dir.write("tugboat.toml", &config);
    dir.write(
        "registered.json",
        &read_data("describe-cv-matcher-file.json"),
    );
    let project = Project::load_with(&config, &|_| None).expect("loads");
    assert_eq!(
        project.task_definition_file,
        dir.path().join("registered.json")
    );
    assert_eq!(
        task_definition::diff(&project.task_definition, &cv_matcher().task_definition),
        "",
        "the registered revision of the example file is the example file"
    );
}

/// The cv-matcher file as JSON, to mutate.
fn cv_matcher_file() -> Value {
    let path = crate::support::cv_matcher_config()
        .parent()
        .map(|root| root.join(".aws/task-definition.json"))
        .expect("the example folder");
    let text = std::fs::read_to_string(path).expect("the example task definition");
    serde_json::from_str(&text).expect("JSON")
}

#[test]
fn a_registered_revision_and_its_file_have_no_diff() {
    let registered = parse(
        "describe-cv-matcher-file.json",
        &read_data("describe-cv-matcher-file.json"),
    );
    let mut reordered = cv_matcher_file();
    reordered["requiresCompatibilities"] = json!(["FARGATE"]);
    reordered["containerDefinitions"][0]["environment"] = json!([]);
    reordered["containerDefinitions"][0]["essential"] = json!(true);
    reordered["containerDefinitions"][0]["cpu"] = json!(0);

    let cases = [
        ("the file as written", cv_matcher_file()),
        ("the file with the defaults spelled out", reordered),
    ];
    for (name, file) in cases {
        let file = parse_value(name, &file);
        assert_eq!(task_definition::diff(&registered, &file), "", "{name}");
        assert_eq!(registered.normalised(), file.normalised(), "{name}");
    }
}

#[test]
fn environment_and_secrets_order_is_not_a_change() {
    let mut one = cv_matcher_file();
    one["containerDefinitions"][0]["environment"] =
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]);
    let mut other = one.clone();
    other["containerDefinitions"][0]["environment"] =
        json!([{"name": "B", "value": "2"}, {"name": "A", "value": "1"}]);
    assert_eq!(
        task_definition::diff(&parse_value("one", &one), &parse_value("other", &other)),
        ""
    );
}

#[test]
fn a_real_change_shows_in_the_diff() {
    type Edit = fn(&mut Value);
    // What the file changes, and the diff's removed (`-`) and added (`+`) lines.
    let cases: [(&str, Edit, &[&str], &[&str]); 6] = [
        (
            "a new image",
            |v| v["containerDefinitions"][0]["image"] = json!("cv_matcher@sha256:0000"),
            &[r#""image": "<ECR_URI>:latest""#],
            &[r#""image": "cv_matcher@sha256:0000""#],
        ),
        (
            "more memory",
            |v| v["memory"] = json!("1024"),
            &[r#""memory": "512""#],
            &[r#""memory": "1024""#],
        ),
        (
            "a new variable",
            |v| {
                v["containerDefinitions"][0]["environment"] =
                    json!([{"name": "APP_ENV", "value": "staging"}])
            },
            &[],
            &[
                r#""environment": ["#,
                "{",
                r#""name": "APP_ENV""#,
                r#""value": "staging""#,
                "}",
                "],",
            ],
        ),
        (
            "another port",
            |v| v["containerDefinitions"][0]["portMappings"][0]["containerPort"] = json!(8080),
            &[r#""containerPort": 8000"#, r#""hostPort": 8000"#],
            &[r#""containerPort": 8080"#, r#""hostPort": 8080"#],
        ),
        (
            "a container that may stop",
            |v| v["containerDefinitions"][0]["essential"] = json!(false),
            &[r#""essential": true"#],
            &[r#""essential": false"#],
        ),
        (
            "a field tugboat does not model",
            |v| v["ephemeralStorage"] = json!({"sizeInGiB": 40}),
            &[],
            &[r#""ephemeralStorage": {"#, r#""sizeInGiB": 40"#, "},"],
        ),
    ];
    let registered = parse(
        "describe-cv-matcher-file.json",
        &read_data("describe-cv-matcher-file.json"),
    );
    for (name, edit, removed, added) in cases {
        let mut file = cv_matcher_file();
        edit(&mut file);
        let diff = task_definition::diff(&registered, &parse_value(name, &file));
        assert!(
            diff.starts_with("--- registered\n+++ rendered\n@@ "),
            "{name}:\n{diff}"
        );
        let body: Vec<&str> = diff.lines().skip(2).collect();
        let changed = |sign: char| -> Vec<&str> {
            body.iter()
                .filter_map(|line| line.strip_prefix(sign))
                .map(str::trim)
                .collect()
        };
        for (sign, expected) in [('-', removed), ('+', added)] {
            let lines = changed(sign);
            for text in expected {
                assert!(
                    lines
                        .iter()
                        .any(|line| line.trim_end_matches(',') == text.trim_end_matches(',')),
                    "{name}: the diff should have a {sign} line {text:?}:\n{diff}"
                );
            }
            assert_eq!(
                lines.len(),
                expected.len(),
                "{name}: only the change shows ({sign}):\n{diff}"
            );
        }
    }
}

#[test]
fn rendering_merges_the_release_into_the_named_containers_only() {
    let definition = parse(
        "render.json",
        &json!({
            "family": "cv-matcher",
            "taskRoleArn": "arn:aws:iam::123456789012:role/from-the-file",
            "containerDefinitions": [
                {
                    "name": "cv-matcher",
                    "image": "<ECR_URI>:latest",
                    "environment": [
                        {"name": "APP_ENV", "value": "development"},
                        {"name": "LOG_LEVEL", "value": "info"},
                        {"name": "DATABASE_URL", "value": "sqlite:///dev.db"}
                    ]
                },
                {"name": "log-router", "image": "fluent-bit:2"}
            ]
        })
        .to_string(),
    );
    let environment = BTreeMap::from([
        ("APP_ENV".to_string(), "staging".to_string()),
        ("FEATURE_X".to_string(), "on".to_string()),
    ]);
    let secrets = [SecretRef {
        name: "DATABASE_URL".into(),
        value_from: "arn:aws:ssm:us-east-1:123456789012:parameter/cv-matcher/staging/DATABASE_URL"
            .into(),
    }];
    let image = pinned_image();
    let containers = ["cv-matcher".to_string()];
    let inputs = ReleaseInputs {
        image: &image,
        containers: &containers,
        environment: &environment,
        secrets: &secrets,
        execution_role_arn: Some("arn:aws:iam::123456789012:role/execution"),
        task_role_arn: Some("arn:aws:iam::123456789012:role/not-used-the-file-has-one"),
        tags: vec![ResourceTag {
            key: "tugboat:release".into(),
            value: "r1".into(),
        }],
    };
    let rendered = definition.render(&inputs).expect("renders");
    let value = serde_json::to_value(&rendered).expect("serialises");
    assert_eq!(
        value,
        json!({
            "definition": {
                "family": "cv-matcher",
                "containerDefinitions": [
                    {
                        "name": "cv-matcher",
                        "image": image.reference(),
                        "environment": [
                            {"name": "APP_ENV", "value": "staging"},
                            {"name": "LOG_LEVEL", "value": "info"},
                            {"name": "FEATURE_X", "value": "on"}
                        ],
                        "secrets": [
                            {
                                "name": "DATABASE_URL",
                                "valueFrom": "arn:aws:ssm:us-east-1:123456789012:parameter/cv-matcher/staging/DATABASE_URL"
                            }
                        ]
                    },
                    {"name": "log-router", "image": "fluent-bit:2"}
                ],
                "taskRoleArn": "arn:aws:iam::123456789012:role/from-the-file",
                "executionRoleArn": "arn:aws:iam::123456789012:role/execution"
            },
            "tags": [{"key": "tugboat:release", "value": "r1"}]
        })
    );
    assert_eq!(
        definition.container("cv-matcher").map(|c| c.image.as_str()),
        Some("<ECR_URI>:latest"),
        "render does not change the source definition"
    );

    let unknown = ["worker".to_string()];
    let err = definition
        .render(&ReleaseInputs {
            containers: &unknown,
            ..inputs
        })
        .expect_err("no container named worker");
    assert!(err.contains("\"worker\""), "{err}");
}
