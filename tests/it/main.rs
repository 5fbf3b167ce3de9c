//! tugboat's integration tests: the real orchestrator and AWS adapters, over HTTP,
//! against a per-test moto whose ECS deployments progress (see `support/moto`), and
//! pushes through the Docker engine to a real registry (see `support/registry.rs`).

mod architecture;
mod before_deploy;
mod deploy;
mod diagnose;
mod ecr_push;
mod faults;
mod fleet;
mod infra;
mod lambda;
mod lambda_fleet;
mod lambda_hook;
mod lambda_template;
mod lock;
mod measure;
mod records;
mod release_safety;
mod revisions;
mod scan_gate;
mod secrets;
mod verify_alarms;
mod verify_targets;
mod xtask;
