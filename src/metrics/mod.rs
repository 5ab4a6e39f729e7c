//! The runner's metrics endpoint (`[metrics] listen`): `GET /metrics` (the
//! runtime's counters in the Prometheus/OpenMetrics text format),
//! `GET /health` (liveness) and `GET /ready` (readiness), served by a small
//! HTTP/1.1 responder on an Arbiter of the actix System the runtime already
//! runs on, so the runner links no web framework for it.
//!
//! Codemap: `settings` (`MetricsSettings`), `http` (the request head and
//! the response as plain values), `exposition` (a `RuntimeStats` snapshot
//! written through `prometheus-client`), `server` (the listener and one
//! bounded task per connection). Each imports only modules listed before it.

mod exposition;
mod http;
mod server;
mod settings;

pub use exposition::{render, CONTENT_TYPE};
pub use http::{parse, Request, RequestError, Response, Route, MAX_HEAD};
pub use server::{MetricsEndpoint, MetricsError};
pub use settings::MetricsSettings;
