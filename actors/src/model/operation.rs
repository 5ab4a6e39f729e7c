//! An operation: one execution's node steps for the nodes one runner covers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The unit of work a runner claims and runs: steps × nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// Opaque id chosen by the control plane, unique across executions.
    pub id: String,
    /// The execution this operation belongs to; feeds `${job.*}`.
    pub execution: ExecutionInfo,
    /// Node steps, run in order on every node.
    pub steps: Vec<Step>,
    /// Target nodes (already filtered by the control plane).
    pub nodes: Vec<Node>,
    #[serde(default)]
    pub dispatch: Dispatch,
    /// Option values by name; feeds `${option.X}` and `RD_OPTION_X`.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Names of options whose values must never appear in any output.
    #[serde(default)]
    pub secure_options: Vec<String>,
    /// Whole-operation timeout; `None` means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Per node step timeout; `None` means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_timeout_ms: Option<u64>,
}

impl Operation {
    /// The values of the secure options, the strings output must be masked for.
    pub fn secure_values(&self) -> Vec<String> {
        self.secure_options
            .iter()
            .filter_map(|name| self.options.get(name))
            .filter(|v| !v.is_empty())
            .cloned()
            .collect()
    }
}

/// What the control plane tells about the execution an operation is part of.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionInfo {
    pub id: u64,
    #[serde(default)]
    pub project: String,
    /// Job name (`group/name`), or empty for an ad-hoc execution.
    #[serde(default)]
    pub job: String,
    /// The user who started the execution.
    #[serde(default)]
    pub user: String,
}

/// One node step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", tag = "type", rename_all = "lowercase")]
pub enum Step {
    Command(CommandStep),
    Script(ScriptStep),
    Copy(CopyStep),
}

// `type` is a name on the wire, never a variant index (see `model::tagged`).
crate::string_tagged_serde!(Step, "type");

impl Step {
    /// The step type as it is named on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Command(_) => "command",
            Step::Script(_) => "script",
            Step::Copy(_) => "copy",
        }
    }
}

/// A shell command line, run by the node's login shell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandStep {
    pub command: String,
}

/// A script uploaded to the node and run there with its interpreter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScriptStep {
    /// The script body; `@option.X@`-style tokens are replaced raw, as in
    /// Rundeck (the value becomes script text): scripts should read
    /// `$RD_OPTION_X` instead.
    pub script: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Interpreter to run the script with (e.g. `sh`, `bash -e`); without one
    /// the script is executed directly and its `#!` line decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<String>,
    /// Extension of the uploaded file, e.g. `.sh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_extension: Option<String>,
}

/// A file written to the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyStep {
    /// File content, standard base64.
    pub content_base64: String,
    /// Absolute path on the node.
    pub destination: String,
    /// Octal mode such as `0644`; default `0644`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

impl CopyStep {
    /// The mode as a number; `None` when the text is not an octal mode.
    pub fn mode_bits(&self) -> Option<u32> {
        match &self.mode {
            None => Some(0o644),
            Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
                .ok()
                .filter(|b| *b <= 0o7777),
        }
    }
}

/// How a node is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// Over SSH (the default).
    #[default]
    Ssh,
    /// On the runner's own host ("runner as node").
    Local,
}

impl ExecutorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::Ssh => "ssh",
            ExecutorKind::Local => "local",
        }
    }
}

/// A target node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub name: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default)]
    pub executor: ExecutorKind,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Free-form attributes; also holds key store references such as
    /// `ssh-key-storage-path`.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

impl Node {
    /// A node with only a name and hostname; handy in tests and examples.
    pub fn new(name: impl Into<String>, hostname: impl Into<String>) -> Self {
        Node {
            name: name.into(),
            hostname: hostname.into(),
            port: None,
            username: None,
            executor: ExecutorKind::Ssh,
            tags: Vec::new(),
            attributes: BTreeMap::new(),
        }
    }

    /// A `local` node: the runner's own host.
    pub fn local(name: impl Into<String>) -> Self {
        Node {
            executor: ExecutorKind::Local,
            ..Node::new(name, "localhost")
        }
    }

    /// The value a node filter or `${node.KEY}` sees for `key`: the built-in
    /// fields first, then the attributes.
    pub fn attribute(&self, key: &str) -> Option<String> {
        match key {
            "name" | "nodename" => Some(self.name.clone()),
            "hostname" => Some(self.hostname.clone()),
            "port" => self.port.map(|p| p.to_string()),
            "username" => self.username.clone(),
            "executor" => Some(self.executor.as_str().to_owned()),
            "tags" => Some(self.tags.join(",")),
            other => self.attributes.get(other).cloned(),
        }
    }
}

/// How nodes are dispatched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Dispatch {
    /// Nodes run at the same time (at least 1).
    pub thread_count: u32,
    /// Whether the remaining nodes still run after one fails.
    pub keep_going: bool,
    /// Attribute nodes are ordered by before dispatch.
    pub rank_attribute: String,
    pub rank_order: RankOrder,
}

impl Default for Dispatch {
    fn default() -> Self {
        Dispatch {
            thread_count: 1,
            keep_going: false,
            rank_attribute: "name".to_owned(),
            rank_order: RankOrder::Ascending,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RankOrder {
    #[default]
    Ascending,
    Descending,
}
