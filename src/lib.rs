//! The rdrunner daemon as a library: configuration, credentials, logging, the
//! HTTPS transport, the SSH and local executors and the disk spool that plug
//! into the actors of `rdrunner-actors`. `main.rs` is the CLI over it.

pub mod ssh;
