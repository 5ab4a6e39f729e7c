//! rdrunner's supervision runtime and data model.
//!
//! The actor tree (RootSupervisor → Poller, ExecutionRegistry, StepWorker per
//! operation, LogShipper) runs on actix and talks to the world only through
//! the seams defined here: [`ControlPlane`], [`NodeExecutor`], [`Spool`] and
//! [`Clock`]. This crate knows nothing of HTTP, SSH or TOML.

#![forbid(unsafe_code)]

pub mod clock;
pub mod context;
pub mod control_plane;
pub mod executor;
pub mod failpoints;
pub mod filter;
pub mod log_shipper;
pub mod model;
pub mod output;
pub mod poller;
pub mod registry;
pub mod runtime;
pub mod spool;
pub mod stats;
pub mod step_worker;
pub mod supervisor;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use clock::{Clock, SystemClock};
pub use control_plane::{CallResult, ClaimOutcome, ControlPlane, ControlPlaneError, LocalFuture};
pub use executor::{
    AbortReason, AbortSignal, ExecutorError, ExecutorErrorKind, NodeExecutor, OutputSink,
    StepOutcome, StepRequest,
};
pub use failpoints::{FailAction, FailPoints};
pub use runtime::{
    NodePredicate, Runtime, RuntimeBuilder, RuntimeConfig, RuntimeError, RuntimeHandle,
};
pub use spool::{MemorySpool, Spool, SpoolError, SpooledOperation};
pub use stats::RuntimeStats;
pub use supervisor::{ChildExit, ChildSpec, ExitReason, RestartIntensity, RestartType, Supervisor};
