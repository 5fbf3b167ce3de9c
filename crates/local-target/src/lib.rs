//! The local target (`target = "local"`): the whole pipeline on this machine's Docker
//! engine, no AWS account needed.
//!
//! - [`LocalRegistry`] ([`pipeline_core::Registry`]): images stay in the engine, pinned
//!   by image id; or go to a registry on loopback (`local.registry`).
//! - [`LocalSecretStore`] ([`pipeline_core::SecretStore`]): `secrets` from a file of
//!   `NAME=value` lines (`local.secrets_file`), as `valueFrom: "local:NAME"`.
//! - [`LocalDeployer`] ([`pipeline_core::Deployer`] and [`pipeline_core::ServiceReader`]):
//!   a revision is a registered task definition under `.tugboat/<app>/<env>/revisions/`;
//!   a release is its containers, started next to the serving release on their own
//!   loopback host ports, health-checked, then switched in behind a proxy that keeps
//!   the environment's URL (`http://127.0.0.1:<local.port>`) fixed. It is also the
//!   target's [`pipeline_core::FailureDiagnostics`] and [`pipeline_core::OneOffTasks`]
//!   (a `before_deploy` migration, `tugboat run`: one container of the revision on the
//!   release's network, followed to its exit and removed).
//!
//! # Why the proxy is a process of its own
//!
//! The URL must keep answering between `tugboat` runs and while releases change, so the
//! proxy cannot live in the `tugboat` process that deploys. Docker cannot re-point a
//! published port of a running container, and restarting a port-forwarder (or
//! `docker-proxy`) leaves a moment in which connections are refused. A container as the
//! proxy would need an image with a proxy whose upstream can change at run time, and
//! nothing can be pulled on a machine without registry access.
//!
//! So the proxy is tugboat itself: `tugboat __proxy` ([`run_proxy`]), started detached
//! (own process group, output in `.tugboat/<app>/<env>/proxy.log`) the first time a
//! release is switched in, found again through its control socket by later runs. It
//! copies bytes both ways (TCP, so any protocol works) and decides the upstream per new
//! connection, under the same lock that counts connections per upstream: after a switch
//! every new connection goes to the new release, and the deployer stops the old release
//! only once its last connection has finished (or the drain time passed). `tugboat stop`
//! stops the proxy and removes the containers; the proxy also exits by itself when its
//! control socket or `proxy.json` disappears.

mod containers;
mod deployer;
mod diagnose;
mod engine;
mod observe;
mod one_off;
mod proxy;
mod registry;
mod secrets;
mod state;

pub use deployer::{LocalDeployer, StopSummary};
pub use proxy::{run_proxy, ProxyCommand, ProxyOptions};
pub use registry::LocalRegistry;
pub use secrets::{LocalSecretStore, LOCAL_SECRET_PREFIX};
