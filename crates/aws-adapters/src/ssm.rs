//! Parameter Store as the [`SecretStore`]: names and ARNs only, never a value. Only
//! `DescribeParameters` is called, which returns metadata and no values at all.

use crate::errors::stage_error;
use async_trait::async_trait;
use aws_sdk_ssm::types::{ParameterMetadata, ParameterStringFilter};
use pipeline_core::{SecretRef, SecretStore, SecretsSpec, StageError};

/// `DescribeParameters` takes at most this many names in one filter.
const NAMES_PER_CALL: usize = 10;

/// [`SecretStore`] on SSM Parameter Store.
#[derive(Clone, Debug)]
pub struct ParameterStore {
    client: aws_sdk_ssm::Client,
}

impl ParameterStore {
    pub fn new(client: aws_sdk_ssm::Client) -> Self {
        Self { client }
    }

    async fn describe(
        &self,
        filter: ParameterStringFilter,
    ) -> Result<Vec<ParameterMetadata>, StageError> {
        self.client
            .describe_parameters()
            .parameter_filters(filter)
            .into_paginator()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map(|pages| pages.iter().flat_map(|p| p.parameters().to_vec()).collect())
            .map_err(|err| stage_error("DescribeParameters", &err))
    }

    /// The metadata of every named parameter that exists.
    async fn existing(&self, names: &[String]) -> Result<Vec<ParameterMetadata>, StageError> {
        let mut found = Vec::new();
        for chunk in names.chunks(NAMES_PER_CALL) {
            let filter = ParameterStringFilter::builder()
                .key("Name")
                .option("Equals")
                .set_values(Some(chunk.to_vec()))
                .build()
                .map_err(|err| StageError::failed(format!("bad parameter filter: {err}")))?;
            found.extend(self.describe(filter).await?);
        }
        Ok(found)
    }
}

fn parameter_name(value_from: &str) -> Option<String> {
    if let Some(rest) = value_from.strip_prefix("arn:") {
        let (_, name) = rest.split_once(":parameter")?;
        return Some(name.to_string());
    }
    Some(value_from.to_string())
}

fn missing_error(missing: &[String]) -> StageError {
    let first = missing.first().cloned().unwrap_or_default();
    StageError::bad_input(format!(
        "Parameter Store has no parameter {}; the task would fail to start",
        missing.join(", ")
    ))
    .with_help(format!(
        "create it with `aws ssm put-parameter --name {first} --type SecureString --value ...`, or remove it from the environment's secrets"
    ))
}

fn secret_ref(metadata: &ParameterMetadata) -> Option<SecretRef> {
    let name = metadata.name()?;
    let variable = name.rsplit('/').next().unwrap_or(name);
    Some(SecretRef {
        name: variable.to_string(),
        value_from: metadata.arn().unwrap_or(name).to_string(),
    })
}

#[async_trait]
impl SecretStore for ParameterStore {
    async fn resolve(&self, spec: &SecretsSpec) -> Result<Vec<SecretRef>, StageError> {
        let mut refs = match &spec.names {
            Some(names) => {
                let full: Vec<String> = names.iter().map(|n| format!("{}{n}", spec.path)).collect();
                let found = self.existing(&full).await?;
                let missing: Vec<String> = full
                    .iter()
                    .filter(|name| !found.iter().any(|m| m.name() == Some(name.as_str())))
                    .cloned()
                    .collect();
                if !missing.is_empty() {
                    return Err(missing_error(&missing));
                }
                found.iter().filter_map(secret_ref).collect::<Vec<_>>()
            }
            None => {
                let filter = ParameterStringFilter::builder()
                    .key("Path")
                    .option("OneLevel")
                    .values(spec.path.trim_end_matches('/'))
                    .build()
                    .map_err(|err| StageError::failed(format!("bad parameter filter: {err}")))?;
                let found = self.describe(filter).await?;
                found.iter().filter_map(secret_ref).collect()
            }
        };
        refs.sort();
        Ok(refs)
    }

    async fn ensure_exist(&self, value_froms: &[String]) -> Result<(), StageError> {
        // Secrets Manager ARNs are checked by ECS at task start; this store knows SSM only.
        let names: Vec<String> = value_froms
            .iter()
            .filter(|v| !v.starts_with("arn:aws:secretsmanager:"))
            .filter_map(|v| parameter_name(v))
            .collect();
        let found = self.existing(&names).await?;
        let missing: Vec<String> = names
            .iter()
            .filter(|name| !found.iter().any(|m| m.name() == Some(name.as_str())))
            .cloned()
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing_error(&missing))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parameter_name;

    #[test]
    fn parameter_names_come_from_arns_and_names() {
        assert_eq!(
            parameter_name(
                "arn:aws:ssm:us-east-1:123456789012:parameter/cv-matcher/prod/DATABASE_URL"
            )
            .as_deref(),
            Some("/cv-matcher/prod/DATABASE_URL")
        );
        assert_eq!(parameter_name("/a/b").as_deref(), Some("/a/b"));
        assert_eq!(parameter_name("plain").as_deref(), Some("plain"));
    }
}
