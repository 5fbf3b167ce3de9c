//! Support for tugboat's integration tests: a per-test moto server whose ECS
//! deployments progress ([`moto`]), AWS clients pointed at it ([`aws`]), an API call
//! counter ([`calls`]), the CV Matcher example set up on it ([`cv_matcher`]), a real
//! Docker registry standing in for ECR's data plane ([`registry`]) and the example
//! image built with the Docker engine ([`docker`]), and a proxy that injects faults
//! between the clients and moto ([`fault_proxy`]); made-up deploy records for the
//! delivery report ([`records`]); a fleet of services in two regions ([`fleet`]).

pub mod aws;
pub mod calls;
pub mod cv_matcher;
pub mod docker;
pub mod fault_proxy;
pub mod fleet;
pub mod moto;
pub mod records;
pub mod registry;
