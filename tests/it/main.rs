//! tugboat's integration tests: the real orchestrator and AWS adapters, over HTTP,
//! against a per-test moto whose ECS deployments progress (see `support/moto`).

mod deploy;
mod lock;
mod measure;
mod revisions;
