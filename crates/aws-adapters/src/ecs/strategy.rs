//! The `deploymentConfiguration` (and load balancers' `advancedConfiguration`) that a
//! blue/green, canary or linear `[strategy]` sets on every update; rolling sets none.

use super::EcsDeployer;
use aws_sdk_ecs::types::{
    AdvancedConfiguration, CanaryConfiguration, DeploymentConfiguration, DeploymentLifecycleHook,
    DeploymentLifecycleHookStage, DeploymentLifecycleHookTargetType, DeploymentStrategy,
    LinearConfiguration, LoadBalancer, Service,
};
use pipeline_core::config::{StrategyKind, StrategySettings};

impl EcsDeployer {
    /// The environment's `[strategy]`: anything but rolling sets the service's
    /// `deploymentConfiguration` (and the load balancer's `advancedConfiguration`) on
    /// every `update_service`. Rolling changes nothing about the service.
    pub fn with_strategy(mut self, strategy: StrategySettings) -> Self {
        self.strategy = strategy;
        self
    }

    /// The `deploymentConfiguration` and `loadBalancers` an update sets for a non-rolling
    /// strategy; the service's other deployment settings (circuit breaker, alarms,
    /// percents) are kept as they are.
    pub(super) fn strategy_update(
        &self,
        service: &Service,
    ) -> (DeploymentConfiguration, Vec<LoadBalancer>) {
        let strategy = &self.strategy;
        let current = service.deployment_configuration();
        let mut config = DeploymentConfiguration::builder()
            .set_deployment_circuit_breaker(
                current
                    .and_then(|c| c.deployment_circuit_breaker())
                    .cloned(),
            )
            .set_maximum_percent(current.and_then(|c| c.maximum_percent()))
            .set_minimum_healthy_percent(current.and_then(|c| c.minimum_healthy_percent()))
            .set_alarms(current.and_then(|c| c.alarms()).cloned())
            .strategy(DeploymentStrategy::from(strategy.kind.ecs_name()));
        if let Some(bake) = strategy.bake_minutes {
            config = config.bake_time_in_minutes(i32::try_from(bake).unwrap_or(1440));
        }
        let minutes = |m: Option<u32>| m.map(|m| i32::try_from(m).unwrap_or(1440));
        match strategy.kind {
            StrategyKind::Canary => {
                config = config.canary_configuration(
                    CanaryConfiguration::builder()
                        .set_canary_percent(strategy.canary_percent)
                        .set_canary_bake_time_in_minutes(minutes(strategy.canary_bake_minutes))
                        .build(),
                );
            }
            StrategyKind::Linear => {
                config = config.linear_configuration(
                    LinearConfiguration::builder()
                        .set_step_percent(strategy.linear_step_percent)
                        .set_step_bake_time_in_minutes(minutes(strategy.linear_step_bake_minutes))
                        .build(),
                );
            }
            StrategyKind::Rolling | StrategyKind::BlueGreen => {}
        }
        if let Some(hook) = &strategy.lifecycle_hook {
            config = config.lifecycle_hooks(
                DeploymentLifecycleHook::builder()
                    .target_type(DeploymentLifecycleHookTargetType::AwsLambda)
                    .hook_target_arn(&hook.function_arn)
                    .role_arn(&hook.role_arn)
                    .set_lifecycle_stages(Some(
                        hook.stages
                            .iter()
                            .map(|s| DeploymentLifecycleHookStage::from(s.ecs_name()))
                            .collect(),
                    ))
                    .build(),
            );
        }
        let advanced = AdvancedConfiguration::builder()
            .set_alternate_target_group_arn(strategy.alternate_target_group_arn.clone())
            .set_production_listener_rule(strategy.production_listener_rule.clone())
            .set_test_listener_rule(strategy.test_listener_rule.clone())
            .set_role_arn(strategy.role_arn.clone())
            .build();
        let load_balancers = service
            .load_balancers()
            .iter()
            .enumerate()
            .map(|(index, lb)| {
                let mut builder = LoadBalancer::builder()
                    .set_target_group_arn(lb.target_group_arn().map(str::to_string))
                    .set_load_balancer_name(lb.load_balancer_name().map(str::to_string))
                    .set_container_name(lb.container_name().map(str::to_string))
                    .set_container_port(lb.container_port());
                // The first (production) target group gets the alternate one.
                if index == 0 {
                    builder = builder.advanced_configuration(advanced.clone());
                } else {
                    builder =
                        builder.set_advanced_configuration(lb.advanced_configuration().cloned());
                }
                builder.build()
            })
            .collect();
        (config.build(), load_balancers)
    }
}
