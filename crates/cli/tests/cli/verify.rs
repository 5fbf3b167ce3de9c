//! `tugboat verify`: preflight checks before a first deploy.

use crate::common::{assert_exit, result, Seeded};

#[tokio::test(flavor = "multi_thread")]
async fn preflight_passes_on_the_seeded_account_and_names_a_missing_parameter() {
    let seeded = Seeded::start().await;

    let ok = seeded
        .run(&["verify", "--env", "production", "--image", "v1.1.0"])
        .await;
    assert_exit(&ok, 0);
    let report = String::from_utf8_lossy(&ok.stdout);
    let lines: Vec<&str> = report.lines().collect();
    assert!(lines.len() >= 5, "{report}");
    assert!(
        lines.iter().all(|line| line.starts_with("ok ")),
        "every check ok: {report}"
    );
    for check in [
        "service:",
        "image:",
        "parameters:",
        "execution role:",
        "records:",
    ] {
        assert!(report.contains(check), "{check} is checked: {report}");
    }
    assert!(
        report.contains("3 parameter(s) under /cv-matcher/prod/ exist"),
        "{report}"
    );

    seeded
        .fixture
        .clients
        .ssm
        .delete_parameter()
        .name("/cv-matcher/prod/JWT_SECRET_KEY")
        .send()
        .await
        .expect("delete parameter");

    let failed = seeded
        .run(&["verify", "--env", "production", "--image", "v1.1.0"])
        .await;
    assert_exit(&failed, 2);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    let line = stderr
        .lines()
        .find(|line| line.starts_with("FAIL  parameters:"))
        .unwrap_or_else(|| panic!("a failed parameters check: {stderr}"));
    assert!(line.contains("/cv-matcher/prod/JWT_SECRET_KEY"), "{line}");
    assert!(line.contains("put-parameter"), "says how to fix it: {line}");
    assert!(stderr.contains("1 check(s) failed"), "{stderr}");
    assert!(
        !stderr.contains("DATABASE_URL") && !stderr.contains("S3_BUCKET_NAME"),
        "only the missing one is named: {stderr}"
    );

    let json = seeded
        .run(&[
            "verify",
            "--env",
            "production",
            "--image",
            "v1.1.0",
            "--output",
            "json",
        ])
        .await;
    assert_exit(&json, 2);
    let json = result(&json);
    assert_eq!(json["outcome"], "bad_input");
    let failing: Vec<&str> = json["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["ok"] == false)
        .filter_map(|c| c["check"].as_str())
        .collect();
    assert_eq!(failing, ["parameters"], "{json:#}");
}

/// The example with these `valueFrom`s added to the image container's secrets.
fn example_with_secrets(name: &str, value_froms: &[&str]) -> std::path::PathBuf {
    let dir = crate::common::scratch(name);
    std::fs::create_dir_all(dir.join(".aws")).expect("dir");
    std::fs::copy(
        crate::example().join("tugboat.toml"),
        dir.join("tugboat.toml"),
    )
    .expect("copy");
    let file = crate::example().join(".aws/task-definition.json");
    let mut definition: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).expect("read")).expect("json");
    let secrets: Vec<serde_json::Value> = value_froms
        .iter()
        .enumerate()
        .map(|(i, v)| serde_json::json!({"name": format!("EXTRA_{i}"), "valueFrom": v}))
        .collect();
    definition["containerDefinitions"][0]["secrets"] = serde_json::Value::Array(secrets);
    std::fs::write(
        dir.join(".aws/task-definition.json"),
        serde_json::to_string_pretty(&definition).expect("json"),
    )
    .expect("write");
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn preflight_passes_secrets_in_another_account_or_region_with_a_warning() {
    let seeded = Seeded::start().await;
    let other_account = "arn:aws:ssm:us-east-1:210987654321:parameter/shared/prod/DATABASE_URL";
    let other_region = "arn:aws:ssm:eu-west-1:123456789012:parameter/cv-matcher/prod/REPLICA_URL";
    let own = "arn:aws:ssm:us-east-1:123456789012:parameter/cv-matcher/prod/DATABASE_URL";
    let dir = example_with_secrets("secrets-elsewhere", &[other_account, other_region, own]);
    let ok = seeded
        .run_in(
            &dir,
            &[],
            &["verify", "--env", "production", "--image", "v1.1.0"],
        )
        .await;
    assert_exit(&ok, 0);
    let report = String::from_utf8_lossy(&ok.stdout);
    let line = report
        .lines()
        .find(|line| line.starts_with("ok    task definition secrets:"))
        .unwrap_or_else(|| panic!("a task definition secrets check: {report}"));
    assert!(
        line.contains("1 exist; warning: could not check 2 secret(s) in another account or region"),
        "{line}"
    );
    assert!(
        line.contains(other_account) && line.contains(other_region),
        "{line}"
    );
    assert!(
        !report.contains("production-database_url-secret"),
        "never a value: {report}"
    );

    let missing = "arn:aws:ssm:us-east-1:123456789012:parameter/cv-matcher/prod/MISSING_KEY";
    let dir = example_with_secrets("secrets-missing", &[other_account, missing]);
    let failed = seeded
        .run_in(
            &dir,
            &[],
            &["verify", "--env", "production", "--image", "v1.1.0"],
        )
        .await;
    assert_exit(&failed, 2);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    let line = stderr
        .lines()
        .find(|line| line.starts_with("FAIL  task definition secrets:"))
        .unwrap_or_else(|| panic!("a failed task definition secrets check: {stderr}"));
    assert!(line.contains("/cv-matcher/prod/MISSING_KEY"), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}
