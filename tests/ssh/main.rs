//! The SSH executor against a real OpenSSH sshd on loopback with generated
//! keys, one test binary: connecting, host keys and authentication
//! (`connect`), running commands (`exec`), script and copy steps (`steps`),
//! aborts (`abort`), what a step can see of the wrapper it runs in
//! (`wrapper`), steps that survive a dropped connection (`reattach`) and
//! the key store's rules (`key_store`), on the shared
//! fixture in `fixture`.

mod fixture;

mod abort;
mod connect;
mod exec;
mod key_store;
mod reattach;
mod steps;
mod wrapper;
