//! tugboat's stages on the AWS SDK for Rust: ECR ([`EcrRegistry`]), ECS
//! ([`EcsDeployer`]), Parameter Store ([`ParameterStore`]) and S3 ([`S3ArtifactStore`]).
//!
//! Adapters are thin: they translate between `pipeline-core`'s types and the SDK's.
//! Every client comes from [`AwsClients`], which honours the usual AWS configuration
//! sources, `AWS_ENDPOINT_URL` and its per-service variants.

mod clients;
mod ecr;
mod ecs;
mod errors;
mod raw;
mod s3;
mod ssm;

pub use clients::{AwsClients, ClientOptions};
pub use ecr::EcrRegistry;
pub use ecs::{judge_rollout, DeploymentView, EcsDeployer, RolloutVerdict};
pub use s3::S3ArtifactStore;
pub use ssm::ParameterStore;
