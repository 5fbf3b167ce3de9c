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
    /// `GetCallerIdentity`: the own account, which parameter ARNs are compared with.
    sts: aws_sdk_sts::Client,
}

impl ParameterStore {
    pub fn new(client: aws_sdk_ssm::Client, sts: aws_sdk_sts::Client) -> Self {
        Self { client, sts }
    }

    /// The account the credentials belong to: the task's own account.
    async fn own_account(&self) -> Result<String, StageError> {
        let identity = self
            .sts
            .get_caller_identity()
            .send()
            .await
            .map_err(|err| stage_error("GetCallerIdentity", &err))?;
        identity
            .account()
            .map(str::to_string)
            .ok_or_else(|| StageError::failed("GetCallerIdentity returned no account"))
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

/// A Parameter Store ARN, `arn:<partition>:ssm:<region>:<account>:parameter/<name>`.
#[derive(Debug, PartialEq, Eq)]
struct ParameterArn<'a> {
    region: &'a str,
    account: &'a str,
    /// The parameter's name as SSM knows it.
    name: String,
}

/// SSM forms the ARN of `/a/b` as `parameter/a/b` and that of `a` as `parameter/a`: a
/// name with a slash in it is hierarchical and starts with one, a plain name does not.
fn parse_arn(value_from: &str) -> Option<ParameterArn<'_>> {
    let mut parts = value_from.splitn(6, ':');
    let (arn, _partition, service, region, account, resource) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if arn != "arn" || service != "ssm" {
        return None;
    }
    let path = resource.strip_prefix("parameter/")?;
    let name = if path.contains('/') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    Some(ParameterArn {
        region,
        account,
        name,
    })
}

/// How a `valueFrom` is checked.
#[derive(Debug, PartialEq, Eq)]
enum Check {
    /// Look this name up with `DescribeParameters` (own account, own region).
    Name(String),
    /// Another account or region: ECS resolves it at task start; not checked here.
    Elsewhere,
    /// Not a Parameter Store reference (Secrets Manager): ECS checks it at task start.
    Skip,
}

/// ECS looks a name up in the task's own region and account; an ARN names its own.
fn classify(value_from: &str, region: Option<&str>, account: Option<&str>) -> Check {
    if !value_from.starts_with("arn:") {
        return Check::Name(value_from.to_string());
    }
    match parse_arn(value_from) {
        Some(arn) if Some(arn.region) == region && Some(arn.account) == account => {
            Check::Name(arn.name)
        }
        Some(_) => Check::Elsewhere,
        None => Check::Skip,
    }
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

    async fn ensure_exist(&self, value_froms: &[String]) -> Result<Vec<String>, StageError> {
        let region = self
            .client
            .config()
            .region()
            .map(|r| r.as_ref().to_string());
        // Only an ARN needs the account: GetCallerIdentity is called when there is one.
        let account = if value_froms.iter().any(|v| parse_arn(v).is_some()) {
            Some(self.own_account().await?)
        } else {
            None
        };
        let mut names = Vec::new();
        let mut unchecked = Vec::new();
        for value_from in value_froms {
            match classify(value_from, region.as_deref(), account.as_deref()) {
                Check::Name(name) => names.push(name),
                Check::Elsewhere => unchecked.push(value_from.clone()),
                Check::Skip => {}
            }
        }
        names.sort();
        names.dedup();
        let found = if names.is_empty() {
            Vec::new()
        } else {
            self.existing(&names).await?
        };
        let missing: Vec<String> = names
            .iter()
            .filter(|name| !found.iter().any(|m| m.name() == Some(name.as_str())))
            .cloned()
            .collect();
        if missing.is_empty() {
            Ok(unchecked)
        } else {
            Err(missing_error(&missing))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{classify, parse_arn, Check};

    const REGION: Option<&str> = Some("us-east-1");
    const ACCOUNT: Option<&str> = Some("123456789012");

    #[test]
    fn arn_names_are_formed_as_ssm_forms_them() {
        let hierarchical =
            parse_arn("arn:aws:ssm:us-east-1:123456789012:parameter/cv-matcher/prod/DATABASE_URL")
                .expect("an ARN");
        assert_eq!(hierarchical.name, "/cv-matcher/prod/DATABASE_URL");
        assert_eq!(hierarchical.region, "us-east-1");
        assert_eq!(hierarchical.account, "123456789012");
        let plain =
            parse_arn("arn:aws-cn:ssm:cn-north-1:123456789012:parameter/plain").expect("an ARN");
        assert_eq!(plain.name, "plain");
        assert_eq!(
            parse_arn("arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf"),
            None
        );
        assert_eq!(parse_arn("/a/b"), None);
    }

    #[test]
    fn names_and_own_arns_are_checked_others_pass_through() {
        let own = "arn:aws:ssm:us-east-1:123456789012:parameter/a/b";
        assert_eq!(classify(own, REGION, ACCOUNT), Check::Name("/a/b".into()));
        assert_eq!(
            classify("/a/b", REGION, ACCOUNT),
            Check::Name("/a/b".into())
        );
        assert_eq!(
            classify("plain", REGION, ACCOUNT),
            Check::Name("plain".into())
        );
        let other_account = "arn:aws:ssm:us-east-1:210987654321:parameter/a/b";
        assert_eq!(classify(other_account, REGION, ACCOUNT), Check::Elsewhere);
        let other_region = "arn:aws:ssm:eu-west-1:123456789012:parameter/a/b";
        assert_eq!(classify(other_region, REGION, ACCOUNT), Check::Elsewhere);
        let secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf";
        assert_eq!(classify(secret, REGION, ACCOUNT), Check::Skip);
    }
}
