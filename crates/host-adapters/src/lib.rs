//! tugboat's stages that act on the host machine:
//!
//! - [`ShellTestRunner`] ([`pipeline_core::TestRunner`]): the release's test commands,
//!   each with `sh -c`, streamed, with a time limit per command.
//! - [`DockerImageBuilder`] ([`pipeline_core::ImageBuilder`]): `docker buildx build --load`,
//!   or the classic `docker build` where buildx is not installed.
//! - [`DockerEnginePusher`] ([`pipeline_core::ImagePusher`]): pushes through the Docker
//!   Engine API with the registry password in a request header only, and reads tags back
//!   from the registry's v2 API.
//!
//! All of them respect `DOCKER_HOST` ([`DockerHost::from_env`]) and return
//! [`pipeline_core::StageError`]s whose message says what was tried and what came back.

mod docker_engine_pusher;
mod docker_host;
mod docker_image_builder;
mod file_artifact_store;
mod http;
mod process;
mod shell_test_runner;

pub use docker_engine_pusher::{DockerEnginePusher, LayerCounts, PushOutcome};
pub use docker_host::{DockerHost, DockerHostSource, DEFAULT_DOCKER_SOCKET};
pub use docker_image_builder::DockerImageBuilder;
pub use file_artifact_store::FileArtifactStore;
pub use shell_test_runner::ShellTestRunner;
