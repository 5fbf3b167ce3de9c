//! Which environment a git ref, a pushed image tag or an ECS service deploys to, by the
//! environments' `branches`, `tags` and `image_tags` rules and their cluster and service.

use super::{Config, EnvironmentConfig};

impl Config {
    /// The environment a git ref deploys to under the branch and tag rules
    /// (`refs/heads/develop` → staging, `refs/tags/v1.0.0` → production).
    pub fn environment_for_ref(&self, git_ref: &str) -> Option<&str> {
        let (kind, name) = if let Some(tag) = git_ref.strip_prefix("refs/tags/") {
            ("tag", tag)
        } else if let Some(branch) = git_ref.strip_prefix("refs/heads/") {
            ("branch", branch)
        } else {
            ("either", git_ref)
        };
        self.environments.iter().find_map(|(env_name, env)| {
            let by_branch = kind != "tag" && env.branches.iter().any(|b| glob_match(b, name));
            let by_tag = kind != "branch" && env.tags.iter().any(|t| glob_match(t, name));
            (by_branch || by_tag).then_some(env_name.as_str())
        })
    }

    /// The environment an image tag pushed to the repository deploys to: first one whose
    /// git `tags` rules match it (`v1.2.0` → production), else one whose `image_tags` do
    /// (a commit sha → staging).
    pub fn environment_for_image_tag(&self, tag: &str) -> Option<&str> {
        let by = |rules: fn(&EnvironmentConfig) -> &Vec<String>| {
            self.environments
                .iter()
                .find(|(_, env)| rules(env).iter().any(|p| glob_match(p, tag)))
                .map(|(name, _)| name.as_str())
        };
        by(|env| &env.tags).or_else(|| by(|env| &env.image_tags))
    }

    /// The environment that deploys to this cluster and service.
    /// The environment deploying `service` in `cluster`; clusters match by name, whether
    /// the config or the caller gives a name or an ARN.
    pub fn environment_for_service(&self, cluster: &str, service: &str) -> Option<&str> {
        let cluster = cluster_name(cluster);
        self.environments
            .iter()
            .find(|(_, env)| cluster_name(&env.cluster) == cluster && env.service == service)
            .map(|(name, _)| name.as_str())
    }
}

/// A cluster's name from its name or ARN (`arn:aws:ecs:REGION:ACCOUNT:cluster/NAME`).
pub fn cluster_name(cluster: &str) -> &str {
    match cluster.strip_prefix("arn:") {
        Some(_) => cluster
            .rsplit_once(":cluster/")
            .map_or(cluster, |(_, name)| name),
        None => cluster,
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((prefix, rest)) => {
            let Some(after_prefix) = text.strip_prefix(prefix) else {
                return false;
            };
            if rest.is_empty() {
                return true;
            }
            (0..=after_prefix.len())
                .filter(|i| after_prefix.is_char_boundary(*i))
                .any(|i| glob_match(rest, &after_prefix[i..]))
        }
    }
}
