//! A panic in one API request answers that request with a 500 in Docker's
//! error JSON; the connection and the daemon serve on.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use hyper::{Response, StatusCode};

use super::http::{error, Body};

/// `handler`'s response, or a 500 if it panics.
pub async fn answer_or_500(handler: impl Future<Output = Response<Body>>) -> Response<Body> {
    // Unwind safety: a panicking handler's state is dropped with it; what it
    // shares (the agent client, the exec registry) is behind locks of its own.
    match AssertUnwindSafe(handler).catch_unwind().await {
        Ok(response) => response,
        Err(payload) => {
            let message = berth_agent_proto::panics::message(&*payload);
            tracing::error!(message, "an API request handler panicked; the request fails, the daemon serves on");
            error(StatusCode::INTERNAL_SERVER_ERROR, format!("Berth failed on this request: {message}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_panicking_handler_is_a_500_with_docker_error_json() {
        let response = super::answer_or_500(async {
            if true {
                panic!("bad input");
            }
            super::error(hyper::StatusCode::OK, "unreachable")
        })
        .await;
        assert_eq!(response.status(), 500);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["message"], "Berth failed on this request: bad input");
    }
}
