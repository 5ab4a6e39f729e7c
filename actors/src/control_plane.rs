//! The `ControlPlane` seam: the runner API calls, as the actors see them.
//!
//! The daemon implements it over HTTPS with awc; tests and embedders plug in
//! fakes. Futures are `!Send` (awc's client is per thread): an implementation
//! is shared across threads and makes its per-thread client itself.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::model::{
    CheckinRequest, CheckinResponse, EncodedReport, ErrorCode, Operation, ReportsRequest,
    ReportsResponse, ResumeRequest, ResumeResponse, ShutdownRequest, StartupRequest,
    StartupResponse,
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
    /// `POST /reports` with reports already encoded (the LogShipper's
    /// call): an implementation over HTTP sends their JSON as it is. The
    /// default decodes them and calls [`ControlPlane::reports`], so an
    /// implementation written before this call existed keeps working.
    fn reports_encoded(
        &self,
        replica_id: String,
        reports: Vec<EncodedReport>,
    ) -> CallResult<ReportsResponse> {
        let decoded: Result<Vec<_>, _> = reports.iter().map(EncodedReport::decode).collect();
        match decoded {
            Ok(reports) => self.reports(ReportsRequest {
                replica_id,
                reports,
            }),
            Err(e) => Box::pin(async move {
                Err(ControlPlaneError::Transport(TransportFailure::caused_by(
                    "a spooled report is not valid JSON",
                    e,
                )))
            }),
        }
    }
    /// `POST /shutdown`.
    fn shutdown(&self, req: ShutdownRequest) -> CallResult<()>;
    /// `POST /resume`. The default answers as a control plane without the
    /// route does (404 `not_found`), so an implementation written before the
    /// call existed keeps working: the runner falls back to reporting what
    /// its spool holds.
    fn resume(&self, req: ResumeRequest) -> CallResult<ResumeResponse> {
        let _ = req;
        Box::pin(async {
            Err(ControlPlaneError::Rejected {
                status: 404,
                code: ErrorCode::NotFound.as_str().to_owned(),
                message: "this control plane has no POST /resume".to_owned(),
            })
        })
    }
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
    Transport(#[source] TransportFailure),
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

    /// Whether the control plane does not know the route at all (404 that
    /// is not about the replica, 405, 501): an older control plane.
    pub fn is_unsupported_route(&self) -> bool {
        match self {
            Self::Rejected {
                status: 404, code, ..
            } => ErrorCode::parse(code) != Some(ErrorCode::UnknownReplica),
            Self::Rejected { status: 405, .. } => true,
            Self::Server { status: 501, .. } => true,
            _ => false,
        }
    }

    /// The kind of failure as metrics name it: `unauthorized`, `forbidden`,
    /// `throttled`, `server`, `rejected`, `transport`, `timeout`, `protocol`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unauthorized { .. } => "unauthorized",
            Self::Forbidden { .. } => "forbidden",
            Self::Throttled { .. } => "throttled",
            Self::Server { .. } => "server",
            Self::Rejected { .. } => "rejected",
            Self::Transport(_) => "transport",
            Self::Timeout(_) => "timeout",
            Self::Protocol(_) => "protocol",
        }
    }

    /// The server's `Retry-After`, when it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Why the control plane could not be reached: a message naming the URL
/// and what failed, with the underlying error (I/O, TLS, proxy) kept as the
/// `source()` when there is one. Reads as its message (`Deref<Target = str>`).
#[derive(Clone)]
pub struct TransportFailure {
    message: String,
    source: Option<Arc<dyn Error + Send + Sync + 'static>>,
}

impl TransportFailure {
    /// A failure with `message` and no underlying error.
    pub fn new(message: impl Into<String>) -> Self {
        TransportFailure {
            message: message.into(),
            source: None,
        }
    }

    /// A failure with `message`, caused by `source`.
    pub fn caused_by(
        message: impl Into<String>,
        source: impl Error + Send + Sync + 'static,
    ) -> Self {
        TransportFailure {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl Deref for TransportFailure {
    type Target = str;
    fn deref(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for TransportFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for TransportFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportFailure")
            .field("message", &self.message)
            .field("source", &self.source.as_ref().map(|s| s.to_string()))
            .finish()
    }
}

/// Equal when the messages are: the source is detail for a reader.
impl PartialEq for TransportFailure {
    fn eq(&self, other: &Self) -> bool {
        self.message == other.message
    }
}

impl Error for TransportFailure {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

impl From<&str> for TransportFailure {
    fn from(message: &str) -> Self {
        TransportFailure::new(message)
    }
}

impl From<String> for TransportFailure {
    fn from(message: String) -> Self {
        TransportFailure::new(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transport_failure_keeps_its_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = ControlPlaneError::Transport(TransportFailure::caused_by(
            "https://cp:4443/api/runner/v1/checkin: connection refused",
            io,
        ));
        assert_eq!(
            e.to_string(),
            "could not reach the control plane: https://cp:4443/api/runner/v1/checkin: connection refused"
        );
        let failure = e.source().expect("the failure");
        let cause = failure.source().expect("the I/O error");
        assert_eq!(cause.to_string(), "refused");
        assert!(ControlPlaneError::Transport("x".into())
            .source()
            .unwrap()
            .source()
            .is_none());
    }
}
