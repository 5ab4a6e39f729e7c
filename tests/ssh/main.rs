//! The SSH executor against a real OpenSSH sshd on loopback with generated
//! keys, one test binary: connecting, host keys and authentication
//! (`connect`), running commands (`exec`), script and copy steps (`steps`)
//! and aborts (`abort`), on the shared fixture in `fixture`.

mod fixture;

mod abort;
mod connect;
mod exec;
mod steps;
