//! HTTP plumbing every handler shares: response shapes, Docker's error
//! JSON, the gRPC-to-HTTP status mapping, and query and path decoding.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::json;

/// The newest and oldest API versions served.
pub const API_VERSION: &str = "1.47";
pub const MIN_API_VERSION: &str = "1.41";

/// Response bodies: whole (most answers) or streamed (logs, waits, events).
/// A streamed body's error aborts the response (the client sees it cut,
/// not ended): a tar whose producer failed must not look complete.
pub type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    use http_body_util::BodyExt;
    Full::new(bytes.into()).map_err(|never: Infallible| match never {}).boxed()
}

pub fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// JSON the agent produced, passed through as it is.
pub fn raw_json(bytes: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(full(bytes));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub fn json_response(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Docker's error shape: `{"message": ...}` with the status that says why.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json_response(status, json!({ "message": message.into() }))
}

/// An agent error as Docker reports it: the client's fault is a 400.
pub fn agent_error(status: tonic::Status) -> Response<Body> {
    let code = match status.code() {
        tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        tonic::Code::Aborted | tonic::Code::AlreadyExists => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(code, status.message())
}

/// The agent's Docker JSON as the answer, or its error.
pub fn agent_json(result: Result<tonic::Response<berth_agent_proto::JsonResponse>, tonic::Status>) -> Response<Body> {
    match result {
        Ok(reply) => raw_json(reply.into_inner().json),
        Err(status) => agent_error(status),
    }
}

/// Every decoded value of `name` in a query string (`changes=A&changes=B`).
/// form_urlencoded decodes as Go's url.Values, which the docker CLI
/// encodes with: `+` is a space, a bad `%` escape stays as it is.
pub fn query_params(query: Option<&str>, name: &str) -> Vec<String> {
    let pairs = form_urlencoded::parse(query.unwrap_or("").as_bytes());
    pairs.filter(|(key, _)| key == name).map(|(_, value)| value.into_owned()).collect()
}

/// The decoded value of `name` in a query string, the first if repeated.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let mut pairs = form_urlencoded::parse(query?.as_bytes());
    pairs.find(|(key, _)| key == name).map(|(_, value)| value.into_owned())
}

/// A boolean query parameter as the docker CLI sends them (`1`, `true`).
pub fn flag(query: Option<&str>, name: &str) -> bool {
    query_param(query, name).is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// A path parameter, `%XX` escapes decoded. Unlike a query, a path keeps
/// `+` as it is (dockerd's router unescapes paths with Go's PathUnescape).
pub fn path_param(segments: &[&str]) -> String {
    percent_encoding::percent_decode_str(&segments.join("/")).decode_utf8_lossy().into_owned()
}

/// "since"/"until": Unix seconds with optional fraction, as the CLI sends.
pub fn unix_ns(text: &str) -> Option<i64> {
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().ok()?;
    let frac = format!("{frac:0<9}");
    let nanos: i64 = frac.get(..9)?.parse().ok()?;
    Some(secs * 1_000_000_000 + nanos)
}

/// A `since`/`until` query parameter (0 when absent), or why it is refused.
pub fn time_param(query: Option<&str>, name: &str) -> Result<i64, String> {
    match query_param(query, name).filter(|v| !v.is_empty()) {
        Some(v) => unix_ns(&v).ok_or_else(|| format!("invalid {name} value {v:?}")),
        None => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings() {
        assert_eq!(query_param(Some("repo=me%2Fapp&tag=v1"), "repo").as_deref(), Some("me/app"));
        assert_eq!(query_param(Some("force=1&noprune=0"), "force").as_deref(), Some("1"));
        assert_eq!(query_param(Some("force"), "force").as_deref(), Some(""));
        assert_eq!(query_param(None, "repo"), None);
        assert_eq!(query_param(Some("q=a+b%zz%41"), "q").as_deref(), Some("a b%zzA"));
        assert_eq!(query_params(Some("changes=A&x=1&changes=B+C"), "changes"), ["A", "B C"]);
        assert_eq!(path_param(&["me%2Fapp", "a+b"]), "me/app/a+b");
    }

    #[test]
    fn times() {
        assert_eq!(unix_ns("1700000000.5"), Some(1_700_000_000_500_000_000));
        assert_eq!(unix_ns("12"), Some(12_000_000_000));
        assert_eq!(unix_ns("x"), None);
    }
}
