//! Errors: [`ApiError`], what a refused request answers (`{"error","message"}`
//! with a status), and [`HarnessError`], why the harness could not start.

use std::path::PathBuf;

use rdrunner_actors::model::{ErrorBody, ErrorCode};

/// A refused request: HTTP status, machine code and human text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: u16,
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, ErrorCode::BadRequest, message)
    }
    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::new(404, code, message)
    }
    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::new(409, code, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(401, ErrorCode::Unauthorized, message)
    }
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.code.as_str().to_owned(),
            message: self.message.clone(),
        }
    }
}

/// Why [`crate::Harness::start`] failed.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("could not listen on {addr}: {source}; choose another address or free the port")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not read the TLS {what} file {path}: {message}")]
    Tls {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("could not load the state file {path}: {message}; move it away to start empty")]
    StateLoad { path: PathBuf, message: String },
    #[error("{0}")]
    Faults(#[from] crate::faults::FaultPlanError),
    #[error("the harness server thread failed to start: {0}")]
    Thread(String),
}
