//! pipeline-core's integration tests, as one binary.

mod bad_inputs;
mod cv_matcher;
mod failure_points;
mod fleet_config;
mod harness;
mod lease;
mod rollback;
mod routing;
mod scan_gate;
mod support;
mod task_definitions;
mod variables;
