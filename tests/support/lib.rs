//! Support for tugboat's integration tests: a per-test moto server whose ECS
//! deployments progress ([`moto`]), AWS clients pointed at it ([`aws`]), an API call
//! counter ([`calls`]) and the CV Matcher example set up on it ([`cv_matcher`]).

pub mod aws;
pub mod calls;
pub mod cv_matcher;
pub mod moto;
