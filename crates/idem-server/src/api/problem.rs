//! Errors as `application/problem+json` (RFC 9457).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use idem_core::{CmdError, ErrorCode};
use serde_json::json;

/// The media type of a problem document.
pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// A problem document: `type` names idem's error code, `title` the HTTP
/// status, `detail` the message, `code` the code as RESP sends it.
pub(crate) fn problem(status: StatusCode, code: &str, detail: &str) -> Response {
    let body = json!({
        "type": format!("https://idem.dev/errors/{}", code.to_ascii_lowercase()),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
        "code": code,
    });
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    if code == "BUSY" {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// The problem document of a refused command.
pub(crate) fn from_error(e: &CmdError) -> Response {
    let status = crate::http::status_for(e.code);
    problem(status, e.code.as_str(), &e.message)
}

/// A request that does not parse.
pub(crate) fn bad_request(detail: impl AsRef<str>) -> Response {
    problem(StatusCode::BAD_REQUEST, ErrorCode::Err.as_str(), detail.as_ref())
}
