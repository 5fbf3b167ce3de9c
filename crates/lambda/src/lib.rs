//! tugboat as an AWS Lambda behind EventBridge: a push to the app's ECR repository
//! starts a release, ECS's deployment state change finishes it, an alarm inside the
//! bake window rolls it back. The function never waits for a rollout: the releases it
//! starts are recorded in progress (holding the deploy lock) in the records bucket,
//! and every invocation also finishes releases whose ECS event never came.
//!
//! The binary (`bootstrap`, for the `provided.al2023` runtime) only wires
//! [`Handler`] to `lambda_runtime`; tests call [`Handler::handle`] directly.
//!
//! ```no_run
//! # async fn example() -> Result<(), tugboat_lambda::HandlerError> {
//! use tugboat_lambda::{ConfigSource, Handler};
//! let handler = Handler::new(ConfigSource::from_env()?);
//! let event = serde_json::json!({"id": "1", "source": "aws.ecr", "detail-type": "ECR Image Action",
//!     "time": "2026-11-26T14:15:00Z", "region": "us-east-1", "resources": [],
//!     "detail": {"result": "SUCCESS", "repository-name": "cv_matcher", "action-type": "PUSH",
//!                "image-digest": "sha256:…", "image-tag": "v1.2.0"}});
//! let result = handler.handle(event).await?;
//! println!("{} {:?}: {}", result.action, result.environment, result.message);
//! # Ok(()) }
//! ```

pub mod config_source;
pub mod events;
mod handler;
pub mod hook;
mod invocation;
pub mod logging;
pub mod route;
pub mod wiring;

pub use config_source::{ConfigSource, LoadedConfig};
pub use handler::{Action, Handler, InvocationResult, OverdueResult};

use pipeline_core::ConfigError;

/// Why an invocation failed (the function returns it to Lambda as an error).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// The event lacks a field tugboat needs, or has it with the wrong type.
    #[error("malformed {what} event: `{field}`: {problem}")]
    MalformedEvent {
        /// `ECR Image Action`, `EventBridge` (the envelope), …
        what: String,
        /// The field's path (`detail.image-digest`, `resources[0]`, `detail-type`).
        field: String,
        problem: String,
    },
    /// `tugboat.toml` (or the task definition it names) is wrong.
    #[error(transparent)]
    Config(Box<ConfigError>),
    /// The event cannot be acted on now and must come again: the deploy lock is held by
    /// a release in progress, or AWS failed transiently. Nothing was changed; Lambda
    /// retries an asynchronous invocation that fails (twice), then sends it to the
    /// dead-letter queue.
    #[error("{problem}; the event is retried")]
    Retry { problem: String },
    /// The function cannot be wired: no config, no records bucket, no task definition.
    #[error("{problem}{}", help.as_ref().map(|h| format!("\n  help: {h}")).unwrap_or_default())]
    Setup {
        problem: String,
        help: Option<String>,
    },
}

impl HandlerError {
    /// The `errorType` Lambda records for it.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::MalformedEvent { .. } => "MalformedEvent",
            Self::Config(_) => "ConfigError",
            Self::Setup { .. } => "SetupError",
            Self::Retry { .. } => "RetryLater",
        }
    }
}

impl From<ConfigError> for HandlerError {
    fn from(err: ConfigError) -> Self {
        Self::Config(Box::new(err))
    }
}

impl From<pipeline_core::TaskDefinitionError> for HandlerError {
    fn from(err: pipeline_core::TaskDefinitionError) -> Self {
        Self::from(ConfigError::from(err))
    }
}
