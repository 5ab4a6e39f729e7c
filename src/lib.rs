//! The rdrunner daemon as a library: configuration, credentials, logging, the
//! HTTPS transport, the SSH and local executors and the disk spool that plug
//! into the actors of `rdrunner-actors`. `main.rs` is the CLI over it.

pub mod config;
pub mod creds;
pub mod local;
pub mod logging;
pub mod spool;
pub mod ssh;
pub mod transport;
