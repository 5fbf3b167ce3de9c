//! `SlackNotifier` against a local stand-in for Slack's Web API: the exact message, the
//! Bearer header, Slack's `ok: false`, HTTP errors and silence, the token kept out of
//! every error, event and `Debug`, and a deploy that a broken Slack does not fail.

use crate::local_http::{LocalServer, Reply};
use crate::support::{error_text, recorded};
use async_trait::async_trait;
use host_adapters::{HttpCheck, HttpHealthCheck, SlackNotifier};
use pipeline_core::{
    DeployLock, DeployRequest, DeploymentHandle, GitInfo, ImageReference, MockArtifactStore,
    MockDeployLocks, MockDeployer, MockRegistry, MockReleaseRecords, MockSecretStore,
    MockServiceReader, Notification, NotificationKind, Notifier, Orchestrator, Outcome,
    PinnedImage, PipelineEvent, Project, ReleaseId, ReleaseSource, Revision, ScriptedRollout,
    SecretRef, StageError, Stages,
};
use serde_json::json;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "xoxb-1234567890-secret-TOKEN-do-not-leak";
const DIGEST: &str = "sha256:4f2a8c0e9d7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a10";

fn notifier(server: &LocalServer) -> SlackNotifier {
    SlackNotifier::new(TOKEN, "C0123456789").with_api_base(server.url("/api"))
}

fn notification(kind: NotificationKind) -> Notification {
    let finished = kind != NotificationKind::Started;
    let failed = matches!(
        kind,
        NotificationKind::Failed | NotificationKind::RolledBack
    );
    Notification {
        kind,
        app: "cv-matcher".into(),
        environment: "staging".into(),
        release_id: ReleaseId("r20261126-141500-abc1234".into()),
        image_digest: Some(DIGEST.into()),
        duration: finished.then(|| Duration::from_secs(192)),
        reason: failed.then(|| {
            "verification http failed: GET https://app/health answered 503 <html>".to_string()
        }),
    }
}

fn ok_slack() -> Reply {
    Reply::json(
        200,
        json!({"ok": true, "channel": "C0123456789", "ts": "1.2"}),
    )
}

fn assert_no_token(text: &str) {
    assert!(!text.contains(TOKEN), "the token leaked into: {text}");
    assert!(
        !text.contains("secret-TOKEN"),
        "part of the token leaked into: {text}"
    );
}

async fn failed_notify(notifier: &SlackNotifier) -> (String, Duration) {
    let started = Instant::now();
    let result = notifier
        .notify(&notification(NotificationKind::Failed))
        .await;
    let took = started.elapsed();
    match result {
        Ok(()) => panic!("notify succeeded but should have failed"),
        Err(err) => {
            let text = format!("{}\n{err:?}", error_text(&err));
            eprintln!("{text}");
            assert_no_token(&text);
            (text, took)
        }
    }
}

#[tokio::test]
async fn a_rollback_is_posted_with_every_detail_and_the_bearer_token() {
    let server = LocalServer::always(ok_slack()).await;
    let result = notifier(&server)
        .notify(&notification(NotificationKind::RolledBack))
        .await;
    assert_eq!(result, Ok(()));

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/api/chat.postMessage");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(
        request.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    let headline = ":leftwards_arrow_with_hook: cv-matcher: release r20261126-141500-abc1234 to staging was rolled back after 3m 12s: verification http failed: GET https://app/health answered 503 <html>";
    assert_eq!(
        request.json(),
        json!({
            "channel": "C0123456789",
            "text": headline,
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": headline.replace('<', "&lt;").replace('>', "&gt;")}},
                {"type": "section", "fields": [
                    {"type": "mrkdwn", "text": "*App*\ncv-matcher"},
                    {"type": "mrkdwn", "text": "*Environment*\nstaging"},
                    {"type": "mrkdwn", "text": "*Release*\n`r20261126-141500-abc1234`"},
                    {"type": "mrkdwn", "text": format!("*Image*\n`{DIGEST}`")},
                    {"type": "mrkdwn", "text": "*Duration*\n3m 12s"},
                ]},
                {"type": "section", "text": {"type": "mrkdwn", "text": "*Reason*\n```verification http failed: GET https://app/health answered 503 &lt;html&gt;```"}},
            ],
            "unfurl_links": false,
            "unfurl_media": false,
        })
    );
}

#[tokio::test]
async fn each_kind_reads_as_what_happened() {
    let server = LocalServer::always(ok_slack()).await;
    let notifier = notifier(&server);
    for kind in [
        NotificationKind::Started,
        NotificationKind::Succeeded,
        NotificationKind::Failed,
    ] {
        assert_eq!(notifier.notify(&notification(kind)).await, Ok(()));
    }
    let texts: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.json()["text"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        texts,
        [
            ":rocket: cv-matcher: releasing r20261126-141500-abc1234 to staging",
            ":white_check_mark: cv-matcher: released r20261126-141500-abc1234 to staging in 3m 12s",
            ":x: cv-matcher: release r20261126-141500-abc1234 to staging failed after 3m 12s: verification http failed: GET https://app/health answered 503 <html>",
        ]
    );
    // A start has no duration and no reason yet.
    let started = server.requests()[0].json();
    let fields = started["blocks"][1]["fields"].to_string();
    assert!(!fields.contains("Duration"), "{fields}");
    assert_eq!(started["blocks"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn only_the_chosen_kinds_are_sent() {
    let server = LocalServer::always(ok_slack()).await;
    let notifier =
        notifier(&server).only(vec![NotificationKind::Failed, NotificationKind::RolledBack]);
    for kind in [
        NotificationKind::Started,
        NotificationKind::Succeeded,
        NotificationKind::RolledBack,
    ] {
        assert_eq!(notifier.notify(&notification(kind)).await, Ok(()));
    }
    assert_eq!(server.requests().len(), 1);
    assert!(server.requests()[0].json()["text"]
        .as_str()
        .is_some_and(|t| t.contains("rolled back")));
}

#[tokio::test]
async fn slack_saying_not_ok_is_an_error_with_a_fix() {
    let server = LocalServer::always(Reply::json(
        200,
        json!({"ok": false, "error": "not_in_channel"}),
    ))
    .await;
    let (text, _) = failed_notify(&notifier(&server)).await;
    assert!(text.contains("not_in_channel"), "{text}");
    assert!(text.contains("C0123456789"), "{text}");
    assert!(text.contains("/invite"), "{text}");
}

#[tokio::test]
async fn an_http_error_is_an_error_without_the_token_even_when_slack_echoes_it() {
    let server = LocalServer::always(Reply::status(
        500,
        &format!("internal error handling Bearer {TOKEN}"),
    ))
    .await;
    let (text, took) = failed_notify(&notifier(&server)).await;
    assert!(text.contains("HTTP 500"), "{text}");
    assert!(
        text.contains("internal error handling Bearer <redacted>"),
        "{text}"
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[tokio::test]
async fn a_slack_that_never_answers_gives_up_within_six_seconds() {
    let server = LocalServer::always(Reply::Silence).await;
    let (text, took) = failed_notify(&notifier(&server)).await;
    assert!(text.contains("did not answer"), "{text}");
    assert!(
        text.contains(&server.url("/api/chat.postMessage")),
        "{text}"
    );
    assert!(took < Duration::from_secs(6), "took {took:?}");
    assert!(took >= Duration::from_secs(4), "took {took:?}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn debug_output_never_shows_the_token() {
    let notifier = SlackNotifier::new(TOKEN, "C0123456789");
    let debug = format!("{notifier:?} {notifier:#?}");
    assert_no_token(&debug);
    assert!(
        debug.contains("<redacted>") && debug.contains("C0123456789"),
        "{debug}"
    );
}

#[tokio::test]
async fn a_token_that_cannot_be_a_header_is_an_error_that_does_not_quote_it() {
    let token = "xoxb-secret-TOKEN\nX-Injected: yes";
    let server = LocalServer::always(ok_slack()).await;
    let notifier = SlackNotifier::new(token, "C0123456789").with_api_base(server.url("/api"));
    let err = notifier
        .notify(&notification(NotificationKind::Started))
        .await
        .err()
        .map(|e| error_text(&e))
        .unwrap_or_default();
    assert!(err.contains("SLACK_BOT_TOKEN"), "{err}");
    assert!(!err.contains("secret-TOKEN"), "{err}");
    assert!(server.requests().is_empty());
}

// -- through the orchestrator ------------------------------------------------------

fn cv_matcher() -> Project {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cv-matcher/tugboat.toml");
    Project::load_with(&path, &|_| None)
        .unwrap_or_else(|err| panic!("the cv-matcher example must load: {err}"))
}

fn revision(number: u32) -> Revision {
    Revision::new(
        format!("arn:aws:ecs:us-east-1:123456789012:task-definition/cv-matcher:{number}"),
        format!("cv-matcher:{number}"),
    )
}

/// Counts what it is told to send, then passes it on.
struct Counting {
    inner: SlackNotifier,
    sent: Mutex<Vec<NotificationKind>>,
}

#[async_trait]
impl Notifier for Counting {
    async fn notify(&self, notification: &Notification) -> Result<(), StageError> {
        if let Ok(mut sent) = self.sent.lock() {
            sent.push(notification.kind);
        }
        self.inner.notify(notification).await
    }
}

/// Stages for an already pushed image whose rollout completes, verified by a real
/// `HttpHealthCheck` against `health_url`, notifying through `notifier`.
fn stages(health_url: String, notifier: Arc<dyn Notifier>) -> Stages {
    let image = PinnedImage {
        repository_uri: "123456789012.dkr.ecr.us-east-1.amazonaws.com/cv_matcher".into(),
        digest: DIGEST.into(),
        tags: vec!["v1.2.0".into()],
    };
    let mut registry = MockRegistry::new();
    let resolved = image.clone();
    registry
        .expect_resolve()
        .returning(move |_, _| Ok(resolved.clone()));
    let found = image.clone();
    registry
        .expect_find_tag()
        .returning(move |_, _| Ok(Some(found.clone())));
    registry
        .expect_ensure_repository()
        .returning(|repository| Ok(repository.to_string()));
    registry
        .expect_push()
        .returning(|_, _, _, _| Err(StageError::failed("nothing is pushed in this test")));

    let mut deployer = MockDeployer::new();
    let updated = Arc::new(Mutex::new(false));
    let seen = updated.clone();
    deployer.expect_current_revision().returning(move |_| {
        let updated = seen.lock().map(|u| *u).unwrap_or(false);
        Ok(Some(revision(if updated { 7 } else { 6 })))
    });
    deployer.expect_register().returning(|_, _| Ok(revision(7)));
    deployer
        .expect_update_service()
        .returning(move |_, request| {
            if let Ok(mut updated) = updated.lock() {
                *updated = true;
            }
            Ok(DeploymentHandle {
                id: "ecs-svc/release".into(),
                revision: request.revision.clone(),
            })
        });
    deployer
        .expect_watch_rollout()
        .returning(|_, deployment| ScriptedRollout::completing(&deployment.revision));
    deployer.expect_roll_back().returning(|_, request| {
        Ok(DeploymentHandle {
            id: "ecs-svc/rollback".into(),
            revision: request.to.clone(),
        })
    });
    deployer.expect_revision_active().returning(|_| Ok(true));
    deployer
        .expect_prune_revisions()
        .returning(|_, _, _, _| Ok(Vec::new()));

    let mut service_reader = MockServiceReader::new();
    service_reader.expect_status().returning(|target| {
        Ok(pipeline_core::ServiceStatus {
            target: target.clone(),
            revision: Some(revision(6)),
            running: 2,
            pending: 0,
            desired: 2,
            deployments: vec![pipeline_core::DeploymentStatus {
                id: "ecs-svc/serving".into(),
                status: "PRIMARY".into(),
                rollout_state: Some("COMPLETED".into()),
                rollout_state_reason: None,
                revision: revision(6),
                running: 2,
                pending: 0,
                desired: 2,
                failed_tasks: 0,
            }],
            events: Vec::new(),
            autoscaled: Some(false),
        })
    });
    service_reader
        .expect_registered_definition()
        .returning(|_| Err(StageError::unavailable("not in this test")));

    let mut secrets = MockSecretStore::new();
    secrets.expect_resolve().returning(|spec| {
        Ok(spec
            .names
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|name| SecretRef {
                value_from: format!(
                    "arn:aws:ssm:us-east-1:123456789012:parameter{}{name}",
                    spec.path
                ),
                name,
            })
            .collect())
    });
    secrets.expect_ensure_exist().returning(|_| Ok(Vec::new()));

    let mut locks = MockDeployLocks::new();
    let mut record_store = MockReleaseRecords::new();
    let mut artifacts = MockArtifactStore::new();
    locks
        .expect_acquire_lock()
        .returning(|app, environment, holder| {
            Ok(DeployLock {
                app: app.to_string(),
                environment: environment.to_string(),
                holder: holder.clone(),
                token: "lock-1".into(),
            })
        });
    locks.expect_release_lock().returning(|_| Ok(()));
    record_store.expect_put_record().returning(|_| Ok(()));
    record_store
        .expect_history()
        .returning(|_, _, _| Ok(Vec::new()));
    artifacts
        .expect_put_artifact()
        .returning(|_, _, _, artifact| Ok(format!("memory://{}", artifact.name)));

    Stages {
        test_runner: None,
        image_builder: None,
        registry: Arc::new(registry),
        deployer: Arc::new(deployer),
        service_reader: Arc::new(service_reader),
        verifiers: vec![Arc::new(HttpHealthCheck::new(HttpCheck {
            url: health_url,
            expected_status: 200,
            body_contains: Some("ok".into()),
            window: Duration::from_secs(10),
        }))],
        secrets: Arc::new(secrets),
        locks: Arc::new(locks),
        records: Arc::new(record_store),
        artifacts: Arc::new(artifacts),
        notifiers: vec![notifier],
        diagnostics: None,
        one_off: None,
    }
}

#[tokio::test]
async fn a_broken_slack_does_not_fail_the_deploy_and_never_shows_the_token() {
    let app = LocalServer::always(Reply::status(200, "ok")).await;
    let slack = LocalServer::always(Reply::status(
        500,
        &format!("upstream failure for token {TOKEN}"),
    ))
    .await;
    let notifier = Arc::new(Counting {
        inner: notifier(&slack),
        sent: Mutex::new(Vec::new()),
    });
    let (events, recorder) = recorded();
    let orchestrator = Orchestrator::new(
        cv_matcher(),
        stages(app.url("/health"), notifier.clone()),
        events,
    );
    let report = orchestrator
        .deploy(DeployRequest {
            environment: "staging".into(),
            source: ReleaseSource::Image(ImageReference::Tag("v1.2.0".into())),
            git: GitInfo {
                sha: "abc1234def5678".into(),
                git_ref: "refs/heads/develop".into(),
                committed_at: None,
            },
            actor: "alice".into(),
            cancel: Default::default(),
        })
        .await;
    let events = recorder.take();

    assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.message);
    assert_eq!(
        notifier.sent.lock().map(|s| s.clone()).unwrap_or_default(),
        [NotificationKind::Started, NotificationKind::Succeeded]
    );
    assert_eq!(slack.requests().len(), 2);
    assert_eq!(app.requests().len(), 1);
    let warnings: Vec<&String> = events
        .iter()
        .filter_map(|event| match event {
            PipelineEvent::Warning { message } => Some(message),
            _ => None,
        })
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings
            .iter()
            .all(|w| w.contains("notification not sent") && w.contains("HTTP 500")),
        "{warnings:?}"
    );

    let everything = format!("{events:?}\n{report:?}\n{}", report.message);
    assert_no_token(&everything);
    assert!(
        everything.contains("<redacted>"),
        "the echoed token was scrubbed, not dropped"
    );
}
