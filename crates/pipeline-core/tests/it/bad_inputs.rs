//! Bad `tugboat.toml` and task definition files, as a table. Each case edits a valid
//! project and checks that loading it fails with an error naming the file, the full key
//! and the value found, plus any hint the case expects.

use crate::support::TempDir;
use pipeline_core::config::{LifecycleStage, StrategyKind, StrategySettings};
use pipeline_core::{ConfigError, Project};
use std::path::PathBuf;

const CONFIG: &str = r#"
[app]
name = "demo"

[image]
repository = "demo"

[task_definition]
file = "task-definition.json"
containers = ["web"]

[environments.staging]
cluster = "demo-staging"
service = "demo"
region = "us-east-1"
branches = ["develop"]
secrets_path = "/demo/staging/"
desired_count = 1

[environments.staging.deploy]
poll_interval_seconds = 5

[environments.staging.verify]
url = "https://staging.example.com"
health_path = "/health"
expected_status = 200

[environments.staging.notify]
on = ["failed"]

[environments.production]
cluster = "demo-production"
service = "demo"
tags = ["v*"]
"#;

const TASK_DEFINITION: &str = r#"{
  "family": "demo",
  "networkMode": "awsvpc",
  "requiresCompatibilities": ["FARGATE"],
  "cpu": "256",
  "memory": "512",
  "containerDefinitions": [
    {
      "name": "web",
      "image": "demo:latest",
      "portMappings": [{ "containerPort": 8000 }],
      "environment": [{ "name": "LOG_LEVEL", "value": "info" }]
    }
  ]
}
"#;

/// A complete canary strategy for production (load balancer settings included), baking
/// 15 + 5 minutes; a case appends to it.
macro_rules! canary {
    ($($more:literal),*) => {
        concat!(
            "tags = [\"v*\"]\n\n[environments.production.strategy]\n",
            "alternate_target_group_arn = \"arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/demo-green/1\"\n",
            "production_listener_rule = \"arn:aws:elasticloadbalancing:us-east-1:123456789012:listener-rule/app/demo/1/2/3\"\n",
            "role_arn = \"arn:aws:iam::123456789012:role/ecs-lb\"\n",
            $($more),*
        )
    };
}

/// Where a case adds the scan table of staging.
const STAGING_VERIFY: &str = "[environments.staging.verify]";

/// Which file the error must name.
#[derive(Clone, Copy, Debug, PartialEq)]
enum File {
    Config,
    Definition,
    /// A file that does not exist: `missing.json` next to the config.
    Missing,
}

struct Case {
    name: &'static str,
    /// `(from, to)` replacements in [`CONFIG`]; `from` must occur in it.
    config: &'static [(&'static str, &'static str)],
    /// `(from, to)` replacements in [`TASK_DEFINITION`].
    definition: &'static [(&'static str, &'static str)],
    /// Environment variables the config may read.
    vars: &'static [(&'static str, &'static str)],
    file: File,
    key: &'static str,
    /// Text the error's value must contain; `None` when there is no value (a missing key).
    value: Option<&'static str>,
    /// More text the whole message must contain (problem, hint).
    says: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    let case = |name| Case {
        name,
        config: &[],
        definition: &[],
        vars: &[],
        file: File::Config,
        key: "",
        value: None,
        says: &[],
    };
    vec![
        Case {
            config: &[("repository = \"demo\"", "repository = \"demo\"\nsecrets = [\"NPM TOKEN\"]")],
            key: "image.secrets[0]",
            value: Some("\"NPM TOKEN\""),
            says: &["name of an environment variable"],
            ..case("a build secret that is not a variable name")
        },
        Case {
            config: &[("expected_status = 200", "expected_status = \"${STATUS}\"")],
            vars: &[("STATUS", "ghp_s3cr3tT0kenValue")],
            key: "environments.staging.verify.expected_status",
            value: Some("the value of ${STATUS}"),
            ..case("a variable's value is never echoed")
        },
        Case {
            config: &[("[task_definition]", "[test]\nartifacts = [\"../../etc/passwd\"]\n\n[task_definition]")],
            key: "test.artifacts[0]",
            value: Some("\"../../etc/passwd\""),
            says: &["inside the test folder"],
            ..case("a test artifact outside the project (`..`)")
        },
        Case {
            config: &[("[task_definition]", "[test]\nartifacts = [\"/root/.aws/credentials\"]\n\n[task_definition]")],
            key: "test.artifacts[0]",
            value: Some("\"/root/.aws/credentials\""),
            says: &["relative, without `..`"],
            ..case("a test artifact at an absolute path")
        },
        Case {
            config: &[("desired_count = 1", "desired_count = \"two\"")],
            key: "environments.staging.desired_count",
            value: Some("\"two\""),
            says: &["expected u32"],
            ..case("wrong type: a string for a number")
        },
        Case {
            config: &[("branches = [\"develop\"]", "branches = \"develop\"")],
            key: "environments.staging.branches",
            value: Some("\"develop\""),
            says: &["expected a sequence"],
            ..case("wrong type: a string for a list")
        },
        Case {
            config: &[("name = \"demo\"", "name = 42")],
            key: "app.name",
            value: Some("42"),
            says: &["expected a string"],
            ..case("wrong type: a number for a string")
        },
        Case {
            config: &[("on = [\"failed\"]", "on = [\"finished\"]")],
            key: "environments.staging.notify.on[0]",
            value: Some("finished"),
            says: &["started", "succeeded", "rolled_back"],
            ..case("an unknown notification kind")
        },
        Case {
            config: &[("expected_status = 200", "exepcted_status = 200")],
            key: "environments.staging.verify.exepcted_status",
            value: Some("exepcted_status"),
            says: &["is not a known key", "did you mean `environments.staging.verify.expected_status`"],
            ..case("unknown key: a typo deep in an environment")
        },
        Case {
            config: &[("cluster = \"demo-staging\"", "clustr = \"demo-staging\"")],
            key: "environments.staging.clustr",
            value: Some("clustr"),
            says: &["did you mean `environments.staging.cluster`"],
            ..case("unknown key: a typo in an environment")
        },
        Case {
            config: &[("poll_interval_seconds = 5", "poll_interval_seconds = 5\ndeploy = true")],
            key: "environments.staging.deploy.deploy",
            value: Some("deploy"),
            says: &["is not a known key", "valid keys here: timeout_seconds"],
            ..case("unknown key: named like its table")
        },
        Case {
            config: &[("[image]", "[imgae]")],
            key: "imgae",
            value: Some("imgae"),
            says: &["did you mean `image`"],
            ..case("unknown key: a typo in a top-level table")
        },
        Case {
            config: &[("repository = \"demo\"", "repository = \"CV Matcher\"")],
            key: "image.repository",
            value: Some("\"CV Matcher\""),
            says: &["is not an ECR repository name"],
            ..case("a repository name ECR refuses")
        },
        Case {
            config: &[(
                "repository = \"demo\"",
                "repository = \"demo\"\nplatform = \"windows/amd64\"",
            )],
            key: "image.platform",
            value: Some("\"windows/amd64\""),
            says: &["linux/arm64"],
            ..case("a platform Fargate does not run")
        },
        Case {
            config: &[("containers = [\"web\"]", "containers = [\"worker\"]")],
            key: "task_definition.containers[0]",
            value: Some("\"worker\""),
            says: &["names no container of the task definition", "containers are: web"],
            ..case("a container the task definition does not have")
        },
        Case {
            config: &[("containers = [\"web\"]", "containers = []")],
            key: "task_definition.containers",
            value: Some("[]"),
            says: &["at least one container"],
            ..case("no container to receive the image")
        },
        Case {
            config: &[("cluster = \"demo-staging\"", "cluster = \"${STAGING_CLUSTER}\"")],
            key: "environments.staging.cluster",
            value: Some("${STAGING_CLUSTER}"),
            says: &["STAGING_CLUSTER, which is not set", "${STAGING_CLUSTER:-default}"],
            ..case("an unset variable")
        },
        Case {
            config: &[("tags = [\"v*\"]", "tags = [\"${RELEASE_TAG_PATTERN}\"]")],
            vars: &[("STAGING_CLUSTER", "unused")],
            key: "environments.production.tags[0]",
            value: Some("${RELEASE_TAG_PATTERN}"),
            says: &["RELEASE_TAG_PATTERN, which is not set"],
            ..case("an unset variable inside a list")
        },
        Case {
            config: &[("url = \"https://staging.example.com\"", "url = \"https://${HOST\"")],
            key: "environments.staging.verify.url",
            value: Some("https://${HOST"),
            says: &["unclosed `${`"],
            ..case("an unclosed variable")
        },
        Case {
            config: &[("service = \"demo\"\nregion", "service = \"${1SERVICE}\"\nregion")],
            key: "environments.staging.service",
            value: Some("${1SERVICE}"),
            says: &["bad variable name"],
            ..case("a bad variable name")
        },
        Case {
            config: &[("region = \"us-east-1\"", "region = \"useast1\"")],
            key: "environments.staging.region",
            value: Some("\"useast1\""),
            says: &["is not an AWS region", "us-east-1"],
            ..case("a bad region")
        },
        Case {
            config: &[("url = \"https://staging.example.com\"", "url = \"staging.example.com\"")],
            key: "environments.staging.verify.url",
            value: Some("\"staging.example.com\""),
            says: &["http:// or https://"],
            ..case("a URL without a scheme")
        },
        Case {
            config: &[("health_path = \"/health\"", "health_path = \"health\"")],
            key: "environments.staging.verify.health_path",
            value: Some("\"health\""),
            says: &["must start with '/'"],
            ..case("a health path without a slash")
        },
        Case {
            config: &[("expected_status = 200", "expected_status = 999")],
            key: "environments.staging.verify.expected_status",
            value: Some("999"),
            says: &["is not an HTTP status"],
            ..case("an HTTP status out of range")
        },
        Case {
            config: &[("expected_status = 200", "expected_status = 200\nfail_on_firing_alarms = \"yes\"")],
            key: "environments.staging.verify.fail_on_firing_alarms",
            value: Some("\"yes\""),
            says: &["expected a boolean"],
            ..case("wrong type: a string for the firing-alarms switch")
        },
        Case {
            config: &[("expected_status = 200", "expected_status = 200\nfail_on_firing_alarm = true")],
            key: "environments.staging.verify.fail_on_firing_alarm",
            value: Some("fail_on_firing_alarm"),
            says: &["did you mean `environments.staging.verify.fail_on_firing_alarms`"],
            ..case("unknown key: the firing-alarms switch misspelt")
        },
        Case {
            config: &[("secrets_path = \"/demo/staging/\"", "secrets_path = \"demo/staging\"")],
            key: "environments.staging.secrets_path",
            value: Some("\"demo/staging\""),
            says: &["must start and end with '/'"],
            ..case("a secrets path without slashes")
        },
        Case {
            config: &[("secrets_path = \"/demo/staging/\"", "secrets = [\"DATABASE_URL\"]")],
            key: "environments.staging.secrets",
            says: &["needs secrets_path"],
            ..case("secret names without a secrets path")
        },
        Case {
            config: &[("poll_interval_seconds = 5", "poll_interval_seconds = 0")],
            key: "environments.staging.deploy.poll_interval_seconds",
            value: Some("0"),
            says: &["must be more than 0"],
            ..case("a poll interval of 0")
        },
        Case {
            config: &[("desired_count = 1", "desired_count = 0")],
            key: "environments.staging.desired_count",
            value: Some("0"),
            says: &["must be at least 1"],
            ..case("a desired count of 0")
        },
        Case {
            config: &[(
                "desired_count = 1",
                "desired_count = 1\nexecution_role_arn = \"demo-task-execution\"",
            )],
            key: "environments.staging.execution_role_arn",
            value: Some("\"demo-task-execution\""),
            says: &["is not an IAM role ARN"],
            ..case("a role that is not an ARN")
        },
        Case {
            config: &[("[environments.production]", "[environments.\"prod env\"]")],
            key: "environments.prod env",
            value: Some("\"prod env\""),
            says: &["letters, digits, hyphens or underscores"],
            ..case("an environment name with a space")
        },
        Case {
            config: &[(
                "[environments.production]\ncluster = \"demo-production\"",
                "[environments.staging]\ncluster = \"demo-production\"",
            )],
            key: "environments.staging",
            value: Some("duplicate key"),
            says: &["is not valid TOML"],
            ..case("the same environment twice (a duplicate TOML table)")
        },
        Case {
            config: &[("region = \"us-east-1\"", "region = \"us-east-1\"\nregion = \"eu-west-1\"")],
            key: "environments.staging.region",
            value: Some("duplicate key `region`"),
            says: &["is not valid TOML"],
            ..case("a key set twice")
        },
        Case {
            config: &[("tags = [\"v*\"]", "tags = [\"v*\"]\nbranches = [\"develop\"]")],
            key: "environments.staging.branches",
            value: Some("\"develop\""),
            says: &["branch develop already deploys to environment \"production\""],
            ..case("the same branch rule in two environments")
        },
        Case {
            config: &[("name = \"demo\"", "name = \"demo")],
            key: "line 3",
            value: Some("string"),
            says: &["is not valid TOML"],
            ..case("a TOML syntax error")
        },
        Case {
            config: &[("[image]", "@bad = 1\n[image]")],
            key: "line 5",
            value: Some("invalid"),
            says: &["is not valid TOML"],
            ..case("a TOML syntax error at the start of a line")
        },
        Case {
            config: &[("\n[environments.production]", "\n[environments.staging.records]\nbuckt = \"demo-records\"\n\n[environments.production]")],
            key: "environments.staging.records.buckt",
            value: Some("buckt"),
            says: &["did you mean `environments.staging.records.bucket`"],
            ..case("unknown key: a typo in an optional table")
        },
        Case {
            config: &[("file = \"task-definition.json\"", "file = \"missing.json\"")],
            file: File::Missing,
            key: "$",
            value: Some("No such file"),
            says: &["cannot read the file", "task_definition.file"],
            ..case("a task definition file that does not exist")
        },
        Case {
            definition: &[("\"cpu\": \"256\",", "\"cpu\": \"256\",,")],
            file: File::Definition,
            key: "line 5",
            value: Some("key must be a string at line 5 column 16"),
            says: &["not valid JSON"],
            ..case("bad JSON")
        },
        Case {
            definition: &[("\"family\": \"demo\"", "\"family\": \"\"")],
            file: File::Definition,
            key: "family",
            value: Some("\"\""),
            says: &["1 to 255 letters"],
            ..case("an empty family")
        },
        Case {
            definition: &[("\"family\": \"demo\"", "\"family\": 7")],
            file: File::Definition,
            key: "family",
            value: Some("7"),
            says: &["expected a string"],
            ..case("a family that is a number")
        },
        Case {
            definition: &[("\"cpu\": \"256\"", "\"cpu\": true")],
            file: File::Definition,
            key: "cpu",
            value: Some("true"),
            says: &["expected a string such as \"256\""],
            ..case("a cpu that is a boolean")
        },
        Case {
            definition: &[("\"memory\": \"512\"", "\"memory\": \"4096\"")],
            file: File::Definition,
            key: "memory",
            value: Some("\"4096\""),
            says: &["not allowed with cpu \"256\" on FARGATE", "512, 1024, 2048"],
            ..case("a Fargate memory size the cpu does not allow")
        },
        Case {
            config: &[(
                "tags = [\"v*\"]",
                "tags = [\"v*\"]\n\n[environments.production.strategy]\nkind = \"blue_green\"\nproduction_listener_rule = \"arn:aws:elasticloadbalancing:us-east-1:123456789012:listener-rule/app/demo/1/2/3\"\nrole_arn = \"arn:aws:iam::123456789012:role/ecs-lb\"",
            )],
            key: "environments.production.strategy.alternate_target_group_arn",
            says: &["is required for kind = \"blue_green\"", "help: the green target group"],
            ..case("blue/green without the alternate target group")
        },
        Case {
            config: &[(
                "tags = [\"v*\"]",
                "tags = [\"v*\"]\n\n[environments.production.strategy]\nkind = \"canary\"\ncanary_percent = 0.05\nalternate_target_group_arn = \"arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/demo-green/1\"\nproduction_listener_rule = \"arn:aws:elasticloadbalancing:us-east-1:123456789012:listener-rule/app/demo/1/2/3\"\nrole_arn = \"arn:aws:iam::123456789012:role/ecs-lb\"",
            )],
            key: "environments.production.strategy.canary_percent",
            value: Some("0.05"),
            says: &["from 0.1 to 100"],
            ..case("a canary percent below 0.1")
        },
        Case {
            config: &[(
                "tags = [\"v*\"]",
                "tags = [\"v*\"]\n\n[environments.production.strategy]\nkind = \"red_black\"",
            )],
            key: "environments.production.strategy.kind",
            value: Some("red_black"),
            says: &["blue_green", "canary", "linear"],
            ..case("an unknown strategy kind")
        },
        Case {
            config: &[(
                "tags = [\"v*\"]",
                "tags = [\"v*\"]\n\n[environments.production.strategy]\nbake_minutes = 2000",
            )],
            key: "environments.production.strategy.bake_minutes",
            value: Some("2000"),
            says: &["0 to 1440"],
            ..case("a bake time over a day")
        },
        Case {
            definition: &[("\"cpu\": \"256\"", "\"cpu\": \"300\"")],
            file: File::Definition,
            key: "cpu",
            value: Some("\"300\""),
            says: &["not a Fargate CPU size"],
            ..case("a cpu size Fargate does not have")
        },
        Case {
            definition: &[("\"memory\": \"512\",", "")],
            file: File::Definition,
            key: "memory",
            says: &["is required for FARGATE"],
            ..case("Fargate without memory")
        },
        Case {
            definition: &[("\"networkMode\": \"awsvpc\"", "\"networkMode\": \"bridge\"")],
            file: File::Definition,
            key: "networkMode",
            value: Some("\"bridge\""),
            says: &["must be \"awsvpc\" for FARGATE"],
            ..case("Fargate without awsvpc")
        },
        Case {
            definition: &[("\"containerDefinitions\"", "\"containers\"")],
            file: File::Definition,
            key: "containerDefinitions",
            says: &["missing field"],
            ..case("no containerDefinitions")
        },
        Case {
            definition: &[(
                "\"environment\": [{ \"name\": \"LOG_LEVEL\", \"value\": \"info\" }]",
                "\"environment\": [{ \"name\": \"LOG_LEVEL\", \"value\": \"info\" }, { \"name\": \"LOG_LEVEL\", \"value\": \"debug\" }]",
            )],
            file: File::Definition,
            key: "containerDefinitions[0].environment[1].name",
            value: Some("\"LOG_LEVEL\""),
            says: &["set twice"],
            ..case("a variable set twice in a container")
        },
        Case {
            definition: &[(
                "\"portMappings\": [{ \"containerPort\": 8000 }],",
                "\"portMappings\": [{ \"containerPort\": 8000 }]\n    },\n    {\n      \"name\": \"web\",",
            )],
            file: File::Definition,
            key: "containerDefinitions[1].name",
            value: Some("\"web\""),
            says: &["used by two containers"],
            ..case("two containers with one name")
        },
        Case {
            config: &[("poll_interval_seconds = 5", "poll_interval_seconds = -1")],
            key: "environments.staging.deploy.poll_interval_seconds",
            value: Some("-1"),
            says: &["must be more than 0 and at most 60"],
            ..case("a negative poll interval")
        },
        Case {
            config: &[("poll_interval_seconds = 5", "poll_interval_seconds = nan")],
            key: "environments.staging.deploy.poll_interval_seconds",
            value: Some("NaN"),
            says: &["must be more than 0 and at most 60"],
            ..case("a poll interval that is not a number")
        },
        Case {
            config: &[("poll_interval_seconds = 5", "poll_interval_seconds = 1e300")],
            key: "environments.staging.deploy.poll_interval_seconds",
            value: Some("10000000000"),
            says: &["at most 60"],
            ..case("a poll interval that overflows a Duration")
        },
        Case {
            config: &[("poll_interval_seconds = 5", "poll_interval_seconds = \"${POLL}\"")],
            vars: &[("POLL", "-1")],
            key: "environments.staging.deploy.poll_interval_seconds",
            // Where the value came from, never the value (a variable may hold a secret).
            value: Some("the value of ${POLL}"),
            says: &["must be more than 0"],
            ..case("a negative poll interval from a variable")
        },
        Case {
            config: &[(STAGING_VERIFY, "[environments.staging.scan]\npoll_seconds = inf\n\n[environments.staging.verify]")],
            key: "environments.staging.scan.poll_seconds",
            value: Some("inf"),
            says: &["must be more than 0 and at most 60"],
            ..case("an infinite scan poll")
        },
        Case {
            config: &[(STAGING_VERIFY, "[environments.staging.scan]\npoll_seconds = nan\n\n[environments.staging.verify]")],
            key: "environments.staging.scan.poll_seconds",
            value: Some("NaN"),
            says: &["must be more than 0"],
            ..case("a scan poll that is not a number")
        },
        Case {
            config: &[(STAGING_VERIFY, "[environments.staging.scan]\npoll_seconds = -1\n\n[environments.staging.verify]")],
            key: "environments.staging.scan.poll_seconds",
            value: Some("-1"),
            says: &["must be more than 0"],
            ..case("a negative scan poll")
        },
        Case {
            config: &[(STAGING_VERIFY, "[environments.staging.scan]\nwait_seconds = -1\n\n[environments.staging.verify]")],
            key: "environments.staging.scan.wait_seconds",
            value: Some("-1"),
            ..case("a negative scan wait")
        },
        Case {
            config: &[(STAGING_VERIFY, "[environments.staging.scan]\nwait_seconds = \"${WAIT}\"\n\n[environments.staging.verify]")],
            vars: &[("WAIT", "99999999999")],
            key: "environments.staging.scan.wait_seconds",
            value: Some("the value of ${WAIT}"),
            says: &["must be at most 2592000 seconds (30 days)"],
            ..case("a scan wait from a variable beyond 30 days")
        },
        Case {
            config: &[("poll_interval_seconds = 5", "poll_interval_seconds = 5\ntimeout_seconds = 1e300")],
            key: "environments.staging.deploy.timeout_seconds",
            value: Some("floating point `1000000000"),
            says: &["expected u64"],
            ..case("a deploy timeout that is a float beyond any Duration")
        },
        Case {
            config: &[("poll_interval_seconds = 5", "poll_interval_seconds = 5\ntimeout_seconds = 9223372036854775807")],
            key: "environments.staging.deploy.timeout_seconds",
            value: Some("9223372036854775807"),
            says: &["must be at most 2592000"],
            ..case("a deploy timeout that would overflow a deadline")
        },
        Case {
            config: &[("tags = [\"v*\"]", canary!("kind = \"canary\"\ncanary_percent = 150\n"))],
            key: "environments.production.strategy.canary_percent",
            value: Some("150"),
            says: &["percentage from 0.1 to 100"],
            ..case("a canary percent above 100")
        },
        Case {
            config: &[("tags = [\"v*\"]", canary!("kind = \"canary\"\ncanary_percent = 0\n"))],
            key: "environments.production.strategy.canary_percent",
            value: Some("0"),
            says: &["percentage from 0.1 to 100"],
            ..case("a canary percent of 0")
        },
        Case {
            config: &[("tags = [\"v*\"]", canary!("kind = \"linear\"\nlinear_step_percent = nan\n"))],
            key: "environments.production.strategy.linear_step_percent",
            value: Some("NaN"),
            says: &["percentage from 0.1 to 100"],
            ..case("a linear step percent that is not a number")
        },
        Case {
            config: &[("tags = [\"v*\"]", canary!("kind = \"linear\"\nlinear_step_percent = -10\n"))],
            key: "environments.production.strategy.linear_step_percent",
            value: Some("-10"),
            says: &["percentage from 0.1 to 100"],
            ..case("a negative linear step percent")
        },
        Case {
            config: &[(
                "tags = [\"v*\"]",
                canary!("kind = \"canary\"\nbake_minutes = 15\ncanary_percent = 10\ncanary_bake_minutes = 5\n"),
            )],
            key: "environments.production.deploy.timeout_seconds",
            value: Some("900"),
            says: &[
                "strategy.bake_minutes = 15 + strategy.canary_bake_minutes = 5 = 1200s",
                "300s margin",
                "set environments.production.deploy.timeout_seconds to at least 1500",
            ],
            ..case("a deploy timeout shorter than the canary's bakes")
        },
        Case {
            config: &[(
                "tags = [\"v*\"]",
                canary!(
                    "kind = \"linear\"\nlinear_step_percent = 30\nlinear_step_bake_minutes = 5\n",
                    "\n[environments.production.deploy]\ntimeout_seconds = 1499\n"
                ),
            )],
            key: "environments.production.deploy.timeout_seconds",
            value: Some("1499"),
            says: &[
                "strategy.linear_step_bake_minutes = 5 x 4 steps (linear_step_percent = 30) = 1200s",
                "at least 1500",
            ],
            ..case("a deploy timeout shorter than the linear steps' bakes")
        },
        Case {
            config: &[("tags = [\"v*\"]", "tags = [\"v*\"]\n\n[environments.production.records]\nbucket = \"demo-records\"\nlock_lease_seconds = 2")],
            key: "environments.production.records.lock_lease_seconds",
            value: Some("2"),
            says: &["at least 3 seconds", "renews the lease every third of it"],
            ..case("a deploy lock lease too short to renew")
        },
        Case {
            config: &[("tags = [\"v*\"]", "tags = [\"v*\"]\n\n[[environments.production.before_deploy]]\ncommand = []")],
            key: "environments.production.before_deploy[0].command",
            value: Some("[]"),
            says: &["must name a program", "alembic"],
            ..case("a one-off task without a command")
        },
        Case {
            config: &[("tags = [\"v*\"]", "tags = [\"v*\"]\n\n[[environments.production.before_deploy]]\ncommand = [\"migrate\"]\ntimeout_seconds = 0")],
            key: "environments.production.before_deploy[0].timeout_seconds",
            value: Some("0"),
            says: &["from 1 to"],
            ..case("a one-off task with no time to run")
        },
        Case {
            config: &[("tags = [\"v*\"]", "tags = [\"v*\"]\n\n[[environments.production.before_deploy]]\nname = \"migrate\"\ncommand = [\"a\"]\n\n[[environments.production.before_deploy]]\nname = \"migrate\"\ncommand = [\"b\"]")],
            key: "environments.production.before_deploy[1].name",
            value: Some("\"migrate\""),
            says: &["before_deploy[0] too", "its own name"],
            ..case("two one-off tasks of one name")
        },
        Case {
            config: &[("tags = [\"v*\"]", "tags = [\"v*\"]\n\n[[environments.production.before_deploy]]\ncontainer = \"migrations\"\ncommand = [\"alembic\", \"upgrade\", \"head\"]")],
            key: "environments.production.before_deploy[0].container",
            value: Some("\"migrations\""),
            says: &["names no container of the task definition", "containers are: web"],
            ..case("a one-off task in a container the task definition lacks")
        },
    ]
}

fn edit(base: &str, replacements: &[(&str, &str)], name: &str) -> String {
    let mut text = base.to_string();
    for (from, to) in replacements {
        assert!(
            text.contains(from),
            "{name}: the edit {from:?} matches nothing"
        );
        text = text.replacen(from, to, 1);
    }
    text
}

/// The file, key and value an error carries.
fn parts(err: &ConfigError) -> (PathBuf, String, Option<String>) {
    match err {
        ConfigError::Invalid {
            file, key, value, ..
        } => (file.clone(), key.clone(), value.clone()),
        ConfigError::TaskDefinition(err) => (err.file.clone(), err.key.clone(), err.value.clone()),
    }
}

#[test]
fn the_base_project_loads() {
    let dir = TempDir::new("base");
    let config = dir.write("tugboat.toml", CONFIG);
    dir.write("task-definition.json", TASK_DEFINITION);
    let project = Project::load_with(&config, &|_| None).expect("the unedited project is valid");
    assert_eq!(project.config.environments.len(), 2);
    assert_eq!(project.task_definition.family, "demo");
}

#[test]
fn a_canary_strategy_with_a_lifecycle_hook_loads_and_rolling_is_the_default() {
    let dir = TempDir::new("strategy");
    let text = CONFIG.replacen(
        "tags = [\"v*\"]",
        r#"tags = ["v*"]

[environments.production.strategy]
kind = "canary"
bake_minutes = 15
canary_percent = 10
canary_bake_minutes = 5
alternate_target_group_arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/demo-green/1"
production_listener_rule = "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener-rule/app/demo/1/2/3"
test_listener_rule = "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener-rule/app/demo/1/2/4"
role_arn = "arn:aws:iam::123456789012:role/ecs-lb"

[environments.production.deploy]
timeout_seconds = 1500

[environments.production.strategy.lifecycle_hook]
function_arn = "arn:aws:lambda:us-east-1:123456789012:function:tugboat"
role_arn = "arn:aws:iam::123456789012:role/tugboat-hook"
stages = ["POST_TEST_TRAFFIC_SHIFT", "POST_PRODUCTION_TRAFFIC_SHIFT"]"#,
        1,
    );
    let config = dir.write("tugboat.toml", &text);
    dir.write("task-definition.json", TASK_DEFINITION);
    let project = Project::load_with(&config, &|_| None).expect("a valid canary strategy");
    let production = &project.config.environments["production"].strategy;
    assert_eq!(production.kind, StrategyKind::Canary);
    assert_eq!(production.canary_percent, Some(10.0));
    assert_eq!(production.bake_minutes, Some(15));
    let hook = production.lifecycle_hook.as_ref().expect("the hook");
    assert_eq!(
        hook.stages,
        [
            LifecycleStage::PostTestTrafficShift,
            LifecycleStage::PostProductionTrafficShift
        ]
    );
    let staging = &project.config.environments["staging"].strategy;
    assert_eq!(staging, &StrategySettings::default());
    assert_eq!(staging.kind, StrategyKind::Rolling);
}

/// Fails with a message instead of panicking, so one run lists every failing case.
macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err(format!($($message)+));
        }
    };
}

fn check(case: &Case) -> Result<(), String> {
    let name = case.name;
    let dir = TempDir::new(name);
    let config = dir.write("tugboat.toml", &edit(CONFIG, case.config, name));
    let definition = dir.write(
        "task-definition.json",
        &edit(TASK_DEFINITION, case.definition, name),
    );
    let vars = case.vars;
    let lookup = |var: &str| {
        vars.iter()
            .find(|(k, _)| *k == var)
            .map(|(_, v)| (*v).to_string())
    };

    let err = match Project::load_with(&config, &lookup) {
        Ok(_) => return Err(format!("{name}: the project loaded, but it should not")),
        Err(err) => err,
    };
    let message = err.to_string();
    let (file, key, value) = parts(&err);
    let expected_file = match case.file {
        File::Config => config.clone(),
        File::Definition => definition.clone(),
        File::Missing => dir.path().join("missing.json"),
    };
    ensure!(
        file == expected_file,
        "{name}: names the file {}; message:\n{message}",
        file.display()
    );
    ensure!(
        key == case.key,
        "{name}: names the key {key:?}, not {:?}; message:\n{message}",
        case.key
    );
    ensure!(
        err.key() == case.key,
        "{name}: ConfigError::key is {:?}",
        err.key()
    );
    ensure!(
        message.contains(&format!("{}: `{}`", expected_file.display(), case.key)),
        "{name}: the message does not start with the file and key:\n{message}"
    );
    match case.value {
        Some(expected) => {
            let value = value.unwrap_or_default();
            ensure!(
                value.contains(expected),
                "{name}: the value {value:?} should contain {expected:?}; message:\n{message}"
            );
            ensure!(
                message.contains(&format!("(found {value})")),
                "{name}: the message does not show the value:\n{message}"
            );
        }
        None => ensure!(
            value.is_none(),
            "{name}: no value expected, found {value:?}"
        ),
    }
    for text in case.says {
        ensure!(
            message.contains(text),
            "{name}: the message should contain {text:?}:\n{message}"
        );
    }
    for (variable, secret) in case.vars.iter().filter(|(_, v)| v.len() >= 8) {
        ensure!(
            !message.contains(secret),
            "{name}: the message echoes the value of ${variable}:\n{message}"
        );
    }
    Ok(())
}

#[test]
fn every_bad_input_names_the_file_the_key_and_the_value() {
    let cases = cases();
    assert!(cases.len() >= 20, "the table has {} cases", cases.len());
    let failures: Vec<String> = cases.iter().filter_map(|case| check(case).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
