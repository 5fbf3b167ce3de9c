//! tugboat's stages that act on the host machine:
//!
//! - [`ShellTestRunner`] ([`pipeline_core::TestRunner`]): the release's test commands,
//!   each with `sh -c`, streamed, with a time limit per command.
//! - [`DockerImageBuilder`] ([`pipeline_core::ImageBuilder`]): `docker buildx build --load`,
//!   or the classic `docker build` where buildx is not installed.
//! - [`DockerEnginePusher`] ([`pipeline_core::ImagePusher`]): pushes through the Docker
//!   Engine API with the registry password in a request header only, and reads tags back
//!   from the registry's v2 API.
//! - [`HttpHealthCheck`] ([`pipeline_core::Verifier`], `http`): `GET`s the release's health
//!   URL, with retries and backoff, until it answers as expected or the window closes.
//! - [`SlackNotifier`] ([`pipeline_core::Notifier`]): release messages through Slack's
//!   `chat.postMessage`, the bot token in a header only.
//! - [`docker_host`] and [`http`]: the one Docker Engine client (where the engine is, and
//!   HTTP/1.1 over its socket with every request target checked), shared by the pusher,
//!   the builder and the `local-target` crate.
//!
//! The Docker adapters respect `DOCKER_HOST` ([`DockerHost::from_env`]) and return
//! [`pipeline_core::StageError`]s whose message says what was tried and what came back.
//! The local deploy target is its own crate, `local-target`.

mod docker_engine_pusher;
pub mod docker_host;
mod docker_image_builder;
mod file_artifact_store;
pub mod http;
mod http_health_check;
mod process;
mod shell_test_runner;
mod slack_notifier;
mod web_client;

pub use docker_engine_pusher::{DockerEnginePusher, LayerCounts, PushOutcome};
pub use docker_host::{DockerHost, DockerHostSource, DEFAULT_DOCKER_SOCKET};
pub use docker_image_builder::DockerImageBuilder;
pub use file_artifact_store::FileArtifactStore;
pub use http::{check_credential_endpoint, check_image_reference};
pub use http_health_check::{HttpCheck, HttpHealthCheck};
pub use shell_test_runner::{test_environment, ShellTestRunner};
pub use slack_notifier::{SlackNotifier, DEFAULT_SLACK_API};
