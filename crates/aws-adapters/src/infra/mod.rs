//! Monitoring and scaling as code: the log group, the CloudWatch alarms and the
//! target-tracking auto scaling an environment's `monitoring` and `scaling` settings
//! describe ([`desired_infra`]), compared with what AWS holds and made true
//! ([`InfraReconciler`], behind `tugboat infra plan|apply`).
//!
//! Only the fields tugboat manages are compared (alarm metric, threshold, comparison,
//! evaluation periods, missing-data treatment, actions and description; retention;
//! capacity; the policy's metric, target and cooldowns), so fields AWS fills in (ARNs,
//! state, timestamps, the scaling policy's own alarms) never show up as changes.
//! tugboat creates and updates; it never deletes anything.

mod change;
mod desired;
mod reconcile;

pub use change::{ChangeAction, FieldChange, InfraChange, InfraResource};
pub use desired::{
    desired_infra, AlarmDefinition, AlarmMetric, DesiredInfra, LogGroupSpec, MetricSpec,
    ScalingDefinition,
};
pub use reconcile::InfraReconciler;
