//! tugboat's integration tests: the real orchestrator and AWS adapters, over HTTP,
//! against a per-test moto whose ECS deployments progress (see `support/moto`).

mod deploy;
mod infra;
mod lock;
mod measure;
mod revisions;
mod verify_alarms;
mod verify_targets;
