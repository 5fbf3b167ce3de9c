//! Parameter Store secrets as ECS resolves them, against moto's SSM and STS: names and
//! ARNs of the own account and region are checked (a missing one is refused by name),
//! ARNs of another account or region pass unchecked with a warning naming them.

use aws_adapters::ParameterStore;
use pipeline_core::task_definition::Secret;
use pipeline_core::{Outcome, SecretStore, StageErrorKind};
use tugboat_tests::aws::AwsFixture;
use tugboat_tests::cv_matcher::{self as cv, CvMatcher};

/// moto's account and the tests' region.
const OWN: &str = "arn:aws:ssm:us-east-1:123456789012:parameter";
const OTHER_ACCOUNT: &str = "arn:aws:ssm:us-east-1:210987654321:parameter/shared/prod/DATABASE_URL";
const OTHER_REGION: &str =
    "arn:aws:ssm:eu-west-1:123456789012:parameter/cv-matcher/prod/REPLICA_URL";

async fn setup() -> CvMatcher {
    CvMatcher::setup(AwsFixture::start().await.expect("moto"))
        .await
        .expect("setup")
}

async fn put_parameter(cv: &CvMatcher, name: &str) {
    cv.aws
        .clients
        .ssm
        .put_parameter()
        .name(name)
        .value("not to be read")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .expect("PutParameter");
}

#[tokio::test(flavor = "multi_thread")]
async fn arns_elsewhere_pass_unchecked_and_own_ones_are_checked_by_their_ssm_name() {
    let cv = setup().await;
    // A plain (non-hierarchical) name: its ARN is `parameter/PLAIN_TOKEN`, no extra slash.
    put_parameter(&cv, "PLAIN_TOKEN").await;
    let clients = &cv.aws.clients;
    let store = ParameterStore::new(clients.ssm.clone(), clients.sts.clone());

    let existing = [
        format!("{OWN}/cv-matcher/prod/DATABASE_URL"),
        format!("{OWN}/PLAIN_TOKEN"),
        "/cv-matcher/prod/JWT_SECRET_KEY".to_string(),
        "PLAIN_TOKEN".to_string(),
    ];
    let unchecked = store.ensure_exist(&existing).await.expect("all exist");
    assert!(unchecked.is_empty(), "{unchecked:?}");

    let elsewhere = [
        OTHER_ACCOUNT.to_string(),
        OTHER_REGION.to_string(),
        format!("{OWN}/cv-matcher/prod/S3_BUCKET_NAME"),
    ];
    let unchecked = store.ensure_exist(&elsewhere).await.expect("passes");
    assert_eq!(unchecked, [OTHER_ACCOUNT, OTHER_REGION]);

    let missing = format!("{OWN}/cv-matcher/prod/MISSING_KEY");
    let err = store
        .ensure_exist(&[missing, OTHER_ACCOUNT.to_string()])
        .await
        .expect_err("a missing parameter of the own account");
    assert_eq!(err.kind, StageErrorKind::BadInput);
    assert!(
        err.message.contains("/cv-matcher/prod/MISSING_KEY"),
        "{}",
        err.message
    );
    assert!(!err.message.contains("not to be read"));
}

fn with_secrets(project: &pipeline_core::Project, value_froms: &[&str]) -> pipeline_core::Project {
    let mut project = project.clone();
    let container = project
        .task_definition
        .container_definitions
        .iter_mut()
        .find(|c| c.name == cv::CONTAINER)
        .expect("the image container");
    for (index, value_from) in value_froms.iter().enumerate() {
        container.secrets.push(Secret {
            name: format!("EXTRA_{index}"),
            value_from: (*value_from).to_string(),
        });
    }
    project
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_with_secrets_elsewhere_deploys_and_warns_and_a_missing_own_one_is_refused() {
    let cv = setup().await;
    cv.put_image(cv::REPOSITORY, "v1.1.0").await.expect("image");

    let project = with_secrets(&cv.project, &[OTHER_ACCOUNT, OTHER_REGION]);
    let run = cv.deploy(&project, "v1.1.0", &cv::sha('d')).await;
    assert_eq!(
        run.report.outcome,
        Outcome::Succeeded,
        "{}",
        run.report.message
    );
    let warnings = run.warnings();
    let warning = warnings
        .iter()
        .find(|w| w.contains("could not check 2 secret(s) in another account or region"))
        .unwrap_or_else(|| panic!("no warning about the unchecked secrets: {warnings:?}"));
    assert!(
        warning.contains(OTHER_ACCOUNT) && warning.contains(OTHER_REGION),
        "{warning}"
    );

    let before = cv.active_revisions().await.expect("revisions");
    let missing = format!("{OWN}/cv-matcher/prod/MISSING_KEY");
    let project = with_secrets(&cv.project, &[missing.as_str(), OTHER_ACCOUNT]);
    let run = cv.deploy(&project, "v1.1.0", &cv::sha('e')).await;
    assert_eq!(
        run.report.outcome,
        Outcome::BadInput,
        "{}",
        run.report.message
    );
    assert!(
        run.report.message.contains("/cv-matcher/prod/MISSING_KEY"),
        "{}",
        run.report.message
    );
    assert_eq!(
        cv.active_revisions().await.expect("revisions"),
        before,
        "nothing registered"
    );
}
