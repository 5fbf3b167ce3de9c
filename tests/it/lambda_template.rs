//! `infra/lambda.yaml` grants every AWS action the Lambda's code makes: the calls are
//! read from the adapters the function is wired with, so a new call without its
//! permission fails here instead of on AWS.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The adapter files the Lambda uses, and the IAM service prefix of their calls.
const ADAPTERS: &[(&str, &str)] = &[
    ("ecs/mod.rs", "ecs"),
    ("ecs/deployer.rs", "ecs"),
    ("ecs/diagnose.rs", "ecs"),
    ("ecs/run_task.rs", "ecs"),
    ("ecs/observe.rs", "ecs"),
    ("ecs/service_deployment.rs", "ecs"),
    ("ecs/status.rs", "ecs"),
    ("ecs/strategy.rs", "ecs"),
    ("ecr.rs", "ecr"),
    ("ssm.rs", "ssm"),
    ("s3.rs", "s3"),
    ("alarms.rs", "cloudwatch"),
    ("targets.rs", "elasticloadbalancing"),
];

/// Calls in those files that the function never makes, or that need no permission.
const NOT_THE_FUNCTIONS: &[&str] = &[
    // Pushing images is the CLI's (the function deploys images already pushed).
    "ecr:CreateRepository",
    "ecr:GetAuthorizationToken",
    // No IAM permission exists for it.
    "sts:GetCallerIdentity",
];

/// `describe_services` → `DescribeServices`.
fn action_name(call: &str) -> String {
    call.split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The SDK operations a file calls: lines that are only `.verb_noun()`.
fn calls_in(file: &Path, prefix: &str) -> BTreeSet<String> {
    const VERBS: &[&str] = &[
        "describe",
        "list",
        "get",
        "put",
        "delete",
        "register",
        "deregister",
        "update",
        "stop",
        "start",
        "create",
        "batch",
        "tag",
    ];
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    text.lines()
        .filter_map(|line| {
            let call = line.trim().strip_prefix('.')?.strip_suffix("()")?;
            let verb = call.split('_').next()?;
            (VERBS.contains(&verb)
                && call
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .then(|| call.to_string())
        })
        .map(|call| {
            let service = match call.as_str() {
                // The same clients file calls another service's API.
                "describe_scalable_targets" => "application-autoscaling",
                // The target-health check finds the service's target groups through ECS.
                "describe_services" => "ecs",
                "get_caller_identity" => "sts",
                // The failure diagnosis reads the stopped tasks' log streams.
                "get_log_events" => "logs",
                _ => prefix,
            };
            let action = match (service, call.as_str()) {
                // ListObjectsV2 is authorised as s3:ListBucket.
                ("s3", "list_objects_v2") => "ListBucket".to_string(),
                _ => action_name(&call),
            };
            format!("{service}:{action}")
        })
        .collect()
}

#[test]
fn the_template_grants_every_call_the_function_makes() {
    let template =
        std::fs::read_to_string(workspace().join("infra/lambda.yaml")).expect("template");
    let adapters = workspace().join("crates/aws-adapters/src");
    let mut needed = BTreeSet::new();
    for (file, prefix) in ADAPTERS {
        needed.extend(calls_in(&adapters.join(file), prefix));
    }
    // The function's own: its logs, and the dead-letter queue Lambda writes for it.
    needed.extend(
        [
            "logs:CreateLogStream",
            "logs:PutLogEvents",
            "sqs:SendMessage",
        ]
        .map(String::from),
    );
    // Sanity: the reader found the calls tugboat is known to make.
    for known in [
        "ecs:UpdateService",
        "ecs:RegisterTaskDefinition",
        "s3:PutObject",
        "cloudwatch:DescribeAlarms",
    ] {
        assert!(
            needed.contains(known),
            "the call reader missed {known}: {needed:?}"
        );
    }
    let missing: Vec<&String> = needed
        .iter()
        .filter(|action| !NOT_THE_FUNCTIONS.contains(&action.as_str()))
        .filter(|action| !template.contains(action.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "infra/lambda.yaml does not grant {missing:?}"
    );
}

#[test]
fn the_template_limits_what_the_function_may_destroy() {
    let template =
        std::fs::read_to_string(workspace().join("infra/lambda.yaml")).expect("template");
    // Deletes only the deploy locks, never a record.
    let delete = template
        .split("- Sid: ")
        .find(|statement| statement.contains("s3:DeleteObject"))
        .expect("a statement with s3:DeleteObject");
    assert!(delete.contains("/lock.json"), "{delete}");
    assert!(
        !delete.contains("s3:GetObject"),
        "deletes share no statement with reads: {delete}"
    );
    // Deregisters only the app's family.
    let deregister = template
        .split("- Sid: ")
        .find(|statement| statement.contains("ecs:DeregisterTaskDefinition"))
        .expect("a statement with ecs:DeregisterTaskDefinition");
    assert!(
        deregister.contains("task-definition/${TaskDefinitionFamily}:*"),
        "{deregister}"
    );
    // ECS may assume the hook role only for this account.
    assert!(
        template.contains("aws:SourceAccount"),
        "the hook role's trust has no aws:SourceAccount"
    );
}
