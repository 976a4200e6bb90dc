//! RFC 9457 problem details (`application/problem+json`) for every answer
//! the gateway gives on its own. The `type` URIs are URNs: the IETF draft
//! registers no problem types, and a URN needs no server to resolve.

use axum::body::Body;
use http::{header, HeaderValue, Response, StatusCode};

/// The kinds of problem the gateway answers with; each has one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// 400: the route's key is missing.
    KeyMissing,
    /// 400: the key is malformed or out of bounds.
    KeyInvalid,
    /// 422: the key was first used with a different request.
    KeyReused,
    /// 409: the first request with this key is still running.
    InProgress,
    /// 410: the first request completed, but its response was too large to store.
    NotReplayable,
    /// 413: the request body is over the bound.
    RequestTooLarge,
    /// 408: the client sent its body too slowly.
    BodyTimeout,
    /// 400: the request body could not be read.
    BodyUnreadable,
    /// 503: the record store failed or is overloaded.
    StoreUnavailable,
    /// 502: the upstream could not be reached or broke the response.
    UpstreamUnreachable,
    /// 504: the upstream did not answer in time.
    UpstreamTimeout,
    /// 500: the wrapped service panicked.
    ServiceFailed,
}

impl Problem {
    /// The status it is sent with.
    pub fn status(self) -> StatusCode {
        match self {
            Problem::KeyMissing | Problem::KeyInvalid | Problem::BodyUnreadable => StatusCode::BAD_REQUEST,
            Problem::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Problem::InProgress => StatusCode::CONFLICT,
            Problem::NotReplayable => StatusCode::GONE,
            Problem::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Problem::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Problem::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Problem::UpstreamUnreachable => StatusCode::BAD_GATEWAY,
            Problem::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Problem::ServiceFailed => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Its `type` member.
    pub fn type_uri(self) -> &'static str {
        match self {
            Problem::KeyMissing => "urn:idem:gateway:key-missing",
            Problem::KeyInvalid => "urn:idem:gateway:key-invalid",
            Problem::KeyReused => "urn:idem:gateway:key-reused",
            Problem::InProgress => "urn:idem:gateway:in-progress",
            Problem::NotReplayable => "urn:idem:gateway:not-replayable",
            Problem::RequestTooLarge => "urn:idem:gateway:request-too-large",
            Problem::BodyTimeout => "urn:idem:gateway:body-timeout",
            Problem::BodyUnreadable => "urn:idem:gateway:body-unreadable",
            Problem::StoreUnavailable => "urn:idem:gateway:store-unavailable",
            Problem::UpstreamUnreachable => "urn:idem:gateway:upstream-unreachable",
            Problem::UpstreamTimeout => "urn:idem:gateway:upstream-timeout",
            Problem::ServiceFailed => "urn:idem:gateway:service-failed",
        }
    }

    /// Its `title` member (the IETF draft's wording where it has one).
    pub fn title(self) -> &'static str {
        match self {
            Problem::KeyMissing => "Idempotency-Key is missing",
            Problem::KeyInvalid => "Idempotency-Key is invalid",
            Problem::KeyReused => "Idempotency-Key is already used",
            Problem::InProgress => "A request is outstanding for this Idempotency-Key",
            Problem::NotReplayable => "The response to this Idempotency-Key was not stored",
            Problem::RequestTooLarge => "Request body too large",
            Problem::BodyTimeout => "Request body not received in time",
            Problem::BodyUnreadable => "Request body could not be read",
            Problem::StoreUnavailable => "Idempotency store unavailable",
            Problem::UpstreamUnreachable => "Upstream unreachable",
            Problem::UpstreamTimeout => "Upstream timed out",
            Problem::ServiceFailed => "Service failed",
        }
    }

    /// The response, with a `detail` for the person reading it.
    pub fn response(self, detail: impl Into<String>) -> Response<Body> {
        self.response_with(detail, &[])
    }

    /// The response with extension members (`(name, value)`; values are JSON).
    pub fn response_with(self, detail: impl Into<String>, members: &[(&str, serde_json::Value)]) -> Response<Body> {
        let mut doc = serde_json::Map::new();
        doc.insert("type".into(), self.type_uri().into());
        doc.insert("title".into(), self.title().into());
        doc.insert("status".into(), self.status().as_u16().into());
        doc.insert("detail".into(), detail.into().into());
        for (name, value) in members {
            doc.insert((*name).to_string(), value.clone());
        }
        let body = serde_json::Value::Object(doc).to_string();
        let mut res = Response::new(Body::from(body));
        *res.status_mut() = self.status();
        res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_problem_is_problem_json_with_its_status() {
        let res = Problem::InProgress.response_with("wait", &[("retry_after_s", 2.into())]);
        assert_eq!(res.status(), StatusCode::CONFLICT);
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/problem+json");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["status"], 409);
        assert_eq!(v["type"], "urn:idem:gateway:in-progress");
        assert_eq!(v["title"], "A request is outstanding for this Idempotency-Key");
        assert_eq!(v["detail"], "wait");
        assert_eq!(v["retry_after_s"], 2);
    }

    #[test]
    fn every_problem_is_an_error_status() {
        for p in [Problem::KeyMissing, Problem::KeyReused, Problem::NotReplayable, Problem::UpstreamTimeout] {
            assert!(p.status().is_client_error() || p.status().is_server_error());
        }
    }
}
