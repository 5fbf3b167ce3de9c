//! `plan`, `diff` and `render` show a release without making it; `rollback` with no
//! release to go back to refuses before touching anything.

use crate::common::{assert_exit, result, text, Seeded, CLUSTER};

/// The digest ECR holds for `cv_matcher:TAG`.
async fn digest(seeded: &Seeded, tag: &str) -> String {
    let output = seeded
        .fixture
        .clients
        .ecr
        .describe_images()
        .repository_name("cv_matcher")
        .send()
        .await
        .expect("describe images");
    output
        .image_details()
        .iter()
        .find(|image| image.image_tags().iter().any(|t| t == tag))
        .and_then(|image| image.image_digest())
        .unwrap_or_else(|| panic!("no image tagged {tag}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_diff_and_render_show_the_release_and_change_nothing() {
    let seeded = Seeded::start().await;
    let before = seeded.task_definition(CLUSTER).await;
    let revisions = seeded.active_revisions().await;
    let digest = digest(&seeded, "v1.1.0").await;
    let pinned = format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/cv_matcher@{digest}");

    let render = seeded
        .run(&["render", "--env", "production", "--image", "v1.1.0"])
        .await;
    assert_exit(&render, 0);
    let rendered: serde_json::Value =
        serde_json::from_slice(&render.stdout).expect("render prints one JSON document");
    assert_eq!(rendered["family"], "cv-matcher");
    assert_eq!(
        rendered["containerDefinitions"][0]["image"],
        pinned.as_str()
    );
    let secrets = rendered["containerDefinitions"][0]["secrets"]
        .as_array()
        .expect("secrets");
    assert_eq!(secrets.len(), 3, "{rendered:#}");

    let diff = seeded
        .run(&["diff", "--env", "production", "--image", "v1.1.0"])
        .await;
    assert_exit(&diff, 0);
    let diff = String::from_utf8_lossy(&diff.stdout);
    assert!(
        diff.contains(
            "-      \"image\": \"123456789012.dkr.ecr.us-east-1.amazonaws.com/cv_matcher:v1.0.0\""
        ),
        "{diff}"
    );
    assert!(
        diff.contains(&format!("+      \"image\": \"{pinned}\"")),
        "{diff}"
    );

    let plan = seeded
        .run(&["plan", "--env", "production", "--image", "v1.1.0"])
        .await;
    assert_exit(&plan, 0);
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan.contains("plan for environment production (cv-matcher-cluster/cv-matcher-service)"),
        "{plan}"
    );
    assert!(plan.contains(&pinned), "{plan}");
    assert!(
        plan.contains("on failure: roll back to cv-matcher:1"),
        "names the rollback target: {plan}"
    );
    assert!(
        plan.contains(&format!("+      \"image\": \"{pinned}\"")),
        "{plan}"
    );

    let json = seeded
        .run(&[
            "plan",
            "--env",
            "production",
            "--image",
            "v1.1.0",
            "--output",
            "json",
        ])
        .await;
    assert_exit(&json, 0);
    let json = result(&json);
    assert_eq!(json["task_definition"], rendered);
    assert!(json["diff"].as_str().is_some_and(|d| d.contains(&pinned)));

    assert_eq!(seeded.task_definition(CLUSTER).await, before);
    assert_eq!(
        seeded.active_revisions().await,
        revisions,
        "no revision registered"
    );
    assert_eq!(
        seeded.record_keys().await,
        Vec::<String>::new(),
        "no lock or record written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_without_an_earlier_good_release_exits_2() {
    let seeded = Seeded::start().await;
    let before = seeded.task_definition(CLUSTER).await;

    let output = seeded.run(&["rollback", "--env", "production"]).await;
    assert_exit(&output, 2);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no earlier good release of cv-matcher/production to roll back to"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--to"),
        "says what to pass instead: {stderr}"
    );

    let json = seeded
        .run(&["rollback", "--env", "production", "--output", "json"])
        .await;
    assert_exit(&json, 2);
    let json = result(&json);
    assert_eq!(json["outcome"], "bad_input", "{}", text(&output));
    assert_eq!(json["exit_code"], 2);

    assert_eq!(seeded.task_definition(CLUSTER).await, before);
    assert_eq!(seeded.active_revisions().await, 1);
}
