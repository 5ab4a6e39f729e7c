//! The SSH executor against a real OpenSSH sshd on loopback with generated
//! keys, one test binary: connecting, host keys and authentication
//! (`connect`), running commands (`exec`), script and copy steps (`steps`),
//! aborts (`abort`), what a step can see of the wrapper it runs in
//! (`wrapper`) and the key store's rules (`key_store`), on the shared
//! fixture in `fixture`.

mod fixture;

mod abort;
mod connect;
mod exec;
mod key_store;
mod steps;
mod wrapper;
