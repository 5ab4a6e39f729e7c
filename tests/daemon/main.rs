//! The daemon's parts and the `rdrunner` binary, one test binary: the CLI
//! (`cli`), the reference control plane it is tested against (`harness`),
//! the HTTPS transport (`transport`), the local executor (`local`) and
//! `rdrunner run` with its signals and replicas (`run`). The escalation
//! test needs the `failpoints` feature and is a binary of its own
//! (`daemon_escalation`).

mod cli;
mod harness;
mod local;
mod run;
mod transport;
