//! The `ControlPlane` seam: the five runner API calls, as the actors see them.
//!
//! The daemon implements it over HTTPS with awc; tests and embedders plug in
//! fakes. Futures are `!Send` (awc's client is per thread): an implementation
//! is shared across threads and makes its per-thread client itself.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::model::{
    CheckinRequest, CheckinResponse, Operation, ReportsRequest, ReportsResponse, ShutdownRequest,
    StartupRequest, StartupResponse,
};

/// A boxed future run on the calling actor's thread.
pub type LocalFuture<T> = Pin<Box<dyn Future<Output = T> + 'static>>;

/// Result of a runner API call.
pub type CallResult<T> = LocalFuture<Result<T, ControlPlaneError>>;

/// The runner API of protocol v1. Every call must end within its own
/// deadline (the implementation's request timeout); the actors add none.
pub trait ControlPlane: Send + Sync + 'static {
    /// `POST /startup`.
    fn startup(&self, req: StartupRequest) -> CallResult<StartupResponse>;
    /// `POST /checkin?waitMs=N`; `wait` is the long-poll hold (zero = none).
    fn checkin(&self, req: CheckinRequest, wait: Duration) -> CallResult<CheckinResponse>;
    /// `POST /operations/{op_id}/claim`.
    fn claim(&self, op_id: &str, replica_id: &str) -> CallResult<ClaimOutcome>;
    /// `POST /reports`.
    fn reports(&self, req: ReportsRequest) -> CallResult<ReportsResponse>;
    /// `POST /shutdown`.
    fn shutdown(&self, req: ShutdownRequest) -> CallResult<()>;
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimOutcome {
    /// This replica owns the operation now.
    Claimed(Box<Operation>),
    /// Another replica won the claim.
    Taken,
    /// The operation was cancelled before it was claimed.
    Cancelled,
}

/// Why a runner API call failed, classified by what the caller should do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ControlPlaneError {
    /// 401: the runner id or token is wrong. Retry slowly; an operator must fix it.
    #[error("the control plane refused the runner's credentials (401): {message}")]
    Unauthorized { message: String },
    /// 403: the runner is disabled or deleted.
    #[error("the control plane says this runner is disabled or deleted (403): {message}")]
    Forbidden { message: String },
    /// 429 / 503: back off, for `retry_after` when the server gave one.
    #[error("the control plane asks to back off ({status}){}", retry_after.map(|d| format!(", retry after {} ms", d.as_millis())).unwrap_or_default())]
    Throttled {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// Other 5xx: retry with backoff.
    #[error("the control plane failed ({status}): {message}")]
    Server { status: u16, message: String },
    /// Another 4xx: the request itself was refused; retrying it as is will not help.
    #[error("the control plane rejected the request ({status} {code}): {message}")]
    Rejected {
        status: u16,
        code: String,
        message: String,
    },
    /// Connection refused, reset, DNS, TLS...: retry with backoff.
    #[error("could not reach the control plane: {0}")]
    Transport(String),
    /// The request's deadline passed.
    #[error("the control plane did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The answer was not what protocol v1 says (bad JSON, wrong shape).
    #[error("the control plane's answer was malformed: {0}")]
    Protocol(String),
}

impl ControlPlaneError {
    /// Whether the credentials were refused (401 or 403).
    pub fn is_auth(&self) -> bool {
        matches!(self, Self::Unauthorized { .. } | Self::Forbidden { .. })
    }

    /// The server's `Retry-After`, when it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}
