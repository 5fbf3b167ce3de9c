//! SDK errors turned into stage errors a person can act on.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use pipeline_core::{StageError, StageErrorKind};

/// What went wrong with one AWS call.
pub(crate) struct AwsFailure {
    pub code: Option<String>,
    pub message: String,
    pub kind: StageErrorKind,
}

pub(crate) fn classify<E, R>(operation: &str, error: &SdkError<E, R>) -> AwsFailure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match error {
        SdkError::ServiceError(service) => {
            let err = service.err();
            let code = err.code().map(str::to_string);
            let text = err.message().unwrap_or("no message");
            AwsFailure {
                message: format!(
                    "{operation} failed: {}: {text}",
                    code.as_deref().unwrap_or("error")
                ),
                kind: StageErrorKind::Failed,
                code,
            }
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => AwsFailure {
            code: None,
            message: format!(
                "{operation} could not reach AWS: {}",
                DisplayErrorContext(error)
            ),
            kind: StageErrorKind::Unavailable,
        },
        _ => AwsFailure {
            code: None,
            message: format!("{operation} failed: {}", DisplayErrorContext(error)),
            kind: StageErrorKind::Failed,
        },
    }
}

pub(crate) fn stage_error<E, R>(operation: &str, error: &SdkError<E, R>) -> StageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let failure = classify(operation, error);
    let mut stage = StageError::new(failure.kind, failure.message);
    if failure.kind == StageErrorKind::Unavailable {
        stage = stage.with_help(
            "check the network, AWS_REGION and AWS_ENDPOINT_URL (for an emulator), then retry",
        );
    }
    if matches!(
        failure.code.as_deref(),
        Some(
            "AccessDeniedException"
                | "AccessDenied"
                | "UnrecognizedClientException"
                | "ExpiredTokenException"
        )
    ) {
        stage =
            stage.with_help("check the AWS credentials and the IAM permissions of this identity");
    }
    stage
}

pub(crate) fn is_throttling<E, R>(error: &SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata,
{
    match error {
        SdkError::ServiceError(service) => matches!(
            service.err().code(),
            Some(
                "ThrottlingException"
                    | "Throttling"
                    | "TooManyRequestsException"
                    | "RequestLimitExceeded"
            )
        ),
        _ => false,
    }
}

/// Whether a failed call may have failed for a passing reason, so that trying again
/// can help: no answer (connection, timeout), an answer that could not be read, a 5xx
/// or throttling. The call may have been applied all the same.
pub(crate) fn is_transient<E, R>(error: &SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata,
    R: HasHttpStatus,
{
    match error {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => {
            service.raw().http_status() >= 500 || is_throttling(error)
        }
        _ => false,
    }
}

/// The HTTP status of a raw response.
pub(crate) trait HasHttpStatus {
    fn http_status(&self) -> u16;
}

impl HasHttpStatus for aws_smithy_runtime_api::http::Response {
    fn http_status(&self) -> u16 {
        self.status().as_u16()
    }
}
