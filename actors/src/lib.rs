//! rdrunner's supervision runtime and data model.
//!
//! The actor tree (RootSupervisor → Poller, ExecutionRegistry, StepWorker per
//! operation, LogShipper) runs on actix and talks to the world only through
//! the seams defined here: [`ControlPlane`], [`NodeExecutor`], [`Spool`] and
//! [`Clock`]. This crate knows nothing of HTTP, SSH or TOML.
//!
//! The actor runtime is the default feature `runtime`. Without it the crate
//! is the wire model (`model`), node filters (`filter`), the data context
//! (`context`), output lines (`output`) and the seams' types: what a control
//! plane needs, with no actix, tokio or slog.

#![forbid(unsafe_code)]

#[cfg(feature = "runtime")]
pub mod backlog;
#[cfg(feature = "runtime")]
pub mod batch;
pub mod clock;
pub mod context;
pub mod control_plane;
pub mod executor;
#[cfg(feature = "runtime")]
pub mod failpoints;
pub mod figures;
pub mod filter;
#[cfg(feature = "runtime")]
pub mod health;
#[cfg(feature = "runtime")]
pub mod inbox;
#[cfg(feature = "runtime")]
pub mod intake;
#[cfg(feature = "runtime")]
pub mod log_shipper;
pub mod model;
#[cfg(feature = "runtime")]
pub mod operations;
#[cfg(feature = "runtime")]
pub mod outcome;
pub mod output;
#[cfg(feature = "runtime")]
pub mod pacing;
#[cfg(feature = "runtime")]
pub mod poller;
#[cfg(feature = "runtime")]
pub mod registry;
pub mod resume;
#[cfg(feature = "runtime")]
pub mod retry;
#[cfg(feature = "runtime")]
pub mod runtime;
#[cfg(feature = "runtime")]
pub mod session;
#[cfg(feature = "runtime")]
pub mod settings;
pub mod spool;
#[cfg(feature = "runtime")]
pub mod stats;
#[cfg(feature = "runtime")]
pub mod step_worker;
#[cfg(feature = "runtime")]
pub mod supervisor;
#[cfg(all(feature = "runtime", any(test, feature = "testing")))]
pub mod testing;

pub use clock::{Clock, SystemClock};
pub use control_plane::{
    CallResult, ClaimOutcome, ControlPlane, ControlPlaneError, LocalFuture, TransportFailure,
};
pub use executor::{
    AbortReason, AbortSignal, ExecutorError, ExecutorErrorKind, NodeExecutor, OutputSink,
    StepOutcome, StepRequest,
};
#[cfg(feature = "runtime")]
pub use failpoints::{FailAction, FailPoints};
pub use figures::{ExecutorFigures, Histogram};
#[cfg(feature = "runtime")]
pub use health::{liveness, readiness, Liveness, Readiness};
#[cfg(feature = "runtime")]
pub use runtime::{
    NodePredicate, Runtime, RuntimeBuilder, RuntimeConfig, RuntimeError, RuntimeHandle,
};
pub use spool::{
    JournalEntry, Mark, MemorySpool, NodeState, ProgressMap, Spool, SpoolError, SpooledOperation,
    StepProgress,
};
#[cfg(feature = "runtime")]
pub use stats::RuntimeStats;
#[cfg(feature = "runtime")]
pub use supervisor::{ChildExit, ChildSpec, ExitReason, RestartIntensity, RestartType, Supervisor};
