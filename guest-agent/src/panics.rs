//! A panic in one gRPC handler answers that request with INTERNAL instead of
//! tearing down its connection: the host multiplexes every request over one
//! HTTP/2 connection, so that would fail all of them at once (and, as PID 1
//! with `panic = "abort"`, it used to end the VM).

use std::any::Any;

use tonic::codegen::http;
use tower_http::catch_panic::CatchPanicLayer;

type Answer = fn(Box<dyn Any + Send + 'static>) -> http::Response<tonic::body::Body>;

/// The layer every request of the agent's server passes through.
pub fn layer() -> CatchPanicLayer<Answer> {
    CatchPanicLayer::custom(internal_status as Answer)
}

fn internal_status(payload: Box<dyn Any + Send + 'static>) -> http::Response<tonic::body::Body> {
    let message = berth_agent_proto::panics::message(&*payload);
    tracing::error!(message, "a request handler panicked; the request fails, the agent serves on");
    tonic::Status::from(crate::error::AgentError::internal(format!("the agent failed on this request: {message}")))
        .into_http()
}

/// `shim` and `enter` clone children that share their memory until they
/// exec: unwinding there would run the parent's destructors in the child.
/// They keep the abort semantics they had (after the default report).
pub fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
}

#[cfg(test)]
mod tests {
    use tonic::codegen::http;
    use tower::{Layer, Service, ServiceExt};

    #[tokio::test]
    async fn a_panicking_handler_is_an_internal_status() {
        let handler = tower::service_fn(|_: http::Request<tonic::body::Body>| async {
            if true {
                panic!("bad input");
            }
            Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
        });
        let mut service = super::layer().layer(handler);
        let response = service.ready().await.unwrap().call(http::Request::new(tonic::body::Body::empty())).await;
        let response = response.unwrap();
        assert_eq!(response.headers()["grpc-status"], "13");
        let message = response.headers()["grpc-message"].to_str().unwrap();
        assert!(message.contains("bad%20input") || message.contains("bad input"), "{message}");
    }
}
