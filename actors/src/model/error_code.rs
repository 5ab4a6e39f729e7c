//! The stable machine codes of error answers (`ErrorBody::error`), one enum
//! shared by the runner, which acts on some of them, and the control plane,
//! which sends them (docs/protocol.md §1 and the tables per route).

use std::fmt;

macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident = $text:literal,)*) => {
        /// A protocol error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in the order of the protocol's tables.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as it stands on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $text,)*
                }
            }

            /// The code named `text`; `None` for a code this side does not
            /// know (a newer control plane may add codes).
            pub fn parse(text: &str) -> Option<ErrorCode> {
                match text {
                    $($text => Some(ErrorCode::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

codes! {
    /// The body is not JSON, a field has the wrong type, or one is missing.
    BadJson = "bad_json",
    /// A value is out of range, or the query string is malformed.
    BadRequest = "bad_request",
    /// Missing or wrong credentials.
    Unauthorized = "unauthorized",
    /// No such route.
    NotFound = "not_found",
    /// The route exists, not with this method.
    MethodNotAllowed = "method_not_allowed",
    /// The body is over the limit.
    BodyTooLarge = "body_too_large",
    /// The control plane could not write its state file.
    StateWriteFailed = "state_write_failed",
    /// The runner was deleted: its old token is recognised and refused.
    RunnerDeleted = "runner_deleted",
    /// The replica id is not registered for this runner: start up again.
    UnknownReplica = "unknown_replica",
    /// The runner has as many live replicas as the control plane keeps:
    /// retry the startup later.
    TooManyReplicas = "too_many_replicas",
    /// No such operation for this runner.
    UnknownOperation = "unknown_operation",
    /// Another replica owns the operation, or it has ended.
    Taken = "taken",
    /// The operation was aborted before anyone claimed it.
    Cancelled = "cancelled",
    /// A report names an operation no replica has claimed.
    NotClaimed = "not_claimed",
    /// More reports in one batch than `reportBatchMax`.
    TooManyReports = "too_many_reports",
    /// Admin API: no such runner.
    UnknownRunner = "unknown_runner",
    /// Admin API: no such execution.
    UnknownExecution = "unknown_execution",
    /// Admin API: no such project.
    UnknownProject = "unknown_project",
    /// Admin API: the node filter selects no node.
    NoNodes = "no_nodes",
    /// Admin API: no such ping of this runner (or it was dropped: a runner
    /// keeps its latest pings only).
    UnknownPing = "unknown_ping",
    /// Admin API: the node filter does not parse.
    BadFilter = "bad_filter",
    /// Admin API: a name, tag, description, project, job or user holds a
    /// control character (newline, NUL, a bidirectional control...).
    ControlCharacter = "control_character",
    /// Fault injection: the fault plan is not valid.
    BadFaultPlan = "bad_fault_plan",
    /// Fault injection: an error answer the fault plan asked for.
    FaultInjected = "fault_injected",
    /// Fault injection: a 429 the fault plan asked for.
    TooManyRequests = "too_many_requests",
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<ErrorCode> for String {
    fn eq(&self, other: &ErrorCode) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<ErrorCode> for str {
    fn eq(&self, other: &ErrorCode) -> bool {
        self == other.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_parses_back_and_is_distinct() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(c.as_str()), Some(*c));
            assert!(seen.insert(c.as_str()), "{c} twice");
        }
        assert_eq!(ErrorCode::parse("something_new"), None);
        let code = String::from("taken");
        assert!(code == ErrorCode::Taken);
        assert!(*"cancelled" == ErrorCode::Cancelled);
        assert_eq!(ErrorCode::NoNodes, "no_nodes");
    }
}
