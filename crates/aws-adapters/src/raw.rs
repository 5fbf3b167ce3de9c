//! Sending and reading JSON that the SDK's typed shapes would lose: a task definition
//! carries fields this SDK version may not know, and they must survive unchanged. The
//! request still goes through the SDK (endpoint, signing, retries); only its body is ours.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::AfterDeserializationInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use std::sync::{Arc, Mutex};

/// Replaces a request's JSON body (before it is signed).
pub(crate) fn replace_body(body: Vec<u8>) -> impl Fn(&mut HttpRequest) + Send + Sync + 'static {
    move |request: &mut HttpRequest| {
        let length = body.len().to_string();
        *request.body_mut() = SdkBody::from(body.clone());
        request.headers_mut().insert("content-length", length);
    }
}

/// Keeps the raw body of a response for the caller.
#[derive(Clone, Debug, Default)]
pub(crate) struct CaptureResponse {
    body: Arc<Mutex<Option<Vec<u8>>>>,
}

impl CaptureResponse {
    pub(crate) fn take(&self) -> Option<Vec<u8>> {
        match self.body.lock() {
            Ok(mut body) => body.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        }
    }
}

impl Intercept for CaptureResponse {
    fn name(&self) -> &'static str {
        "tugboat::CaptureResponse"
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(bytes) = context.response().body().bytes() {
            match self.body.lock() {
                Ok(mut body) => *body = Some(bytes.to_vec()),
                Err(poisoned) => *poisoned.into_inner() = Some(bytes.to_vec()),
            }
        }
        Ok(())
    }
}
