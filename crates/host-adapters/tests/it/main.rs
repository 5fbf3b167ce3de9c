//! host-adapters' integration tests, against the real world: `sh`, the Docker engine
//! (which must answer: these tests fail, never skip, without it) and a real
//! `docker-registry` process on a loopback port.

mod docker_engine_pusher;
mod docker_image_builder;
mod shell_test_runner;
mod support;
