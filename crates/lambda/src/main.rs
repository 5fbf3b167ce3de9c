//! `bootstrap`: the function's executable for the `provided.al2023` runtime. It wires
//! [`tugboat_lambda::Handler`] to the Lambda Runtime API and decides what Lambda sees:
//! the result as JSON, or an error with a type and a message naming the problem.

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use std::sync::Arc;
use tugboat_lambda::{logging, Handler};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    logging::init();
    // Nothing is read or connected before the first event: a short cold start.
    let handler = Arc::new(Handler::from_env());
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let handler = handler.clone();
        async move {
            // EventBridge events and ECS lifecycle hook invocations alike.
            // The function is killed at the context's deadline: no wait goes past it.
            let deadline =
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(event.context.deadline);
            match handler.handle_value_by(event.payload, Some(deadline)).await {
                Ok(result) => Ok(result),
                Err(err) => Err(Diagnostic {
                    error_type: err.error_type().into(),
                    error_message: err.to_string(),
                }),
            }
        }
    }))
    .await
}
