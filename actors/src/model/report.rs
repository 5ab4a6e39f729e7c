//! Reports: everything an operation produces, numbered per operation.

use serde::{Deserialize, Serialize};

/// One report of one operation. `seq` starts at 1 and grows by exactly 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub op_id: String,
    pub seq: u64,
    /// RFC 3339 UTC time the report was made on the runner.
    pub ts: String,
    #[serde(flatten)]
    pub body: ReportBody,
}

impl Report {
    /// Whether this is the operation's terminal `op` report (always its last).
    pub fn is_terminal(&self) -> bool {
        matches!(&self.body, ReportBody::Op(op) if op.state.is_terminal())
    }
}

/// A report with its JSON, encoded once when it is made: the spool writes
/// those bytes, and `POST /reports` sends the same bytes, so a line of
/// output is turned into JSON once on its way to the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedReport {
    pub op_id: String,
    pub seq: u64,
    /// Whether it is the operation's terminal report.
    pub terminal: bool,
    /// The report as JSON (the `Report` object of protocol.md).
    pub json: std::sync::Arc<str>,
}

impl EncodedReport {
    pub fn of(report: &Report) -> Self {
        EncodedReport {
            op_id: report.op_id.clone(),
            seq: report.seq,
            terminal: report.is_terminal(),
            json: report.to_json().into(),
        }
    }

    /// The report again; for a control plane that takes reports as values.
    pub fn decode(&self) -> Result<Report, serde_json::Error> {
        serde_json::from_str(&self.json)
    }
}

impl Report {
    /// The report as JSON.
    pub fn to_json(&self) -> String {
        // A report is strings, numbers and enums: always serializable.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// What a report says; `kind` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", tag = "kind", rename_all = "lowercase")]
pub enum ReportBody {
    Log(LogReport),
    Node(NodeReport),
    Op(OpReport),
}

// `kind` is a name on the wire, never a variant index (see `model::tagged`).
crate::string_tagged_serde!(ReportBody, "kind");

/// One line of output (newline stripped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogReport {
    pub node: String,
    /// 1-based index of the step in the operation.
    pub step: u32,
    pub stream: Stream,
    pub text: String,
}

/// A node step changed state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    pub node: String,
    pub step: u32,
    pub state: State,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The operation changed state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpReport {
    pub state: State,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Where a line of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    /// Messages of the runner itself about the step (connecting, aborting...).
    System,
}

/// State of a node step or an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Running,
    Succeeded,
    Failed,
    Aborted,
    Timedout,
}

impl State {
    pub fn is_terminal(self) -> bool {
        !matches!(self, State::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Aborted => "aborted",
            State::Timedout => "timedout",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
