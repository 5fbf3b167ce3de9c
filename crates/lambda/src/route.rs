//! Which releasable environments an event concerns. A one-service app releases each of
//! its environments; a fleet (`[services]`) releases each service of an environment in
//! each region as its own unit (`production.web`, `production.web.eu-west-1`), with its
//! own lock, records and rollback, exactly as `tugboat deploy` does.

use crate::events::ServiceArn;
use pipeline_core::config::{cluster_name, glob_match, UnitTarget};
use pipeline_core::{Config, EnvironmentConfig, TaskDefinition};
use std::collections::BTreeMap;

/// One environment the function releases.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub config: EnvironmentConfig,
    /// For a fleet's unit: the fleet environment and the service.
    pub unit: Option<UnitTarget>,
}

/// Every environment the function releases, by the name its lock and records are under.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Routes {
    routes: BTreeMap<String, Route>,
}

impl Routes {
    pub fn of(config: &Config) -> Self {
        let routes = if config.services.is_empty() {
            config
                .environments
                .iter()
                .map(|(name, env)| {
                    let route = Route {
                        config: env.clone(),
                        unit: None,
                    };
                    (name.clone(), route)
                })
                .collect()
        } else {
            config
                .fleet_targets()
                .into_iter()
                .map(|unit| {
                    let route = Route {
                        config: unit.config.clone(),
                        unit: Some(unit.clone()),
                    };
                    (unit.environment, route)
                })
                .collect()
        };
        Self { routes }
    }

    pub fn get(&self, name: &str) -> Option<&Route> {
        self.routes.get(name)
    }

    pub fn names(&self) -> Vec<String> {
        self.routes.keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The environment releasing the service of an ECS event: same service name, same
    /// cluster (a name or an ARN; the old ARN format names none) and, for an environment
    /// with a region, the event's region. `None` unless exactly one matches: an event is
    /// never acted on for a release it may not concern.
    pub fn for_service(&self, arn: &ServiceArn) -> Option<String> {
        let mut matching = self.routes.iter().filter(|(_, route)| {
            let env = &route.config;
            env.service == arn.service
                && arn
                    .cluster
                    .as_deref()
                    .is_none_or(|c| cluster_name(&env.cluster) == cluster_name(c))
                && env.region.as_deref().is_none_or(|r| r == arn.region)
        });
        match (matching.next(), matching.next()) {
            (Some((name, _)), None) => Some(name.clone()),
            _ => None,
        }
    }

    /// The environments watching `alarm` (`verify.alarms`).
    pub fn watching(&self, alarm: &str) -> Vec<String> {
        self.routes
            .iter()
            .filter(|(_, route)| route.config.verify.alarms.iter().any(|a| a == alarm))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// What a push of image `tag` in `region` releases: the environment whose `tags` or
    /// `image_tags` rule matches the tag (from `config`) and, in a fleet, each of its
    /// services in that region. `Err` says why nothing is released.
    pub fn for_push(
        &self,
        config: &Config,
        tag: &str,
        region: &str,
    ) -> Result<Vec<String>, String> {
        let Some(environment) = environment_for_image_tag(config, tag) else {
            return Err(format!(
                "no environment deploys image tag {tag} (no `tags` or `image_tags` rule matches it)"
            ));
        };
        let releases: Vec<(&String, &Route)> = self
            .routes
            .iter()
            .filter(|(name, route)| match &route.unit {
                Some(unit) => unit.fleet_environment == environment,
                None => **name == environment,
            })
            .collect();
        let in_region: Vec<String> = releases
            .iter()
            .filter(|(_, route)| route.config.region.as_deref().is_none_or(|r| r == region))
            .map(|(name, _)| (*name).clone())
            .collect();
        if in_region.is_empty() {
            let regions: Vec<&str> = releases
                .iter()
                .filter_map(|(_, route)| route.config.region.as_deref())
                .collect();
            return Err(format!(
                "a push in {region}, but {environment} deploys from {}: not this app's repository",
                if regions.is_empty() {
                    "no region".to_string()
                } else {
                    regions.join(", ")
                }
            ));
        }
        Ok(in_region)
    }
}

/// The environment an image tag releases (release `tags` first, then `image_tags`).
fn environment_for_image_tag(config: &Config, tag: &str) -> Option<String> {
    let by = |rules: fn(&EnvironmentConfig) -> &Vec<String>| {
        config
            .environments
            .iter()
            .find(|(_, env)| rules(env).iter().any(|p| glob_match(p, tag)))
            .map(|(name, _)| name.clone())
    };
    by(|env| &env.tags).or_else(|| by(|env| &env.image_tags))
}

/// The config the orchestrator of `route` runs with: every environment of a one-service
/// app (pruning spares what any of them may roll back to), or for a fleet's unit the
/// service's config with the units of every service that may share its task definition
/// family: those whose packaged definition has the same family, or all of them when the
/// definitions are not in the package (each comes from its service at release time).
pub fn release_config(
    config: &Config,
    route: &Route,
    definitions: &BTreeMap<String, TaskDefinition>,
) -> Config {
    let Some(unit) = &route.unit else {
        return config.clone();
    };
    let family = definitions.get(&unit.service).map(|d| d.family.as_str());
    config.service_config(&unit.service, &|other| match family {
        Some(family) => definitions
            .get(other)
            .is_none_or(|definition| definition.family == family),
        None => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const FLEET: &str = r#"
[app]
name = "shop"
[image]
repository = "shop"
[task_definition]
file = "web.json"
containers = ["web"]
[services.web]
[services.worker]
task_definition = "worker.json"
containers = ["worker"]
[environments.production]
cluster = "shop-{region}"
service = "{app}-{service}"
tags = ["v*"]
regions = ["us-east-1", { name = "eu-west-1", services = ["web"] }]
[environments.production.verify]
alarms = ["shop-5xx"]
[environments.staging]
cluster = "shop-staging"
service = "{app}-{service}"
region = "us-east-1"
branches = ["main"]
image_tags = ["sha-*"]
"#;

    fn fleet() -> Config {
        match Config::parse(Path::new("tugboat.toml"), FLEET, &|_| None) {
            Ok(config) => config,
            Err(err) => panic!("{err}"),
        }
    }

    #[test]
    fn a_fleet_routes_each_service_in_each_region() {
        let config = fleet();
        let routes = Routes::of(&config);
        assert_eq!(
            routes.names(),
            [
                "production.web.eu-west-1",
                "production.web.us-east-1",
                "production.worker.us-east-1",
                "staging.web",
                "staging.worker",
            ]
        );
        assert_eq!(
            routes.for_push(&config, "v1.2.0", "us-east-1"),
            Ok(vec![
                "production.web.us-east-1".to_string(),
                "production.worker.us-east-1".to_string()
            ])
        );
        assert_eq!(
            routes.for_push(&config, "v1.2.0", "eu-west-1"),
            Ok(vec!["production.web.eu-west-1".to_string()])
        );
        assert_eq!(
            routes.for_push(&config, "sha-abc", "us-east-1"),
            Ok(vec![
                "staging.web".to_string(),
                "staging.worker".to_string()
            ])
        );
        let refused = routes.for_push(&config, "sha-abc", "ap-south-1");
        assert!(
            refused
                .as_ref()
                .is_err_and(|why| why.contains("staging deploys from us-east-1")),
            "{refused:?}"
        );
        assert!(routes.for_push(&config, "latest", "us-east-1").is_err());
        let arn = |text: &str| match ServiceArn::parse(text) {
            Some(arn) => arn,
            None => panic!("{text} is no service ARN"),
        };
        let of = |text: &str| routes.for_service(&arn(text));
        assert_eq!(
            of("arn:aws:ecs:eu-west-1:123456789012:service/shop-eu-west-1/shop-web").as_deref(),
            Some("production.web.eu-west-1")
        );
        assert_eq!(
            of("arn:aws:ecs:us-east-1:123456789012:service/shop-staging/shop-worker").as_deref(),
            Some("staging.worker")
        );
        // The right names in the wrong region are not this app's service.
        assert_eq!(
            of("arn:aws:ecs:eu-west-1:123456789012:service/shop-us-east-1/shop-web"),
            None
        );
        // The old ARN format names no cluster: shop-web runs in two clusters of us-east-1.
        assert_eq!(
            of("arn:aws:ecs:us-east-1:123456789012:service/shop-web"),
            None
        );
        assert_eq!(
            of("arn:aws:ecs:us-east-1:123456789012:service/shop-us-east-1/shop-api"),
            None
        );
        assert_eq!(
            routes.watching("shop-5xx"),
            [
                "production.web.eu-west-1",
                "production.web.us-east-1",
                "production.worker.us-east-1"
            ]
        );
    }

    #[test]
    fn a_unit_prunes_with_every_unit_that_may_share_its_family() {
        let config = fleet();
        let routes = Routes::of(&config);
        let Some(route) = routes.get("production.web.us-east-1") else {
            panic!("no route");
        };
        let names = |config: Config| config.environments.into_keys().collect::<Vec<_>>();
        // Definitions unknown (an S3 config): every unit is kept in view.
        let unknown = release_config(&config, route, &BTreeMap::new());
        assert_eq!(unknown.environments.len(), routes.len());
        assert!(unknown.services.is_empty());
        assert_eq!(unknown.task_definition.containers, ["web"]);
        // Packaged definitions of two families: only web's units.
        let definition = |family: &str| {
            let json = format!(
                r#"{{"family":"{family}","containerDefinitions":[{{"name":"{family}","image":"x"}}]}}"#
            );
            match serde_json::from_str::<TaskDefinition>(&json) {
                Ok(definition) => definition,
                Err(err) => panic!("{err}"),
            }
        };
        let definitions = BTreeMap::from([
            ("web".to_string(), definition("web")),
            ("worker".to_string(), definition("worker")),
        ]);
        assert_eq!(
            names(release_config(&config, route, &definitions)),
            [
                "production.web.eu-west-1",
                "production.web.us-east-1",
                "staging.web"
            ]
        );
    }
}
