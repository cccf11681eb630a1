//! `ApiError`: every error the API returns, and the one place errors become HTTP status codes and
//! the JSON body `{"error": {"code", "message"}}`.

use hyper::StatusCode;
use serde_json::json;

use super::Resp;
use crate::actors::messages::AdmitError;
use crate::analysis::fetch::FetchError;
use crate::config::quotas::Exceeded;
use crate::persist::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("missing or unknown api key")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str, String),
    #[error("not found")]
    NotFound,
    /// The route exists; its methods are the `Allow` header's.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// The job is not in a state that allows the request (retrying a job that succeeded).
    #[error("{1}")]
    Conflict(&'static str, String),
    #[error("body is larger than the limit of {0} bytes")]
    TooLarge(u64),
    /// At capacity (`at_capacity`) or past a tenant's quota (its code).
    #[error("{message}")]
    TooManyRequests { code: &'static str, message: String, retry_after_s: u64 },
    #[error("{0}")]
    Unavailable(String),
    /// A tus protocol answer (409 offset mismatch, 410 expired, 412 version, 415 content type,
    /// 423 busy, 460 checksum mismatch); the router adds `Tus-Resumable` to every tus answer.
    #[error("{message}")]
    Tus { status: StatusCode, code: &'static str, message: String },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest { code, message: message.into() }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(code, _) => (StatusCode::FORBIDDEN, code),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Conflict(code, _) => (StatusCode::CONFLICT, code),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Self::TooManyRequests { code, .. } => (StatusCode::TOO_MANY_REQUESTS, code),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Tus { status, code, .. } => (*status, code),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    pub fn into_response(self) -> Resp {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(code, error = %self, "request failed");
        }
        let mut resp = super::json(status, &json!({ "error": { "code": code, "message": self.to_string() } }));
        if let Self::TooManyRequests { retry_after_s, .. } = &self {
            resp.headers_mut().insert("retry-after", (*retry_after_s).into());
        }
        if let Self::MethodNotAllowed(allow) = &self {
            resp.headers_mut().insert("allow", hyper::header::HeaderValue::from_static(allow));
        }
        if let Self::Tus { status: StatusCode::PRECONDITION_FAILED, .. } = &self {
            resp.headers_mut().insert("tus-version", hyper::header::HeaderValue::from_static("1.0.0"));
        }
        if matches!(self, Self::Unauthorized) {
            resp.headers_mut().insert("www-authenticate", hyper::header::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_retryable() { Self::Unavailable(e.to_string()) } else { Self::Internal(e.to_string()) }
    }
}

/// A source read while answering (a playlist's listing) that failed: a 400 with the fetch's own
/// code, whoever is at fault (a 5xx says the server broke, and it did not).
impl From<FetchError> for ApiError {
    fn from(e: FetchError) -> Self {
        Self::bad(e.code(), e.to_string())
    }
}

impl From<Exceeded> for ApiError {
    fn from(e: Exceeded) -> Self {
        Self::TooManyRequests { code: e.code, message: e.message, retry_after_s: e.retry_after_s }
    }
}

impl From<AdmitError> for ApiError {
    fn from(e: AdmitError) -> Self {
        match e {
            AdmitError::Full(_) => Self::TooManyRequests { code: "at_capacity", message: e.to_string(), retry_after_s: 5 },
            AdmitError::ShuttingDown => Self::Unavailable(e.to_string()),
            AdmitError::Store(m) => Self::Unavailable(m),
        }
    }
}
