//! The one place where errors become HTTP statuses. Visitors see short, fixed messages;
//! internals (paths, QEMU's words, store errors) go to the log at debug/warn only.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use crate::engine::EngineError;
use crate::model::links::Refusal;

/// An HTTP-level error.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("unauthorized")]
    Unauthorized(&'static str),
    #[error("refused: {0:?}")]
    Refused(Refusal),
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("conflict: {0}")]
    Conflict(String),
    /// A recording whose file another gateway holds (the one that made it).
    #[error("recording held by gateway {0}")]
    RecordingElsewhere(String),
    #[error("payload too large")]
    TooLarge,
    #[error("rate limited")]
    TooManyRequests {
        retry_after: Duration,
        reason: &'static str,
    },
    #[error("busy")]
    Unavailable {
        retry_after: Duration,
        reason: &'static str,
    },
    #[error("console unavailable")]
    BadGateway(&'static str),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A response body: whole, or streamed (a recording's download, read from its file as
/// the client takes it).
pub type Body = http_body_util::Either<Full<Bytes>, StreamedBody>;
/// A body read as it goes out.
pub type StreamedBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Either::Left(Full::new(bytes.into()))
}

/// A JSON response.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn retry_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Refused(_) | ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) | ApiError::RecordingElsewhere(_) => StatusCode::CONFLICT,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let (body, retry) = match &self {
            ApiError::BadRequest(m) => (json!({"error": "bad_request", "message": m}), None),
            ApiError::Unauthorized(what) => {
                (json!({"error": "unauthorized", "reason": what}), None)
            }
            ApiError::Refused(r) => {
                let mut v = json!({"error": "refused", "reason": r.reason()});
                if let Refusal::NotYetValid { opens_at } = r {
                    if let Ok(t) = opens_at.format(&time::format_description::well_known::Rfc3339) {
                        v["opens_at"] = json!(t);
                    }
                }
                (v, None)
            }
            ApiError::Forbidden(what) => (json!({"error": "forbidden", "reason": what}), None),
            ApiError::NotFound => (json!({"error": "not_found"}), None),
            ApiError::MethodNotAllowed => (json!({"error": "method_not_allowed"}), None),
            ApiError::Conflict(m) => (json!({"error": "conflict", "message": m}), None),
            ApiError::RecordingElsewhere(g) => (
                json!({
                    "error": "recording_elsewhere",
                    "gateway": g,
                    "message": format!("this recording's file is on gateway {g:?}: ask that gateway's admin API"),
                }),
                None,
            ),
            ApiError::TooLarge => (json!({"error": "payload_too_large"}), None),
            ApiError::TooManyRequests {
                retry_after,
                reason,
            } => (
                json!({"error": "too_many_requests", "reason": reason, "retry_after": retry_secs(*retry_after)}),
                Some(*retry_after),
            ),
            ApiError::Unavailable {
                retry_after,
                reason,
            } => (
                json!({"error": "unavailable", "reason": reason, "retry_after": retry_secs(*retry_after)}),
                Some(*retry_after),
            ),
            ApiError::BadGateway(what) => (
                json!({"error": "console_unavailable", "reason": what}),
                None,
            ),
            ApiError::Internal(source) => {
                tracing::warn!(error = %Chain(source.as_ref()), "internal error");
                (json!({"error": "internal"}), None)
            }
        };
        let mut r = json_response(status, &body);
        if let Some(d) = retry {
            if let Ok(v) = header::HeaderValue::from_str(&retry_secs(d).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

/// The one map from the engine's errors to HTTP. Admin-facing messages (invalid input,
/// wrong state) pass through; faults are logged with their whole chain and answered as
/// `internal` without detail.
impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Invalid(m) => ApiError::BadRequest(m),
            EngineError::Link(e) => ApiError::BadRequest(e.to_string()),
            EngineError::Unauthorized(r) => ApiError::Unauthorized(r),
            EngineError::Refused(r) => ApiError::Refused(r),
            EngineError::Forbidden(r) => ApiError::Forbidden(r),
            EngineError::NotFound => ApiError::NotFound,
            EngineError::Conflict(m) => ApiError::Conflict(m),
            EngineError::RecordingElsewhere(g) => ApiError::RecordingElsewhere(g),
            EngineError::RateLimited {
                retry_after,
                reason,
            } => ApiError::TooManyRequests {
                retry_after,
                reason,
            },
            EngineError::Unavailable {
                retry_after,
                reason,
            } => ApiError::Unavailable {
                retry_after,
                reason,
            },
            EngineError::ConsoleUnavailable(r) => ApiError::BadGateway(r),
            EngineError::Store(e) if e.is_unavailable() => {
                tracing::warn!(error = %Chain(&e), "store unavailable");
                ApiError::Unavailable {
                    retry_after: Duration::from_secs(5),
                    reason: "store_unavailable",
                }
            }
            EngineError::Backend(e) if e.is_not_found() => ApiError::NotFound,
            // Admin-facing: the backend's messages say what is wrong with the VM.
            EngineError::Backend(e) if e.is_client_error() => ApiError::Conflict(e.to_string()),
            EngineError::Net(e) if e.is_not_found() => ApiError::NotFound,
            EngineError::Net(e) if e.is_client_error() => ApiError::Conflict(e.to_string()),
            other => ApiError::Internal(Box::new(other)),
        }
    }
}

/// Displays an error with its sources: `a: b: c`.
#[derive(Debug)]
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut src = self.0.source();
        while let Some(s) = src {
            write!(f, ": {s}")?;
            src = s.source();
        }
        Ok(())
    }
}
