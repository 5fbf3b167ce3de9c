//! One way to build every AWS client tugboat uses.

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use std::time::Duration;

/// How clients are built when tugboat builds them.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Overrides the region from the environment and profile.
    pub region: Option<String>,
    /// A named profile from `~/.aws/config`.
    pub profile: Option<String>,
}

/// The AWS clients of one region.
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub ecs: aws_sdk_ecs::Client,
    pub ecr: aws_sdk_ecr::Client,
    pub ssm: aws_sdk_ssm::Client,
    /// STS: the caller's own account (`GetCallerIdentity`), to tell other accounts' ARNs.
    pub sts: aws_sdk_sts::Client,
    pub s3: aws_sdk_s3::Client,
    /// CloudWatch: the alarms watched during the bake time and reconciled by `infra`.
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    /// Application Auto Scaling: the service's scalable target and its policy.
    pub autoscaling: aws_sdk_applicationautoscaling::Client,
    /// CloudWatch Logs: the awslogs group and its retention.
    pub logs: aws_sdk_cloudwatchlogs::Client,
    /// Elastic Load Balancing v2: the health of the service's targets.
    pub elbv2: aws_sdk_elasticloadbalancingv2::Client,
    pub region: Option<String>,
}

impl AwsClients {
    /// Loads configuration from the usual sources (environment, profile, SSO/role
    /// credentials, IMDS), with adaptive retries for throttling and request timeouts.
    pub async fn load(options: &ClientOptions) -> Self {
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http_client)
            .retry_config(Self::retry_config())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(30))
                    .operation_timeout(Duration::from_secs(120))
                    .build(),
            );
        if let Some(region) = &options.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(profile) = &options.profile {
            loader = loader.profile_name(profile);
        }
        let config = loader.load().await;
        Self::from_sdk_config(&config)
    }

    /// How tugboat's clients retry: adaptive (they slow down while AWS throttles), six
    /// attempts in all. Every call tugboat makes is safe to retry (see `ecs.rs` for the one
    /// that retries by itself).
    pub fn retry_config() -> RetryConfig {
        RetryConfig::adaptive().with_max_attempts(6)
    }

    /// Builds the clients from a configuration an embedding program already has.
    pub fn from_sdk_config(config: &SdkConfig) -> Self {
        let emulated = std::env::var_os("AWS_ENDPOINT_URL").is_some()
            || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some()
            || config.endpoint_url().is_some();
        let mut s3 = aws_sdk_s3::config::Builder::from(config);
        if emulated {
            // Emulators serve buckets by path and do not check every checksum.
            s3 = s3
                .force_path_style(true)
                .request_checksum_calculation(
                    aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
                )
                .response_checksum_validation(
                    aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
                );
        }
        Self {
            ecs: aws_sdk_ecs::Client::new(config),
            ecr: aws_sdk_ecr::Client::new(config),
            ssm: aws_sdk_ssm::Client::new(config),
            sts: aws_sdk_sts::Client::new(config),
            s3: aws_sdk_s3::Client::from_conf(s3.build()),
            cloudwatch: aws_sdk_cloudwatch::Client::new(config),
            autoscaling: aws_sdk_applicationautoscaling::Client::new(config),
            logs: aws_sdk_cloudwatchlogs::Client::new(config),
            elbv2: aws_sdk_elasticloadbalancingv2::Client::new(config),
            region: config.region().map(ToString::to_string),
        }
    }
}
