//! [`AdminClient`]: typed, async calls of the admin API (protocol v1 §4) and
//! the observation endpoints, on awc. Used by tests, the demo, the chaos
//! suite and the benchmarks. Like every awc client it lives on one thread
//! and needs a running actix/tokio runtime when it sends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use awc::http::StatusCode;
use rdrunner_actors::model::{ErrorBody, Node};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::admin_api::*;
use crate::faults::{FaultPlan, FaultStatus};

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The harness answered with an error body.
    #[error("{method} {url} answered {status} {code}: {message}")]
    Api {
        method: &'static str,
        url: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{method} {url} failed: {message}")]
    Transport {
        method: &'static str,
        url: String,
        message: String,
    },
    #[error("{method} {url}: the answer was not what the admin API describes: {message}")]
    Decode {
        method: &'static str,
        url: String,
        message: String,
    },
    #[error("execution {execution_id} was still {state:?} after {waited:?}")]
    Timeout {
        execution_id: u64,
        state: RunState,
        waited: Duration,
    },
}

impl AdminError {
    /// The HTTP status of an API error, if this is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            AdminError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
    /// The machine code of an API error, if this is one.
    pub fn code(&self) -> Option<&str> {
        match self {
            AdminError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A client of one harness's admin API.
#[derive(Clone)]
pub struct AdminClient {
    base_url: String,
    token: String,
    client: awc::Client,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl AdminClient {
    /// A client of the harness at `base_url` (e.g. `http://127.0.0.1:4440`).
    pub fn new(base_url: impl Into<String>, admin_token: impl Into<String>) -> Self {
        Self::with_client(base_url, admin_token, default_client(None))
    }

    /// As [`AdminClient::new`], trusting `roots` for HTTPS (a private CA).
    pub fn with_roots(
        base_url: impl Into<String>,
        admin_token: impl Into<String>,
        roots: rustls::RootCertStore,
    ) -> Self {
        Self::with_client(base_url, admin_token, default_client(Some(roots)))
    }

    /// As [`AdminClient::new`] with a client of your own (TLS, timeouts).
    pub fn with_client(
        base_url: impl Into<String>,
        admin_token: impl Into<String>,
        client: awc::Client,
    ) -> Self {
        AdminClient {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            token: admin_token.into(),
            client,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base_url)
    }

    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, AdminError> {
        let bytes = self.send_raw(method, path, body).await?;
        let bytes = if bytes.is_empty() {
            &b"null"[..]
        } else {
            &bytes[..]
        };
        serde_json::from_slice(bytes).map_err(|e| AdminError::Decode {
            method,
            url: self.url(path),
            message: e.to_string(),
        })
    }

    async fn send_raw<B: Serialize>(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&B>,
    ) -> Result<Vec<u8>, AdminError> {
        let url = self.url(path);
        let m = awc::http::Method::from_bytes(method.as_bytes()).expect("a valid method");
        let req = self
            .client
            .request(m, &url)
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(30));
        let transport = |e: String| AdminError::Transport {
            method,
            url: url.clone(),
            message: e,
        };
        let mut resp = match body {
            Some(b) => req.send_json(b).await,
            None => req.send().await,
        }
        .map_err(|e| transport(e.to_string()))?;
        let bytes = resp
            .body()
            .limit(256 * 1024 * 1024)
            .await
            .map_err(|e| transport(e.to_string()))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(e) => (e.error, e.message),
            Err(_) => (
                status_code_name(status),
                String::from_utf8_lossy(&bytes).into_owned(),
            ),
        };
        Err(AdminError::Api {
            method,
            url,
            status: status.as_u16(),
            code,
            message,
        })
    }

    /// `POST /runners`: the answer holds the token, shown only here.
    pub async fn create_runner(&self, req: &CreateRunner) -> Result<RunnerCredentials, AdminError> {
        self.send("POST", "/runners", Some(req)).await
    }

    pub async fn list_runners(&self) -> Result<Vec<RunnerInfo>, AdminError> {
        self.send::<(), _>("GET", "/runners", None).await
    }

    pub async fn get_runner(&self, id: &str) -> Result<RunnerInfo, AdminError> {
        self.send::<(), _>("GET", &format!("/runners/{id}"), None)
            .await
    }

    pub async fn delete_runner(&self, id: &str) -> Result<(), AdminError> {
        self.send_raw::<()>("DELETE", &format!("/runners/{id}"), None)
            .await
            .map(drop)
    }

    /// The `.rdrunner-creds` text (the token line is present only in the
    /// answers of create and regenerate; here it is a comment).
    pub async fn credentials(&self, id: &str) -> Result<String, AdminError> {
        let bytes = self
            .send_raw::<()>("GET", &format!("/runners/{id}/credentials"), None)
            .await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A new token; the old one is refused from now on.
    pub async fn regenerate_credentials(&self, id: &str) -> Result<RunnerCredentials, AdminError> {
        self.send::<(), _>(
            "POST",
            &format!("/runners/{id}/regenerate-credentials"),
            None,
        )
        .await
    }

    /// Assigns the runner to `project` for the nodes matching `node_filter`.
    pub async fn assign_project(
        &self,
        id: &str,
        project: &str,
        node_filter: &str,
    ) -> Result<RunnerInfo, AdminError> {
        let body = ProjectAssignment {
            node_filter: node_filter.to_owned(),
        };
        self.send(
            "PUT",
            &format!("/runners/{id}/projects/{project}"),
            Some(&body),
        )
        .await
    }

    /// Replaces the node inventory of `project`.
    pub async fn set_nodes(&self, project: &str, nodes: &[Node]) -> Result<Vec<Node>, AdminError> {
        self.send("PUT", &format!("/projects/{project}/nodes"), Some(&nodes))
            .await
    }

    pub async fn nodes(&self, project: &str) -> Result<Vec<Node>, AdminError> {
        self.send::<(), _>("GET", &format!("/projects/{project}/nodes"), None)
            .await
    }

    /// Starts an execution; answers its id.
    pub async fn submit_execution(
        &self,
        project: &str,
        req: &SubmitExecution,
    ) -> Result<u64, AdminError> {
        let created: ExecutionCreated = self
            .send(
                "POST",
                &format!("/projects/{project}/executions"),
                Some(req),
            )
            .await?;
        Ok(created.execution_id)
    }

    pub async fn execution(&self, id: u64) -> Result<ExecutionStatus, AdminError> {
        self.send::<(), _>("GET", &format!("/executions/{id}"), None)
            .await
    }

    /// Output entries after the cursor `after` (0 = from the start).
    pub async fn output(&self, id: u64, after: u64) -> Result<OutputPage, AdminError> {
        self.send::<(), _>(
            "GET",
            &format!("/executions/{id}/output?after={after}"),
            None,
        )
        .await
    }

    /// Every output entry, following the cursor until `complete` or until
    /// nothing new arrives (for a terminal execution that is the whole output).
    pub async fn all_output(&self, id: u64) -> Result<Vec<OutputEntry>, AdminError> {
        let mut entries = Vec::new();
        let mut after = 0;
        loop {
            let page = self.output(id, after).await?;
            let empty = page.entries.is_empty();
            entries.extend(page.entries);
            after = page.next;
            if page.complete || empty {
                return Ok(entries);
            }
        }
    }

    pub async fn abort(&self, id: u64) -> Result<ExecutionStatus, AdminError> {
        self.send::<(), _>("POST", &format!("/executions/{id}/abort"), None)
            .await
    }

    /// Polls the execution (every 20 ms) until it is terminal, for at most `timeout`.
    pub async fn wait_terminal(
        &self,
        id: u64,
        timeout: Duration,
    ) -> Result<ExecutionStatus, AdminError> {
        let start = Instant::now();
        loop {
            let status = self.execution(id).await?;
            if status.state.is_terminal() {
                return Ok(status);
            }
            if start.elapsed() >= timeout {
                return Err(AdminError::Timeout {
                    execution_id: id,
                    state: status.state,
                    waited: start.elapsed(),
                });
            }
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `GET /observe/runners/{id}`.
    pub async fn observe_runner(&self, id: &str) -> Result<RunnerObservation, AdminError> {
        self.send::<(), _>("GET", &format!("/observe/runners/{id}"), None)
            .await
    }

    /// `GET /faults`: the fault plan in force, its seed and counts.
    pub async fn faults(&self) -> Result<FaultStatus, AdminError> {
        self.send::<(), _>("GET", "/faults", None).await
    }

    /// `PUT /faults`: replaces the fault rules (reseeding when `plan.seed` is set).
    pub async fn set_faults(&self, plan: &FaultPlan) -> Result<FaultStatus, AdminError> {
        self.send("PUT", "/faults", Some(plan)).await
    }

    /// `DELETE /faults`: removes every fault rule.
    pub async fn clear_faults(&self) -> Result<FaultStatus, AdminError> {
        self.send::<(), _>("DELETE", "/faults", None).await
    }

    /// `GET /observe/operations/{opId}/reports`.
    pub async fn stored_reports(&self, op_id: &str) -> Result<StoredReports, AdminError> {
        self.send::<(), _>("GET", &format!("/observe/operations/{op_id}/reports"), None)
            .await
    }

    /// `POST /runners/{id}/ping`: the runner answers on its next check-in.
    pub async fn ping(&self, id: &str) -> Result<PingCreated, AdminError> {
        self.send::<(), _>("POST", &format!("/runners/{id}/ping"), None)
            .await
    }

    /// `GET /runners/{id}/ping/{pingId}`.
    pub async fn ping_status(&self, id: &str, ping_id: &str) -> Result<PingStatus, AdminError> {
        self.send::<(), _>("GET", &format!("/runners/{id}/ping/{ping_id}"), None)
            .await
    }

    /// Pings the runner and waits for the answer, polling every 20 ms, for
    /// at most `timeout`: the last status (`pending` when `timeout` passed
    /// first).
    pub async fn ping_and_wait(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<PingStatus, AdminError> {
        let ping = self.ping(id).await?;
        let start = Instant::now();
        loop {
            let status = self.ping_status(id, &ping.ping_id).await?;
            if status.state != PingState::Pending || start.elapsed() >= timeout {
                return Ok(status);
            }
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `GET /metrics` (outside the admin API's base, and without its token):
    /// the exposition text.
    pub async fn metrics(&self) -> Result<String, AdminError> {
        let url = format!("{}/metrics", self.base_url);
        let fail = |message: String| AdminError::Transport {
            method: "GET",
            url: url.clone(),
            message,
        };
        let mut resp = self
            .client
            .get(&url)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        let bytes = resp
            .body()
            .limit(16 * 1024 * 1024)
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(AdminError::Api {
                method: "GET",
                url: url.clone(),
                status: resp.status().as_u16(),
                code: status_code_name(resp.status()),
                message: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        String::from_utf8(bytes.to_vec()).map_err(|e| AdminError::Decode {
            method: "GET",
            url: url.clone(),
            message: e.to_string(),
        })
    }
}

fn status_code_name(s: StatusCode) -> String {
    s.canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase()
        .replace(' ', "_")
}

fn default_client(roots: Option<rustls::RootCertStore>) -> awc::Client {
    let mut connector = awc::Connector::new().timeout(Duration::from_secs(10));
    if let Some(roots) = roots {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        connector = connector.rustls_0_23(Arc::new(config));
    }
    awc::Client::builder()
        .connector(connector)
        .timeout(Duration::from_secs(30))
        .finish()
}
