//! The reference control plane's integration tests, one binary: every kind
//! of bad input (`bad_input`), fault injection (`faults`), a runner's status,
//! pings and `/metrics` (`fleet`), the in-process
//! handle (`harness_handle`), HTTP and the protocol's contract
//! (`http_contract`), the runner lifecycle over real HTTP (`lifecycle`), what
//! the Runner Management page needs (`management`), the
//! route table against docs/openapi.yaml (`openapi_routes`) and the admin
//! examples of docs/protocol.md (`protocol_admin_json`); `common` holds the
//! shared client.

mod common;

mod bad_input;
mod faults;
mod fleet;
mod harness_handle;
mod http_contract;
mod lifecycle;
mod management;
mod openapi_routes;
mod protocol_admin_json;
