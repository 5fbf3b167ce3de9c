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
