//! `HttpHealthCheck` against local servers: what passes, what fails and what the
//! failure says, retries with backoff, time limits and redirects.

use crate::local_http::{closed_port_url, LocalServer, Reply};
use crate::support::{error_text, recorded};
use host_adapters::{HttpCheck, HttpHealthCheck};
use pipeline_core::{
    DeployTarget, PipelineEvent, ReleaseId, Revision, StageError, Verifier, VerifyContext,
};
use std::time::{Duration, Instant};

fn context() -> VerifyContext {
    VerifyContext {
        target: DeployTarget {
            app: "cv-matcher".into(),
            environment: "staging".into(),
            cluster: "cv-matcher-staging-cluster".into(),
            service: "cv-matcher-service".into(),
            region: Some("us-east-1".into()),
        },
        release_id: ReleaseId("r20261126-141500-abc1234".into()),
        revision: Revision::new(
            "arn:aws:ecs:us-east-1:123456789012:task-definition/cv-matcher:7",
            "cv-matcher:7",
        ),
        image: None,
        release_started_at: chrono::Utc::now(),
    }
}

fn check(url: String, body_contains: Option<&str>, window: Duration) -> HttpHealthCheck {
    HttpHealthCheck::new(HttpCheck {
        url,
        expected_status: 200,
        body_contains: body_contains.map(str::to_string),
        window,
    })
}

/// Runs the check; returns its result, the events and how long it took.
async fn run(check: &HttpHealthCheck) -> (Result<(), StageError>, Vec<PipelineEvent>, Duration) {
    let (events, recorder) = recorded();
    let started = Instant::now();
    let result = check.verify(&context(), &events).await;
    (result, recorder.take(), started.elapsed())
}

fn messages(events: &[PipelineEvent], warnings: bool) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match event {
            PipelineEvent::Info { message } if !warnings => Some(message.clone()),
            PipelineEvent::Warning { message } if warnings => Some(message.clone()),
            _ => None,
        })
        .collect()
}

fn failure(result: Result<(), StageError>) -> String {
    match result {
        Ok(()) => panic!("the check passed but should have failed"),
        Err(err) => {
            let text = error_text(&err);
            eprintln!("{text}");
            text
        }
    }
}

#[tokio::test]
async fn a_200_with_the_expected_body_passes_at_once() {
    let server = LocalServer::always(Reply::status(200, "ok")).await;
    let url = server.url("/health");
    let (result, events, _) = run(&check(url.clone(), Some("ok"), Duration::from_secs(5))).await;
    assert_eq!(result, Ok(()));
    assert_eq!(server.requests().len(), 1);
    assert_eq!(server.requests()[0].method, "GET");
    assert_eq!(server.requests()[0].path, "/health");
    let infos = messages(&events, false);
    assert_eq!(infos.len(), 1, "{infos:?}");
    assert!(
        infos[0].contains(&url) && infos[0].contains("expects 200"),
        "{infos:?}"
    );
    assert!(messages(&events, true).is_empty());
}

#[tokio::test]
async fn a_500_fails_naming_the_url_the_status_and_the_body() {
    let server = LocalServer::always(Reply::status(500, "boom: database down")).await;
    let url = server.url("/health");
    let (result, events, took) = run(&check(url.clone(), None, Duration::from_secs(3))).await;
    let text = failure(result);
    assert!(text.contains(&format!("GET {url}")), "{text}");
    assert!(text.contains("500 Internal Server Error"), "{text}");
    assert!(text.contains("boom: database down"), "{text}");
    assert!(text.contains("3s window"), "{text}");
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // 0.5 s, 1 s, then what is left: four tries in three seconds, not a flood.
    let attempts = server.requests().len();
    assert!((3..=5).contains(&attempts), "{attempts} attempts");
    assert!(text.contains(&format!("{attempts} attempts")), "{text}");
    // One line at the start, a warning every third failure, none per attempt.
    assert_eq!(messages(&events, false).len(), 1);
    let warnings = messages(&events, true);
    assert_eq!(warnings.len(), attempts / 3, "{warnings:?}");
    assert!(warnings.iter().all(|w| w.contains("500")), "{warnings:?}");
}

#[tokio::test]
async fn a_service_that_comes_up_passes_after_backing_off() {
    let server = LocalServer::start(|_, number| {
        if number < 2 {
            Reply::status(503, "starting")
        } else {
            Reply::status(200, "ok")
        }
    })
    .await;
    let (result, events, took) = run(&check(
        server.url("/health"),
        Some("ok"),
        Duration::from_secs(20),
    ))
    .await;
    assert_eq!(result, Ok(()));
    assert_eq!(server.requests().len(), 3);
    // Waited 0.5 s, then 1 s.
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(5),
        "took {took:?}"
    );
    assert!(messages(&events, true).is_empty());
}

#[tokio::test]
async fn a_server_slower_than_the_window_fails_naming_the_url_and_the_window() {
    let server = LocalServer::always(Reply::After(
        Duration::from_secs(10),
        Box::new(Reply::status(200, "ok")),
    ))
    .await;
    let url = server.url("/health");
    let (result, _, took) = run(&check(url.clone(), None, Duration::from_secs(1))).await;
    let text = failure(result);
    assert!(text.contains(&url), "{text}");
    assert!(text.contains("within the 1s window"), "{text}");
    assert!(text.contains("no answer within"), "{text}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[tokio::test]
async fn redirects_are_followed() {
    let server = LocalServer::start(|request, _| match request.path.as_str() {
        "/" => Reply::redirect(302, "/health"),
        "/health" => Reply::status(200, "ok"),
        _ => Reply::status(404, "not found"),
    })
    .await;
    let (result, _, _) = run(&check(server.url("/"), Some("ok"), Duration::from_secs(5))).await;
    assert_eq!(result, Ok(()));
    let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/", "/health"]);
}

#[tokio::test]
async fn redirect_loops_and_other_schemes_fail() {
    let server = LocalServer::start(|request, _| match request.path.as_str() {
        "/ftp" => Reply::redirect(301, "ftp://127.0.0.1/health"),
        _ => Reply::redirect(302, "/loop"),
    })
    .await;
    let (result, _, _) = run(&check(server.url("/ftp"), None, Duration::from_millis(600))).await;
    let text = failure(result);
    assert!(text.contains("not http or https"), "{text}");

    let before = server.requests().len();
    let (result, _, _) = run(&check(server.url("/loop"), None, Duration::from_secs(1))).await;
    let text = failure(result);
    assert!(text.contains("more than 5 redirects"), "{text}");
    // Each attempt is the first request and five redirects, then it stops.
    let sent = server.requests().len() - before;
    assert!(sent >= 6 && sent % 6 == 0, "{sent} requests");
}

#[tokio::test]
async fn a_body_without_the_expected_text_fails_naming_it() {
    let server = LocalServer::always(Reply::status(200, "{\"status\":\"degraded\"}")).await;
    let (result, _, _) = run(&check(
        server.url("/health"),
        Some("\"status\":\"ok\""),
        Duration::from_millis(800),
    ))
    .await;
    let text = failure(result);
    assert!(
        text.contains(r#"does not contain "\"status\":\"ok\"""#),
        "{text}"
    );
    assert!(text.contains("degraded"), "{text}");
}

#[tokio::test]
async fn long_bodies_are_cut_in_the_error() {
    let body = format!("{}TAIL", "x".repeat(5000));
    let server = LocalServer::always(Reply::status(502, &body)).await;
    let (result, _, _) = run(&check(server.url("/health"), None, Duration::from_secs(1))).await;
    let text = failure(result);
    assert!(text.contains(&format!("{}…", "x".repeat(200))), "{text}");
    assert!(!text.contains("TAIL") && !text.contains(&"x".repeat(201)));
}

#[tokio::test]
async fn a_closed_port_fails_naming_the_connection_error() {
    let url = closed_port_url("/health").await;
    let (result, _, took) = run(&check(url.clone(), None, Duration::from_secs(1))).await;
    let text = failure(result);
    assert!(text.contains(&url), "{text}");
    assert!(text.to_lowercase().contains("connect"), "{text}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[tokio::test]
async fn a_url_that_is_not_http_is_bad_input_without_a_request() {
    let (result, _, _) = run(&check(
        "ftp://example.com/health".into(),
        None,
        Duration::from_secs(30),
    ))
    .await;
    let text = failure(result.clone());
    assert!(text.contains("not http or https"), "{text}");
    assert_eq!(
        result.err().map(|e| e.kind),
        Some(pipeline_core::StageErrorKind::BadInput)
    );
}
