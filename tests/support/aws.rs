//! One moto server per test and the AWS clients pointed at it.
//!
//! Nothing here touches the process environment: tests run on parallel threads, so
//! the endpoint, region and dummy credentials go into the `SdkConfig` itself.

use crate::calls::CallCounter;
use crate::fault_proxy::{FaultConfig, FaultProxy};
use crate::moto::MotoServer;
use anyhow::Context;
use aws_adapters::AwsClients;
use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use std::time::Duration;

/// The account moto uses.
pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "us-east-1";

/// A running moto with tugboat's clients on it.
#[derive(Debug)]
pub struct AwsFixture {
    pub moto: MotoServer,
    pub sdk_config: SdkConfig,
    /// Built by [`AwsClients::from_sdk_config`], each client with [`AwsFixture::calls`]
    /// as an interceptor.
    pub clients: AwsClients,
    /// Counts every call the clients make (setup included: reset it before measuring).
    pub calls: CallCounter,
}

impl AwsFixture {
    /// Starts moto with its defaults (a healthy rollout takes about 1.5 s).
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_env(&[]).await
    }

    /// Starts moto with extra server environment (`TUGBOAT_MOTO_ROLLOUT_SECONDS`).
    pub async fn start_with_env(env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let moto = MotoServer::start_with_env(env)
            .await
            .context("starting tugboat-moto")?;
        let sdk_config = sdk_config(&moto.endpoint).await;
        let calls = CallCounter::new();
        let clients = counted(AwsClients::from_sdk_config(&sdk_config), &calls);
        Ok(Self {
            moto,
            sdk_config,
            clients,
            calls,
        })
    }

    /// Writes lines to a CloudWatch Logs stream as awslogs would (`PutLogEvents`), each
    /// at its time in epoch milliseconds; the stream must exist.
    pub async fn put_log_lines(
        &self,
        group: &str,
        stream: &str,
        lines: &[(i64, &str)],
    ) -> anyhow::Result<()> {
        let mut request = self
            .clients
            .logs
            .put_log_events()
            .log_group_name(group)
            .log_stream_name(stream);
        for (at, message) in lines {
            request = request.log_events(
                aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                    .timestamp(*at)
                    .message(*message)
                    .build()?,
            );
        }
        request.send().await.context("PutLogEvents")?;
        Ok(())
    }

    /// Like [`AwsFixture::start_with_env`], with the clients talking to moto through a
    /// [`FaultProxy`] (random faults off until [`FaultProxy::set_faults`]) and retrying
    /// as often as tugboat's own clients do ([`AwsClients::retry_config`]), with a short
    /// first backoff to keep the tests quick. The retries are standard, not adaptive:
    /// adaptive mode's client-side rate limiter (shared by every client of a service in
    /// the process) makes each call wait seconds after an injected throttle at a test's
    /// call rates, which tests the SDK's pacing rather than tugboat.
    pub async fn start_with_faults(
        env: &[(&str, &str)],
        faults: FaultConfig,
    ) -> anyhow::Result<(Self, FaultProxy)> {
        let moto = MotoServer::start_with_env(env)
            .await
            .context("starting tugboat-moto")?;
        let proxy = FaultProxy::start(&moto.endpoint, faults)
            .await
            .context("starting the fault proxy")?;
        let retry = RetryConfig::standard()
            .with_max_attempts(AwsClients::retry_config().max_attempts())
            .with_initial_backoff(Duration::from_millis(20));
        let sdk_config = sdk_config_with_retry(&proxy.endpoint, retry).await;
        let calls = CallCounter::new();
        let clients = counted(AwsClients::from_sdk_config(&sdk_config), &calls);
        Ok((
            Self {
                moto,
                sdk_config,
                clients,
                calls,
            },
            proxy,
        ))
    }
}

/// An `SdkConfig` for a local endpoint: dummy credentials, us-east-1, plain HTTP.
pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    sdk_config_with_retry(endpoint, RetryConfig::standard()).await
}

/// Like [`sdk_config`], retrying as `retry` says.
pub async fn sdk_config_with_retry(endpoint: &str, retry: RetryConfig) -> SdkConfig {
    let http_client = aws_smithy_http_client::Builder::new().build_http();
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(retry)
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "tugboat-tests",
        ))
        .http_client(http_client)
        .load()
        .await
}

/// The same clients (same configuration, S3 path style included) with `counter`
/// added as an interceptor.
pub fn counted(clients: AwsClients, counter: &CallCounter) -> AwsClients {
    AwsClients {
        ecs: aws_sdk_ecs::Client::from_conf(
            clients
                .ecs
                .config()
                .to_builder()
                .interceptor(counter.clone())
                .build(),
        ),
        ecr: aws_sdk_ecr::Client::from_conf(
            clients
                .ecr
                .config()
                .to_builder()
                .interceptor(counter.clone())
                .build(),
        ),
        ssm: aws_sdk_ssm::Client::from_conf(
            clients
                .ssm
                .config()
                .to_builder()
                .interceptor(counter.clone())
                .build(),
        ),
        s3: aws_sdk_s3::Client::from_conf(
            clients
                .s3
                .config()
                .to_builder()
                .interceptor(counter.clone())
                .build(),
        ),
        cloudwatch: aws_sdk_cloudwatch::Client::from_conf(
            clients
                .cloudwatch
                .config()
                .to_builder()
                .interceptor(counter.clone())
                .build(),
        ),
        autoscaling: aws_sdk_applicationautoscaling::Client::from_conf(
            clients
                .autoscaling
                .config()
                .to_builder()
                .interceptor(counter.clone())
                .build(),
        ),
        logs: aws_sdk_cloudwatchlogs::Client::from_conf(
            clients
                .logs
                .config()
                .to_builder()
                .interceptor(counter.clone())
                .build(),
        ),
        elbv2: aws_sdk_elasticloadbalancingv2::Client::from_conf(
            clients
                .elbv2
                .config()
                .to_builder()
                .interceptor(counter.clone())
                .build(),
        ),
        sts: clients.sts.clone(),
        region: clients.region,
    }
}
