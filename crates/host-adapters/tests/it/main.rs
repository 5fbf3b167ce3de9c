//! host-adapters' integration tests, against the real world: `sh`, the Docker engine
//! (which must answer: these tests fail, never skip, without it) and a real
//! `docker-registry` process on a loopback port; and local HTTP servers standing in
//! for a release's health URL and for Slack.

mod docker_engine_pusher;
mod docker_image_builder;
mod file_artifact_store;
mod http_health_check;
mod local_http;
mod shell_test_runner;
mod slack_notifier;
mod support;
