//! tugboat's stages on the AWS SDK for Rust: ECR ([`EcrRegistry`]), ECS
//! ([`EcsDeployer`]), Parameter Store ([`ParameterStore`]), S3 ([`S3ArtifactStore`]),
//! the verifiers [`AlarmWatch`] (CloudWatch alarms during the bake time) and
//! [`TargetHealthCheck`] (load balancer targets), and monitoring and scaling as code
//! ([`desired_infra`], [`InfraReconciler`]). [`environment_stages`] wires an
//! environment's stages for every front end.
//!
//! Adapters are thin: they translate between `pipeline-core`'s types and the SDK's.
//! Every client comes from [`AwsClients`], which honours the usual AWS configuration
//! sources, `AWS_ENDPOINT_URL` and its per-service variants.

mod alarms;
mod clients;
mod ecr;
mod ecs;
mod errors;
mod infra;
mod raw;
mod s3;
mod ssm;
mod targets;
mod wire;

pub use alarms::{AlarmState, AlarmWatch};
pub use clients::{AwsClients, ClientOptions};
pub use ecr::EcrRegistry;
pub use ecs::{
    is_service_deployment_arn, observe_deployments, observe_service_deployment, DeploymentView,
    EcsDeployer, Following, ServiceDeploymentView,
};
pub use ecs::{
    EcsTaskLogs, OneOffTask, Placement, ServicePoller, TaskDiagnoser, TaskRunner,
    DESCRIBE_SERVICES_LIMIT,
};
pub use infra::{
    desired_infra, AlarmDefinition, AlarmMetric, ChangeAction, DesiredInfra, FieldChange,
    InfraChange, InfraReconciler, InfraResource, LogGroupSpec, MetricSpec, ScalingDefinition,
};
pub use s3::S3ArtifactStore;
pub use ssm::ParameterStore;
pub use targets::{judge_targets, TargetHealthCheck, TargetView, TargetsVerdict};
pub use wire::{bucket_stores, ecs_deployer, environment_stages, verifiers, HostStages};
