//! The named route table: every route the harness serves, once. The router
//! is built from it, `docs/openapi.yaml` is checked against it, and the fault
//! seam ([`FaultTable`]) is keyed by its names.

use serde::{Deserialize, Serialize};

/// Base path of the runner API.
pub const RUNNER_BASE: &str = "/api/runner/v1";
/// Base path of the admin API (and the observation endpoints).
pub const ADMIN_BASE: &str = "/api/v1";

/// Every route, by name (in JSON: camelCase, e.g. `checkin`, `createRunner`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RouteName {
    Startup,
    Checkin,
    Claim,
    Reports,
    Shutdown,
    Resume,
    CreateRunner,
    ListRunners,
    GetRunner,
    DeleteRunner,
    Credentials,
    RegenerateCredentials,
    AssignProject,
    UnassignProject,
    SetNodes,
    GetNodes,
    SubmitExecution,
    ListExecutions,
    GetExecution,
    Output,
    Abort,
    ObserveRunner,
    ObserveReports,
    GetFaults,
    SetFaults,
    ClearFaults,
    Ping,
    GetPing,
    Metrics,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
            Method::Put => "put",
            Method::Delete => "delete",
        }
    }
}

/// One served route.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub name: RouteName,
    pub method: Method,
    /// Full path in OpenAPI/actix template form, e.g. `/api/v1/runners/{id}`.
    pub path: &'static str,
}

macro_rules! routes {
    ($($name:ident $method:ident $path:literal),* $(,)?) => {
        /// The route table.
        pub const ROUTES: &[Route] = &[
            $(Route { name: RouteName::$name, method: Method::$method, path: $path }),*
        ];
    };
}

routes! {
    Startup Post "/api/runner/v1/startup",
    Checkin Post "/api/runner/v1/checkin",
    Claim Post "/api/runner/v1/operations/{opId}/claim",
    Reports Post "/api/runner/v1/reports",
    Shutdown Post "/api/runner/v1/shutdown",
    Resume Post "/api/runner/v1/resume",
    CreateRunner Post "/api/v1/runners",
    ListRunners Get "/api/v1/runners",
    GetRunner Get "/api/v1/runners/{id}",
    DeleteRunner Delete "/api/v1/runners/{id}",
    Credentials Get "/api/v1/runners/{id}/credentials",
    RegenerateCredentials Post "/api/v1/runners/{id}/regenerate-credentials",
    AssignProject Put "/api/v1/runners/{id}/projects/{project}",
    UnassignProject Delete "/api/v1/runners/{id}/projects/{project}",
    SetNodes Put "/api/v1/projects/{project}/nodes",
    GetNodes Get "/api/v1/projects/{project}/nodes",
    SubmitExecution Post "/api/v1/projects/{project}/executions",
    ListExecutions Get "/api/v1/executions",
    GetExecution Get "/api/v1/executions/{id}",
    Output Get "/api/v1/executions/{id}/output",
    Abort Post "/api/v1/executions/{id}/abort",
    ObserveRunner Get "/api/v1/observe/runners/{id}",
    ObserveReports Get "/api/v1/observe/operations/{opId}/reports",
    GetFaults Get "/api/v1/faults",
    SetFaults Put "/api/v1/faults",
    ClearFaults Delete "/api/v1/faults",
    Ping Post "/api/v1/runners/{id}/ping",
    GetPing Get "/api/v1/runners/{id}/ping/{pingId}",
    Metrics Get "/metrics",
}

pub use crate::faults::{Fault, FaultTable};
