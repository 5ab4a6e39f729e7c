//! The rdrunner daemon as a library: the parts that plug into the actors of
//! `rdrunner-actors` (the HTTPS transport, the SSH and local executors, the
//! disk spool, the logs), each with its settings type beside it; the
//! configuration layer that reads `runner.toml` into those settings; and
//! `daemon::assemble`, the one place that turns a configuration into a
//! runner. `main.rs` is the CLI over it.

pub mod config;
pub mod creds;
pub mod daemon;
pub mod local;
pub mod logging;
pub mod metrics;
pub mod private_dir;
pub mod runner;
pub mod spool;
pub mod ssh;
pub mod transport;
